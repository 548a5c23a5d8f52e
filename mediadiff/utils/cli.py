"""What every command line of mediadiff shares: one-line errors, output paths checked before any work,
and mediadiff's own warnings as one line each.

- :class:`ArgumentParser`: argparse whose errors are one line (``prog: error: message (see prog --help)``)
  and exit code 2, instead of the usage block.
- :func:`usage_exit`: the same for a check after parsing: one line on stderr, then :class:`UsageExit`
  (a ``SystemExit`` with code 2 whose ``str()`` is the message).
- :func:`check_output_file` / :func:`check_output_dir`: refuse, before a model is loaded or a step is
  sampled, an output that could not be written: a path under a regular file, a folder where a file is
  expected (or the reverse), a folder this process cannot create files in (tried with a real temporary
  file, so it holds for root too, for whom permission bits do not count). A folder that does not exist
  yet is fine: the writers create it (:func:`~mediadiff.utils.files.atomic_path`).
- :class:`MediadiffWarning`: the base of mediadiff's warnings (a prompt cut to the encoder's limit, a
  size the model was not trained on); :func:`one_line_warnings` prints each as ``prog: warning: ...``,
  once per command.

Imports the standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

__all__ = [
    "ArgumentParser",
    "MediadiffWarning",
    "UsageExit",
    "check_output_dir",
    "check_output_file",
    "one_line_warnings",
    "usage_exit",
]


class MediadiffWarning(UserWarning):
    """Base class of mediadiff's own warnings: something still runs but may not give what was asked."""


class UsageExit(SystemExit):
    """A bad command-line value, already printed as one line: exit code 2; ``str()`` is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 2


def usage_exit(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` (one line) to stderr and raise :class:`UsageExit` (exit code 2)."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise UsageExit(message)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: message``) instead of the usage block, exit code 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (``.`` for a relative path)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _check_can_create_in(folder: Path, what: str) -> None:
    """Create and remove a temporary file in ``folder``; ValueError naming ``what`` if that fails."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".mediadiff-write-check-")
    except OSError as err:
        raise ValueError(
            f"{what}: cannot create files in {folder} ({err.strerror or err}); give a path in a folder you can write"
        ) from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path: str | os.PathLike, flag: str = "-o") -> Path:
    """``path`` as a file this process can write (its folder may not exist yet: it is created on
    writing), or a ValueError that starts with ``flag path`` and says what is wrong and what is valid.

    Refused: an existing folder at ``path``; a parent that is a regular file (``notes.txt/out.mp4``); a
    folder where files cannot be created (read-only, ``/proc``, no permission). Nothing is left behind.
    """
    target = Path(path).expanduser()
    what = f"{flag} {path}"
    if target.is_dir():
        raise ValueError(
            f"{what}: is a folder; give a file name (e.g. {target / 'out'}{target.suffix or ''})"
        )
    parent = target.parent
    anchor = _existing_ancestor(parent)
    if not anchor.is_dir():
        raise ValueError(f"{what}: {anchor} is a file, not a folder; give a path whose folders are folders")
    _check_can_create_in(anchor, what)
    return target


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """``path`` as a folder this process can write in (created later if missing), or a ValueError that
    starts with ``flag path``: an existing regular file, a parent that is a file, a folder where files
    cannot be created."""
    folder = Path(path).expanduser()
    what = f"{flag} {path}"
    if os.path.lexists(folder) and not folder.is_dir():
        raise ValueError(f"{what}: is a file, not a folder; give a folder (created if missing)")
    anchor = _existing_ancestor(folder)
    if not anchor.is_dir():
        raise ValueError(f"{what}: {anchor} is a file, not a folder; give a folder (created if missing)")
    _check_can_create_in(anchor, what)
    return folder


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Within the block, each :class:`MediadiffWarning` is printed once as ``prog: warning: message``
    (one line on stderr); other warnings are shown as usual."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", MediadiffWarning)  # every one reaches show(), which prints it once
        shown = warnings.showwarning
        printed: set[str] = set()

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, MediadiffWarning):
                shown(message, category, filename, lineno, file, line)
            elif str(message) not in printed:  # the same warning from two calls of one command: once
                printed.add(str(message))
                print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)

        warnings.showwarning = show
        yield
