"""The one rule for a real component a test needs and cannot find: in CI (``CI=true``) the test
fails, so a green CI run means every component really ran; elsewhere it skips with the reason."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> NoReturn:
    """A missing real component fails the run in CI and skips elsewhere (with the reason)."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}; `make test` installs it", pytrace=False)
    pytest.skip(reason)


def require(ok: bool, why: str) -> None:
    """``missing(why)`` unless ``ok``: never a silent pass for a component that is not there."""
    if not ok:
        missing(why)


def require_tool(name: str) -> str:
    """The path of a Debian tool the test drives (``missing`` if it is not installed)."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (apt-get install {name})")
    return path
