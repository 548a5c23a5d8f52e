"""Folders of captioned media files, whatever the medium: finding the files and their captions, and the
dataset bookkeeping every modality's folder dataset shares (:class:`CaptionedFolder`).

Layout (the Hugging Face "folder" convention; files may sit in subfolders)::

    root/
      metadata.jsonl        {"file_name": "cats/001.mp4", "text": "a cat jumps"}   one object a line
      cats/001.mp4
      dogs/metadata.csv     file_name,text   (paths relative to the folder that holds the table)
      dogs/003.mov
      birds/004.wav
      birds/004.txt         a sidecar caption: the whole file, stripped

Every file under ``root`` whose extension is one of the given extensions is a media file, and so is
every file a metadata table names. A file's caption comes from a metadata table (``metadata.jsonl`` or
``metadata.csv``, columns ``file_name`` and ``text``), else from a sidecar ``<stem>.txt`` beside it, else
from ``default_caption``. Hidden files and folders (names starting with ".") are ignored.

Imports the standard library only; constructing a :class:`CaptionedFolder` imports torch (its record
of skipped items is a shared tensor), :meth:`CaptionedFolder.generator` and :meth:`CaptionedFolder._scan`
import numpy, torch and tqdm when called.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "METADATA_FILES",
    "WORKER_SKIPPED",
    "CaptionedFolder",
    "absolute",
    "find_captioned",
    "normalize_extensions",
    "read_table",
    "sidecar_caption",
]

METADATA_FILES = ("metadata.jsonl", "metadata.csv")

WORKER_SKIPPED = "skipped in another process (a DataLoader worker; its warning gives the reason)"
"""The reason :attr:`CaptionedFolder.skipped_files` gives for a file another process skipped."""


def absolute(path: str | os.PathLike) -> Path:
    """Absolute and normalised (``a/../b`` -> ``b``), symlinks kept: a linked file keeps the sidecar
    caption beside the link."""
    return Path(os.path.normpath(os.path.abspath(path)))


def normalize_extensions(extensions: Iterable[str]) -> set[str]:
    """Lower-case extensions with their leading dot (``"WAV"`` -> ``".wav"``)."""
    return {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}


def read_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(file_name, text)`` rows of a ``metadata.jsonl`` or ``metadata.csv``; errors name file and line."""
    path = Path(path)
    rows = []
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
                rows.append((line_no, row))
    else:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(enumerate(csv.DictReader(fh), 2))  # line 1 is the header
    out = []
    for line_no, row in rows:
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("file_name"), str)
            or not isinstance(row.get("text"), str)
        ):
            raise ValueError(f"{path}:{line_no}: expected string fields 'file_name' and 'text', got {row!r}")
        out.append((row["file_name"], row["text"]))
    return out


def sidecar_caption(path: str | os.PathLike) -> str | None:
    """The caption in ``<stem>.txt`` beside ``path`` (the whole file, stripped), or None."""
    sidecar = Path(path).with_suffix(".txt")
    return sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else None


def find_captioned(
    root: str | os.PathLike,
    extensions: Iterable[str],
    *,
    default_caption: str | None = None,
    noun: str = "file",
    skip: Callable[[str, str], None] | None = None,
) -> list[tuple[str, str]]:
    """``(path, caption)`` of every media file under ``root``, sorted by path (see the module docstring).

    Args:
        root: the folder.
        extensions: file extensions that count as media when walking ``root``.
        default_caption: caption of files that have none; ``None`` makes them an error that names them.
        noun: what a file is called in messages ("video", "audio file").
        skip: called as ``skip(path, reason)`` for a file a table lists that does not exist (it is left
            out); by default such files are left out silently.

    Raises:
        ValueError: no files found, captions missing (without ``default_caption``), two tables in one
            folder, or a malformed table (the message names the file and line).
    """
    root = Path(root)
    extensions = normalize_extensions(extensions)
    media: set[Path] = set()
    tables: dict[Path, str] = {}
    skipped = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder = Path(folder)
        present = [m for m in METADATA_FILES if m in files]
        if len(present) > 1:
            raise ValueError(f"{folder}: both {' and '.join(present)}; keep one metadata table per folder")
        for name in present:
            for file_name, text in read_table(folder / name):
                tables[absolute(folder / file_name)] = text
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                media.add(absolute(folder / name))

    for path in sorted(set(tables) - media):
        if path.is_file():
            media.add(path)
        else:
            skipped += 1
            if skip is not None:
                skip(str(path), "listed in a metadata table but missing")

    items, uncaptioned = [], []
    for path in sorted(media):
        text = tables.get(path)
        if text is None:
            text = sidecar_caption(path)
        if text is None:
            if default_caption is None:
                uncaptioned.append(path)
                continue
            text = default_caption
        items.append((str(path), text))
    if uncaptioned:
        shown = ", ".join(os.path.relpath(p, root) for p in uncaptioned[:5])
        more = f" and {len(uncaptioned) - 5} more" if len(uncaptioned) > 5 else ""
        raise ValueError(
            f"{root}: {len(uncaptioned)} {noun}(s) have no caption: {shown}{more}. Add them to "
            "metadata.jsonl / metadata.csv (file_name, text) or a sidecar <name>.txt, or pass "
            "default_caption='' to train them unconditionally"
        )
    if not items:
        raise ValueError(
            f"{root}: no readable {noun}s found (extensions {sorted(extensions)}; {skipped} skipped)"
        )
    return items


