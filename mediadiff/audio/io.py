"""Audio files in and out: read a clip or a window of it, probe metadata, resample, write wav / flac / ogg / mp3.

The edge format is float32 ``[c t]`` in [-1, 1] (``c`` channels, ``t`` samples), the layout models see
(batched: ``[b c t]``).

Reading (:func:`read_audio`) goes through libsndfile (``soundfile``) wherever it recognises the file's
content (WAV, FLAC, Ogg Vorbis and Opus, MP3 with libsndfile >= 1.1, AIFF, ...), since it counts and
seeks samples exactly; everything else (AAC in mp4 / m4a / mov, Opus or Vorbis in webm / mkv, ...) goes
through PyAV, FFmpeg's decoders. ``start`` / ``duration`` read a window: libsndfile seeks to the sample;
PyAV seeks the container to a little before the window (so the decoder settles: overlapped transforms,
MP3's bit reservoir, Opus's pre-roll), decodes and places each frame by its timestamp, so a window holds
the same samples as the whole-file read. Encoder delay and padding are removed: libsndfile and FFmpeg
apply the gapless-playback tags of MP3 and the pre-skip of Opus, FFmpeg drops AAC's priming frame
through mp4's edit list, and the AAC padding after the stated duration is cut off here.

Matroska / WebM store timestamps in milliseconds, so after a seek the window there is placed to within
half a millisecond (everywhere else to the sample).

:func:`probe` reads sample rate, channels, length, codec and container from the headers without
decoding (:attr:`AudioInfo.exact` says whether the length is a stated sample count or an estimate).
:func:`write_audio` writes atomically (temporary file, fsync, rename). Every failure on a bad file
raises :class:`AudioError` (a ``ValueError``) naming the file; bad arguments raise ``ValueError``.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch

from mediadiff.utils import atomic_path

if TYPE_CHECKING:
    import av

__all__ = [
    "AUDIO_READ_EXTENSIONS",
    "AUDIO_WRITE_FORMATS",
    "AudioError",
    "AudioInfo",
    "probe",
    "read_audio",
    "resample",
    "write_audio",
]

AUDIO_READ_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"}
    | {".m4a", ".aac", ".mp4", ".mov", ".webm", ".mkv", ".mka"}
)
"""Extensions treated as audio when a folder is scanned (any file libsndfile or FFmpeg reads works in
:func:`read_audio`; the content decides, not the name)."""

AUDIO_WRITE_FORMATS: dict[str, str] = {
    ".wav": "WAV through libsndfile: 16-bit PCM (bits=24: 24-bit PCM, bits=32: 32-bit float)",
    ".flac": "FLAC through libsndfile: 16-bit (bits=24: 24-bit), lossless",
    ".ogg": "Ogg Vorbis through libsndfile's libvorbis (quality= 0..1, else libsndfile's default)",
    ".mp3": "MP3 through PyAV's libmp3lame (bitrate= bits per second, default 192k), 1 or 2 channels",
}
"""Extension -> how :func:`write_audio` writes it."""

_PREROLL = 0.25  # seconds decoded before a window so that lossy decoders settle
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_WAV_SENTINELS = (0, 0xFFFFFFFF)  # data sizes of a wav whose writer did not know its length (a pipe)
_RAW_STREAMS = {"aac", "mp3", "ac3", "eac3", "dts", "mp2"}  # no container: FFmpeg guesses the duration


class AudioError(ValueError):
    """An audio file that cannot be read as asked: missing, empty, not audio, no audio stream, corrupt,
    truncated, or with channels that cannot be mapped to the ones asked."""


# --- opening --------------------------------------------------------------------------------------


def _reason(e: Exception) -> str:
    """The library's message without errno prefixes."""
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).strip()


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such audio file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, expected an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes), expected audio")
    return p


_UNKNOWN_LENGTH = 2**62  # libsndfile's frame count of a file that states none (SF_COUNT_MAX)


def _open_sf(p: Path) -> sf.SoundFile | None:
    """The file opened by libsndfile, or None when libsndfile does not read it or cannot count its
    samples (a FLAC written to a pipe states no length): then FFmpeg is asked."""
    try:
        handle = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    if handle.frames >= _UNKNOWN_LENGTH:
        handle.close()
        return None
    try:
        _check_sf(handle, p)
    except BaseException:
        handle.close()
        raise
    return handle


