"""Hub ids: ``from_pretrained("org/name")`` resolves through huggingface_hub's cache, offline.

The test lays out the cache the way ``huggingface_hub`` writes it (``models--org--name/refs/main`` naming
a snapshot folder) with a copy of the shipped tones-dit pipeline folder, then loads and samples it in a
fresh process with ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` pointing there.
"""

import os
import shutil
import subprocess
import sys

import pytest

from mediadiff.pipelines import AudioPipeline
from mediadiff.pipelines.base import WEIGHTS_DIR

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_cache(cache, repo_id: str, source) -> None:
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    shutil.copytree(source, root / "snapshots" / COMMIT)


def run_offline(cache, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    lay_out_cache(cache, "mediadiff-test/tones-dit", WEIGHTS_DIR / AudioPipeline.SHIPPED_MODELS["tones-dit"])
    return cache


def test_hub_id_loads_from_the_cache_offline(cache):
    code = (
        "from mediadiff import AudioPipeline\n"
        "from mediadiff.audio.detect import read_tone\n"
        "pipe = AudioPipeline.from_pretrained('mediadiff-test/tones-dit')\n"
        "print(pipe.resolve_model('mediadiff-test/tones-dit'))\n"
        "out = pipe('a square wave playing E4', seed=0)\n"
        "print(read_tone(out.audio[0]).pitch)\n"
    )
    result = run_offline(cache, code)
    assert result.returncode == 0, result.stderr
    folder, pitch = result.stdout.split()
    assert folder.startswith(str(cache)) and folder.endswith(COMMIT)
    assert pitch == "E4"


def test_unknown_hub_id_offline_is_a_clear_error(cache, tmp_path):
    out = tmp_path / "x.wav"
    code = f"import sys; from mediadiff.cli import main; sys.exit(main(['generate', 'audio', 'a tone', '-o', {str(out)!r}, '--model', 'nobody/nothing']))"
    result = run_offline(cache, code)
    assert result.returncode == 2
    assert "nobody/nothing" in result.stderr and "Hugging Face Hub cache" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
