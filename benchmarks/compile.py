"""torch.compile benchmark: compile time, forward, train step and a whole generated clip, eager vs compiled.

    python benchmarks/compile.py --threads 1                            # every backbone, tiny and S, CPU
    python benchmarks/compile.py --models DiT,DiT1D --presets tiny      # a subset
    python benchmarks/compile.py --backbones-only | --generate-only
    python benchmarks/compile.py --device cuda --repeats 10
    python benchmarks/compile.py --device cuda --models DiT --presets B --batch 8 --shape 8,9,32,32 \
        --precisions bf16 --backbones-only --repeats 10     # DiT-B training MFU, eager and compiled

**Backbones** (first table): each video and audio backbone preset on the inputs of
``benchmarks/backbones.py`` (video) and ``benchmarks/audio_backbones.py`` (audio, the latent rows),
batch ``--batch``, 16 text tokens. ``torch.compile(model)`` (TorchInductor, default mode, automatic
dynamic shapes) of the same module; "compile s" is the first compiled call (tracing, Inductor and its
C++ / Triton build) minus one eager call; "forward" is one ``torch.no_grad`` call in eval mode,
"train step" forward + backward of the mean square of the output + an AdamW step in train mode
(its own graph: the backward is compiled too). fp32 and bf16 autocast (each its own graph). Eager
and compiled calls are timed interleaved (eager, compiled, eager, ...; median of ``--repeats``)
with ``benchmarks/timing.py``'s ``timed``; ``speed-up`` = eager / compiled. ``max |diff|`` is the
largest difference of the compiled forward from the eager one, relative to the eager output's
largest magnitude. "train GFLOP" is one train step's forward + backward work
(:func:`mediadiff.train.flops.step_flops`: matrix products and convolutions; AdamW not counted), so
"TFLOP/s" is the train step's achieved rate and "MFU" that rate over the device's dense bf16 peak
(:data:`mediadiff.train.flops.PEAK_BF16_TFLOPS`; n/a on a CPU). ``--shape`` replaces the input after
the batch axis (the DiT's default of 320 tokens is launch-bound on a GPU; ``8,9,32,32`` is 2,304). Dynamo's caches are reset between backbones (they share the ``forward`` code, and
past ``recompile_limit`` graphs dynamo would run the rest eagerly).

**Generate** (second table): the shipped default pipelines (``shapes-dit``, ``tones-dit``) at their
defaults (20-step ``dpmpp_2m``, CFG 4: a batch of 2 per step), one clip per call, three copies of
each: eager, ``pipe.compile()`` (``dynamic=None``) and ``pipe.compile(dynamic=False)``. "first clip"
is the first call (compiles); "new length" a call with a prompt of another token length (None:
compiles once more with that length symbolic; False: one more static graph per length); "clip" the
median of ``--repeats`` interleaved calls with a prompt already seen; "graphs" how many graphs
dynamo compiled for that pipeline over the three prompt lengths.

Compile times are cold: Inductor's on-disk graph caches are off (``--warm-cache`` turns them on, as
they are in normal use, where a second process compiling the same graph loads it in seconds).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import torch
from audio_backbones import INPUTS as AUDIO_INPUTS
from backbones import MODELS as VIDEO_MODELS
from backbones import SHAPES as VIDEO_SHAPES
from timing import perturb_, seconds, timed

from mediadiff.train.flops import mfu, peak_flops, step_flops
from mediadiff.utils import machine

# backbone name -> (class, input after the batch axis, config overrides)
BACKBONES: dict[str, tuple[type, tuple[int, ...], dict[str, Any]]] = {
    **{name: (cls, VIDEO_SHAPES[name], {}) for name, cls in VIDEO_MODELS.items()},
    **{label.split()[0]: AUDIO_INPUTS[label] for label in ("DiT1D latent", "UNet1D latent", "UNet2D mel")},
}
PIPELINES = {"video": "shapes-dit", "audio": "tones-dit"}
PROMPTS = {
    "video": ("a red circle moving right", "a small blue square moving down slowly", "a green triangle"),
    "audio": ("a square wave playing E4", "a sine tone at C4, rising slowly to G4", "a saw on A3"),
}


def graphs() -> int:
    """Graphs dynamo has compiled in this process."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median ms of each function, timed in rounds (one call of each per round) so all see the same load."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, 1, device))
    return {k: statistics.median(v) for k, v in times.items()}


