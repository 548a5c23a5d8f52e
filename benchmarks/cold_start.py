"""Cold start: the wall time of a fresh ``mediadiff generate`` process to its first clip, phase by phase.

    python benchmarks/cold_start.py               # both modalities, 3 fresh processes each
    python benchmarks/cold_start.py --repeats 5 --modality video
    git archive 2c92fc5 | tar -x -C /tmp/before   # an older tree, measured interleaved with this one:
    python benchmarks/cold_start.py --baseline /tmp/before

Each repeat starts a new Python process (what a user's shell does) that runs the same steps as
``mediadiff generate MODALITY PROMPT -o FILE`` with the shipped default model, and stamps the clock
(wall and the process's CPU time) after each phase:

- ``python``: the interpreter up to the first line of the script (the parent's launch time against
  the child's first stamp);
- ``import torch``;
- ``import mediadiff``: ``mediadiff.cli``, the pipeline registry and the command's parser
  (``build_parser``), as the command builds them;
- ``load``: ``from_pretrained`` of the default model (backbone, autoencoder, text encoder; issue 18's
  text encoder no longer imports transformers: the row ``transformers imported`` says whether it was);
- ``sample``: ``generate`` of one clip (text encoding, sampling, decoding);
- ``write``: writing the file (mp4 or wav);
- ``exit``: from the last stamp to the parent seeing the process end, ended as the command ends it
  (``mediadiff.cli._exit_now`` where the tree has it, else a normal interpreter exit).

One uncounted process per tree and modality comes first (it writes the bytecode caches a fresh
tree lacks and reads the weights into the page cache). The table prints medians over ``--repeats``
processes, and the same command through the real entry
point (``mediadiff generate ...``, or ``python -c 'from mediadiff.cli import main; ...'`` for a
``--baseline`` tree) as the "end to end" row, with its CPU seconds (user + system, from ``wait4``).
With ``--baseline DIR`` each repeat runs the baseline tree and this one back to back (A, B, A, B, ...),
so both columns see the same load. Issue 18's target is under 3 s end to end for both modalities.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

CHILD = r"""
import json, sys, time
def stamp(name):
    stamps[name] = (time.time(), time.process_time())
stamps = {}
stamp("start")
import torch
stamp("import torch")
from mediadiff.cli import build_parser
from mediadiff.pipelines import pipeline_class
build_parser()
stamp("import mediadiff")
modality, prompt, out = sys.argv[1:4]
cls = pipeline_class(modality)
pipe = cls.from_pretrained(cls.DEFAULT_MODEL)
stamp("load")
result = pipe.generate(prompt, seed=0)
stamp("sample")
result.save(out)
stamp("write")
stamps["transformers"] = "transformers" in sys.modules
print(json.dumps(stamps), flush=True)
import mediadiff.cli as cli
if hasattr(cli, "_exit_now"):
    cli._exit_now(0)
