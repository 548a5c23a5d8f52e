"""Cost against the size of the work: time and peak memory against clip length, and of attention against tokens.

    .venv/bin/python benchmarks/scaling.py            # the full grid (~15-20 min on 2 loaded CPU cores)
    .venv/bin/python benchmarks/scaling.py --quick    # two lengths per modality, small attention, no verify

For the shipped default models, ``shapes-dit`` (video, 64x64) and ``tones-dit`` (audio, 16 kHz), at
clip lengths of 17, 33, 65, 129 frames and 1, 4, 16, 60 s:

- generation: one clip through the pipeline (``pipeline(prompt, steps=S)``: classifier-free guidance,
  so the backbone runs at batch 2; dpmpp_2m, one backbone call per step; the pipeline decodes the
  whole clip at once, its default; ``--parts pipeline-chunks`` measures it against ``pipe.decode_chunk``). Time of ``S`` steps and per step ``(t(S) - t(1)) / (S - 1)``: per step is what
  scales, the rest (text, decode, uint8) is once per clip;
- a training step of the backbone alone on latents of that length: rectified-flow loss, forward +
  backward + AdamW, batch 1, fp32 (median of ``--train-repeats`` steps after one warm-up step, which
  also allocates AdamW's state);
- the autoencoder's decode of a random latent, whole clip and chunked (``decode(z, chunk_size=...)``:
  1 latent frame for the causal video VAE, 64 latent frames with its receptive field as overlap for
  the waveform VAE), as in ``video_vae.py`` and ``audio_autoencoders.py``;
- SDPA self-attention alone at the DiT-S head configuration (6 heads of 64 channels, batch 1, fp32)
  against the token count: forward (no grad) and forward + backward.

Memory: every cell runs in a fresh subprocess (``memory.run_child``) that warms up, resets the kernel's
peak-RSS mark and reads ``VmHWM`` after the measured call (``memory.peak_mib``): the peak the call
added above the process's resident set before it (weights, text encoder, AdamW state: the "base"
column). Times are CPU seconds of the process (``time.process_time``, one torch thread): other work on
the machine stretches wall time by a varying factor, CPU time much less. Each column gets a fitted log-log slope over its largest points (``--fit-points``): 1 is
linear growth, 2 quadratic.

The largest clip on 24 GiB: memory grows linearly, so ``base + a + b * length`` (a least-squares
line through the largest points) is solved for 24 GiB, and the time at that length extrapolated with
the fitted power law. The extrapolation is then checked by running the largest length whose predicted
time is within ``--verify-seconds`` (and whose predicted memory stays under ``--guard-gib``), alone,
with an address-space limit (``RLIMIT_AS``) that lets its resident set grow to ``--guard-gib`` at
most: the measured peak against the line's prediction at that length.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from memory import CellStore, peak_mib, proc_status_kib, run_child

from mediadiff.utils import cpu_name

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "mediadiff" / "weights"
MODELS = {"video": "shapes-dit", "audio": "tones-dit"}
AE_DIRS = {
    "video": WEIGHTS / "t2v_shapes_dit" / "autoencoder",
    "audio": WEIGHTS / "t2a_tones_dit" / "autoencoder",
}
PROMPTS = {"video": "a red circle moving right", "audio": "a sine tone at C4, steady"}
UNITS = {"video": "frames", "audio": "s"}
LENGTHS = {"video": (17, 33, 65, 129), "audio": (1, 4, 16, 60)}
QUICK_LENGTHS = {"video": (17, 33), "audio": (1, 4)}
TOKENS = (320, 640, 1280, 2560, 5120, 10240)
QUICK_TOKENS = (320, 640, 1280)
HEADS, HEAD_DIM = 6, 64  # DiT-S (Peebles & Xie 2023): width 384, 6 heads
SIZE, RATE = 64, 16000
CHUNKS = {"video": 1, "audio": 64}  # latent frames per decode chunk
GIB = 2**30


def machine_line(threads: int) -> str:
    """One line naming the machine: CPU model, cores, threads, torch, date (UTC), and its load average now."""
    cpu = cpu_name()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = f"load average {os.getloadavg()[0]:.1f}"  # other work on the machine skews wall times
    return (
        f"{cpu}, {os.cpu_count()} cores, {threads} torch thread(s), torch {torch.__version__}, {date}, {load}"
    )


# ----------------------------------------------------------------------------------- child cells


def size_kwargs(modality: str, length: float) -> dict:
    """The pipeline's size arguments for ``length`` frames (video) or seconds (audio)."""
    if modality == "video":
        return {"num_frames": int(length), "height": SIZE, "width": SIZE}
    return {"num_samples": int(length * RATE) // 256 * 256}  # whole latent frames of the waveform VAE


def load_pipeline(modality: str):
    from mediadiff.pipelines import AudioPipeline, VideoPipeline

    cls = VideoPipeline if modality == "video" else AudioPipeline
    return cls.from_pretrained(MODELS[modality])


def guard(guard_gib: float | None) -> None:
    """Cap the address space so the resident set can grow to ``guard_gib`` at most (RLIMIT_AS, Linux):
    the mappings already there (libraries, reserved arenas) plus what is left of the budget."""
    if not guard_gib:
        return
    size, rss = proc_status_kib("VmSize") * 1024, proc_status_kib("VmRSS") * 1024
    limit = size + int(guard_gib * GIB) - rss
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))  # soft limit