def input_shape(name: str, shape: str | None) -> tuple[int, ...]:
    """The backbone's input after the batch axis: ``--shape`` (comma-separated) or the table's default."""
    default = BACKBONES[name][1]
    if shape is None:
        return default
    try:
        dims = tuple(int(d) for d in shape.split(","))
    except ValueError:
        dims = ()
    if len(dims) != len(default) or min(dims) < 1:
        raise SystemExit(
            f"--shape: {name} takes {len(default)} positive sizes after the batch axis "
            f"(e.g. {','.join(map(str, default))}), got {shape!r}"
        )
    return dims


def measure_backbone(name: str, preset: str, args: argparse.Namespace) -> Iterator[dict]:
    device = torch.device(args.device)
    cls, _, overrides = BACKBONES[name]
    shape = input_shape(name, args.shape)
    gen = torch.Generator().manual_seed(0)
    model = perturb_(cls.from_preset(preset, **overrides).to(device), gen)
    x = torch.randn(args.batch, *shape, generator=gen).to(device)
    t = torch.rand(args.batch, generator=gen).to(device)
    context = torch.randn(args.batch, 16, model.config.context_dim, generator=gen).to(device)
    # forward + backward of one train step (matrix products and convolutions; the optimizer not counted)
    flops = step_flops(model, x, t, context)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=None)
    for precision in args.precisions.split(","):
        bf16 = precision == "bf16"

        def forward(net: Any = model, bf16: bool = bf16) -> torch.Tensor:
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return net(x, t, context)

        def train_step(net: Any = model, bf16: bool = bf16) -> None:
            model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = net(x, t, context).float().square().mean()
            loss.backward()
            optimizer.step()
            model.zero_grad(set_to_none=True)

        eager_s = seconds(forward, device)
        row: dict[str, Any] = {"model": f"{name}-{preset}", "params": model.num_parameters(), "flops": flops}
        row["shape"], row["precision"] = list(x.shape), precision
        row["compile_fwd"] = seconds(lambda: forward(compiled), device) - eager_s
        ref, out = forward(), forward(compiled)
        row["diff"] = float(
            (out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12)
        )
        fwd = interleaved({"eager": forward, "compiled": lambda: forward(compiled)}, args.repeats, device)
        eager_s = seconds(train_step, device)
        row["compile_train"] = seconds(lambda: train_step(compiled), device) - eager_s
        train = interleaved(
            {"eager": train_step, "compiled": lambda: train_step(compiled)}, args.repeats, device
        )
        yield row | {"fwd": fwd, "train": train}


