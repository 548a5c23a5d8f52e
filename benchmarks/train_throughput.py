"""Training throughput per recipe: samples/s and peak memory; cache, gradient checkpointing, processes, threads.

    .venv/bin/python benchmarks/train_throughput.py                       # every recipe, every variant
    .venv/bin/python benchmarks/train_throughput.py --quick               # fewer steps, one repeat
    .venv/bin/python benchmarks/train_throughput.py --recipes tiny_latent --steps 20

Each cell trains one recipe with its own parts and the real :class:`~mediadiff.train.Trainer`, in a
fresh process: ``RECIPE.parser()`` parses the recipe's defaults (its model sizes and batch size) plus
``--max-steps``, a small ``--items`` where the recipe has it (the cache is built from that many items;
training cycles over them) and no periodic evaluation or checkpoint inside the window; ``RECIPE.build``
makes the parts and ``RECIPE.trainer`` the trainer. ``fit(until=W)`` runs ``--warmup`` steps (kernel set-
up, the DataLoader, AdamW's state), then the peak-RSS mark is reset (``echo 5 > /proc/self/clear_refs``,
as ``memory.peak_mib``) and ``fit()`` runs ``--steps`` more. The trainer's own ``metrics.jsonl`` record of
exactly that window (it logs once, at the window's end) gives samples/s (wall clock, every process's
samples); the peak resident set ``VmHWM`` is read after each step (``Trainer.train_step``) of rank 0, so
the checkpoint written after the window is not in it. Cells run under glibc's allocator as a user's
training runs, at its defaults: the 64 KiB mmap threshold the other memory benchmarks set
(``memory.run_child``) makes every freed buffer go back to the kernel and be faulted in again, which cost
a Tones latent step 37-42% of its samples/s in this script's first version. So the peak is the
process's, allocator slack included (a Tones latent process started at 64 KiB peaked 141 MiB lower). Model FLOPs
per step: the trainer's ``flops_per_step`` when its ``metrics.jsonl`` has one, else
:func:`mediadiff.train.flops.step_flops` (``FlopCounterMode`` on a meta copy of the backbone: forward +
backward of one micro-batch, times the processes). Achieved TFLOP/s = FLOPs per step x steps/s; MFU needs
a known peak (a GPU in ``flops.PEAK_BF16_TFLOPS``), so it is n/a on a CPU.

Variants, each against the recipe's default (cache as the recipe has it, no checkpointing, 1 process,
1 torch thread):

- ``cache``: the other cache state (the latent + text cache of ``mediadiff.train.cache`` on or off;
  recipes with no autoencoder have none). The one-off build time of the cache is reported, and from it
  the epochs after which the cache has paid for itself;
- ``ckpt``: the backbone's ``gradient_checkpointing`` on (each block / stage recomputed in backward);
- ``2 proc``: ``torchrun --standalone --nproc_per_node 2`` (DDP over gloo), 1 thread per process; scaling
  efficiency = samples/s(2 processes) / (2 x samples/s(1 process));
- ``2 threads``: 1 process with 2 torch threads.

Speed is compared as ratios of cells run alternately (default, variant, default, variant, ... for
``--repeats`` rounds; medians), because the machine's other work changes absolute times.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from memory import CellStore, proc_status_kib
from scaling import machine_line

ROOT = Path(__file__).resolve().parents[1]
# recipe -> (script, extra flags: a small --items for the cache, where the recipe has it)
RECIPES = {
    "shapes_dit": ("recipes/video/shapes_dit.py", ["--items", "128"]),
    "shapes_unet3d": ("recipes/video/shapes_unet3d.py", []),
    "tones_latent": ("recipes/audio/tones_latent.py", ["--items", "256"]),
    "tones_mel": ("recipes/audio/tones_mel.py", ["--items", "256"]),
    "tiny_latent": ("recipes/examples/tiny_latent.py", ["--items", "64"]),
}


def load_recipe(script: str):
    """The ``RECIPE`` of a recipe script, imported from its path."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE


def has_default_cache(recipe) -> bool:
    """Whether the recipe trains from a cache when ``--cache`` is not given (``Recipe(cache="...")``)."""
    return isinstance(recipe.cache, str)


def checkpointable(backbone: torch.nn.Module) -> bool:
    """Whether the backbone has a ``gradient_checkpointing`` switch (its config field)."""
    return hasattr(getattr(backbone, "config", None), "gradient_checkpointing")


# ----------------------------------------------------------------------------------- the child


