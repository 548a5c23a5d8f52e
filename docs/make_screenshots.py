"""Screenshots of ``mediadiff serve`` for the README: one generation in each tab, in headless Chromium.

    python docs/make_screenshots.py                 # -> docs/serve_video.png, docs/serve_audio.png

Needs the ``[dev]`` extra (gradio, playwright) and Debian's chromium, as the browser test does; the
page runs from this process on a free local port (``tests/browser.py`` drives it). The pictures are
stored with a 256-colour palette to keep them small.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import browser  # noqa: E402

SHOTS = {  # tab -> (prompt, file, whether the editing inputs are shown open)
    "video": ("a yellow triangle moving up", "serve_video.png", True),
    "audio": ("a square wave playing E4", "serve_audio.png", False),
}


def shrink(path: Path) -> int:
    """Rewrite a PNG with an adaptive 256-colour palette; returns its size in bytes."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="folder for the pictures (default docs/)"
    )
    parser.add_argument("--width", type=int, default=1180, help="browser window width in pixels")
    args = parser.parse_args(argv)
    reason = browser.skip_reason()
    if reason:
        print(f"make_screenshots: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, browser.serve_app() as url, browser.open_browser() as chromium:
        for modality, (prompt, name, editing) in SHOTS.items():
            page = browser.new_page(chromium, url, width=args.width)
            browser.generate(page, modality, prompt, seed=0)
            browser.download(page, modality, Path(tmp))  # the link works, as in the test
            if editing:
                page.locator(f"#{modality}-tab button:has-text('Editing')").click()
            page.wait_for_timeout(1500)  # let the player draw its first frame / waveform
            target = args.out / name
            page.screenshot(path=str(target), full_page=True)
            print(f"wrote {target}  ({shrink(target) / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
