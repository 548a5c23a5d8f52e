"""Render the README's sample grid: clips of a shipped model with their prompts written under them.

    python samples/make_samples.py                         # default model -> samples/shapes_dit.gif
    python samples/make_samples.py --model shapes-unet3d --out samples/shapes_unet3d.gif

Prompts mix the training phrasings with held-out ones (marked * in the grid); seeds are fixed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mediadiff import VideoPipeline

PROMPTS = [
    ("a yellow triangle moving up", False),
    ("a red circle moving right", False),
    ("a blue square moving down", False),
    ("a green ball moving left", False),
    ("a magenta box sliding to the left", False),
    ("a cyan wedge travelling downwards", False),
    ("there is a red square and it is going up", True),
    ("watch the circle coloured yellow as it moves to the right", True),
    ("a black scene where a green triangle glides downwards", True),
    ("the clip shows a blue circle making its way to the top", True),
    ("leftwards, a cyan square slides across a dark background", True),
    ("there is a magenta triangle and it is going right", True),
]


def label(text: str, width: int, font: ImageFont.ImageFont) -> np.ndarray:
    """White text on dark grey, wrapped to ``width`` pixels: ``[h width 3]`` uint8."""
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if font.getlength(trial) > width - 4 and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    image = Image.new("RGB", (width, 12 * 3 + 4), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    for i, text_line in enumerate(lines[:3]):
        draw.text((2, 2 + 12 * i), text_line, fill=(230, 230, 230), font=font)
    return np.asarray(image)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="shipped model name or pipeline folder (default: the default)"
    )
    parser.add_argument("--out", default="samples/shapes_dit.gif")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--cell", type=int, default=128, help="pixel width of each clip in the grid")
    args = parser.parse_args(argv)

    pipe = VideoPipeline.from_pretrained(args.model)
    out = pipe([p for p, _ in PROMPTS], seed=args.seed, progress=True)
    clips = out.frames  # [n f h w 3]
    n, f, _, w, _ = clips.shape
    k = max(1, args.cell // w)
    clips = clips.repeat(k, axis=2).repeat(k, axis=3)  # [n f h*k w*k 3] nearest-neighbour upscale
    font = ImageFont.load_default()
    cells = []
    for (prompt, heldout), clip in zip(PROMPTS, clips):
        text = label(("* " if heldout else "") + prompt, w * k, font)  # [t w*k 3]
        cells.append(np.concatenate([clip, np.broadcast_to(text, (f, *text.shape))], axis=1))  # [f h' w*k 3]
    cols = args.columns
    rows = -(-n // cols)
    ch, cw = cells[0].shape[1:3]
    grid = np.full((f, rows * (ch + 4) + 4, cols * (cw + 4) + 4, 3), 90, np.uint8)  # [f H W 3]
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        grid[:, 4 + r * (ch + 4) : 4 + r * (ch + 4) + ch, 4 + c * (cw + 4) : 4 + c * (cw + 4) + cw] = cell
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, grid, duration=1000 / out.fps, loop=0)
    print(f"wrote {path} ({n} clips, seeds {out.seeds[0]}..{out.seeds[-1]})")
    return path


if __name__ == "__main__":
    main()
