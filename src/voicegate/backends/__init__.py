"""Speech backends behind one interface (see base.py), and the choice between them."""

from __future__ import annotations

from typing import Any

from voicegate.backends.base import Backend, BackendUnavailable

__all__ = ["Backend", "BackendUnavailable", "make_backend"]


def make_backend(
    name: str,
    model_id: str = "",
    region: str = "",
    endpoint: str = "",
    transport: str = "",
    calls_per_connection: int = 0,
    model_family: str = "",
    input_rate: int = 0,
) -> tuple[Backend, str]:
    """The backend for ``--backend NAME`` and a sentence saying why it was chosen."""
    bedrock: dict[str, Any] = {
        "model_id": model_id,
        "region": region,
        "endpoint": endpoint,
        "transport": transport,
        "calls_per_connection": calls_per_connection,
        "model_family": model_family,
        "input_rate": input_rate,
    }
    if name == "echo":
        from voicegate.backends.echo import EchoBackend

        return EchoBackend(), "echo backend requested"
    if name == "local":
        return _local(), "local backend requested"
    if name == "bedrock":
        return _bedrock(**bedrock), "bedrock backend requested"
    if name == "auto":
        try:
            from voicegate.backends.bedrock.client import credentials_status
        except ImportError:
            ok, why = False, "the bedrock extra is not installed"
        else:
            ok, why = credentials_status()
        if ok:
            return _bedrock(**bedrock), f"auto: using bedrock because {why}"
        try:
            return _local(), f"auto: using the embedded local backend because {why}"
        except BackendUnavailable as exc:
            from voicegate.backends.echo import EchoBackend

            return EchoBackend(), f"auto: using echo because {why} and {exc}"
    raise BackendUnavailable(f"unknown backend {name!r}")


def _local() -> Backend:
    try:
        from voicegate.backends.local import LocalBackend
    except ImportError as exc:
        raise BackendUnavailable(
            f"the local backend needs the 'local' extra (pip install 'voicegate[local]'): {exc}"
        ) from exc
    return LocalBackend()


def _bedrock(
    model_id: str,
    region: str,
    endpoint: str,
    transport: str,
    calls_per_connection: int,
    model_family: str,
    input_rate: int,
) -> Backend:
    try:
        from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings
    except ImportError as exc:
        raise BackendUnavailable(
            f"the bedrock backend needs the 'bedrock' extra (pip install 'voicegate[bedrock]'): "
            f"{exc}"
        ) from exc
    overrides: dict[str, Any] = {}
    if input_rate:
        overrides["input_rate"] = input_rate
    if model_family:
        overrides["model_family"] = model_family
    if calls_per_connection:
        overrides["calls_per_connection"] = calls_per_connection
    if model_id:
        overrides["model_id"] = model_id
    if region:
        overrides["region"] = region
    if endpoint:
        overrides["endpoint"] = endpoint
    if transport:
        overrides["transport"] = transport
    settings = BedrockSettings(**overrides)
    problems = settings.validate()
    if problems:
        raise BackendUnavailable("invalid bedrock settings: " + "; ".join(problems))
    return BedrockBackend(settings)
