"""The Nova Sonic models and what their documentation allows each of them.

Nova Sonic v1 (``amazon.nova-sonic-v1:0``, end of life 2026-09-14) and Nova 2 Sonic
(``amazon.nova-2-sonic-v1:0``), both also as the ``us.`` and ``global.`` cross-region inference
profiles. They differ in voices, audio input rates, roles, regions and Nova 2-only settings.
One owner for these facts: the client checks its configuration against them at start, and the
stand-in refuses what they do not allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_MODEL_ID: Final = "amazon.nova-2-sonic-v1:0"
NOVA_SONIC_V1_MODEL_ID: Final = "amazon.nova-sonic-v1:0"
MODELS: Final = frozenset({NOVA_SONIC_V1_MODEL_ID, DEFAULT_MODEL_ID})
DEFAULT_VOICE: Final = "matthew"
"""The voice a session gets when none is chosen (one both models document)."""
STREAM_LIMIT_S: Final = 480.0
"""How long Bedrock keeps one bidirectional stream open (8 minutes, then
``ModelTimeoutException``): what renewals must beat and what the stand-in enforces."""
PROFILE_PREFIXES: Final = ("", "us.", "global.")


def known_model(model_id: str) -> bool:
    return any(model_id.startswith(p) and model_id[len(p) :] in MODELS for p in PROFILE_PREFIXES)


NOVA2_VOICES: Final = frozenset(
    {
        "tiffany",
        "matthew",
        "amy",
        "olivia",
        "lupe",
        "carlos",
        "ambre",
        "florian",
        "tina",
        "lennart",
        "beatrice",
        "lorenzo",
        "carolina",
        "leo",
        "arjun",
        "kiara",
    }
)
"""Nova 2 Sonic's 16 documented voices (Nova 2 user guide, available voices)."""
NOVA1_VOICES: Final = frozenset(
    {
        "tiffany",
        "matthew",
        "amy",
        "ambre",
        "florian",
        "beatrice",
        "lorenzo",
        "greta",
        "lennart",
        "lupe",
        "carlos",
    }
)
"""Nova Sonic v1's 11 documented voices (v1 user guide, available voices)."""
OUTPUT_RATES: Final = (8000, 16000, 24000)
INPUT_RATES: Final = (8000, 16000, 24000)
"""Every audio input rate any Nova Sonic page names (``--model-input-rate`` chooses one)."""
NOVA2_INPUT_RATES: Final = (8000, 16000, 24000)
"""Nova 2 Sonic's input-events page documents 8, 16 and 24 kHz audio input."""
NOVA1_INPUT_RATES: Final = (16000,)
"""Nova Sonic v1's user guide documents 16 kHz audio input only."""
NOVA2_REGIONS: Final = frozenset({"us-east-1", "us-west-2", "ap-northeast-1"})
"""Where Nova 2 Sonic is offered (AWS's model availability table; a newer region warns only)."""
NOVA1_REGIONS: Final = frozenset({"us-east-1", "ap-northeast-1"})
ROLES: Final = ("SYSTEM", "USER", "ASSISTANT", "TOOL", "SYSTEM_SPEECH")
NOVA1_ROLES: Final = ("SYSTEM", "USER", "ASSISTANT", "TOOL")


@dataclass(frozen=True, slots=True)
class Model:
    """What differs between the two Nova Sonic generations. ``nova2`` stands for the Nova 2-only
    features its user guide documents: endpointing sensitivity (turnDetectionConfiguration),
    the SYSTEM_SPEECH role, toolChoice, 8/16/24 kHz input and asynchronous tool calling."""

    nova2: bool
    voices: frozenset[str]
    input_rates: tuple[int, ...]
    roles: tuple[str, ...]
    regions: frozenset[str]

    @property
    def name(self) -> str:
        return "Nova 2 Sonic" if self.nova2 else "Nova Sonic v1"