def _check_sf(handle: sf.SoundFile, p: Path) -> None:
    """libsndfile opens some damaged files quietly: a cut WAV (its length is read from the file size),
    an Ogg stream without its last page (no samples). Name them."""
    log = handle.extra_info
    if handle.format in ("WAV", "WAVEX"):
        m = re.search(r"^data : (\d+) \(should be (\d+)\)", log, re.M)
        if m and int(m.group(1)) not in _WAV_SENTINELS and int(m.group(1)) > int(m.group(2)):
            raise AudioError(
                f"{p}: truncated WAV: the header promises {int(m.group(1))} bytes of samples, the file "
                f"holds {int(m.group(2))}"
            )
    if handle.frames <= 0:
        if "ended unexpectedly" in log:
            raise AudioError(f"{p}: truncated {handle.format} file (it ends without its last page)")
        raise AudioError(f"{p}: holds no audio samples")


def _open_av(p: Path) -> tuple[av.container.InputContainer, av.AudioStream]:
    import av  # lazy: PyAV costs ~0.1 s to import, and wav / flac / ogg go through libsndfile

    try:
        container = av.open(str(p), mode="r", metadata_errors="replace")  # tags not in UTF-8
    except av.FFmpegError as e:
        raise AudioError(f"{p}: not a readable audio file ({_reason(e)})") from e
    if not container.streams.audio:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        container.close()
        raise AudioError(f"{p}: no audio stream (streams found: {kinds})")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # a codec id FFmpeg has no decoder for
        container.close()
        raise AudioError(f"{p}: not a readable audio file (FFmpeg has no decoder for its audio stream)")
    if not stream.codec_context.sample_rate or not stream.codec_context.channels:
        container.close()
        raise AudioError(
            f"{p}: not a readable audio file (FFmpeg finds a stream without sample rate or channels)"
        )
    return container, stream


# --- metadata -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learns from a file's headers, without decoding."""

    path: str
    format: str  # container: libsndfile's major format ("wav", "flac", "ogg", "mp3") or FFmpeg's demuxer
    codec: str  # "pcm_16", "pcm_24", "float", "flac", "vorbis", "opus", "mp3", "aac", ...
    sample_rate: (
        int  # the decoded rate (Opus: 48 kHz through FFmpeg, the rate it was encoded at through libsndfile)
    )
    channels: int
    num_frames: int  # samples per channel
    duration: float  # seconds: num_frames / sample_rate
    exact: bool  # True: num_frames is the sample count the file states (libsndfile); False: estimated
    # from the container's duration (FFmpeg), typically within a few milliseconds

    @property
    def shape(self) -> tuple[int, int]:
        """``(c, t)``: the shape :func:`read_audio` returns for the whole file at its own rate."""
        return (self.channels, self.num_frames)


_SF_CODECS = {"MPEG_LAYER_III": "mp3", "MPEG_LAYER_II": "mp2", "VORBIS": "vorbis", "OPUS": "opus"}


def _sf_info(handle: sf.SoundFile, p: Path) -> AudioInfo:
    fmt = handle.format.lower()
    codec = "flac" if fmt == "flac" else _SF_CODECS.get(handle.subtype, handle.subtype.lower())
    return AudioInfo(
        path=str(p),
        format=fmt,
        codec=codec,
        sample_rate=int(handle.samplerate),
        channels=int(handle.channels),
        num_frames=int(handle.frames),
        duration=handle.frames / handle.samplerate,
        exact=True,
    )


def _stated_frames(container: av.container.InputContainer, stream: av.AudioStream) -> int | None:
    """Samples the container states (stream duration, else container duration), at the decoded rate."""
    import av  # lazy: PyAV costs ~0.1 s to import, and wav / flac / ogg go through libsndfile

    sr = stream.codec_context.sample_rate
    if stream.duration is not None and stream.time_base is not None:
        return round(stream.duration * stream.time_base * sr)
    if container.duration is not None:
        return round(container.duration / av.time_base * sr)
    return None


def _counted_frames(container: av.container.InputContainer, stream: av.AudioStream) -> int | None:
    """Samples by demuxing only (packet durations), for containers that state no duration."""
    tb, sr, total = stream.time_base, stream.codec_context.sample_rate, 0
    for packet in container.demux(stream):
        if packet.duration:
            total += packet.duration
    return round(total * tb * sr) if total and tb is not None else None


