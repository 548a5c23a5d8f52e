"""Generation benchmark: seconds per clip of every shipped model, the share outside its networks, our
sampling loop against diffusers' on the same backbone, and quality against the step count.

    python benchmarks/generate.py                              # every shipped model, fp32 and bf16
    python benchmarks/generate.py --model shapes-dit           # one (repeatable; or a pipeline folder)
    python benchmarks/generate.py --random                     # random pipelines of the shipped sizes
    python benchmarks/generate.py --quality                    # eval accuracies at 5, 10, 20, 50 steps
    python benchmarks/generate.py --quality --reuse            # tabulate the eval JSONs already written

**Per clip** (first table). One clip per call of the model's pipeline at its defaults (20-step
``dpmpp_2m`` with CFG 4 for the shipped models, so the backbone sees a batch of 2 per step), with
fp32 and with bf16 autocast; the median of ``--repeats`` timed calls after one warm-up call. Each
timed call has a prompt the pipeline has not seen (its text cache is cleared), and the empty prompt
already encoded: the cost of one more clip from a loaded pipeline, as in ``mediadiff serve`` or a
script. Columns:

- ``NFE``: backbone calls x the batch of each call (counted by a forward hook);
- ``backbone``: time inside the backbone's ``forward`` (its text adapter included);
- ``decoder``: time inside ``autoencoder.decode`` (0 for a pixel-space model: the identity);
- ``text``: time inside ``text_encoder.encode`` (the new prompt);
- ``other``: everything else in the call: setting checks, noise, the sampler's arithmetic, guidance,
  the grid, converting the decoded clip to uint8 frames / a float waveform;
- ``outside`` = (total - backbone - decoder) / total = (text + other) / total. Issue 18's target is
  at most 5%. ``first clip`` is the same share when the empty prompt is encoded too (the first clip
  after loading: it is cached from then on; its encode time is measured alone and added);
- ``beyond all networks`` = other / total: the share outside the text encoder as well, the third
  network of the pipeline.

CUDA runs synchronise before each clock read.

**Ours against diffusers** (second table). The same backbone, weights, CFG, step count and
precision, driven (a) by :func:`mediadiff.pipelines.base.sample_latents` (what the pipeline runs:
noise, guidance wrapper, :func:`~mediadiff.diffusion.sample`) and (b) by the plain diffusers loop
``for t in scheduler.timesteps: scale_model_input; backbone; guidance; scheduler.step`` of the
scheduler of the same method, built by ``benchmarks/samplers.py``'s ``diffusers_scheduler`` on flow
sigmas (``use_flow_sigmas``, the model's shift, ``flow_prediction``). Both step between the same
levels: ours takes the diffusers scheduler's own grid through
:func:`mediadiff.diffusion.interop.scheduler_settings` (the mapping the diffusers-pipeline import
uses), so the end points can be compared. Both draw the same noise, encode nothing (contexts are
ready), and include their grid construction (``set_timesteps``). Timed interleaved, the order
alternating from round to round (ours then diffusers, diffusers then ours, ...: a machine whose
speed drifts during the run favours neither), median of ``--loop-repeats``; ``ratio`` = ours /
diffusers of the whole loop (target at most 1.0); ``loop overhead`` = loop time minus the time
inside the backbone (the sampler, guidance, noise, grid); ``ratio, backbone pooled`` = (B + ours'
overhead) / (B + diffusers' overhead) with B the mean of the two loops' backbone times (total - overhead): both make the same
backbone calls on the same inputs, so B is the same work, and pooling it keeps a loaded CPU's swings
in the backbone (seconds from run to run) out of the comparison of the loops; ``max
|diff|`` = the largest absolute difference of the two final latents. The diffusers loop casts the
guided prediction to the latents' float32 before ``step`` (ours does the same in its denoiser); left
in bf16, diffusers' ``step`` would cast the latents to bf16 too.

**Quality** (``--quality``): ``mediadiff eval video|audio --steps 5 10 20 50`` for each model with its
default sampler and ``unipc`` (``--samplers``), the same prompts and noise seeds for every step count
and sampler, ``--num`` prompts per caption split (default per model: :data:`QUALITY_NUM`); each run's
JSON goes to ``--quality-dir`` (``eval_steps_<model>[_<sampler>].json``), then one table of every
accuracy with its 95% Wilson interval and FD / floor. ``--reuse`` reads a JSON that exists with the
same model, sampler, steps and N instead of running it again.

``--random`` builds, randomly initialised, the shipped architectures (see
``recipes/video/shapes_dit.py``, ``recipes/video/shapes_unet3d.py``, ``recipes/audio/tones_latent.py``):
``dit`` (DiT width 128, depth 6, 4 heads, patch 1x2x2, on the shipped Shapes VAE, 17x64x64), ``unet3d``
(UNet3D 32-64-64 channels, pixel space, 8x32x32) and ``tones-dit`` (DiT1D width 128, depth 6, patch 2,
on the Tones waveform VAE, 16384 samples), all with the bundled MiniLM. Speed does not depend on the
weights' values.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mediadiff.diffusion import FlowSchedule, randn
from mediadiff.diffusion.interop import scheduler_settings
from mediadiff.pipelines import AudioPipeline, DiffusionPipeline, VideoPipeline, pipeline_class
from mediadiff.pipelines.base import sample_latents
from mediadiff.text import load_text_encoder
from mediadiff.text.context import match_context
from mediadiff.utils import cpu_name
from mediadiff.video import SHAPES_VAE_DIR, DiT, IdentityAutoencoder, UNet3D, load_autoencoder

AUDIO_PROMPTS = [
    "a square wave playing E4",
    "a sine tone at C4, rising",
    "a falling sawtooth starting on G3",
    "a triangle note on A4, holding steady",
    "synth square at C5 gliding down",
    "a sinusoidal tone at F#3",
    "one saw note from D4, gliding up",
    "a steady triangular wave from B3",
]

PROMPTS = [
    "a yellow triangle moving up",
    "a red circle moving right",
    "a blue square moving down",
    "a green triangle moving left",
    "a white circle moving up",
    "a red square moving left",
    "a blue circle moving right",
    "a yellow square moving down",
]

QUALITY_STEPS = (5, 10, 20, 50)
QUALITY_NUM = {"shapes-dit": 48, "shapes-unet3d": 16, "tones-dit": 64}
"""Prompts per caption split of ``--quality`` (x 2 splits): what fits the shared 2-core CPU (a
shapes-unet3d clip costs ~10x a shapes-dit one), as the README's earlier sweeps were sized."""