"""

ENTRY = "import sys; from mediadiff.cli import main; sys.argv[0] = 'mediadiff'; sys.exit(main())"
PROMPTS = {"video": "a red circle moving right", "audio": "a square wave playing E4, rising"}
SUFFIX = {"video": ".mp4", "audio": ".wav"}
PHASES = ["python", "import torch", "import mediadiff", "load", "sample", "write", "exit"]
E2E = "end to end (mediadiff generate)"


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Launch time, end time, CPU seconds (user + system, from ``wait4``) and stdout of one process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        launched = time.time()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=env.get("PYTHONPATH"))
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{command[:4]}... exited {proc.returncode}: {err.read().decode()[-2000:]}")
        return launched, ended, usage.ru_utime + usage.ru_stime, out.read().decode()


def _env(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    # a user's shell writes bytecode caches on the first run and reads them from then on; a sandbox that
    # sets PYTHONDONTWRITEBYTECODE would recompile every mediadiff module in every process (~0.1 s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if tree is not None:  # the baseline's mediadiff ahead of the installed (editable) one; run from there,
        env["PYTHONPATH"] = str(tree)  # as `python -c` puts the working folder first
    return env


def phases(modality: str, folder: Path, tree: Path | None) -> dict[str, float]:
    """One fresh process: wall seconds spent in each phase (and ``cpu ...`` for the CPU seconds)."""
    out = folder / f"clip{SUFFIX[modality]}"
    launched, ended, cpu, stdout = _run(
        [sys.executable, "-c", CHILD, modality, PROMPTS[modality], str(out)], _env(tree)
    )
    stamps = json.loads(stdout.strip().splitlines()[-1])
    times = {"python": stamps["start"][0] - launched, "cpu python": float("nan")}
    previous = stamps["start"]
    for name in PHASES[1:-1]:
        times[name] = stamps[name][0] - previous[0]
        times[f"cpu {name}"] = stamps[name][1] - previous[1]
        previous = stamps[name]
    times["exit"] = ended - previous[0]
    times["cpu exit"] = cpu - previous[1]
    times["total"] = ended - launched
    times["cpu total"] = cpu
    times["transformers imported"] = float(stamps["transformers"])
    return times


def end_to_end(modality: str, folder: Path, tree: Path | None) -> tuple[float, float]:
    """Wall and CPU seconds of the real command, from launch to exit."""
    exe = Path(sys.executable).with_name("mediadiff")
    command = [str(exe)] if exe.is_file() and tree is None else [sys.executable, "-c", ENTRY]
    args = [
        "generate",
        modality,
        PROMPTS[modality],
        "-o",
        str(folder / f"e2e{SUFFIX[modality]}"),
        "--seed",
        "0",
    ]
    launched, ended, cpu, _ = _run([*command, *args], _env(tree))
    return ended - launched, cpu


def header(command: str) -> str:
    import torch

    from mediadiff.utils import cpu_name

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"cold start: {cpu_name()}, {os.cpu_count()} cores, OMP_NUM_THREADS={threads} "
        f"(torch threads {torch.get_num_threads()}), torch {torch.__version__}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average {load} (1/5/15 min)\n"
        f"command: {command}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per modality (default 3)")
    parser.add_argument("--modality", choices=["video", "audio", "both"], default="both")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="an older source tree to measure interleaved with this one",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.baseline is not None and not (args.baseline / "mediadiff" / "cli.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a mediadiff source tree (no mediadiff/cli.py)")
    modalities = ["video", "audio"] if args.modality == "both" else [args.modality]
    trees: list[tuple[str, Path | None]] = [("", None)]
    if args.baseline is not None:
        trees = [(" (baseline)", args.baseline.resolve()), ("", None)]
    command = "python benchmarks/cold_start.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(header(command.strip()) + "\n")
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for modality in modalities:
            runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
            for _, tree in trees:  # not counted: fills the bytecode and page caches, as a user's second run
                phases(modality, folder, tree)
            for _ in range(args.repeats):
                for label, tree in trees:  # A, B, A, B, ...: both trees see the same load
                    row = phases(modality, folder, tree)
                    row[E2E], row[f"cpu {E2E}"] = end_to_end(modality, folder, tree)
                    runs[label].append(row)
            for label, _ in trees:
                keys = runs[label][0].keys()
                columns[modality + label] = {k: statistics.median(r[k] for r in runs[label]) for k in keys}
    names = list(columns)
    print(f"median of {args.repeats} fresh processes, seconds: wall (CPU of the process)\n")
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name in [*PHASES, "total", E2E]:
        cells = []
        for column in names:
            wall, cpu = columns[column][name], columns[column].get(f"cpu {name}", float("nan"))
            cells.append(f"{wall:.2f}" + ("" if cpu != cpu else f" ({cpu:.2f})"))
        label = f"**{name}**" if name.startswith(("total", "end")) else name
        print(f"| {label} | {' | '.join(cells)} |")
    cells = " | ".join("yes" if columns[c]["transformers imported"] else "no" for c in names)
    print(f"| transformers imported | {cells} |")


if __name__ == "__main__":
    main()