def probe(path: str | os.PathLike) -> AudioInfo:
    """Metadata of the first audio stream of ``path``, from its headers, without decoding.

    ``num_frames`` is exact (``exact=True``) for what libsndfile reads (WAV, FLAC, Ogg, MP3, ...); for
    FFmpeg's containers (mp4, webm, mkv, ...) it comes from the stated duration (``exact=False``), which
    may differ from the decoded length by a few milliseconds (encoder padding, millisecond timestamps).
    A container that states no duration has its packets counted (read, not decoded).

    Raises:
        AudioError: missing, empty, not audio, no audio stream, truncated WAV / Ogg.
    """
    p = _check_file(path)
    handle = _open_sf(p)
    if handle is not None:
        with handle:
            return _sf_info(handle, p)
    import av  # lazy (see _open_av)

    container, stream = _open_av(p)
    with container:
        ctx = stream.codec_context
        num_frames = _stated_frames(container, stream)
        if num_frames is None:
            try:
                num_frames = _counted_frames(container, stream)
            except av.FFmpegError as e:
                raise AudioError(f"{p}: corrupt audio, demuxing failed ({_reason(e)})") from e
        if not num_frames or num_frames <= 0:
            raise AudioError(f"{p}: audio stream states no length and holds no packets")
        return AudioInfo(
            path=str(p),
            format=container.format.name,
            codec=ctx.name,
            sample_rate=int(ctx.sample_rate),
            channels=int(ctx.channels),
            num_frames=int(num_frames),
            duration=num_frames / ctx.sample_rate,
            exact=False,
        )


# --- reading --------------------------------------------------------------------------------------


def _window(
    p: Path, start: float, duration: float | None, sr: int, total: int | None
) -> tuple[int, int | None]:
    """``(first, stop)`` sample indices of the window at rate ``sr`` (``stop`` None: to the end), checked
    against the ``total`` samples of the file where known."""
    first = round(start * sr)
    stop = None if duration is None else round((start + duration) * sr)
    if total is not None:
        if first >= total:
            raise ValueError(f"start={start:g} s is at or past the end of {p} ({total / sr:.6g} s)")
        if stop is not None and stop > total:
            raise ValueError(
                f"start={start:g} s + duration={duration:g} s runs past the end of {p} ({total / sr:.6g} s)"
            )
    return first, stop


class _Plan:
    """The samples to decode: the window ``[first, stop)`` at the file's rate and, when resampling,
    ~10 ms of context either side (the right only where the file is known to have it).

    The decoded stretch then starts on a sample that is also a sample of the resampled file, so the
    resampled window holds the same samples as the resampled whole file: after a call, :attr:`skip`
    output samples lead the window and :attr:`length` are the window's (``None``: to the end). Rates
    without a short common grid (44101 -> 16000 Hz) set :attr:`direct`: the window's output samples
    ``out_first ...`` are then summed at their own positions in the stretch (:func:`_sinc_resample` with
    ``origin=begin``), which gives the whole file's samples too.
    """

    def __init__(self, p: Path, start: float, duration: float | None, sample_rate: int | None):
        self.p, self.start, self.duration, self.sample_rate = p, start, duration, sample_rate
        self.skip, self.length = 0, None
        self.begin = 0  # the first sample decoded, at the file's rate
        self.direct, self.out_first = False, 0

    def __call__(self, sr: int, total: int | None) -> tuple[int, int | None]:
        """``(first, stop)`` to decode at the file's rate ``sr`` (``stop`` None: to the end)."""
        first, stop = _window(self.p, self.start, self.duration, sr, total)
        self.begin = first
        new = self.sample_rate
        if new is None or new == sr:
            return first, stop
        out_first = round(self.start * new)  # the window's first output sample
        if self.duration is not None:
            self.length = round((self.start + self.duration) * new) - out_first
        step = sr // math.gcd(sr, new)  # input samples that make a whole number of output samples
        if step > 0.02 * sr:  # rates without a short common grid: each output sample at its own place
            context = math.ceil(0.01 * sr)
            begin = max(0, first - context)
            self.direct, self.out_first = True, out_first
        else:
            context = step * math.ceil(0.01 * sr / step)
            begin = max(0, (out_first * sr // new) // step * step - context)  # on the common grid
            self.skip = out_first - begin * new // sr
        self.begin = begin
        if stop is not None and total is not None and stop + context <= total:
            stop += context
        return begin, stop


_SF_BLOCK = 1 << 18  # samples per channel read from libsndfile at a time


def _read_sf(handle: sf.SoundFile, p: Path, first: int, stop: int | None) -> np.ndarray:
    """Samples ``[first, stop)`` as float32 ``[c t]``, read in blocks: memory follows the samples the
    file holds, not the count its header states (a damaged header can state billions)."""
    stop = handle.frames if stop is None else stop
    blocks, have = [], 0
    try:
        if first:
            handle.seek(first)
        while have < stop - first:
            block = handle.read(min(_SF_BLOCK, stop - first - have), dtype="float32", always_2d=True)  # [t c]
            if not len(block):
                break
            blocks.append(block.T)  # [c t] views
            have += len(block)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{p}: corrupt {handle.format} data ({_reason(e)})") from e
    if have < stop - first:
        raise AudioError(
            f"{p}: truncated: the header states {handle.frames} samples, decoding ended at sample {first + have}"
        )
    if not blocks:
        return np.zeros((handle.channels, 0), np.float32)
    return np.ascontiguousarray(blocks[0]) if len(blocks) == 1 else np.concatenate(blocks, axis=1)  # [c t]


_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.int64): 2.0**63}


