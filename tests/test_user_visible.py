"""What a user sees does not change with the code behind it: the shipped video models give the frames
recorded in ``tests/data/video_hashes.json`` (by ``tests/golden_video.py``, before the shared-pipeline
refactor) bit for bit, for the same prompts, seeds and settings."""

from __future__ import annotations

import json

import pytest
import torch

from mediadiff.utils import cpu_bf16_supported
from tests.golden_video import CASES, HASHES, cpu_vendor, frames_hash

RECORD = json.loads(HASHES.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_frames_are_bit_identical(name):
    case = CASES[name]
    if case.get("autocast", None) is None and cpu_bf16_supported() != RECORD["cpu_bf16"]:
        pytest.skip("recorded on a CPU with another bf16 answer: the default precision differs")
    if cpu_vendor() != RECORD["cpu_vendor"]:  # measured: an AMD EPYC rounds the Xeon's kernels otherwise
        pytest.skip(f"recorded on a {RECORD['cpu_vendor']} CPU; another vendor's kernels round otherwise")
    if torch.__version__ != RECORD["torch"]:
        pytest.skip(
            f"recorded with torch {RECORD['torch']}; kernels of torch {torch.__version__} may round otherwise"
        )
    assert frames_hash(case) == RECORD["hashes"][name]


@pytest.mark.slow
def test_eval_video_prints_the_recorded_table(tmp_path, capsys):
    """``mediadiff eval video --model shapes-dit --num 40 --threads 1``: the table and the real-vs-real
    line as printed before the refactor (tests/data/eval_video_shapes_dit_40.txt; about a minute)."""
    from mediadiff.cli import main

    if not cpu_bf16_supported() or torch.__version__ != RECORD["torch"]:
        pytest.skip("recorded in bf16 on a CPU with native bf16 and the recorded torch")
    if cpu_vendor() != RECORD["cpu_vendor"]:  # measured: on an AMD EPYC with AVX-512 BF16, 17.21 for 17.18
        pytest.skip(f"recorded on a {RECORD['cpu_vendor']} CPU; another vendor's kernels round otherwise")
    threads = torch.get_num_threads()
    try:
        assert main(["eval", "video", "--model", "shapes-dit", "--num", "40", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    expected = (HASHES.parent / "eval_video_shapes_dit_40.txt").read_text().splitlines()
    assert lines[1 : 1 + len(expected)] == expected  # line 0 holds the timing