def cell_generate(
    modality: str,
    length: float,
    steps: int,
    warm_length: float,
    guard_gib: float | None,
    decode_chunk: int | None = None,
) -> dict:
    """One clip of ``steps`` steps after a warm-up at ``warm_length``: peak MiB, CPU seconds, per-step seconds.
    ``decode_chunk``: the pipeline's ``decode_chunk`` (latent frames per decode call; None: the whole clip)."""
    pipe = load_pipeline(modality)
    pipe.decode_chunk = decode_chunk
    prompt = PROMPTS[modality]

    def call(n_steps: int, at: float) -> None:
        pipe(prompt, steps=n_steps, seed=0, **size_kwargs(modality, at))

    call(1, warm_length)
    base = proc_status_kib("VmRSS") / 1024
    guard(guard_gib)
    peak, seconds = measured(lambda: call(steps, length))
    row = {"peak_mib": peak, "seconds": seconds, "base_mib": base}
    if steps > 1:
        one = min(measured(lambda: call(1, length))[1] for _ in range(2))
        row["per_step"] = (seconds - one) / (steps - 1)
    return row


def measured(fn) -> tuple[float, float]:
    """``(peak MiB, CPU seconds)`` of one call of ``fn`` (``memory.peak_mib``; ``time.process_time``).

    CPU time, not wall time: other work on the machine's cores stretches wall time by a varying factor
    but leaves a one-thread process's CPU time nearly alone, so lengths measured minutes apart compare.
    """
    start = time.process_time()
    _, peak, _ = peak_mib(fn, "cpu")
    return peak, time.process_time() - start


def cell_train(
    modality: str, length: float, repeats: int, warm_length: float, guard_gib: float | None
) -> dict:
    """Training steps of the backbone on batch-1 latents of ``length``: peak MiB of one, median seconds."""
    pipe = load_pipeline(modality)
    model = pipe.backbone.float().train().requires_grad_(True)
    tokens, mask = pipe.text_encoder.encode([PROMPTS[modality]])  # [1 l d], [1 l]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def latent(at: float) -> torch.Tensor:
        if modality == "video":
            shape = pipe.autoencoder.latent_shape((1, 3, int(at), SIZE, SIZE))  # [1 zc fz hz wz]
        else:
            shape = (
                1,
                model.config.in_channels,
                pipe.latent_frames(size_kwargs(modality, at)["num_samples"]),
            )
        return torch.randn(shape)

    def step(x0: torch.Tensor) -> None:
        t = torch.rand(1)
        noise = torch.randn_like(x0)
        tt = t.view(1, *[1] * (x0.ndim - 1))
        xt = (1 - tt) * x0 + tt * noise  # rectified flow (Liu et al. 2022): x_t = (1 - t) x0 + t eps
        loss = (model(xt, t, context=tokens, context_mask=mask) - (noise - x0)).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(latent(warm_length))
    x = latent(length)
    base = proc_status_kib("VmRSS") / 1024
    guard(guard_gib)
    peak, seconds = measured(lambda: step(x))
    times = [seconds] + [measured(lambda: step(x))[1] for _ in range(repeats - 1)]
    tokens = x[0, 0].numel() // math.prod(model.config.patch)  # one token per patch
    return {"peak_mib": peak, "seconds": statistics.median(times), "base_mib": base, "tokens": tokens}


