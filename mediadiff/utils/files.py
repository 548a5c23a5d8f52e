"""Atomic writes: a reader never sees a half-written file or folder, and a crash leaves only temporaries.

A file is written under a temporary name in the same folder, flushed and fsynced, then renamed over
the target with ``os.replace`` (atomic on POSIX within one file system). A folder is built under a
temporary sibling name (:func:`staged_dir`), every file in it fsynced, then renamed into place
(:func:`publish_dir`); an older folder of that name is swapped out whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "fsync_tree",
    "publish_dir",
    "recover_published",
    "staged_dir",
]


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a folder's entries (new, renamed or removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under ``path`` and every folder, deepest first."""
    for root, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Write a file atomically with any writer that takes a file name (an encoder, ``save_file``).

    Yields a temporary path in ``path``'s folder (created if needed); on a clean exit the file is
    fsynced and renamed to ``path``, with the permissions of an ordinary new file (``0666`` less the
    umask); on an error the temporary file is removed and ``path`` is untouched. ``suffix`` ends the
    temporary name, for writers that pick a format by extension (``.tmp.mp4``)::

        with atomic_path("clip.mp4", suffix=".tmp.mp4") as tmp:
            encode(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; written files are read like any other
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`). Returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8. Returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """fsync everything under ``tmp`` and rename it to ``final`` (replacing an older ``final``)."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    if final.exists():  # e.g. the same step saved again after a resume: move the old one aside first
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def recover_published(folder: str | os.PathLike) -> list[Path]:
    """Undo what an interrupted :func:`publish_dir` left in ``folder``; returns the folders restored.

    :func:`publish_dir` over an existing folder renames it to ``.old-NAME-PID`` and then the new one to
    ``NAME``. A process killed between those two renames leaves no ``NAME``: the old copy is then the
    only complete one and is renamed back. An ``.old-`` folder whose ``NAME`` exists was already
    replaced and is deleted.
    """
    folder = Path(folder)
    restored = []
    if not folder.is_dir():
        return restored
    for old in sorted(folder.glob(".old-*")):
        name = old.name[len(".old-") :].rpartition("-")[0]
        target = folder / name
        if name and not target.exists():
            os.replace(old, target)
            restored.append(target)
        elif old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    if restored:
        fsync_dir(folder)
    return restored


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder atomically: yields an empty temporary sibling of ``final``; on a clean exit it is
    published as ``final`` (:func:`publish_dir`), on an error it is deleted and ``final`` is untouched.

    ::

        with staged_dir("out/model") as tmp:
            (tmp / "config.json").write_text(...)
    """
    final = Path(final).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
