"""Render the README's audio samples: one wav per prompt from a shipped text-to-audio model, and one
picture of their log-mel spectrograms with the prompts as titles.

    python samples/make_audio_samples.py                    # default model -> samples/audio/*.wav, samples/tones_dit.png

Prompts mix the training phrasings with held-out ones (marked * in the picture and in prompts.txt);
seeds are fixed (clip ``i`` from seed ``SEED + i``), not picked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mediadiff import AudioPipeline
from mediadiff.audio.detect import read_tones
from mediadiff.audio.plot import save_spectrograms

PROMPTS = [
    ("a square wave playing E4", False),
    ("a sine tone at C4, rising", False),
    ("a falling sawtooth starting on G3", False),
    ("a triangle note on A4, holding steady", False),
    ("listen to a square oscillator that starts at D3 and is rising", True),
    ("gliding down, a sinusoidal sound begins at C5", True),
    ("an electronic saw beep beginning on F#4, holding steady", True),
    ("B3 in a triangular timbre, falling", True),
]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="shipped model name or pipeline folder (default: the default)"
    )
    parser.add_argument("--out", default="samples/audio", help="folder of the wav files and prompts.txt")
    parser.add_argument("--picture", default="samples/tones_dit.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pipe = AudioPipeline.from_pretrained(args.model)
    out = pipe([p for p, _ in PROMPTS], seed=args.seed, progress=True)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, ((prompt, heldout), reading) in enumerate(zip(PROMPTS, read_tones(out.audio, out.sample_rate))):
        name = f"{i:02d}.wav"
        out_i = type(out)(out.audio[i : i + 1], out.sample_rate, [prompt], [out.seeds[i]])
        out_i.save(folder / name)
        heard = f"heard {reading.pitch} {reading.contour} {reading.waveform}"
        lines.append(f"{name}\tseed {out.seeds[i]}\t{'* ' if heldout else ''}{prompt}\t({heard})")
    (folder / "prompts.txt").write_text("\n".join(lines) + "\n")
    titles = [f"{'* ' if h else ''}{p}  (seed {s})" for (p, h), s in zip(PROMPTS, out.seeds)]
    path = save_spectrograms(out.audio, out.sample_rate, args.picture, titles, columns=2)
    print("\n".join(lines))
    print(f"wrote {path} and {len(lines)} wav files in {folder}")
    return path


if __name__ == "__main__":
    main()