def child(name: str, cache: bool, ckpt: bool, threads: int, warmup: int, steps: int, out: str) -> dict:
    """Train ``warmup + steps`` steps of recipe ``name`` in this process (one rank of a torchrun); the
    window's samples/s, peak RSS, FLOPs per step, and the cache build's seconds."""
    from mediadiff.train.flops import step_flops

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    script, extra = RECIPES[name]
    recipe = load_recipe(script)
    rank = int(os.environ.get("RANK", "0"))
    run_dir = Path(out) / "run"
    argv = [
        "--output-dir", str(run_dir), "--max-steps", str(warmup + steps), "--log-every", str(10 * (warmup + steps)),
        "--checkpoint-every", str(10 * (warmup + steps)), "--sample-every", "0", *extra,
    ]  # fmt: skip
    if cache and recipe.cache:
        argv += ["--cache", str(Path(out) / "cache")]
    args = recipe.parser().parse_args(argv)
    recipe.check_args(script, args)
    torch.manual_seed(args.seed)
    parts = recipe.build(args)
    parts.evaluate = parts.sample_fn = None  # a throughput run: no periodic evaluation, no final samples
    ckpt = ckpt and checkpointable(parts.backbone)
    if ckpt:
        parts.backbone.gradient_checkpointing = True  # what the config field sets (read in forward)
    trainer = (recipe if cache else dataclasses.replace(recipe, cache=False)).trainer(args, parts)
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer.training_data()  # the cache: opened, or built once (rank 0 encodes, the others wait)
    cache_s = time.perf_counter() - start if trainer.cached else 0.0
    cache_cpu_s = time.process_time() - start_cpu if trainer.cached else 0.0
    trainer.fit(until=warmup)

    hwm: list[int] = []
    cpu: list[float] = []
    train_step = trainer.train_step

    def measured_step():
        start = time.process_time()
        result = train_step()
        cpu.append(time.process_time() - start)
        hwm.append(proc_status_kib("VmHWM"))
        return result

    trainer.train_step = measured_step
    rss = proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    trainer.fit()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    window = [r for r in records if r.get("step") == warmup + steps and "samples_per_s" in r][-1]
    flops = window.get("flops_per_step")
    if flops is None:
        x0, cond = trainer.prepare_batch(trainer.next_batch())  # one micro-batch as the loss sees it
        t = torch.rand(x0.shape[0])
        flops = step_flops(trainer.unwrapped_model, x0, t, **cond) * trainer.world_size
        source = "step_flops"
    else:
        source = "trainer"
    return {
        "rank": rank,
        "samples_per_s": window["samples_per_s"],
        "steps_per_s": window["samples_per_s"] / trainer.global_batch,
        "peak_mib": max(hwm) / 1024,
        "rss_before_mib": rss / 1024,
        "cpu_s_per_step": statistics.median(cpu),
        "flops_per_step": flops,
        "flops_source": source,
        "cache_s": cache_s,
        "cache_cpu_s": cache_cpu_s,
        "cached": trainer.cached,
        "items": len(trainer.training_data()),
        "batch": args.batch_size,
        "world_size": trainer.world_size,
        "precision": trainer.mixed_precision,
        "checkpointing": ckpt,
    }


# ----------------------------------------------------------------------------------- the driver


STORE = CellStore()  # finished cells, a list of rounds each (--results, --stored-only)
ALLOCATOR = "glibc-defaults"  # in each cell's key: cells stored before it ran at a 64 KiB mmap threshold


def run_cell(
    name: str, cache: bool, ckpt: bool, threads: int, procs: int, warmup: int, steps: int, round_: int
) -> dict | None:
    """Round ``round_`` of one cell: stored, else run in a fresh process (``procs`` > 1: under
    torchrun); rank 0's result (None: not stored, and ``--stored-only``)."""
    key = json.dumps([name, cache, ckpt, threads, procs, warmup, steps, ALLOCATOR])
    return STORE.get(key, lambda: run_fresh(name, cache, ckpt, threads, procs, warmup, steps), round_)


