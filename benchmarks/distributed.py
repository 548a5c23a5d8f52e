"""Memory per process and throughput: FSDP2 vs DDP on two CPU processes over gloo, for the Shapes DiT recipe.

    python benchmarks/distributed.py                      # DiT width 384, depth 12 (~37M parameters)
    python benchmarks/distributed.py --width 128 --depth 6 --steps 4 --rounds 1

Each run is ``accelerate launch`` of this script (``--worker``) with 2 processes: DDP (``--multi_gpu``,
what the trainer does on CPUs) or FSDP (``--config_file recipes/accelerate/fsdp.yaml``, the config the
README gives), both training ``recipes/video/shapes_dit.py`` from the same latent cache (built first)
with ``--mixed-precision no``. Per process it reports

- the training state it holds, counted: the local elements (a DTensor's shard) of the parameters, of
  the gradients (after one more backward), of AdamW's two moments and of the EMA, x 4 bytes (fp32);
- the peak resident set added from just before the trainer is built to the end of training (Linux
  ``VmHWM`` reset with ``/proc/self/clear_refs``; glibc's mmap threshold at 64 KiB so freed memory
  leaves the resident set): state + activations + gathered FSDP units + allocator slack;
- samples/s (median over the logged steps after the first two) and the model TFLOP/s the trainer logs.

Runs alternate DDP, FSDP, DDP, FSDP, ... (``--rounds``) and each row is the median over its rounds:
another helper's jobs load the machine's other core.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "accelerate" / "fsdp.yaml"
MIB = 2**20


def recipe_args(args: argparse.Namespace, out: str, cache: str, steps: int) -> list[str]:
    return [
        "--output-dir", out, "--cache", cache, "--items", str(args.items), "--width", str(args.width),
        "--depth", str(args.depth), "--heads", str(args.heads), "--batch-size", str(args.batch_size),
        "--max-steps", str(steps), "--log-every", "1", "--checkpoint-every", "100000", "--mixed-precision", "no",
        "--ema-decay", "0.999", "--sample-every", "0", "--eval-num", "1",
    ]  # fmt: skip


def load_recipe():
    spec = importlib.util.spec_from_file_location("shapes_dit", ROOT / "recipes" / "video" / "shapes_dit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE


def worker(args: argparse.Namespace) -> None:
    """One process of a launched run: train, then write what it held to ``OUT/mode-rank-R.json``."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from memory import proc_status_kib

    from mediadiff.train.fsdp import local_numel

    recipe = load_recipe()
    rargs = recipe.parser().parse_args(recipe_args(args, f"{args.out}/{args.mode}", args.cache, args.steps))
    torch.manual_seed(rargs.seed)
    parts = recipe.build(rargs)
    parts.evaluate = None  # throughput and memory of training only: no end-of-run evaluation
    base = proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    trainer = recipe.trainer(rargs, parts)
    trainer.fit()
    x0, cond = trainer.prepare_batch(trainer.next_batch())  # one more backward: the gradients held
    trainer.accelerator.backward(trainer.loss(x0, cond).mean())
    peak = proc_status_kib("VmHWM") - base
    model = trainer.unwrapped_model
    params = list(model.parameters())
    ema = local_numel(trainer.ema.parameters())  # ShardedEMA (FSDP) or AveragedModel (DDP)
    state = {
        "params": local_numel(params),
        "grads": local_numel(p.grad for p in params if p.grad is not None),
        "adam": local_numel(
            v for s in trainer.optimizer.optimizer.state.values() for k, v in s.items() if k != "step"
        ),
        "ema": ema,
    }
    lines = [json.loads(x) for x in (Path(args.out) / args.mode / "metrics.jsonl").read_text().splitlines()]
    logged = [e for e in lines if "samples_per_s" in e][2:]
    result = {
        "mode": args.mode,
        "rank": trainer.rank,
        "distributed": str(trainer.accelerator.distributed_type),
        "total_params": sum(p.numel() for p in params),
        "state_mib": {k: 4 * v / MIB for k, v in state.items()},
        "peak_rss_mib": peak / 1024,
        "samples_per_s": statistics.median(e["samples_per_s"] for e in logged) if logged else None,
        "tflops_per_s": statistics.median(e["tflops_per_s"] for e in logged) if logged else None,
    }
    Path(args.out, f"{args.mode}-rank-{trainer.rank}.json").write_text(json.dumps(result))
    trainer.accelerator.end_training()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, mode: str, out: Path) -> list[dict]:
    how = ["--config_file", str(CONFIG)] if mode == "fsdp" else ["--multi_gpu"]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", *how, "--num_processes", "2",
        "--main_process_port", str(free_port()), __file__, "--worker", "--mode", mode, "--out", str(out),
        "--cache", str(args.cache), *passthrough(args),
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return [json.loads((out / f"{mode}-rank-{r}.json").read_text()) for r in range(2)]