MODALITY_PIPELINES = {"video": VideoPipeline, "audio": AudioPipeline}


# ----------------------------------------------------------------------------------------- models


def shipped_models() -> list[tuple[str, str]]:
    """``(modality, name)`` of every shipped model installed here, video first."""
    return [(m, name) for m, cls in MODALITY_PIPELINES.items() for name in cls.installed_models()]


def modality_of(target: str, default: str) -> str:
    """The modality of a shipped model's name; ``default`` (``--modality``) for a folder."""
    for modality, cls in MODALITY_PIPELINES.items():
        if target in cls.SHIPPED_MODELS:
            return modality
    return default


def random_pipeline(name: str, device: torch.device) -> DiffusionPipeline:
    """A randomly initialised pipeline with the architecture of a shipped model (``dit``, ``unet3d`` or
    ``tones-dit``)."""
    torch.manual_seed(0)
    text = load_text_encoder("minilm", device=device)
    pipeline_cls = VideoPipeline
    if name == "tones-dit":
        from mediadiff.audio import TONES_VAE_DIR, DiT1D
        from mediadiff.audio import load_autoencoder as load_audio_autoencoder

        pipeline_cls = AudioPipeline
        vae = load_audio_autoencoder(TONES_VAE_DIR, device=device)
        backbone = DiT1D(
            in_channels=16, patch=(2,), width=128, depth=6, heads=4, context_dim=text.dim,
            context_adapter_hidden=768,
        )  # fmt: skip
        defaults = {"num_samples": 16384}
    elif name == "dit":
        vae = load_autoencoder(SHAPES_VAE_DIR, device=device)
        backbone = DiT(in_channels=8, patch=(1, 2, 2), width=128, depth=6, heads=4, context_dim=text.dim)
        defaults = {"num_frames": 17, "height": 64, "width": 64}
    elif name == "unet3d":
        vae = IdentityAutoencoder()
        backbone = UNet3D(
            in_channels=3,
            channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attention_levels=(False, False, True),
            temporal_attention_levels=(False, True, True),
            head_dim=32,
            norm_groups=8,
            mlp_ratio=2.0,
            context_dim=text.dim,
        )
        defaults = {"num_frames": 8, "height": 32, "width": 32}
    else:
        raise ValueError(f"unknown random pipeline {name!r}; known: ['dit', 'unet3d', 'tones-dit']")
    with torch.no_grad():  # leave the zero init of the output layers: every layer does real work
        for p in backbone.parameters():
            p.add_(0.02 * torch.randn_like(p))
    backbone = backbone.to(device).eval().requires_grad_(False)
    vae = vae.to(device).eval().requires_grad_(False)
    return pipeline_cls(backbone, vae, text, FlowSchedule(), defaults=defaults)