def cell_decode(modality: str, length: float, chunk: int | None) -> dict:
    """The autoencoder's decode of a batch-1 latent of ``length``, whole (``chunk`` None) or in chunks."""
    if modality == "video":
        from mediadiff.video.autoencoder import load_autoencoder

        model = load_autoencoder(str(AE_DIRS[modality])).eval()
        z = torch.randn(model.latent_shape((1, 3, int(length), SIZE, SIZE)))  # [1 zc fz hz wz]
    else:
        from mediadiff.audio.autoencoder import load_autoencoder

        model = load_autoencoder(str(AE_DIRS[modality])).eval()
        z = torch.randn(model.latent_shape((1, 1, size_kwargs(modality, length)["num_samples"])))  # [1 zc f]
    with torch.no_grad():
        model.decode(z, chunk_size=chunk)  # warm-up: one-off kernel set-up must not count
        peak, seconds = measured(lambda: model.decode(z, chunk_size=chunk))
    return {"peak_mib": peak, "seconds": seconds}


def cell_attention(tokens: int) -> dict:
    """SDPA self-attention at ``tokens`` (DiT-S heads): forward and forward + backward, peak MiB and seconds."""
    import torch.nn.functional as F

    def qkv(n: int, grad: bool) -> list[torch.Tensor]:
        return [torch.randn(1, HEADS, n, HEAD_DIM, requires_grad=grad) for _ in range(3)]  # [b h n dh]

    def forward(q, k, v) -> torch.Tensor:
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v)  # [b h n dh]

    def train(q, k, v) -> None:
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    small = qkv(TOKENS[0], True)
    forward(*small)
    train(*small)  # warm-up at the smallest size: the kernels are the same
    x = qkv(tokens, False)
    fwd_mib, fwd_s = measured(lambda: forward(*x))
    x = qkv(tokens, True)
    bwd_mib, bwd_s = measured(lambda: train(*x))
    return {"fwd_mib": fwd_mib, "fwd_s": fwd_s, "bwd_mib": bwd_mib, "bwd_s": bwd_s}


CELLS = {"generate": cell_generate, "train": cell_train, "decode": cell_decode, "attention": cell_attention}


def child(payload: list) -> dict:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # lengths the models were not trained on warn (UntrainedSizeWarning)
    kind, *args = payload
    return CELLS[kind](*args)


# -------------------------------------------------------------------------------------- fitting


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (1: linear growth, 2: quadratic); NaN if undefined."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else float("nan")


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``: ``(a, b)``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - b * mx, b


def time_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """``y = p x + q x^2`` (the linear layers and the quadratic attention), ``p, q >= 0``, least squares
    on relative errors (weights ``1 / y^2``, so small and large lengths count alike): ``(p, q)``."""
    w = [1 / y**2 for y in ys]
    s2, s3, s4 = (sum(wi * x**k for wi, x in zip(w, xs)) for k in (2, 3, 4))
    t1 = sum(wi * x * y for wi, x, y in zip(w, xs, ys))
    t2 = sum(wi * x * x * y for wi, x, y in zip(w, xs, ys))
    det = s2 * s4 - s3 * s3
    p, q = ((t1 * s4 - t2 * s3) / det, (s2 * t2 - s3 * t1) / det) if det else (t1 / s2, 0.0)
    if q < 0:
        return t1 / s2, 0.0
    if p < 0:
        return 0.0, t2 / s4
    return p, q


def time_at(fit: tuple[float, float], x: float) -> float:
    p, q = fit
    return p * x + q * x * x


def length_for(fit: tuple[float, float], seconds: float) -> float:
    """The length at which ``time_fit``'s line-plus-parabola reaches ``seconds``."""
    p, q = fit
    if q <= 0:
        return seconds / p if p > 0 else float("inf")
    return (-p + math.sqrt(p * p + 4 * q * seconds)) / (2 * q)


