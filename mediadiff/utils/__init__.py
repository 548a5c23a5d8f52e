"""Small helpers that every part of mediadiff shares and that know nothing of diffusion or of a modality.

- :mod:`~mediadiff.utils.files`: atomic file and folder writes (temporary name, fsync, rename).
- :mod:`~mediadiff.utils.system`: what the machine is: ``/proc/cpuinfo``, native CPU bf16, a description
  of the device for reports.
- :mod:`~mediadiff.utils.lock`: a lock file between processes that a killed holder cannot leave stuck,
  and a graceful stop on SIGTERM / Ctrl-C for loops that must end with a checkpoint.
- :mod:`~mediadiff.utils.plot`: matplotlib's pyplot on the Agg backend and a figure saved as a PNG
  atomically, for every picture mediadiff draws.
- :mod:`~mediadiff.utils.cli`: what every command line shares: one-line errors (exit code 2), output
  paths checked before any work, mediadiff's warnings as one line.
- :func:`lazy_exports`: the ``__getattr__`` of a package that imports its names on first use.

Imports the standard library only (``system.machine`` imports torch and ``plot`` matplotlib when
called), so any package of mediadiff may import it; it imports no other mediadiff package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .cli import (
    ArgumentParser,
    MediadiffWarning,
    UsageExit,
    check_output_dir,
    check_output_file,
    one_line_warnings,
    usage_exit,
)
from .files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    fsync_dir,
    fsync_tree,
    publish_dir,
    recover_published,
    staged_dir,
)
from .lock import FileLock, GracefulStop, LockedError
from .plot import pyplot, save_figure
from .system import cpu_bf16_supported, cpu_name, cpuinfo, machine

__all__ = [
    "ArgumentParser",
    "FileLock",
    "GracefulStop",
    "LockedError",
    "MediadiffWarning",
    "UsageExit",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "cpu_bf16_supported",
    "cpu_name",
    "cpuinfo",
    "fsync_dir",
    "fsync_tree",
    "lazy_exports",
    "machine",
    "one_line_warnings",
    "publish_dir",
    "pyplot",
    "recover_published",
    "save_figure",
    "staged_dir",
    "usage_exit",
]


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose names are imported on first use (PEP 562).

    ``exports`` maps a public name to the submodule (relative to ``package``) that defines it; a name is
    imported once and then kept in ``namespace`` (the package's ``globals()``), so heavy dependencies
    load only when a name that needs them is used.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