# ----------------------------------------------------------------------------------------- clocks


class Clock:
    """Accumulates seconds spent inside wrapped calls (synchronising CUDA around each)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.calls = 0
        self.items = 0  # the batch sizes of the calls, summed (a forward pre-hook sees the input)
        self._start: float | None = None

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self, _module: Any = None, args: tuple = ()) -> None:
        self.calls += 1
        if args and isinstance(args[0], torch.Tensor):
            self.items += args[0].shape[0]
        self._start = self.now()

    def stop(self, *_args: Any) -> None:
        self.seconds += self.now() - self._start

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.start()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop()

        return timed


@contextmanager
def clocks(pipe: DiffusionPipeline):
    """Clocks on the backbone's forward, ``autoencoder.decode`` and ``text_encoder.encode``."""
    device = pipe.device
    c = {"backbone": Clock(device), "decoder": Clock(device), "text": Clock(device)}
    hooks = [
        pipe.backbone.register_forward_pre_hook(c["backbone"].start),
        pipe.backbone.register_forward_hook(c["backbone"].stop),
    ]
    decode, encode = pipe.autoencoder.decode, pipe.text_encoder.encode
    pipe.autoencoder.decode = c["decoder"].wrap(decode)
    pipe.text_encoder.encode = c["text"].wrap(encode)
    try:
        yield c
    finally:
        for h in hooks:
            h.remove()
        pipe.autoencoder.decode, pipe.text_encoder.encode = decode, encode


def prompts_of(pipe: DiffusionPipeline) -> list[str]:
    return AUDIO_PROMPTS if pipe.modality == "audio" else PROMPTS


# ----------------------------------------------------------------------------------------- per clip


def measure(pipe: DiffusionPipeline, bf16: bool, repeats: int) -> dict[str, float]:
    """Median seconds per clip (a new prompt, the empty prompt cached): total, backbone, decoder, text,
    other, the share outside, NFE; and ``empty`` (the empty prompt's encoding alone) for the first clip."""
    pipe.autocast = bf16
    rows = []
    prompts = prompts_of(pipe)
    for i in range(repeats + 1):  # the first call warms up
        pipe.clear_cache()
        clock = Clock(pipe.device)
        start = clock.now()
        pipe.encode([""])  # the unconditional context, cached from the first clip of a loaded pipeline on
        empty = clock.now() - start
        with clocks(pipe) as c:
            start = clock.now()
            pipe(prompts[i % len(prompts)], seed=i)
            total = clock.now() - start
        row = {"total": total, **{k: v.seconds for k, v in c.items()}, "empty": empty}
        row["nfe"] = c["backbone"].items
        row["other"] = total - row["backbone"] - row["decoder"] - row["text"]
        row["outside"] = (total - row["backbone"] - row["decoder"]) / total
        row["outside_first"] = (total - row["backbone"] - row["decoder"] + empty) / (total + empty)
        row["beyond_networks"] = row["other"] / total
        if i:
            rows.append(row)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


# ----------------------------------------------------------------------------------------- diffusers


def diffusers_counterpart(pipe: DiffusionPipeline, sampler: str, steps: int) -> Any:
    """The diffusers scheduler of ``sampler``'s method on the pipeline's flow schedule (flow sigmas,
    its shift, flow prediction), built by ``benchmarks/samplers.py``; ``set_timesteps(steps)`` done."""
    from samplers import diffusers_scheduler  # benchmarks/samplers.py, a sibling of this script

    if not isinstance(pipe.schedule, FlowSchedule) or pipe.prediction != "flow":
        raise ValueError(
            f"the diffusers loop is set up for flow models; this one is {pipe.schedule!r}, {pipe.prediction}"
        )
    return diffusers_scheduler(
        sampler,
        steps,
        use_flow_sigmas=True,
        flow_shift=pipe.schedule.shift,
        prediction_type="flow_prediction",
    )