class CaptionedFolder:
    """What every folder dataset of captioned media shares: its files and captions (:func:`find_captioned`),
    randomness that is a pure function of ``(seed, epoch, index)``, and bad files that never stop an epoch.

    A subclass sets :attr:`data_key`, :attr:`noun` and :attr:`read_errors` and implements :meth:`load`
    (item ``index``, raising one of :attr:`read_errors` for a bad file). ``dataset[i]`` calls it; a file
    that fails is recorded in :attr:`skipped_files` with the reason, warned about once, and never read
    again by this process, and ``dataset[i]`` returns the next readable item (``i + 1``, ``i + 2``, ...
    wrapping around), so the substitute is deterministic too. Only when every file fails does
    ``__getitem__`` raise.

    With a ``DataLoader`` and ``num_workers > 0``, each worker holds its own copy of the dataset, but the
    record of which items were skipped is one byte per item in shared memory: a file one worker skips is
    not read again by the others, and :attr:`skipped` and :attr:`skipped_files` in the main process count
    the files every worker skipped (each worker warns with the reason for its own; the main process knows
    the reasons of the files it read itself and of :meth:`_scan`). Create the loader after :meth:`_scan`,
    which makes a new record for the files it keeps. Where shared memory cannot be had, each process keeps
    its own record (as a single process does).
    """

    data_key: str = "data"  # the item key a trainer reads
    noun: str = "file"  # what a file is called in messages
    read_errors: tuple[type[BaseException], ...] = (OSError,)  # a bad file, not a bad argument

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        extensions: Iterable[str],
        default_caption: str | None = None,
        seed: int = 0,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{type(self).__name__} root {self.root} is not a folder")
        self.seed, self.epoch = int(seed), 0
        self._skipped: dict[str, str] = {}  # path -> reason, for the files this process skipped
        self.items: list[tuple[str, str]] = find_captioned(
            self.root, extensions, default_caption=default_caption, noun=self.noun, skip=self._skip
        )
        self._flags = _shared_flags(len(self.items))  # [n] uint8: 1 where any process skipped item i

    # --- bad files ------------------------------------------------------------------------------

    @property
    def skipped_files(self) -> dict[str, str]:
        """``{path: reason}`` of every file skipped so far: by this process (construction, scan, reads)
        and by the ``DataLoader`` workers that share its record (reason :data:`WORKER_SKIPPED`)."""
        out = dict(self._skipped)
        for i in self._flags.nonzero().flatten().tolist():
            out.setdefault(self.items[i][0], WORKER_SKIPPED)
        return out

    @property
    def skipped(self) -> int:
        """How many distinct files have been skipped (see :attr:`skipped_files`)."""
        return len(self.skipped_files)

    def _skip(self, path: str, reason: str, index: int | None = None) -> None:
        """Record ``path`` (item ``index``, if it is one) as skipped and warn, once per process."""
        if index is not None:
            self._flags[index] = 1
        if path not in self._skipped:
            self._skipped[path] = reason
            warnings.warn(f"{type(self).__name__}: skipping {path}: {reason}", RuntimeWarning, stacklevel=3)

    def _scan(self, check: Callable[[str], Any]) -> dict[str, str]:
        """Run ``check(path)`` on every file; drop (and skip) those that raise one of :attr:`read_errors`.

        Returns:
            ``{path: reason}`` for the files dropped by this call.
        """
        from tqdm.auto import tqdm  # lazy: utils imports the standard library only

        keep, dropped = [], {}
        for path, text in tqdm(self.items, desc=f"scan {self.root.name}", unit=self.noun, leave=False):
            try:
                check(path)
            except self.read_errors as e:
                dropped[path] = str(e)
                self._skip(path, str(e))
                continue
            keep.append((path, text))
        if not keep:
            raise ValueError(
                f"{self.root}: all {len(self.items)} {self.noun}s failed the scan, e.g. {next(iter(dropped.values()))}"
            )
        was = {path: int(flag) for (path, _), flag in zip(self.items, self._flags.tolist())}
        self.items = keep
        self._flags = _shared_flags(len(keep))
        for i, (path, _) in enumerate(keep):
            self._flags[i] = was[path]
        return dropped

    # --- items ----------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Use the randomness of ``epoch`` (call before each epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> Any:
        """The ``torch.Generator`` of item ``index`` this epoch: seeded from ``(seed, epoch, index)`` by
        NumPy's SeedSequence, so neighbouring seeds give unrelated streams."""
        import numpy as np  # lazy: utils imports the standard library only
        import torch

        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> dict:
        """Item ``index`` without the substitution of bad files: raises the read error instead."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        n, name = len(self.items), type(self).__name__
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {name} of {n} {self.noun}s")
        index %= n
        for j in ((index + k) % n for k in range(n)):  # the item, then the next ones
            path = self.items[j][0]
            if path in self._skipped or self._flags[j]:  # skipped here or by another worker
                continue
            try:
                return self.load(j)
            except self.read_errors as e:
                self._skip(path, str(e), j)
        reasons = "; ".join(f"{p}: {r}" for p, r in list(self.skipped_files.items())[:3])
        raise RuntimeError(
            f"{name} {self.root}: all {n} {self.noun}s are unreadable for this request ({reasons})"
        )


def _shared_flags(n: int) -> Any:
    """``uint8 [n]`` zeros in shared memory (forked and spawned DataLoader workers write the same bytes),
    or in this process's own memory where shared memory cannot be had."""
    import torch  # lazy: utils imports the standard library only

    flags = torch.zeros(n, dtype=torch.uint8)
    try:
        flags.share_memory_()
    except RuntimeError:  # no /dev/shm (or it is full): each process keeps its own record
        pass
    return flags