def snap(modality: str, length: float) -> float:
    """The nearest length at or below ``length`` that the model takes: 1 + 4k frames, whole seconds."""
    if modality == "video":
        return 1 + 4 * max(0, int((length - 1) // 4))
    return max(1, int(length))


# --------------------------------------------------------------------------------------- driver


def fmt_slope(s: float) -> str:
    return "n/a" if math.isnan(s) else f"{s:.2f}"


STORE = CellStore()  # finished cells (--results, --stored-only)


def run(payload: list) -> dict | None:
    """One cell in a fresh subprocess, or its stored result (None: not stored, and ``--stored-only``)."""
    return STORE.get(json.dumps(payload), lambda: run_child(__file__, payload, ROOT))


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="two lengths per modality, attention to 1280 tokens, no verify"
    )
    p.add_argument("--steps", type=int, default=4, help="sampling steps of a generated clip")
    p.add_argument("--train-repeats", type=int, default=3, help="training steps timed per cell (median)")
    p.add_argument(
        "--fit-points", type=int, default=3, help="largest points each slope and line is fitted on"
    )
    p.add_argument("--budget-gib", type=float, default=24.0, help="memory the largest clip must fit in")
    p.add_argument(
        "--verify-seconds",
        type=float,
        default=10.0,
        help="predicted CPU seconds of a verification cell, at most",
    )
    p.add_argument("--guard-gib", type=float, default=18.0, help="resident-set cap of a verification cell")
    p.add_argument("--modalities", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument(
        "--parts",
        nargs="+",
        choices=["grid", "attention", "verify", "pipeline-chunks"],
        default=["grid", "attention", "verify"],
        help="what to run (verify needs grid: its fits; pipeline-chunks: generation with the pipeline's "
        "decode_chunk against the whole-clip decode)",
    )
    p.add_argument(
        "--tokens", type=int, nargs="+", default=None, help=f"attention token counts (default {TOKENS})"
    )
    CellStore.add_arguments(p)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    tokens = args.tokens or (QUICK_TOKENS if args.quick else TOKENS)
    global STORE
    STORE = CellStore.from_args(args)
    fit = args.fit_points
    print("## Scaling: cost against clip length and token count\n")
    print(f"Machine: {machine_line(1)}; each cell in a fresh process.")
    print(f"Command: `{' '.join(['python benchmarks/scaling.py', *sys.argv[1:]])}`")
    print(f"Generation: {args.steps} steps (dpmpp_2m, CFG batch 2); training step: fp32, batch 1, AdamW.")
    fits: dict[str, dict] = {}
    for modality in args.modalities if "grid" in args.parts else []:
        unit, rows, results = UNITS[modality], [], []
        for length in lengths[modality]:
            g = run(["generate", modality, length, args.steps, length, None])
            t = run(["train", modality, length, args.train_repeats, length, None])
            whole = run(["decode", modality, length, None])
            chunked = run(["decode", modality, length, CHUNKS[modality]])
            if None in (g, t, whole, chunked):
                continue
            results.append((length, g, t, whole, chunked))
            rows.append(
                [str(length), str(t["tokens"]), f"{g['seconds']:.2f}", f"{g.get('per_step', float('nan')):.3f}",
                 f"{g['peak_mib']:.0f}", f"{t['seconds']:.3f}", f"{t['peak_mib']:.0f}",
                 f"{whole['seconds']:.2f}", f"{whole['peak_mib']:.0f}", f"{chunked['seconds']:.2f}", f"{chunked['peak_mib']:.0f}"]
            )  # fmt: skip
            print(f"  {modality} {length} {unit} done", flush=True, file=sys.stderr)
        top = results[-fit:]
        xs, every = [r[0] for r in top], [r[0] for r in results]
        cols = [
            lambda r: r[1]["seconds"], lambda r: r[1].get("per_step", float("nan")), lambda r: r[1]["peak_mib"],
            lambda r: r[2]["seconds"], lambda r: r[2]["peak_mib"], lambda r: r[3]["seconds"],
            lambda r: r[3]["peak_mib"], lambda r: r[4]["seconds"], lambda r: r[4]["peak_mib"],
        ]  # fmt: skip
        rows.append(
            ["**log-log slope**", ""] + [fmt_slope(loglog_slope(xs, [c(r) for r in top])) for c in cols]
        )
        print_table(
            f"{modality} (`{MODELS[modality]}`): time (s) and peak memory added (MiB) against clip length",
            [unit, "tokens", "gen s", "gen s/step", "gen MiB", "train s", "train MiB",
             "decode s", "decode MiB", f"chunked ({CHUNKS[modality]}) s", "chunked MiB"],
            rows,
        )  # fmt: skip
        base = {"generate": results[-1][1]["base_mib"], "train": results[-1][2]["base_mib"]}
        print(
            f"\nBase resident set before the measured call (weights, text encoder, AdamW state): "
            f"generation {base['generate']:.0f} MiB, training {base['train']:.0f} MiB."
        )
        fits[modality] = {
            "generate": (line_fit(xs, [r[1]["peak_mib"] for r in top]), time_fit(every, [r[1]["per_step"] for r in results])),
            "train": (line_fit(xs, [r[2]["peak_mib"] for r in top]), time_fit(every, [r[2]["seconds"] for r in results])),
            "base": base,
        }  # fmt: skip

    for modality in args.modalities if "pipeline-chunks" in args.parts else []:
        rows = []
        for length in lengths[modality]:
            whole = run(["generate", modality, length, args.steps, length, None])
            chunked = run(["generate", modality, length, args.steps, length, None, CHUNKS[modality]])
            if None in (whole, chunked):
                continue
            rows.append(
                [str(length), f"{whole['seconds']:.2f}", f"{chunked['seconds']:.2f}", f"{whole['peak_mib']:.0f}",
                 f"{chunked['peak_mib']:.0f}"]
            )  # fmt: skip
            print(
                f"  {modality} {length} {UNITS[modality]} (pipeline chunks) done", flush=True, file=sys.stderr
            )
        print_table(
            f"{modality} (`{MODELS[modality]}`): generation with the whole-clip decode against "
            f"`pipe.decode_chunk = {CHUNKS[modality]}`",
            [UNITS[modality], "gen s (whole)", f"gen s (decode_chunk {CHUNKS[modality]})", "gen MiB (whole)",
             f"gen MiB (decode_chunk {CHUNKS[modality]})"],
            rows,
        )  # fmt: skip

    rows = []
    for n in tokens if "attention" in args.parts else []:
        a = run(["attention", n])
        if a is None:
            continue
        rows.append([str(n), f"{a['fwd_s']:.3f}", f"{a['fwd_mib']:.0f}", f"{a['bwd_s']:.3f}", f"{a['bwd_mib']:.0f}",
                     f"{HEADS * n * HEAD_DIM * 4 / 2**20:.1f}", f"{HEADS * n * n * 4 / 2**20:.0f}"])  # fmt: skip
        print(f"  attention {n} done", flush=True, file=sys.stderr)
    top = rows[-fit - 1 :]  # one more point: the smallest are all overhead
    xs = [float(r[0]) for r in top]
    if rows:
        rows.append(
            ["**log-log slope**"]
            + [fmt_slope(loglog_slope(xs, [float(r[i]) for r in top])) for i in range(1, 5)]
            + ["1", "2"]
        )
    if rows:
        print_table(
            f"SDPA self-attention alone (DiT-S heads: {HEADS} x {HEAD_DIM}, batch 1, fp32) against tokens",
            ["tokens", "fwd s", "fwd MiB", "fwd+bwd s", "fwd+bwd MiB", "q (one of q,k,v) MiB", "n x n scores MiB"],
            rows,
        )  # fmt: skip

    if args.quick or "verify" not in args.parts:
        return
    print(
        f"\n### The largest clip on {args.budget_gib:g} GiB (extrapolated, then checked at a feasible length)\n"
    )
    print("| modality | work | MiB per unit length | CPU s per step: p L + q L^2 | largest length on the budget | "
          "its predicted CPU time | checked at | predicted MiB / s | measured MiB / s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for modality, f in fits.items():
        unit = UNITS[modality]
        for work in ("generate", "train"):
            (a, b), tfit = f[work]
            base = f["base"][work]
            steps = args.steps if work == "generate" else 1
            largest = (args.budget_gib * 1024 - base - a) / b if b > 0 else float("inf")
            guarded = (args.guard_gib * 1024 - base - a) / b if b > 0 else float("inf")
            # the largest length whose predicted time (one step) is within the verification budget
            at = snap(modality, min(length_for(tfit, args.verify_seconds), guarded, largest))
            payload = [work, modality, at, 1, LENGTHS[modality][0], args.guard_gib]
            try:
                m = run(payload)
                result = "not run" if m is None else f"{m['peak_mib']:,.0f} / {m['seconds']:,.1f}"
            except subprocess.CalledProcessError as err:  # hit the guard (MemoryError) or failed: say so
                result = f"failed (exit {err.returncode}: {err.stderr.strip().splitlines()[-1][:80]})"
            print(
                f"| {modality} | {work} | {b:.2f} / {unit} | p {tfit[0]:.2e}, q {tfit[1]:.2e} | "
                f"{largest:,.0f} {unit} | {time_at(tfit, largest) * steps / 3600:,.1f} h ({steps} step(s)) | "
                f"{at} {unit} | {a + b * at:,.0f} / {time_at(tfit, at):,.1f} | {result} |"
            )


if __name__ == "__main__":
    main()