def diffusers_loop(
    pipe: DiffusionPipeline, scheduler: Any, steps: int, cond: dict, uncond: dict, seed: int, scale: float
) -> torch.Tensor:
    """The plain diffusers sampling loop with classifier-free guidance on the pipeline's backbone."""
    scheduler.set_timesteps(steps)
    latent = pipe.latent_shape(pipe.resolve())
    x = randn((1, *latent), [torch.Generator().manual_seed(seed)], device=pipe.device)  # [1 c ...]
    cond, uncond = match_context(cond, uncond)
    both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}  # [2 l d], [2 l]: once, as diffusers does
    sigmas = scheduler.sigmas.to(pipe.device, torch.float32)  # the model's time t = sigma on flow sigmas
    for i, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(torch.cat([x, x]), t)  # [2 c ...]
        out = pipe.backbone(model_input, sigmas[i].expand(2), **both)  # [2 c ...]
        pred_c, pred_u = out.chunk(2)  # [1 c ...] each
        guided = (pred_u + scale * (pred_c - pred_u)).to(x.dtype)
        x = scheduler.step(guided, t, x).prev_sample
    return x


def ours_loop(
    pipe: DiffusionPipeline, settings: dict, options: dict, cond: dict, uncond: dict, seed: int
) -> torch.Tensor:
    """What the pipeline runs to sample one latent (:func:`sample_latents`), with ``options``' grid."""
    return sample_latents(
        pipe.backbone,
        pipe.schedule,
        pipe.latent_shape(settings),
        cond,
        uncond,
        seeds=[seed],
        prediction=pipe.prediction,
        sampler=settings["sampler"],
        steps=settings["steps"],
        guidance_scale=settings["guidance_scale"],
        guidance_rescale=settings["guidance_rescale"],
        guidance_interval=settings["guidance_interval"],
        device=pipe.device,
        sampler_options=options,
    )  # [1 c ...]


