"""Audio as numbers: the pure helpers every other layer shares.

Levels (``levels``), sample-rate conversion (``resample``), the model's input chunking and its
process-wide chunk length (``chunks``) and raw PCM <-> frame helpers (``pcm``). Nothing here
knows about WebRTC, a model or a call: numpy, with PyAV only for its frame type and
libswresample, so the offline brain, the stand-in, the conversation and the media path all
import it without pulling in aiortc. The bottom of voicegate's layers, above only the Sonic
protocol definitions (whose sample rates it reads).
"""

__all__ = ["chunks", "levels", "pcm", "resample"]
