"""Captioned audio folders as a torch Dataset.

The folder conventions are the shared ones of :mod:`mediadiff.utils.captions` (the same as
:class:`~mediadiff.video.datasets.VideoFolder`'s)::

    root/
      metadata.jsonl        {"file_name": "speech/001.wav", "text": "a man says hello"}   one object a line
      speech/001.wav
      music/metadata.csv    file_name,text   (paths relative to the folder that holds the table)
      music/002.flac
      birds/003.ogg
      birds/003.txt         a sidecar caption: the whole file, stripped

Every file under ``root`` whose extension is in :data:`~mediadiff.audio.io.AUDIO_READ_EXTENSIONS` is
audio (wav, flac, ogg, opus, mp3, m4a / mp4, webm, mkv, ...), and so is every file a table names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

import av
import torch
from torch.utils.data import Dataset

from mediadiff.utils.captions import CaptionedFolder

from .io import AUDIO_READ_EXTENSIONS, AudioError, AudioInfo, probe, read_audio

__all__ = ["AudioFolder"]


class AudioFolder(CaptionedFolder, Dataset):
    """Audio clips with captions from a folder; items are ``{"audio", "text", "path"}``.

    ``audio`` is float32 ``[c t]`` in [-1, 1] at ``sample_rate`` (``c = channels``, ``t = num_samples``),
    ``text`` the caption, ``path`` the file's path: the keys of the procedural
    :class:`~mediadiff.audio.tones.Tones` set, so the two swap in a recipe.

    With a clip length (``duration`` seconds or ``num_samples``), each item is a window of its file:
    at a random place (``crop="random"``), at the start or in the middle. Only the window is decoded
    (:func:`~mediadiff.audio.io.probe` gives the length, :func:`~mediadiff.audio.io.read_audio` seeks),
    then resampled to ``sample_rate``. A file shorter than the clip is padded with zeros at the end
    (``short="pad"``) or skipped like a bad file (``short="skip"``). Without a clip length, items are
    whole files (of different lengths: batch them with a collate function that pads).

    Randomness is a pure function of ``(seed, epoch, index)``: the same seed gives the same crops in
    any process and any worker order; :meth:`set_epoch` draws new crops for a new epoch.

    Bad files never stop an epoch. A file that cannot be read (zero bytes, not audio, corrupt,
    truncated, no samples, no audio stream, channels that cannot be mixed to ``channels``, too short
    with ``short="skip"``) is recorded in :attr:`skipped_files` with the reason, warned about once, and
    never read again by this process; ``dataset[i]`` then returns the next readable item (``i + 1``,
    ``i + 2``, ... wrapping around), so the substitute is deterministic too. ``validate=True`` (or
    :meth:`scan`) probes every file up front instead and drops the bad ones it can see without decoding.
    A file with NaN or infinite samples in the window read is skipped the same way; samples beyond full
    scale (a float file's ``|x| > 1``) are clipped to [-1, 1], not skipped. With a ``DataLoader`` and
    ``num_workers > 0`` the workers share the record of skipped items (shared memory), so
    :attr:`skipped` and :attr:`skipped_files` in the main process count every worker's skips; call
    :meth:`scan` before creating the loader.

    Args:
        root: the folder.
        sample_rate: the items' sample rate; files at other rates are resampled.
        duration: clip length in seconds (exclusive with ``num_samples``); ``None``: whole files.
        num_samples: clip length in samples at ``sample_rate``.
        channels: 1 mixes every file down to mono, 2 makes mono files stereo; ``None`` keeps each file's.
        crop: where the window sits in a longer file: ``"random"``, ``"start"`` or ``"center"``.
        short: a file shorter than the clip is zero-padded at the end (``"pad"``) or skipped (``"skip"``).
        seed: base seed for the crops.
        default_caption: caption for files that have none. ``None`` (default) makes a file without a
            caption an error at construction that names the files; ``""`` trains them unconditionally.
        validate: probe every file at construction (:meth:`scan`) and drop the bad ones.
        extensions: file extensions that count as audio when walking ``root``.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: bad arguments, no audio files found, captions missing (without ``default_caption``),
            or a malformed metadata table (the message names the file and line).
    """

    data_key = "audio"  # the item key a trainer reads
    noun = "audio file"
    read_errors = (AudioError, OSError, av.FFmpegError)  # a bad file, not a bad argument

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        sample_rate: int = 16000,
        duration: float | None = None,
        num_samples: int | None = None,
        channels: int | None = 1,
        crop: Literal["random", "start", "center"] = "random",
        short: Literal["pad", "skip"] = "pad",
        seed: int = 0,
        default_caption: str | None = None,
        validate: bool = False,
        extensions: Iterable[str] = AUDIO_READ_EXTENSIONS,
    ):
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        if duration is not None and num_samples is not None:
            raise ValueError(f"give either duration ({duration}) or num_samples ({num_samples}), not both")
        if duration is not None:
            if not duration > 0:
                raise ValueError(f"duration must be > 0 seconds, got {duration!r}")
            num_samples = max(1, round(duration * sample_rate))
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
        if channels is not None and (not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels must be a positive int or None, got {channels!r}")
        if crop not in ("random", "start", "center"):
            raise ValueError(f"crop must be 'random', 'start' or 'center', got {crop!r}")
        if short not in ("pad", "skip"):
            raise ValueError(f"short must be 'pad' or 'skip', got {short!r}")
        self.sample_rate, self.num_samples, self.channels = sample_rate, num_samples, channels
        self.crop, self.short = crop, short
        self._infos: dict[str, AudioInfo] = {}  # probed once per file and process
        super().__init__(root, extensions=extensions, default_caption=default_caption, seed=seed)
        if validate:
            self.scan()

    @property
    def duration(self) -> float | None:
        """Clip length in seconds (``None``: whole files)."""
        return None if self.num_samples is None else self.num_samples / self.sample_rate

    # --- bad files ------------------------------------------------------------------------------

    def _probe(self, path: str) -> AudioInfo:
        """The file's metadata, checked against the request (channels, and length with ``short="skip"``)."""
        info = self._infos.get(path)
        if info is None:
            info = self._infos[path] = probe(path)
        if self.channels not in (None, 1, info.channels) and not (self.channels == 2 and info.channels == 1):
            raise AudioError(f"{path}: has {info.channels} channels, cannot make {self.channels}")
        if self.num_samples is not None and self.short == "skip" and self._available(info) < self.num_samples:
            raise AudioError(
                f"{path}: too short: {info.duration:.3f} s, clips are {self.duration:g} s (short='skip')"
            )
        return info

    def _available(self, info: AudioInfo) -> int:
        """Whole samples the file holds at ``sample_rate``."""
        return info.num_frames * self.sample_rate // info.sample_rate

    def scan(self) -> dict[str, str]:
        """Probe every file without decoding it and drop those that cannot give a clip.

        A file is dropped when it is missing, empty, not audio, has no audio stream, is a truncated WAV
        or Ogg, has channels that cannot be mapped to ``channels``, or (with ``short="skip"``) is
        shorter than the clip. Data corrupt inside a well-formed file is only found when decoded;
        ``__getitem__`` still skips such files.

        Returns:
            ``{path: reason}`` for the files dropped by this call.
        """
        return self._scan(self._probe)

    # --- items ----------------------------------------------------------------------------------

    def window(self, index: int) -> tuple[float, float | None]:
        """``(start, duration)`` in seconds of item ``index``'s window this epoch (``duration`` None:
        the whole file); probes the file."""
        path = self.items[index][0]
        info = self._probe(path)
        n = self.num_samples
        if n is None or self._available(info) <= n:
            return 0.0, None
        slack = self._available(info) - n  # the window can start at any of slack + 1 samples
        if self.crop == "start":
            first = 0
        elif self.crop == "center":
            first = slack // 2
        else:
            first = int(torch.randint(0, slack + 1, (1,), generator=self.generator(index)))
        return first / self.sample_rate, n / self.sample_rate

    def load(self, index: int) -> dict:
        """Item ``index`` without the substitution of bad files: raises the read error instead."""
        path, text = self.items[index]
        start, duration = self.window(index)
        audio, _ = read_audio(
            path, sample_rate=self.sample_rate, channels=self.channels, start=start, duration=duration
        )  # [c ~num_samples]
        if self.num_samples is not None:
            audio = _fit(audio, self.num_samples)  # [c num_samples]
        return {"audio": audio, "text": text, "path": path}

    def __repr__(self) -> str:
        length = "whole files" if self.duration is None else f"duration={self.duration:g} s"
        return (
            f"AudioFolder({str(self.root)!r}, {len(self)} files, sample_rate={self.sample_rate}, {length}, "
            f"channels={self.channels}, crop={self.crop!r}, short={self.short!r}, seed={self.seed}, "
            f"skipped={self.skipped})"
        )


def _fit(audio: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``[c t]`` -> ``[c num_samples]``: cut, or zero-padded at the end (a short file, or a resampled
    window a sample short)."""
    t = audio.shape[-1]
    if t >= num_samples:
        return audio[..., :num_samples]  # [c num_samples]
    return torch.nn.functional.pad(audio, (0, num_samples - t))  # [c num_samples]