def passthrough(args: argparse.Namespace) -> list[str]:
    return [
        "--items", str(args.items), "--width", str(args.width), "--depth", str(args.depth), "--heads",
        str(args.heads), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
    ]  # fmt: skip


def machine_line() -> str:
    import torch

    from mediadiff.utils import cpu_name

    cpu = cpu_name()
    return (
        f"{cpu}, {os.cpu_count()} cores, 2 processes x 1 thread (OMP_NUM_THREADS=1), torch {torch.__version__}, "
        f"{datetime.date.today()}; the other core was loaded by other jobs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2, help="per process")
    parser.add_argument("--items", type=int, default=32, help="clips in the latent cache")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="DDP, FSDP pairs (medians over them)")
    parser.add_argument("--cache", default=None, help="latent cache folder (default: a temporary one)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    with tempfile.TemporaryDirectory() as tmp:
        args.cache = args.cache or f"{tmp}/cache"
        recipe = load_recipe()  # encode the cache once, before anything is measured
        recipe.main([*recipe_args(args, f"{tmp}/cache-run", args.cache, 1), "--cache-only"])
        rows: dict[str, list[list[dict]]] = {"ddp": [], "fsdp": []}
        for r in range(args.rounds):
            for mode in ("ddp", "fsdp"):
                rows[mode].append(launch(args, mode, Path(tmp) / f"round-{r}"))
    print(f"\nMachine: {machine_line()}")
    print(f"Command: python benchmarks/distributed.py {' '.join(sys.argv[1:])}".rstrip())
    n = rows["ddp"][0][0]["total_params"]
    print(
        f"\nShapes DiT width {args.width}, depth {args.depth} ({n / 1e6:.1f}M parameters), batch {args.batch_size} "
        f"per process, {args.steps} steps, fp32; medians of {args.rounds} run(s) each, per process (rank 0 / rank 1)\n"
    )
    print(
        "| mode | params MiB | grads MiB | AdamW MiB | EMA MiB | state MiB | peak RSS added MiB | samples/s | TFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, runs in rows.items():

        def med(get, runs=runs) -> list[float]:  # per rank, the median over the rounds
            return [statistics.median(get(run[rank]) for run in runs) for rank in range(2)]

        cells = ["DDP" if mode == "ddp" else "FSDP2"]
        for key in ("params", "grads", "adam", "ema"):
            a, b = med(lambda r, key=key: r["state_mib"][key])
            cells.append(f"{a:.1f} / {b:.1f}")
        a, b = med(lambda r: sum(r["state_mib"].values()))
        cells.append(f"{a:.1f} / {b:.1f}")
        a, b = med(lambda r: r["peak_rss_mib"])
        cells.append(f"{a:.0f} / {b:.0f}")
        cells.append(f"{statistics.median(run[0]['samples_per_s'] for run in runs):.2f}")
        cells.append(f"{statistics.median(run[0]['tflops_per_s'] for run in runs):.4f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
