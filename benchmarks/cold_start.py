"""Cold start: the wall time of a fresh ``mediadiff generate`` process to its first clip, phase by phase.

    python benchmarks/cold_start.py               # both modalities, 3 fresh processes each
    python benchmarks/cold_start.py --repeats 5 --modality video

Each repeat starts a new Python process (what a user's shell does) that runs the same steps as
``mediadiff generate MODALITY PROMPT -o FILE`` with the shipped default model, and stamps the clock after
each phase:

- ``python``: the interpreter up to the first line of the script (measured as the process's start to
  that line: ``time.time()`` at launch in the parent against the child's first stamp);
- ``import torch``; ``import transformers`` (what the text encoder loads); ``import mediadiff``
  (``mediadiff.cli`` and the pipeline registry, as the command builds its parser);
- ``load``: ``from_pretrained`` of the default model (backbone, autoencoder, text encoder);
- ``sample``: ``generate`` of one clip (text encoding, sampling, decoding);
- ``write``: writing the file (mp4 or wav).

The table prints medians over ``--repeats`` processes, run one after another, and the same command
through the real entry point (``mediadiff generate ...``) as the "end to end" row. Issue 18's target is
under 3 s end to end for both modalities.
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
from pathlib import Path

CHILD = r"""
import json, sys, time
stamps = {"start": time.time()}
import torch
stamps["import torch"] = time.time()
import transformers
stamps["import transformers"] = time.time()
from mediadiff.cli import build_parser
from mediadiff.pipelines import pipeline_class
build_parser()
stamps["import mediadiff"] = time.time()
modality, prompt, out = sys.argv[1:4]
cls = pipeline_class(modality)
pipe = cls.from_pretrained(cls.DEFAULT_MODEL)
stamps["load"] = time.time()
result = pipe.generate(prompt, seed=0)
stamps["sample"] = time.time()
result.save(out)
stamps["write"] = time.time()
print(json.dumps(stamps))
"""

PROMPTS = {"video": "a red circle moving right", "audio": "a square wave playing E4, rising"}
SUFFIX = {"video": ".mp4", "audio": ".wav"}
PHASES = ["python", "import torch", "import transformers", "import mediadiff", "load", "sample", "write"]


def phases(modality: str, folder: Path) -> dict[str, float]:
    """One fresh process: seconds spent in each phase."""
    out = folder / f"clip{SUFFIX[modality]}"
    launched = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, modality, PROMPTS[modality], str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    stamps = json.loads(proc.stdout.strip().splitlines()[-1])
    times = {"python": stamps["start"] - launched}
    previous = stamps["start"]
    for name in PHASES[1:]:
        times[name] = stamps[name] - previous
        previous = stamps[name]
    times["total"] = previous - launched
    return times


def end_to_end(modality: str, folder: Path) -> float:
    """Wall seconds of the real command, from launch to exit."""
    exe = Path(sys.executable).with_name("mediadiff")
    command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "mediadiff.cli"]
    start = time.perf_counter()
    subprocess.run(
        [*command, "generate", modality, PROMPTS[modality], "-o", str(folder / f"e2e{SUFFIX[modality]}"),
         "--seed", "0"],
        capture_output=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per modality (default 3)")
    parser.add_argument("--modality", choices=["video", "audio", "both"], default="both")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    modalities = ["video", "audio"] if args.modality == "both" else [args.modality]
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for modality in modalities:
            runs = [phases(modality, folder) for _ in range(args.repeats)]
            medians = {k: statistics.median(r[k] for r in runs) for k in [*PHASES, "total"]}
            medians["end to end (mediadiff generate)"] = statistics.median(
                end_to_end(modality, folder) for _ in range(args.repeats)
            )
            columns[modality] = medians
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"cold start, median of {args.repeats} fresh processes (OMP_NUM_THREADS={threads}), seconds\n")
    print("| phase | " + " | ".join(modalities) + " |")
    print("|---|" + "---|" * len(modalities))
    for name in [*PHASES, "total", "end to end (mediadiff generate)"]:
        cells = " | ".join(f"{columns[m][name]:.2f}" for m in modalities)
        label = f"**{name}**" if name.startswith(("total", "end")) else name
        print(f"| {label} | {cells} |")


if __name__ == "__main__":
    main()