def run_fresh(name: str, cache: bool, ckpt: bool, threads: int, procs: int, warmup: int, steps: int) -> dict:
    """One cell in a fresh process (``procs`` > 1: under torchrun); rank 0's result."""
    with tempfile.TemporaryDirectory(prefix="mediadiff-throughput-") as out:
        payload = json.dumps([name, cache, ckpt, threads, warmup, steps, out])
        cmd = [sys.executable, __file__, "--child", payload]
        if procs > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(procs), __file__, "--child", payload]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's defaults
        env["OMP_NUM_THREADS"] = str(threads)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if proc.returncode:
            raise RuntimeError(f"{name} cell failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        results = [json.loads(ln) for ln in lines]
        return next(r for r in results if r["rank"] == 0)


def variants(name: str) -> list[tuple[str, dict]]:
    """The recipe's cells: the default first, then each variant it has."""
    recipe = load_recipe(RECIPES[name][0])
    default_cache = has_default_cache(recipe)
    base = {"cache": default_cache, "ckpt": False, "threads": 1, "procs": 1}
    cells = [("default", base)]
    if recipe.cache:
        cells.append(("cache " + ("off" if default_cache else "on"), {**base, "cache": not default_cache}))
    cells += [
        ("ckpt", {**base, "ckpt": True}),
        ("2 proc", {**base, "procs": 2}),
        ("2 threads", {**base, "threads": 2}),
    ]
    return cells


def fmt_flops(flops: float) -> str:
    return f"{flops / 1e9:.1f} G"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--warmup", type=int, default=2, help="steps before the measured window")
    p.add_argument("--steps", type=int, default=6, help="steps in the measured window")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds of default and variants")
    p.add_argument("--quick", action="store_true", help="--warmup 1 --steps 3 --repeats 1")
    CellStore.add_arguments(p)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))), flush=True)
        return
    if args.quick:
        args.warmup, args.steps, args.repeats = 1, 3, 1
    global STORE
    STORE = CellStore.from_args(args)

    print("## Training throughput per recipe\n")
    print(f"Machine: {machine_line(1)}.")
    print(f"Command: `{' '.join(['python benchmarks/train_throughput.py', *sys.argv[1:]])}`")
    print(
        f"Each cell: {args.warmup} warm-up steps, then {args.steps} measured; median of {args.repeats} "
        "alternating round(s), glibc's allocator at its defaults. Peak RSS: the process (rank 0) during the "
        "measured steps.\n"
    )
    print("| recipe | cell | batch | precision | samples/s | vs default | peak RSS MiB | CPU s/step | "
          "GFLOP/step | TFLOP/s (wall) | GFLOP per CPU s | notes |")  # fmt: skip
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in args.recipes:
        cells = variants(name)
        runs: dict[str, list[dict]] = {label: [] for label, _ in cells}
        for i in range(args.repeats):  # default, variant, default, variant, ...: the machine's load is shared
            for label, cell in cells:
                result = run_cell(name, **cell, warmup=args.warmup, steps=args.steps, round_=i)
                if result is not None:
                    runs[label].append(result)
                print(f"  {name} {label} done", file=sys.stderr, flush=True)
        if not runs["default"]:
            continue
        default_sps = statistics.median(r["samples_per_s"] for r in runs["default"])
        for label, cell in cells:
            rs = runs[label]
            if not rs:
                continue
            sps = statistics.median(r["samples_per_s"] for r in rs)
            r = rs[-1]
            notes = []
            if r["cached"]:
                build = statistics.median(x.get("cache_cpu_s", x["cache_s"]) for x in rs) / r["items"]
                notes.append(f"cache build {build * 1000:.0f} CPU ms/item")
                other = [lb for lb, c in cells if lb != label and c["procs"] == 1 and c["threads"] == 1
                         and not c["ckpt"] and c["cache"] != cell["cache"]]  # fmt: skip
                alone = cell["procs"] == 1 and cell["threads"] == 1 and not cell["ckpt"]
                if (
                    alone and other and runs[other[0]]
                ):  # CPU a cached sample saves against the build's per item
                    on = statistics.median(x["cpu_s_per_step"] for x in rs) / r["batch"]
                    off = statistics.median(x["cpu_s_per_step"] for x in runs[other[0]]) / r["batch"]
                    if off > on:
                        notes.append(f"pays off after {build / (off - on):.2f} epochs")
                    else:
                        notes.append("saves no CPU time per sample")
            if label == "2 proc":
                cpu_1 = statistics.median(x["cpu_s_per_step"] for x in runs["default"])
                cpu_2 = statistics.median(x["cpu_s_per_step"] for x in rs)
                notes.append(
                    f"scaling efficiency {sps / (2 * default_sps):.2f} (wall); CPU s/step 1 proc / 2 proc "
                    f"{cpu_1 / cpu_2:.2f}"
                )
            if label == "ckpt" and not r["checkpointing"]:
                notes.append("backbone has no gradient_checkpointing: same as default")
            tflops = r["flops_per_step"] * sps / (r["batch"] * r["world_size"]) / 1e12
            print(
                f"| {name} | {label} | {r['batch']}{' x 2' if cell['procs'] > 1 else ''} | {r['precision']} | "
                f"{sps:.2f} | {sps / default_sps:.2f}x | "
                f"{statistics.median(x['peak_mib'] for x in rs):.0f} | "
                f"{statistics.median(x['cpu_s_per_step'] for x in rs):.2f} | "
                f"{fmt_flops(r['flops_per_step'])} | {tflops:.4f} | "
                f"{r['flops_per_step'] / cell['procs'] / statistics.median(x['cpu_s_per_step'] for x in rs) / 1e9:.1f} | "
                f"{'; '.join(notes)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
