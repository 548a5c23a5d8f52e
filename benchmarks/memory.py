"""Peak-memory helpers of the benchmarks (``video_vae.py``, ``audio_autoencoders.py``).

A measurement runs in a fresh subprocess (:func:`run_child`) so nothing another model allocated is
counted. There :func:`peak_mib` runs a function once and reports the peak memory it added: on CUDA
from ``torch.cuda.max_memory_allocated``; on the CPU from the kernel's peak resident set (``VmHWM``,
reset to the current ``VmRSS`` with ``echo 5 > /proc/self/clear_refs``, Linux). :func:`run_child`
fixes glibc's mmap threshold at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so freed tensors leave the resident
set at once and RSS tracks live memory; the resolution is a few MiB (allocator and oneDNN scratch).
That setting costs speed (each freed buffer over 64 KiB goes back to the kernel and the next one is
page-faulted in afresh: 37-42% of a Tones latent train step's samples/s), so a speed measurement runs
at glibc's defaults instead (``train_throughput.py``).

Scripts in this folder import it as a sibling module (``from memory import ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["CellStore", "peak_mib", "proc_status_kib", "run_child"]


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_mib(fn: Callable[[], object], device: str) -> tuple[object, float, float]:
    """``(fn(), peak MiB it added, seconds)``: call ``fn`` once after the caller's warm-up."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = proc_status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    start = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (proc_status_kib("VmHWM") - base) / 1024
    return out, peak, time.perf_counter() - start


def run_child(script: str, payload: list, cwd: Path) -> dict:
    """Run ``script --child JSON(payload)`` in a fresh interpreter; its last stdout line is a JSON result."""
    cmd = [sys.executable, script, "--child", json.dumps(payload)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


class CellStore:
    """Finished benchmark cells by key, kept in a JSON file (``--results``) so an interrupted run resumes;
    with ``--stored-only`` a script prints what the file holds and runs nothing (a missing cell is None).

    A cell is one result (:meth:`get` without ``round_``) or a list of rounds (``round_=i``).
    """

    def __init__(self, path: Path | None = None, stored_only: bool = False) -> None:
        self.path, self.stored_only = path, stored_only
        self.cells: dict = json.loads(path.read_text()) if path is not None and path.is_file() else {}

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """``--results FILE`` and ``--stored-only``."""
        parser.add_argument(
            "--results",
            type=Path,
            default=None,
            help="JSON file of finished cells: reused, and extended as cells finish",
        )
        parser.add_argument(
            "--stored-only", action="store_true", help="print the cells --results holds; run none"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CellStore:
        """The store the parsed ``--results`` / ``--stored-only`` name."""
        return cls(args.results, args.stored_only)

    def get(self, key: str, compute: Callable[[], object], round_: int | None = None) -> object | None:
        """The stored cell ``key`` (its round ``round_``), else ``compute()``'s result, stored and written."""
        if round_ is None:
            if key not in self.cells:
                if self.stored_only:
                    return None
                self.cells[key] = compute()
                self._write()
            return self.cells[key]
        done = self.cells.setdefault(key, [])
        if round_ >= len(done):
            if self.stored_only:
                return None
            done.append(compute())
            self._write()
        return done[round_]

    def _write(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps(self.cells, indent=1))