@torch.inference_mode()
def compare_loops(pipe: DiffusionPipeline, sampler: str, bf16: bool, repeats: int) -> dict[str, float]:
    """Median seconds of our loop and of the diffusers loop (interleaved), each one's time outside the
    backbone, and the largest difference of their end points."""
    pipe.autocast = bf16
    settings = pipe.resolve(sampler=sampler)
    if settings["guidance_rescale"] or tuple(settings["guidance_interval"]) != (0.0, 1.0):
        raise ValueError("the diffusers loop does plain CFG; this model's defaults rescale or limit guidance")
    scheduler = diffusers_counterpart(pipe, sampler, settings["steps"])
    mapped = scheduler_settings({"_class_name": type(scheduler).__name__, **scheduler.config})
    if mapped.sampler != sampler or mapped.prediction != pipe.prediction:
        raise ValueError(f"{type(scheduler).__name__} reads as {mapped.sampler}, {mapped.prediction}")
    options = dict(mapped.sampler_options)
    cond = pipe.encode([prompts_of(pipe)[1]])
    uncond = pipe.encode([""])
    seed, scale = 0, settings["guidance_scale"]
    runs: dict[str, Callable[[], torch.Tensor]] = {
        "ours": lambda: ours_loop(pipe, settings, options, cond, uncond, seed),
        "diffusers": lambda: diffusers_loop(pipe, scheduler, settings["steps"], cond, uncond, seed, scale),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    inside: dict[str, list[float]] = {k: [] for k in runs}
    ends: dict[str, torch.Tensor] = {}
    with pipe.autocast_context():
        for i in range(repeats + 1):  # the first round warms up
            # the order alternates from round to round (A B, B A, ...), so a machine that speeds up or
            # slows down over the run (seen here: 25% within a minute) favours neither loop
            for name, fn in list(runs.items())[:: 1 if i % 2 else -1]:
                backbone = Clock(pipe.device)
                hooks = [
                    pipe.backbone.register_forward_pre_hook(backbone.start),
                    pipe.backbone.register_forward_hook(backbone.stop),
                ]
                try:
                    start = backbone.now()
                    ends[name] = fn()
                    seconds = backbone.now() - start
                finally:
                    for h in hooks:
                        h.remove()
                if i:
                    times[name].append(seconds)
                    inside[name].append(seconds - backbone.seconds)
    ours, theirs = (statistics.median(times[k]) for k in runs)
    ours_overhead, theirs_overhead = (statistics.median(inside[k]) for k in runs)
    # both loops make the same backbone calls on the same inputs: the backbone's share of each is the
    # same work, and its spread under a loaded CPU is not the loops'; pooled, it leaves their difference
    backbone = ((ours - ours_overhead) + (theirs - theirs_overhead)) / 2
    return {
        "ours": ours,
        "diffusers": theirs,
        "ratio": ours / theirs,
        "ratio_pooled": (backbone + ours_overhead) / (backbone + theirs_overhead),
        "ours_overhead": ours_overhead,
        "diffusers_overhead": theirs_overhead,
        "max_diff": float((ends["ours"].float() - ends["diffusers"].float()).abs().max()),
        "scale": float(ends["ours"].float().abs().max()),
        "scheduler": type(scheduler).__name__,
    }


# ----------------------------------------------------------------------------------------- quality


def quality_path(folder: Path, model: str, sampler: str, default_sampler: str) -> Path:
    stem = model.replace("-", "_") + ("" if sampler == default_sampler else f"_{sampler}")
    return folder / f"eval_steps_{stem}.json"


def run_quality(args: argparse.Namespace, targets: Sequence[tuple[str, str]]) -> list[tuple[str, str, dict]]:
    """Run (or, with ``--reuse``, read) the step sweeps; returns ``(model, sampler, report)`` each."""
    from mediadiff.cli import main as cli_main

    folder = Path(args.quality_dir)
    folder.mkdir(parents=True, exist_ok=True)
    reports = []
    for modality, model in targets:
        default = pipeline_class(modality).read_spec(pipeline_class(modality).resolve_model(model))
        default_sampler = default.get("defaults", {}).get("sampler", "dpmpp_2m")
        num = args.num or QUALITY_NUM.get(model, 32)
        samplers = [default_sampler if s == "default" else s for s in args.samplers.split(",")]
        for sampler in dict.fromkeys(samplers):
            path = quality_path(folder, model, sampler, default_sampler)
            if args.reuse and path.is_file():
                report = json.loads(path.read_text())
                s = report["settings"]
                if (s["model"], s["sampler"], s["steps"], s["num"]) == (
                    model,
                    sampler,
                    list(args.steps),
                    num,
                ):
                    print(f"reusing {path}", flush=True)
                    reports.append((model, sampler, report))
                    continue
            argv = ["eval", modality, "--model", model, "--sampler", sampler, "--num", str(num)]
            argv += ["--steps", *map(str, args.steps), "--threads", str(args.threads), "--json", str(path)]
            argv += ["--device", args.device]
            print("mediadiff " + " ".join(argv), flush=True)
            if cli_main(argv) != 0:
                raise SystemExit(f"mediadiff {' '.join(argv)} failed")
            reports.append((model, sampler, json.loads(path.read_text())))
    return reports


def quality_table(reports: Sequence[tuple[str, str, dict]]) -> str:
    """One markdown table: a row per model, sampler and step count; each accuracy of each split in %
    with its 95% Wilson interval, and FD / floor per split."""
    lines = []
    for model, sampler, report in reports:
        runs = report["runs"]
        splits = list(runs[0]["splits"])
        attributes = list(runs[0]["splits"][splits[0]]["accuracy"])
        head = ["model", "sampler", "steps", "NFE", "N"]
        head += [f"{split} {a} %" for split in splits for a in attributes]
        head += [f"{split} FD/floor" for split in splits]
        if not lines or lines[0] != "| " + " | ".join(head) + " |":
            if lines:
                lines.append("")
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(head) - 5)]
        for run in runs:
            cells = [model, sampler, str(run["steps"]), str(run["nfe"]), str(run["num"])]
            for split in splits:
                for a in attributes:
                    acc = run["splits"][split]["accuracy"][a]
                    lo, hi = acc["ci95"]
                    cells.append(f"{100 * acc['accuracy']:.1f} ({100 * lo:.0f}-{100 * hi:.0f})")
            cells += [f"{run['splits'][split]['fd_ratio']:.1f}" for split in splits]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- main


