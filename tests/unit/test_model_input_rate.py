"""``--model-input-rate``: the rates each model documents, checked at start like every option."""

from __future__ import annotations

import pytest

from voicegate.backends.bedrock.settings import BedrockSettings
from voicegate.cli import main
from voicegate.config import ConfigError, resolve
from voicegate.sonic.models import input_rate_problem, input_rate_warning

V1 = "amazon.nova-sonic-v1:0"


@pytest.mark.parametrize("rate", ["8000", "16000", "24000"])
def test_nova2_takes_every_documented_rate(rate: str) -> None:
    assert resolve(None, env={"VOICEGATE_MODEL_INPUT_RATE": rate}).model_input_rate == int(rate)


def test_the_default_is_16_khz() -> None:
    assert resolve(None, env={}).model_input_rate == 16000
    assert BedrockSettings(region="us-east-1").input_rate == 16000


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"VOICEGATE_MODEL_INPUT_RATE": "44100"}, "must be one of 8000, 16000, 24000"),
        (
            {"VOICEGATE_MODEL_INPUT_RATE": "24000", "VOICEGATE_MODEL_ID": V1},
            "not a documented input rate of Nova Sonic v1",
        ),
        (
            {"VOICEGATE_MODEL_INPUT_RATE": "8000", "VOICEGATE_MODEL_ID": "us." + V1},
            "use one of: 16000",
        ),
    ],
)
def test_a_rate_the_model_does_not_document_is_refused_at_start(
    env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(None, env=env)
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


def test_serve_exits_2_naming_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model-input-rate", "24000", "--model-id", V1, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "model_input_rate 24000" in err and "Nova Sonic v1" in err


def test_the_bedrock_settings_refuse_it_too() -> None:
    problems = BedrockSettings(region="us-east-1", model_id=V1, input_rate=8000).validate()
    assert any("model_input_rate 8000" in p for p in problems)
    assert BedrockSettings(region="us-east-1", input_rate=24000).validate() == []


def test_an_unknown_model_gets_a_warning_not_an_error() -> None:
    later = "amazon.nova-3-sonic-v1:0"
    assert input_rate_problem(later, "", 24000) is None
    assert resolve(None, env={"VOICEGATE_MODEL_INPUT_RATE": "24000", "VOICEGATE_MODEL_ID": later})
    settings = BedrockSettings(region="us-east-1", model_id=later, input_rate=24000)
    assert settings.validate() == []
    assert any("model_input_rate 24000" in w for w in settings.warnings())
    # The operator says it is a Nova 2 model: Nova 2's rates, no doubt left.
    assert input_rate_warning(later, "nova2", 24000) is None
    assert input_rate_warning(later, "", 16000) is None


@pytest.mark.parametrize(("decoded", "model"), [(24000, 24000), (16000, 8000), (16000, 24000)])
def test_the_inbound_resampler_gives_the_call_16_khz_and_the_model_its_rate(
    decoded: int, model: int
) -> None:
    import av
    import numpy as np

    from voicegate.audio.resample import InboundResampler

    resampler = InboundResampler(16000, model)
    step = decoded // 50  # 20 ms frames
    call = sent = 0
    for n in range(50):
        if n == 20:
            continue  # a lost frame: its time is filled with silence on both sides
        tone = (8000 * np.sin(np.arange(step) / 7)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = decoded
        frame.pts = n * step
        ours, theirs = resampler.split(frame)
        call += ours.size
        sent += theirs.size
    # One second of audio at each rate, less the filter delay of a resampled side.
    assert 16000 - 64 <= call <= 16000 and model - 64 <= sent <= model
    assert resampler.gap_samples == 320
