"""Which brain answers: one factory per ``--brain`` choice, building a brain per session.

The local brain loads its speech models once (``warm``) and shares them between sessions.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from voicegate.backends.base import BackendError
from voicegate.backends.inprocess import InProcessStream
from voicegate.standin.brains import EchoBrain, ScriptedBrain
from voicegate.standin.scenarios import Scenario


class BrainUnavailable(RuntimeError):
    """The requested brain cannot run here (e.g. the local brain is not installed)."""


BRAINS: Final = ("scripted", "echo", "local")


class BrainFactory(Protocol):
    name: str

    async def warm(self) -> None:
        """Load what the brain needs before the server accepts calls."""
        ...

    async def open(self) -> InProcessStream: ...

    async def aclose(self) -> None: ...


class ScriptedFactory:
    name = "scripted"

    def __init__(self, default: Scenario) -> None:
        self.default = default

    async def open(self) -> InProcessStream:
        return ScriptedBrain(self.default)

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class EchoFactory:
    name = "echo"

    async def open(self) -> InProcessStream:
        return EchoBrain()

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class LocalFactory:
    """The embedded offline brain, loaded once and shared by every session."""

    name = "local"

    def __init__(self) -> None:
        try:
            from voicegate.backends import local
        except ImportError as exc:
            raise BrainUnavailable(
                "the local brain needs voicegate.backends.local and its models "
                f"(pip install 'voicegate[local]'): {exc}"
            ) from exc
        backend_cls: Any = getattr(local, "LocalBackend", None)
        if backend_cls is None:
            raise BrainUnavailable("voicegate.backends.local has no LocalBackend")
        try:
            self._backend: Any = backend_cls()
        except Exception as exc:  # BackendUnavailable: a package of the extra is missing
            raise BrainUnavailable(f"the local brain cannot run here: {exc}") from exc

    async def warm(self) -> None:
        warm = getattr(self._backend, "warm", None)
        if warm is not None:
            try:
                await warm()
            except BackendError as exc:  # the models could not be loaded
                raise BrainUnavailable(f"the local brain cannot run here: {exc}") from exc

    async def open(self) -> InProcessStream:
        stream = await self._backend.open()
        if not isinstance(stream, InProcessStream):
            raise BrainUnavailable("LocalBackend.open() did not return an InProcessStream")
        return stream

    async def aclose(self) -> None:
        await self._backend.aclose()


def make_factory(kind: str, default_scenario: str = "reply") -> BrainFactory:
    """Build the factory for ``--brain``; raises BrainUnavailable or ValueError."""
    if kind == "scripted":
        return ScriptedFactory(Scenario.parse(default_scenario))
    if kind == "echo":
        return EchoFactory()
    if kind == "local":
        return LocalFactory()
    raise ValueError(f"unknown brain {kind!r} (one of {', '.join(BRAINS)})")


__all__ = [
    "BRAINS",
    "BrainFactory",
    "BrainUnavailable",
    "EchoFactory",
    "LocalFactory",
    "ScriptedFactory",
    "make_factory",
]