def measure_pipeline(modality: str, args: argparse.Namespace) -> Iterator[dict]:
    from mediadiff.pipelines import pipeline_class

    device = torch.device(args.device)
    cls = pipeline_class(modality)
    model = PIPELINES[modality]
    first, second, third = PROMPTS[modality]
    for precision in args.precisions.split(","):
        torch._dynamo.reset()
        pipes = {"eager": None, "compiled (dynamic None)": None, "compiled (dynamic False)": False}
        made: dict[str, Any] = {}
        row: dict[str, Any] = {"model": model, "precision": precision, "first": {}, "new": {}, "graphs": {}}
        for label, dynamic in pipes.items():
            pipe = cls.from_pretrained(model, device=device)
            pipe.autocast = precision == "bf16"
            if label != "eager":
                pipe.compile(dynamic=dynamic)
            start = graphs()
            row["first"][label] = seconds(lambda p=pipe: p(first, seed=0), device)
            row["new"][label] = seconds(lambda p=pipe: p(second, seed=0), device)
            row["graphs"][label] = graphs() - start
            made[label] = pipe
        calls = {label: (lambda p=pipe: p(third, seed=1)) for label, pipe in made.items()}
        for (
            label,
            fn,
        ) in calls.items():  # a third prompt length (dynamic False compiles it), before the rounds
            start = graphs()
            fn()
            row["graphs"][label] += graphs() - start
        row["clip"] = interleaved(calls, args.repeats, device)
        out = {label: pipe(third, seed=1) for label, pipe in made.items()}
        data = {
            k: torch.as_tensor(getattr(v, "frames", getattr(v, "audio", None))).float()
            for k, v in out.items()
        }
        row["diff"] = {k: float((v - data["eager"]).abs().max()) for k, v in data.items()}
        row["unit"] = "grey levels" if modality == "video" else "of full scale"
        yield row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(BACKBONES), help=f"comma-separated of {list(BACKBONES)}")
    parser.add_argument("--presets", default="tiny,S", help="comma-separated presets (tiny, S, B)")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 (autocast) or both")
    parser.add_argument(
        "--pipelines", default="video,audio", help="shipped default pipelines to generate with"
    )
    parser.add_argument("--backbones-only", action="store_true")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (median)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--shape",
        default=None,
        help="backbone input after the batch axis, comma-separated (e.g. 8,9,32,32 for the DiT: 2,304 tokens); "
        "default: each backbone's row of backbones.py / audio_backbones.py",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="let Inductor reuse its on-disk caches (default: cold compiles)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if (
        not args.warm_cache
    ):  # else an identical graph compiled earlier (another run, dynamic None) loads from disk
        torch._inductor.config.fx_graph_cache = False
        torch._functorch.config.enable_autograd_cache = False
    for p in args.precisions.split(","):
        if p not in ("fp32", "bf16"):
            raise SystemExit(f"--precisions: unknown {p!r}; choose fp32, bf16")
    jobs = [(m, p) for m in args.models.split(",") for p in args.presets.split(",")]
    for name, preset in jobs:
        if name not in BACKBONES or preset not in BACKBONES[name][0].presets:
            raise SystemExit(
                f"unknown backbone {name!r} or preset {preset!r}; known: {list(BACKBONES)}, tiny/S/B"
            )
    info = machine(args.device)
    print(
        f"{info['device']} ({info.get('gpu', info['cpu'])}), {info['cpu_count']} cores, {info['torch_threads']} "
        f"torch threads, torch {info['torch']}, python {info['python']}, {datetime.date.today()}; "
        f"median of {args.repeats} interleaved rounds\n"
    )
    if not args.generate_only:
        peak = peak_flops(args.device)
        print(
            f"Backbones, batch {args.batch}; forward and train step in ms, compile in s; train TFLOP/s = "
            f"forward + backward FLOPs / train step time; MFU against "
            f"{'n/a (no known peak for this device)' if peak is None else f'{peak / 1e12:.0f} TFLOP/s (dense bf16)'}:\n"
        )
        print(
            "| backbone | params | input x | precision | compile fwd s | fwd eager | fwd compiled | speed-up "
            "| compile train s | train eager | train compiled | speed-up | train GFLOP | TFLOP/s eager / compiled "
            "| MFU eager / compiled | max rel diff |"
        )
        print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, preset in jobs:
            for r in measure_backbone(name, preset, args):
                f, tr = r["fwd"], r["train"]
                rate = {k: r["flops"] / (tr[k] / 1000) for k in ("eager", "compiled")}  # FLOP/s
                use = {k: mfu(r["flops"], tr[k] / 1000, peak) for k in rate}
                use_text = "n/a" if peak is None else f"{use['eager']:.1%} / {use['compiled']:.1%}"
                print(
                    f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['shape']} | {r['precision']} "
                    f"| {r['compile_fwd']:.1f} | {f['eager']:.1f} | {f['compiled']:.1f} "
                    f"| {f['eager'] / f['compiled']:.2f}x | {r['compile_train']:.1f} | {tr['eager']:.1f} "
                    f"| {tr['compiled']:.1f} | {tr['eager'] / tr['compiled']:.2f}x | {r['flops'] / 1e9:.3g} "
                    f"| {rate['eager'] / 1e12:.3g} / {rate['compiled'] / 1e12:.3g} | {use_text} | {r['diff']:.1e} |",
                    flush=True,
                )
    if not args.backbones_only:
        print("\nShipped pipelines, one clip at the model's defaults; times in s:\n")
        print(
            "| model | precision | backbone | first clip | new length | clip | speed-up | graphs | max diff |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for modality in args.pipelines.split(","):
            for r in measure_pipeline(modality, args):
                eager = r["clip"]["eager"]
                for label in r["clip"]:
                    print(
                        f"| {r['model']} | {r['precision']} | {label} | {r['first'][label]:.2f} "
                        f"| {r['new'][label]:.2f} | {r['clip'][label] / 1000:.3f} | {eager / r['clip'][label]:.2f}x "
                        f"| {r['graphs'][label]} | {r['diff'][label]:.2g} {r['unit']} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