def _frame_array(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as float32 ``[c t]`` (any sample format, planar or packed)."""
    x = frame.to_ndarray()  # planar: [c t]; packed: [1 t*c]
    if not frame.format.is_planar:
        x = x.reshape(-1, frame.layout.nb_channels).T  # [c t]
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if x.dtype in _SCALE:
        return (x / _SCALE[x.dtype]).astype(np.float32)
    return x.astype(np.float32, copy=False)


def _positioned(
    frames: Iterable[av.AudioFrame], stream: av.AudioStream, origin: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(position, samples [c t])`` of decoded frames; positions are sample indices from ``origin``, the
    timestamp of the stream's first decoded frame (``None``: these frames start at the beginning, and the
    first one is the origin).

    Where the time base resolves samples, every frame is placed by its timestamp. Where it is coarser
    (Matroska's milliseconds), frames are counted from one timestamp: the first frame's when decoding
    starts at the beginning (exact), else the second frame's (the first one after a seek can carry the
    decoder's trimmed start, e.g. Opus's pre-skip applied again, with its timestamp rounded once more).
    """
    sr, tb = stream.codec_context.sample_rate, stream.time_base
    precise = tb is not None and tb * sr <= 1
    seek = origin is not None
    position, held, frame = None, None, None
    for frame in frames:
        x = _frame_array(frame)  # [c t]
        if frame.pts is not None and tb is not None and (precise or position is None):
            if origin is None:
                origin = frame.pts
            if seek and not precise and held is None and position is None:
                held = x  # placed once the next frame's timestamp is known
                continue
            at = round((frame.pts - origin) * tb * sr)
        else:
            at = 0 if position is None else position
        if held is not None:
            yield at - held.shape[1], held
            held = None
        position = at + x.shape[1]
        yield at, x
    if held is not None:  # a single frame after the seek: its own timestamp is all there is
        yield round((frame.pts - origin) * tb * sr), held


def _packets_from(container: av.container.InputContainer, stream: av.AudioStream, pts: int) -> Iterator:
    """Decoded frames of the packets that end after ``pts`` (every audio packet is a key frame; a seek in
    Matroska lands on a cluster, seconds early, and the packets before ``pts`` need no decoding)."""
    for packet in container.demux(stream):
        if packet.pts is not None and packet.pts + (packet.duration or 0) < pts:
            continue
        yield from packet.decode()  # the last, empty packet flushes the decoder


def _decode_av(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    p: Path,
    first: int,
    stop: int | None,
    seek: bool,
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Decoded frames overlapping ``[first, stop)`` as ``(position, [c t])``, and where the decoded audio
    ends (see :func:`_positioned`)."""
    import av  # lazy (see _open_av)

    sr, tb = stream.codec_context.sample_rate, stream.time_base
    pieces, end = [], 0
    try:
        if seek:  # to the packet at or before a point a little ahead of the window
            origin = next((f.pts for f in container.decode(stream)), None)  # sample 0's timestamp
            if origin is None:
                origin = stream.start_time or 0
            target = origin + math.floor((first / sr - _PREROLL) / tb)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            frames = _packets_from(container, stream, target)
        else:
            origin, frames = None, container.decode(stream)
        for at, x in _positioned(frames, stream, origin):
            end = at + x.shape[1]
            if end > first:
                pieces.append((at, x))
            if stop is not None and end >= stop:
                break
    except av.FFmpegError as e:
        raise AudioError(f"{p}: corrupt audio, decoding failed after {end / sr:.3f} s ({_reason(e)})") from e
    return pieces, end


def _read_av(p: Path, plan: _Plan) -> tuple[np.ndarray, int]:
    """``(samples [c t], sample rate)`` of ``plan``'s stretch through FFmpeg."""
    container, stream = _open_av(p)
    with container:
        ctx = stream.codec_context
        sr, channels, frame_size = int(ctx.sample_rate), int(ctx.channels), max(ctx.frame_size or 0, 1024)
        stated, fmt = _stated_frames(container, stream), container.format.name
        first, stop = plan(sr, stated)
        can_seek = first > _PREROLL * sr and stream.time_base is not None
        pieces, end = _decode_av(container, stream, p, first, stop, seek=can_seek)
    if can_seek and (not pieces or pieces[0][0] > first):  # the seek landed past the window: start over
        container, stream = _open_av(p)
        with container:
            pieces, end = _decode_av(container, stream, p, first, stop, seek=False)
    expected = stop if stop is not None else stated
    if expected is not None and fmt not in _RAW_STREAMS and end < expected - max(2 * frame_size, sr // 20):
        raise AudioError(
            f"{p}: truncated: the file states {stated / sr:.3f} s of audio, decoding ended at {end / sr:.3f} s"
        )
    if not pieces:
        raise AudioError(f"{p}: no audio decoded at or after {first / sr:g} s")
    if stop is None:  # to the end: cut the encoder's padding after the stated duration (AAC)
        stop = stated if stated is not None and 0 < end - stated <= 2 * frame_size else end
    stop = min(stop, end)  # a stated length can be a few ms long: the window ends with the audio
    out = np.zeros((channels, stop - first), np.float32)  # [c t]
    for at, x in pieces:
        lo, hi = max(at, first), min(at + x.shape[1], stop)
        if hi > lo:
            c = min(channels, x.shape[0])
            out[:c, lo - first : hi - first] = x[:c, lo - at : hi - at]
    return out, sr


def _read_native(p: Path, plan: _Plan) -> tuple[np.ndarray, int]:
    """``(samples [c t], sample rate)`` of ``plan``'s stretch at the file's own rate."""
    handle = _open_sf(p)
    if handle is None:
        return _read_av(p, plan)
    with handle:
        sr = int(handle.samplerate)
        first, stop = plan(sr, int(handle.frames))
        return _read_sf(handle, p, first, stop), sr


def _check_finite(x: np.ndarray, p: Path, sr: int, first: int) -> None:
    """A float file can hold NaN or infinite samples (no decoder makes them): name the file and where."""
    finite = np.isfinite(x)  # [c t]
    if finite.all():
        return
    bad = ~finite
    c, t = np.unravel_index(np.argmax(bad.T), bad.T.shape)[::-1]  # the earliest bad sample
    raise AudioError(
        f"{p}: {int(bad.sum())} NaN or infinite sample(s) in the samples read, the first at "
        f"{(first + int(t)) / sr:.6g} s (channel {int(c)}); expected finite values in [-1, 1]"
    )


def _map_channels(x: torch.Tensor, channels: int | None, p: Path) -> torch.Tensor:
    have = x.shape[0]
    if channels is None or channels == have:
        return x
    if channels == 1:
        return x.mean(dim=0, keepdim=True)  # [1 t]
    if channels == 2 and have == 1:
        return x.expand(2, -1).clone()  # [2 t]
    raise AudioError(
        f"{p}: has {have} channels; channels={channels} can be made only from {channels} channels or, "
        "for 2, from mono (1 makes a mono mix of any number)"
    )


def read_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode ``path`` (or a window of it) as float32 ``[c t]`` in [-1, 1].

    Args:
        path: WAV, FLAC, Ogg (Vorbis / Opus), Opus, MP3, AIFF, or the audio track of mp4 / m4a / mov /
            webm / mkv (any file libsndfile or FFmpeg reads; the first audio stream).
        sample_rate: resample to this rate (:func:`resample`); ``None`` keeps the file's rate.
        channels: ``1`` mixes down to mono (mean of the channels), ``2`` from a mono file duplicates it;
            ``None`` keeps the file's channels. Other mismatches are an :class:`AudioError`.
        start: where the window starts, in seconds.
        duration: the window's length in seconds; ``None`` reads to the end.

    A window is decoded without decoding the file before it (a seek), and holds the same samples as the
    whole-file read (exactly through libsndfile; through FFmpeg to the codec's precision, placed to the
    sample, or within 0.5 ms in Matroska / WebM). A resampled window is resampled with ~10 ms of the
    audio around it, on the grid of the resampled file, so it holds the same samples as the resampled
    whole file from sample ``round(start * sample_rate)`` on (for rates without a short common grid,
    such as 44101 -> 16000 Hz, each output sample is summed at its own place, to within 1e-5 of the
    whole file's). Where the length is an estimate (:attr:`AudioInfo.exact` is False) a window reaching
    the estimated end comes back as long as the audio really is, which can be a few milliseconds shorter
    than asked.

    Values are clipped to [-1, 1]: lossy decoders and resampling overshoot a little, and a float file
    (32- or 64-bit WAV, float samples in a Matroska file) may hold samples beyond full scale, which load
    clipped (after resampling), not as an error. NaN or infinite samples in what is read are an
    :class:`AudioError` (a window elsewhere in the file still reads). Any sample rate libsndfile or
    FFmpeg reads works (8 kHz, 96 kHz, 44101 Hz, ...), and any number of channels.

    Returns:
        ``(waveform [c t] float32, sample_rate)``.

    Raises:
        ValueError: a negative ``start``, a non-positive ``duration`` / ``sample_rate`` / ``channels``, a
            window past the end of the file.
        AudioError: a bad file (missing, empty, not audio, no samples, no audio stream, corrupt,
            truncated, NaN or infinite samples) or a channel count that cannot be mapped to ``channels``.
            The message names the file.
    """
    if not start >= 0:
        raise ValueError(f"start must be >= 0 seconds, got {start!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 seconds or None, got {duration!r}")
    if sample_rate is not None and (not isinstance(sample_rate, int) or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive int or None, got {sample_rate!r}")
    if channels is not None and (not isinstance(channels, int) or channels <= 0):
        raise ValueError(f"channels must be a positive int or None, got {channels!r}")
    p = _check_file(path)

    plan = _Plan(p, start, duration, sample_rate)
    x, sr = _read_native(p, plan)
    _check_finite(x, p, sr, plan.begin)
    wave = _map_channels(torch.from_numpy(x), channels, p)  # [c t] (with context when resampling)
    if sample_rate is not None and sample_rate != sr and plan.direct:  # [c length]
        wave = _sinc_resample(
            wave, sr, sample_rate, first=plan.out_first, origin=plan.begin, count=plan.length
        )
    elif sample_rate is not None and sample_rate != sr:
        wave = resample(wave, sr, sample_rate)  # [c ceil(t*sample_rate/sr)]
        end = None if plan.length is None else plan.skip + plan.length
        wave = wave[:, plan.skip : end].contiguous()  # [c length]: the window without its context
    return wave.clamp_(-1, 1), sample_rate or sr


_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99  # torchaudio's default filter: zero crossings each side, cut-off
_MAX_KERNEL = 1 << 22  # elements of a torchaudio kernel (16 MB in float32) above which sums run directly


def resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample ``waveform [... t]`` from ``orig_sr`` to ``new_sr`` (band-limited sinc interpolation,
    torchaudio's ``Resample`` with its default filter); the same tensor when the rates are equal.

    The output has ``ceil(t * new_sr / orig_sr)`` samples; sample ``k`` is at time ``k / new_sr``. The
    filter of each pair of rates is built once per process (a few recent ones are kept). torchaudio's
    filter holds one row per output phase (``new_sr / gcd`` of them), so for rates without a large common
    divisor (44101 -> 16000 Hz: 16,000 rows of 44,000 taps, 2.8 GB) the same filter is evaluated at
    each output sample's own position instead (:func:`_sinc_resample`), in memory that does not grow with
    the rates.
    """
    for name, rate in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"{name} must be a positive int, got {rate!r}")
    if orig_sr == new_sr:
        return waveform
    if not waveform.is_floating_point():
        raise ValueError(f"resample expects a float waveform, got {waveform.dtype}")
    if waveform.shape[-1] == 0:  # nothing to resample (torchaudio cannot reshape an empty signal)
        return waveform.new_zeros(waveform.shape)
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    width = math.ceil(_LOWPASS_WIDTH * orig / (min(orig, new) * _ROLLOFF))
    if new * (orig + 2 * width) > _MAX_KERNEL:
        return _sinc_resample(waveform, orig_sr, new_sr)
    resampler = _resampler(orig_sr, new_sr, waveform.dtype, waveform.device)
    return resampler(waveform)  # [... ceil(t*new_sr/orig_sr)]


def _sinc_resample(
    waveform: torch.Tensor,
    orig_sr: int,
    new_sr: int,
    *,
    first: int = 0,
    origin: int = 0,
    count: int | None = None,
    chunk_taps: int = 1 << 20,
) -> torch.Tensor:
    """torchaudio's resampling filter summed at each output sample's position: ``[... t]`` ->
    ``[... count]`` (by default ``ceil(t * new_sr / orig_sr)``).

    Output sample ``m`` sits at ``tau = m * orig_sr / new_sr`` input samples and is
    ``sum_n x[n] c w((n - tau) c)`` with ``c = 0.99 min(1, new_sr / orig_sr)`` and ``w(u) = sinc(u)
    cos^2(pi u / 12)`` for ``|u| <= 6`` (the Hann-windowed sinc of torchaudio's kernel, which tabulates
    the same function at the ``new_sr / gcd`` phases); ``x`` is zero outside the signal. ``waveform`` may
    be a stretch of a longer signal that starts at its sample ``origin``: the output is then samples
    ``first, first + 1, ...`` of the whole signal resampled (``count`` of them; ``None``: to the end of
    the stretch). Runs over blocks of output samples so that a block holds about ``chunk_taps`` weights.
    """
    shape = waveform.shape
    length = shape[-1]
    if length == 0 or waveform.numel() == 0:
        return waveform.new_zeros(*shape[:-1], 0)
    x = waveform.reshape(-1, length)  # [b t]
    cutoff = _ROLLOFF * min(1.0, new_sr / orig_sr)
    half = math.ceil(_LOWPASS_WIDTH / cutoff)  # input samples either side of tau with nonzero weight
    taps = torch.arange(-half, half + 2, device=x.device, dtype=x.dtype)  # [T]
    xp = torch.nn.functional.pad(x, (half + 1, half + 4))  # [b t+2half+5]: zeros outside the signal
    windows = xp.unfold(-1, len(taps), 1)  # [b t+4 T] view: windows[:, i] = x[i-half-1 ... i+half]
    n_out = -(-(origin + length) * new_sr // orig_sr) - first  # to the end of the stretch
    n_out = n_out if count is None else min(count, n_out)
    out = x.new_empty(x.shape[0], max(n_out, 0))  # [b n_out]
    block = max(1, chunk_taps // len(taps))
    for a in range(0, n_out, block):
        m = torch.arange(
            first + a, first + min(a + block, n_out), device=x.device, dtype=torch.float64
        )  # [k]
        tau = m * orig_sr / new_sr - origin  # [k] positions in the stretch's samples (float64: exact)
        base = torch.floor(tau)
        frac = (tau - base).to(x.dtype)  # [k] in [0, 1)
        u = ((taps - frac[:, None]) * cutoff).clamp_(-_LOWPASS_WIDTH, _LOWPASS_WIDTH)  # [k T]: (n - tau) c
        w = torch.special.sinc(u) * torch.cos(u * (math.pi / (2 * _LOWPASS_WIDTH))).square_() * cutoff
        rows = (base.long() + 1).clamp_(0, windows.shape[1] - 1)  # [k]; beyond the stretch: zeros
        out[:, a : a + len(m)] = torch.einsum("bkt,kt->bk", windows[:, rows], w)  # [b k]
    return out.reshape(*shape[:-1], out.shape[-1])


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    import torchaudio.transforms  # lazy: torchaudio is heavy

    return torchaudio.transforms.Resample(orig_sr, new_sr, dtype=dtype).to(device)


# --- writing --------------------------------------------------------------------------------------


def _as_array(waveform: np.ndarray | torch.Tensor, path: Path) -> np.ndarray:
    """float32 ``[c t]`` clipped to [-1, 1] from ``[c t]`` or ``[t]``."""
    if torch.is_tensor(waveform):
        waveform = waveform.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(waveform)
    if x.ndim == 1:
        x = x[None]  # [1 t]
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating) or 0 in x.shape:
        raise ValueError(
            f"{path}: write_audio expects a float waveform [c t] or [t], got {x.dtype} {x.shape}"
        )
    if x.shape[0] > 64:
        raise ValueError(
            f"{path}: write_audio expects [c t], got {x.shape}: {x.shape[0]} channels (a [t c] array?)"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: waveform holds NaN or infinite values")
    return np.clip(x, -1.0, 1.0).astype(np.float32)  # [c t]


def _write_sf(tmp: Path, x: np.ndarray, sample_rate: int, ext: str, bits: int, quality: float | None) -> None:
    subtypes = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}
    if ext == ".ogg":
        fmt, subtype = "OGG", "VORBIS"
    else:
        fmt = ext[1:].upper()
        if bits not in subtypes or (fmt == "FLAC" and bits == 32):
            raise ValueError(f"bits must be 16 or 24 (32 = float, wav only) for {ext}, got {bits!r}")
        subtype = subtypes[bits]
    level = None if quality is None else 1.0 - quality  # libsndfile: 0 = best quality, 1 = smallest file
    with sf.SoundFile(
        str(tmp), "w", sample_rate, x.shape[0], subtype, format=fmt, compression_level=level
    ) as handle:
        for i in range(0, x.shape[1], 1 << 16):  # blocks: libsndfile's Vorbis writer dislikes huge ones
            handle.write(x[:, i : i + (1 << 16)].T)  # [t c]


def _write_mp3(tmp: Path, x: np.ndarray, sample_rate: int, bitrate: int) -> None:
    import av  # lazy (see _open_av)

    if "libmp3lame" not in av.codecs_available:
        raise ValueError("this PyAV build has no MP3 encoder (libmp3lame)")
    layout = {1: "mono", 2: "stereo"}[x.shape[0]]
    with av.open(str(tmp), mode="w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sample_rate, layout=layout)
        stream.bit_rate = bitrate
        stream.format = "fltp"
        size = stream.codec_context.frame_size or 1152
        for i in range(0, x.shape[1], size):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[:, i : i + size]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = sample_rate, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))  # flush the encoder


def write_audio(
    path: str | os.PathLike,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    format: str | None = None,
    bits: int = 16,
    bitrate: int = 192_000,
    quality: float | None = None,
) -> Path:
    """Write a float waveform ``[c t]`` (or ``[t]``, mono) to ``path``; values are clipped to [-1, 1].

    The extension (or ``format``) picks the format, one of :data:`AUDIO_WRITE_FORMATS`: ``.wav`` and
    ``.flac`` (PCM, ``bits`` 16 or 24; wav also 32 = float), ``.ogg`` (Vorbis, ``quality`` 0..1), ``.mp3``
    (``bitrate``; 1 or 2 channels at 8 to 48 kHz; gapless: the LAME tag records the encoder delay).

    The file is written to a temporary name in the same folder, fsynced and renamed, so a reader never
    sees a partial file and a failed write leaves an older file untouched. Missing folders are created.

    Returns:
        the path written.

    Raises:
        ValueError: an unknown format, a waveform that is not float ``[c t]`` / ``[t]`` (at least one
            channel and one sample) or holds NaN, a non-positive ``sample_rate``, or settings, channels or
            a rate the format does not take (FLAC: 1 to 8 channels). The message names the file.
    """
    path = Path(path)
    ext = path.suffix.lower() if format is None else "." + format.lower().lstrip(".")
    if ext not in AUDIO_WRITE_FORMATS:
        what = f"format={format!r}" if format is not None else (ext or "files without an extension")
        raise ValueError(f"{path}: cannot write {what}; supported: {', '.join(AUDIO_WRITE_FORMATS)}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"{path}: sample_rate must be a positive int, got {sample_rate!r}")
    x = _as_array(waveform, path)  # [c t]
    if ext == ".mp3":
        if x.shape[0] > 2:
            raise ValueError(f"{path}: MP3 holds 1 or 2 channels, got {x.shape[0]}")
        if sample_rate not in _MP3_RATES:
            raise ValueError(
                f"{path}: MP3 takes sample rates {_MP3_RATES}, got {sample_rate} (resample first)"
            )
    if quality is not None and not 0 <= quality <= 1:
        raise ValueError(f"quality must be in [0, 1], got {quality!r}")

    with atomic_path(path, suffix=".tmp" + ext) as tmp:
        if ext == ".mp3":
            _write_mp3(tmp, x, sample_rate, bitrate)
        else:
            try:
                _write_sf(tmp, x, sample_rate, ext, bits, quality)
            except sf.LibsndfileError as e:  # what the format cannot hold (FLAC: 1-8 channels, <= 655,350 Hz)
                raise ValueError(
                    f"{path}: libsndfile cannot write {ext} with {x.shape[0]} channel(s) at {sample_rate} Hz "
                    f"({e.error_string.rstrip('.')})"
                ) from None
    return path