NOVA2: Final = Model(True, NOVA2_VOICES, NOVA2_INPUT_RATES, ROLES, NOVA2_REGIONS)
NOVA1: Final = Model(False, NOVA1_VOICES, NOVA1_INPUT_RATES, NOVA1_ROLES, NOVA1_REGIONS)
CAPABILITIES: Final = {
    prefix + base: model
    for base, model in ((DEFAULT_MODEL_ID, NOVA2), (NOVA_SONIC_V1_MODEL_ID, NOVA1))
    for prefix in PROFILE_PREFIXES
}
"""Every documented model id (with its ``us.`` and ``global.`` cross-region inference profiles)
and what it supports: the one place a model id is told apart (never by a substring)."""
FAMILIES: Final = ("", "nova1", "nova2")
"""``model_family``: how an id the table does not name is treated ("" and nova1: Nova 1's
features only; nova2: the operator says it is a Nova 2 model)."""


def documented_model(model_id: str) -> Model | None:
    """The table's entry for ``model_id``, also when it is an inference-profile or foundation
    model ARN ending in a documented id; None for an id the table does not name."""
    if model_id in CAPABILITIES:
        return CAPABILITIES[model_id]
    if model_id.startswith("arn:"):
        return CAPABILITIES.get(model_id.rpartition("/")[2])
    return None


def model_of(model_id: str, family: str = "") -> Model:
    """What ``model_id`` supports: the table's entry, else what ``family`` says (Nova 1's
    features unless the operator said nova2, so an unknown id never gets Nova 2-only fields
    Bedrock might refuse)."""
    model = documented_model(model_id)
    if model is not None:
        return model
    return NOVA2 if family == "nova2" else NOVA1


def input_rate_problem(model_id: str, family: str, rate: int) -> str | None:
    """Why audio input at ``rate`` Hz would be refused (None: documented for this model, or a
    model the table does not name, whose rates ``input_rate_warning`` can only doubt)."""
    if rate not in INPUT_RATES:
        return f"model_input_rate {rate} must be one of {', '.join(map(str, INPUT_RATES))}"
    model = documented_model(model_id)
    if model is None and family == "nova2":
        model = NOVA2
    if model is None or rate in model.input_rates:
        return None
    return (
        f"model_input_rate {rate} is not a documented input rate of {model.name} ({model_id}); "
        f"use one of: {', '.join(map(str, model.input_rates))}"
    )


def input_rate_warning(model_id: str, family: str, rate: int) -> str | None:
    """A doubt, not an error: a model id the table does not name (and no ``nova2`` family)
    with an input rate other than the 16 kHz both generations document."""
    if rate in NOVA1_INPUT_RATES or rate not in INPUT_RATES:
        return None
    if documented_model(model_id) is not None or family == "nova2":
        return None
    return (
        f"model_input_rate {rate}: model id {model_id!r} is not in the capability table, so "
        f"whether it takes {rate} Hz input is not documented (16000 is always documented)"
    )


def voice_problem(model_id: str, voice: str) -> str | None:
    """Why ``voice`` would be refused by a known model (None: fine, or a model we do not know,
    whose voices we cannot judge)."""
    if not known_model(model_id):
        return None
    model = model_of(model_id)
    if voice in model.voices:
        return None
    return (
        f"voice {voice!r} is not a documented voice of {model.name} ({model_id}); "
        f"use one of: {', '.join(sorted(model.voices))}"
    )


__all__ = [
    "CAPABILITIES",
    "DEFAULT_MODEL_ID",
    "FAMILIES",
    "INPUT_RATES",
    "NOVA1",
    "NOVA2",
    "DEFAULT_VOICE",
    "MODELS",
    "NOVA1_REGIONS",
    "NOVA2_REGIONS",
    "OUTPUT_RATES",
    "NOVA1_VOICES",
    "NOVA2_VOICES",
    "NOVA_SONIC_V1_MODEL_ID",
    "STREAM_LIMIT_S",
    "Model",
    "documented_model",
    "input_rate_problem",
    "input_rate_warning",
    "known_model",
    "model_of",
    "voice_problem",
]
