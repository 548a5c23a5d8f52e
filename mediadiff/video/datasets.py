"""Captioned video folders as a torch Dataset (the folder conventions and the bookkeeping live in
:mod:`mediadiff.utils.captions`, shared with the audio side).

Layout (the Hugging Face "folder" convention; videos may sit in subfolders)::

    root/
      metadata.jsonl        {"file_name": "cats/001.mp4", "text": "a cat jumps"}   one object a line
      cats/001.mp4
      cats/002.webm
      dogs/metadata.csv     file_name,text   (paths relative to the folder that holds the file)
      dogs/003.mov
      birds/004.gif
      birds/004.txt         a sidecar caption: the whole file, stripped

Every file under ``root`` whose extension is in :data:`~mediadiff.video.io.READ_EXTENSIONS` is a
video, and so is every file a metadata table names. A video's caption comes from a metadata table
(``metadata.jsonl`` or ``metadata.csv``, columns ``file_name`` and ``text``), else from a sidecar
``<stem>.txt`` beside it. Hidden files and folders (names starting with ".") are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

import av
from torch.utils.data import Dataset

from mediadiff.utils.captions import CaptionedFolder

from .io import (
    READ_EXTENSIONS,
    Crop,
    Size,
    VideoError,
    _as_hw,
    _check_selection,
    clip_indices,
    probe,
    read_video,
    to_model,
)

__all__ = ["VideoFolder"]


class VideoFolder(CaptionedFolder, Dataset):
    """Videos with captions from a folder; items are ``{"video", "text", "path"}``.

    ``video`` is float32 ``[c f h w]`` in [-1, 1] (``c = 3``, ``f = num_frames``, ``(h, w) = size``),
    ``text`` the caption, ``path`` the file's path. These are the keys the procedural
    :class:`~mediadiff.video.shapes.Shapes` set returns, so the two swap in a recipe.

    Frame selection (see :func:`~mediadiff.video.io.read_video`): ``num_frames`` frames, every
    ``stride``-th source frame or resampled to ``fps``; the clip starts at a random place
    (``clip="random"``), at the first frame (``"start"``) or in the middle (``"center"``); frames are
    scaled so the short side covers ``size`` and cropped at a random place or the centre.

    Randomness is a pure function of ``(seed, epoch, index)``: the same seed gives the same items in
    any process and any worker order; :meth:`set_epoch` draws new clips and crops for a new epoch.

    Bad files never stop an epoch. A file that cannot be read (missing, zero bytes, random bytes,
    truncated, no video stream, or too few frames for the request) is recorded in
    :attr:`skipped_files` with the reason, warned about once, and never read again by this process;
    ``dataset[i]`` then returns the next readable item (``i + 1``, ``i + 2``, ... wrapping around), so
    the substitute is deterministic too. Only when every file fails does ``__getitem__`` raise.
    ``validate=True`` (or :meth:`scan`) probes every file up front instead and drops the bad ones,
    so ``len(dataset)`` counts only good files.

    With a ``DataLoader`` and ``num_workers > 0``, the workers share the record of skipped items (one
    byte per item in shared memory): a file one worker skips is not read again by the others, and
    :attr:`skipped` and :attr:`skipped_files` in the main process count every worker's skips (the
    workers warn with the reasons). Call :meth:`scan` before creating the loader. With
    ``persistent_workers=True`` workers keep the epoch they started with: call :meth:`set_epoch`
    before creating the loader's iterator, or use non-persistent workers.

    What each kind of file gives is listed in :func:`~mediadiff.video.io.read_video`: rotated files
    come upright, alpha is dropped, grayscale and 10-bit files come as RGB uint8; a file shorter than
    the clip is skipped (never padded).

    Args:
        root: the folder.
        num_frames: frames per clip.
        size: output ``(h, w)``, or an int for square frames.
        stride: take every ``stride``-th source frame (exclusive with ``fps``).
        fps: resample clips to this frame rate instead.
        clip: where a clip starts: ``"random"``, ``"start"`` or ``"center"``.
        crop: ``"random"``, ``"center"``, or ``None`` to resize to ``size`` without keeping the aspect.
        seed: base seed for clip starts and crops.
        default_caption: caption for videos that have none. ``None`` (default) makes a video without
            a caption an error at construction that names the files; pass ``""`` to train those
            videos unconditionally.
        validate: probe every file at construction (:meth:`scan`) and drop the bad ones.
        extensions: file extensions that count as videos when walking ``root``.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: no videos found, captions missing (without ``default_caption``), or a malformed
            metadata table (the message names the file and line).
    """

    data_key = "video"  # the item key a trainer reads
    noun = "video"
    read_errors = (VideoError, OSError, av.FFmpegError)  # a bad file, not a bad argument

    def __init__(
        self,
        root: str | os.PathLike,
        num_frames: int,
        size: Size,
        *,
        stride: int = 1,
        fps: float | None = None,
        clip: Literal["random", "start", "center"] = "random",
        crop: Crop = "random",
        seed: int = 0,
        default_caption: str | None = None,
        validate: bool = False,
        extensions: Iterable[str] = READ_EXTENSIONS,
    ):
        _check_selection(num_frames, stride, fps)
        _as_hw(size)
        if clip not in ("random", "start", "center"):
            raise ValueError(f"clip must be 'random', 'start' or 'center', got {clip!r}")
        if crop not in ("random", "center", None):
            raise ValueError(f"crop must be 'random', 'center' or None, got {crop!r}")
        self.num_frames, self.size, self.stride, self.fps = num_frames, size, stride, fps
        self.clip, self.crop = clip, crop
        super().__init__(root, extensions=extensions, default_caption=default_caption, seed=seed)
        if validate:
            self.scan()

    def _span_fits(self, total: int, src_fps: float) -> None:
        clip_indices(total, self.num_frames, src_fps=src_fps, stride=self.stride, fps=self.fps, start=0)

    def scan(self, *, count_frames: bool = True) -> dict[str, str]:
        """Probe every file without decoding it and drop those that cannot give a clip.

        A file is dropped when it is missing, not a video, has no video stream, or has fewer frames
        than ``num_frames`` with this ``stride`` / ``fps`` needs. With ``count_frames`` (default) the
        packets are counted rather than trusting the header, which also catches truncated files; this
        reads each file once but decodes nothing. Data corrupt inside a well-formed container is only
        found when decoded; ``__getitem__`` still skips such files.

        Returns:
            ``{path: reason}`` for the files dropped by this call.
        """

        def check(path: str) -> None:
            info = probe(path, count_frames=count_frames)
            self._span_fits(info.num_frames, info.fps)

        return self._scan(check)

    # --- items ----------------------------------------------------------------------------------

    def load(self, index: int) -> dict:
        """Item ``index`` without the substitution of bad files: raises the read error instead."""
        path, text = self.items[index]
        start = {"random": "random", "center": "center", "start": 0}[self.clip]
        video = read_video(
            path,
            self.num_frames,
            stride=self.stride,
            fps=self.fps,
            start=start,
            size=self.size,
            crop=self.crop,
            generator=self.generator(index),
        )  # uint8 [f h w 3]
        return {"video": to_model(video), "text": text, "path": path}  # video: [3 f h w] in [-1, 1]

    def __repr__(self) -> str:
        step = f"fps={self.fps}" if self.fps is not None else f"stride={self.stride}"
        return (
            f"VideoFolder({str(self.root)!r}, {len(self)} videos, num_frames={self.num_frames}, size={self.size}, "
            f"{step}, clip={self.clip!r}, crop={self.crop!r}, seed={self.seed}, skipped={self.skipped})"
        )
