"""Python tools: ``python = "module:function"`` in the agents file, for teams that want code.

The function is imported when the file is read (at start and by ``--check-config``), so a
missing module or a name that is not callable is a start-up problem, not a failed call. Modules
next to the agents file are importable without installing them (the file's folder joins
``sys.path`` once), which is what a team trying a tool out expects.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from voicegate.conversation.tools import ToolFunc

__all__ = ["load_function"]


def load_function(ref: str, base: Path | None = None) -> ToolFunc:
    """The callable ``ref`` (``module:function``) names; raises ValueError saying what is
    wrong (bad form, module missing or failing to import, attribute missing, not callable)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'python {ref!r} must be "module:function"')
    if base is not None and str(base) not in sys.path:
        sys.path.append(str(base))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"python {ref!r}: module {exc.name!r} not found") from None
    except Exception as exc:
        raise ValueError(f"python {ref!r}: importing {module_name!r} failed: {exc!r}") from None
    func: object = module
    for part in attr.split("."):
        func = getattr(func, part, None)
        if func is None:
            raise ValueError(f"python {ref!r}: {module_name!r} has no {attr!r}")
    if not callable(func):
        raise ValueError(f"python {ref!r}: {attr!r} is not callable")
    return func