def header(args: argparse.Namespace, command: str) -> str:
    cores = len(os.sched_getaffinity(0))
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({cpu_name()})"
    return (
        f"`{command}`: {device}, {cores} cores, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", default=None,
        help="shipped model name or pipeline folder (repeatable); default: every shipped model",
    )  # fmt: skip
    parser.add_argument("--modality", choices=["video", "audio"], default="video", help="of a --model folder")
    parser.add_argument("--random", action="store_true", help="random pipelines of the shipped sizes instead")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed clips per row (default 5)")
    parser.add_argument("--loop-repeats", type=int, default=5, help="timed loops of each kind (default 5)")
    parser.add_argument(
        "--loop-samplers", default="default,unipc",
        help="samplers of the ours-vs-diffusers table ('default': the model's; '' for none)",
    )  # fmt: skip
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quality", action="store_true", help="the eval's accuracies against steps instead")
    parser.add_argument(
        "--samplers", default="default,unipc", help="--quality: samplers ('default': the model's)"
    )
    parser.add_argument("--steps", type=int, nargs="+", default=list(QUALITY_STEPS), help="--quality: steps")
    parser.add_argument(
        "--num", type=int, default=None, help="--quality: prompts per split (default per model)"
    )
    parser.add_argument("--quality-dir", default="samples", help="--quality: where the eval JSONs go")
    parser.add_argument(
        "--reuse", action="store_true", help="--quality: read a matching JSON instead of rerunning"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = "python benchmarks/generate.py " + " ".join(argv if argv is not None else sys.argv[1:])

    if args.random:
        targets = [("video", "random:dit"), ("video", "random:unet3d"), ("audio", "random:tones-dit")]
    elif args.model:
        targets = [(modality_of(m, args.modality), m) for m in args.model]
    else:
        targets = shipped_models()
    if args.quality:
        reports = run_quality(args, targets)
        print("\n" + header(args, command) + "\n")
        print(quality_table(reports))
        return

    print(header(args, command) + "\n")
    print(
        f"One clip per call at the model's defaults, median of {args.repeats} after a warm-up; a new prompt each.\n"
    )
    print(
        "| model | clip | precision | total s | NFE | backbone s | decoder s | text s | other s | outside "
        "| first clip | beyond all networks |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    pipes = []
    for modality, target in targets:
        if target.startswith("random:"):
            pipe = random_pipeline(target.split(":", 1)[1], device)
        else:
            pipe = pipeline_class(modality).from_pretrained(target, device=device)
        params = sum(p.numel() for p in pipe.backbone.parameters()) / 1e6
        label = f"{target} ({type(pipe.backbone).__name__} {params:.2f}M)"
        settings = pipe.resolve()
        clip = f"{pipe.describe(settings)}, {settings['sampler']} {settings['steps']}, cfg {settings['guidance_scale']:g}"
        pipes.append((target, pipe))
        for precision in args.precisions.split(","):
            r = measure(pipe, precision == "bf16", args.repeats)
            print(
                f"| {label} | {clip} | {precision} | {r['total']:.3f} | {r['nfe']:.0f} | {r['backbone']:.3f} | "
                f"{r['decoder']:.3f} | {r['text']:.4f} | {r['other']:.4f} | {100 * r['outside']:.1f}% | "
                f"{100 * r['outside_first']:.1f}% | {100 * r['beyond_networks']:.1f}% |",
                flush=True,
            )
    loop_samplers = [s for s in args.loop_samplers.split(",") if s]
    if not loop_samplers:
        return
    print(
        f"\nThe same backbone driven by our loop and by diffusers' (median of {args.loop_repeats}, interleaved):\n"
    )
    print(
        "| model | precision | sampler : diffusers scheduler | steps | ours s | diffusers s | ratio | "
        "ratio, backbone pooled | loop overhead ours ms | diffusers ms | max abs diff (max abs latent) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for target, pipe in pipes:
        for name in loop_samplers:
            sampler = pipe.defaults["sampler"] if name == "default" else name
            for precision in args.precisions.split(","):
                r = compare_loops(pipe, sampler, precision == "bf16", args.loop_repeats)
                print(
                    f"| {target} | {precision} | {sampler} : {r['scheduler']} | {pipe.defaults['steps']} | "
                    f"{r['ours']:.3f} | {r['diffusers']:.3f} | {r['ratio']:.3f} | {r['ratio_pooled']:.3f} | "
                    f"{1000 * r['ours_overhead']:.1f} | "
                    f"{1000 * r['diffusers_overhead']:.1f} | {r['max_diff']:.1e} ({r['scale']:.2f}) |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
