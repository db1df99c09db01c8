"""History shaping and the replay buffer: what a new model stream is given."""

from __future__ import annotations

import numpy as np

from voicegate.conversation.continuation import ReplayBuffer, history_bytes, shape_history
from voicegate.sonic import Role

CHUNK_S = 0.032


def _voice(level: int = 3000) -> bytes:
    t = np.arange(512)
    return (level * np.sin(2 * np.pi * 200 * t / 16000)).astype("<i2").tobytes()


SILENCE = bytes(1024)


def test_consecutive_same_role_messages_are_merged() -> None:
    history: list[tuple[Role, str]] = [
        ("USER", "hello"),
        ("USER", "  are you   there? "),
        ("ASSISTANT", "Yes."),
        ("ASSISTANT", "How can I help?"),
        ("USER", "time please"),
    ]
    assert shape_history(history) == [
        ("USER", "hello are you there?"),
        ("ASSISTANT", "Yes. How can I help?"),
        ("USER", "time please"),
    ]


def test_leading_assistant_and_other_roles_are_dropped() -> None:
    history: list[tuple[Role, str]] = [
        ("ASSISTANT", "Hi, I am the bot."),
        ("SYSTEM", "be nice"),
        ("ASSISTANT", "Anything?"),
        ("TOOL", "{}"),
        ("USER", "yes"),
        ("ASSISTANT", "ok"),
        ("USER", "   "),
    ]
    assert shape_history(history) == [("USER", "yes"), ("ASSISTANT", "ok")]
    assert shape_history([("ASSISTANT", "only me")]) == []
    assert shape_history([]) == []


def test_caps_keep_the_newest_turns_and_still_start_with_user() -> None:
    history: list[tuple[Role, str]] = []
    for i in range(30):
        history += [("USER", f"question {i}"), ("ASSISTANT", f"answer {i}")]
    shaped = shape_history(history, max_messages=5)
    # Five newest would start with ASSISTANT ("answer 27"): it is dropped.
    assert shaped == [
        ("USER", "question 28"),
        ("ASSISTANT", "answer 28"),
        ("USER", "question 29"),
        ("ASSISTANT", "answer 29"),
    ]
    shaped = shape_history(history, max_bytes=40)
    assert history_bytes(shaped) <= 40
    assert shaped[0][0] == "USER" and shaped[-1] == ("ASSISTANT", "answer 29")
    roles = [r for r, _ in shaped]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False))


def test_long_messages_are_cut_to_the_byte_cap_on_a_character_boundary() -> None:
    text = "é" * 2000  # 2 bytes each
    ((role, cut),) = shape_history([("USER", text)], max_message_bytes=101)
    assert role == "USER"
    assert len(cut.encode()) <= 101
    assert cut.endswith("…")
    cut.encode().decode()  # still valid UTF-8


def test_a_too_large_newest_message_leaves_nothing_rather_than_breaking_the_cap() -> None:
    assert shape_history([("USER", "x" * 100)], max_message_bytes=100, max_bytes=50) == []


def test_replay_is_empty_without_speech() -> None:
    buf = ReplayBuffer(max_s=2.0, preroll_s=0.1)
    for _ in range(20):
        buf.add(SILENCE)
    assert buf.replay() == []
    assert buf.quiet_s > 0.6


def test_replay_starts_a_preroll_before_speech_and_runs_to_now() -> None:
    buf = ReplayBuffer(max_s=2.0, preroll_s=0.064)  # 2 chunks of pre-roll
    quiet = [bytes([i, 0]) * 512 for i in range(5)]  # distinct, all below the voiced level
    for q in quiet:
        buf.add(q)
    speech = [_voice() for _ in range(4)]
    for s in speech:
        buf.add(s)
    buf.add(SILENCE)
    assert buf.replay() == [quiet[3], quiet[4], *speech, SILENCE]
    assert buf.quiet_s == CHUNK_S


def test_commit_forgets_transcribed_speech_but_keeps_a_preroll() -> None:
    buf = ReplayBuffer(max_s=2.0, preroll_s=0.064)
    for _ in range(5):
        buf.add(_voice())
    buf.commit()
    assert buf.replay() == []  # what was transcribed is never replayed
    tail = [bytes([9, 0]) * 512]
    buf.add(tail[0])
    new = _voice(5000)
    buf.add(new)
    replay = buf.replay()
    assert replay[-1] == new and replay[-2] == tail[0]
    assert len(replay) == 3  # one committed pre-roll chunk + the quiet one + the new speech


def test_the_buffer_is_bounded() -> None:
    buf = ReplayBuffer(max_s=1.0, preroll_s=0.1)
    for _ in range(1000):
        buf.add(_voice())
    assert len(buf.replay()) == round(1.0 / CHUNK_S)


def test_the_bound_is_a_duration_whatever_the_chunk_length() -> None:
    # 20 ms chunks (the caller's default), 32 ms and 100 ms ones: always exactly max_s held.
    for samples in (320, 512, 1600):
        buf = ReplayBuffer(max_s=8.0, preroll_s=0.3)
        voice = (3000 * np.sin(2 * np.pi * 200 * np.arange(samples) / 16000)).astype("<i2")
        for _ in range(round(20 * 16000 / samples)):
            buf.add(voice.tobytes())
        assert buf.seconds == 8.0, samples
        assert sum(len(c) for c in buf.replay()) == 8 * 16000 * 2


def test_untranscribed_speech_is_known_until_committed_or_out_of_the_window() -> None:
    # A planned renewal waits while this is true: the model's answer to it may be on the way.
    buf = ReplayBuffer(max_s=1.0, preroll_s=0.064)
    for _ in range(5):
        buf.add(SILENCE)
    assert not buf.untranscribed
    buf.add(_voice())
    assert buf.untranscribed
    buf.commit()  # the live stream's final user transcript arrived
    assert not buf.untranscribed
    buf.add(_voice())
    assert buf.untranscribed
    for _ in range(40):  # more than the 1 s window of silence: the speech rolled out of it
        buf.add(SILENCE)
    assert not buf.untranscribed
