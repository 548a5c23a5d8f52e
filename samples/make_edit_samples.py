"""Render the README's before/after pictures of editing with the shipped models, and print what the
detectors read from each row.

    python samples/make_edit_samples.py      # -> samples/edit_video.png, samples/edit_audio.png

Video (shapes-dit), one row per clip: the input (a red circle moving right, drawn by Shapes), SDEdit
towards "a red circle moving left" at strength 0.3 and 0.95, a continuation of its first 9 frames, and
frames 5-12 inpainted with "a blue circle moving right". Audio (tones-dit), one spectrogram each: the
input (an E4 square wave, steady, from Tones), SDEdit towards "..., rising" at 0.3 and 0.8, a
continuation of its first 0.5 s, and 0.4-0.7 s inpainted with "a sine tone at C4". Seed 0 everywhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mediadiff import AudioPipeline, VideoPipeline
from mediadiff.audio.detect import read_tone
from mediadiff.audio.plot import save_spectrograms
from mediadiff.pipelines import VideoOutput
from mediadiff.video.detect import detect
from mediadiff.video.io import to_uint8
from mediadiff.video.shapes import render


def video_rows() -> tuple[list[str], list[np.ndarray]]:
    pipe = VideoPipeline.from_pretrained("shapes-dit")
    f = 17
    centres = np.stack([np.linspace(16, 48, f), np.full(f, 32.0)], 1)  # [f 2]
    given = to_uint8(render("circle", "red", centres, 16, 64)).numpy()  # [f 64 64 3]
    left = "a red circle moving left"
    rows = [("input: a red circle moving right", given)]
    for s in (0.3, 0.95):
        rows.append((f"init, strength {s}: {left!r}", pipe(left, init=given, strength=s, seed=0).frames[0]))
    rows.append(
        ("extend its first 9 frames", pipe("a red circle moving right", extend=given[:9], seed=0).frames[0])
    )
    rows.append(
        ("inpaint frames 5-12: 'a blue circle moving right'",
         pipe("a blue circle moving right", inpaint=given, mask=(5, 13), seed=0).frames[0])
    )  # fmt: skip
    return [t for t, _ in rows], [c for _, c in rows]


def audio_rows() -> tuple[list[str], list[np.ndarray], int]:
    from mediadiff.audio.tones import synthesize_tone

    pipe = AudioPipeline.from_pretrained("tones-dit")
    given = synthesize_tone("square", 64, "steady")[None]  # [1 t] E4
    rising = "a square wave playing E4, rising"
    rows = [("input: a square wave playing E4, steady", given)]
    for s in (0.3, 0.8):
        rows.append(
            (f"init, strength {s}: {rising!r}", pipe(rising, init=given, strength=s, seed=0).audio[0])
        )
    rows.append(
        ("extend its first 0.5 s", pipe("a square wave playing E4", extend=given[:, :8000], seed=0).audio[0])
    )
    rows.append(
        ("inpaint 0.4-0.7 s: 'a sine tone at C4'",
         pipe("a sine tone at C4", inpaint=given, mask=(0.4, 0.7), seed=0).audio[0])
    )  # fmt: skip
    return [t for t, _ in rows], [c for _, c in rows], pipe.sample_rate


def pad_to_longest(clips: list[np.ndarray], axis: int, value: float) -> np.ndarray:
    """Stack clips of different lengths along a new first axis, padding ``axis`` with ``value``."""
    n = max(c.shape[axis] for c in clips)
    widths = [[(0, n - c.shape[axis]) if a == axis else (0, 0) for a in range(c.ndim)] for c in clips]
    return np.stack([np.pad(c, w, constant_values=value) for c, w in zip(clips, widths, strict=True)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="samples", help="folder of edit_video.png and edit_audio.png")
    args = parser.parse_args(argv)
    out = Path(args.out)

    titles, clips = video_rows()
    for t, c in zip(titles, clips, strict=True):
        d = detect(c)
        print(f"video  {t:<55} {len(c):>2} frames  {d.colour} {d.shape} {d.direction}")
    grid = pad_to_longest(clips, 0, 0)  # [rows f h w 3], black after the shorter clips
    VideoOutput(grid, titles, [0] * len(titles), 8.0).save(out / "edit_video.png")

    titles, waves, rate = audio_rows()
    for t, w in zip(titles, waves, strict=True):
        r = read_tone(w, rate)
        print(f"audio  {t:<55} {w.shape[-1] / rate:.2f} s  {r.pitch} {r.contour} {r.waveform}")
    save_spectrograms(pad_to_longest(waves, 1, 0.0), rate, out / "edit_audio.png", titles)
    print(f"wrote {out / 'edit_video.png'} and {out / 'edit_audio.png'}")


if __name__ == "__main__":
    main()
