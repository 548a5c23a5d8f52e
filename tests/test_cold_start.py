"""What a fresh ``mediadiff generate`` process pays (issue 18): it imports only what the command
needs, and ends itself once the file is written (``mediadiff.cli._exit_now``) with the same output,
exit code and atexit handlers as a normal exit."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

# the real command line (argv None, so main ends the process itself); an atexit handler reports
# which heavy packages the run imported, and that handlers still run
_CHILD = """
import atexit, sys
def report():
    heavy = ("transformers", "diffusers", "av", "librosa", "matplotlib", "PIL", "accelerate", "scipy")
    print("imported:", sorted(m for m in heavy if m in sys.modules), file=sys.stderr, flush=True)
atexit.register(report)
from mediadiff.cli import main
sys.argv = ["mediadiff", *sys.argv[1:]]
sys.exit(main())
"""


def _generate(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, "generate", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _imported(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.startswith("imported:")][-1]


def test_generate_audio_imports_only_what_it_needs_and_exits_cleanly(tmp_path):
    run = _generate(
        tmp_path, "audio", "a square wave playing E4", "-o", "tone.wav", "--seed", "3", "--steps", "4"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("wrote tone.wav  (seed 3, ") and run.stdout.endswith(
        "\n"
    )  # flushed to a pipe
    assert _imported(run.stderr) == "imported: []"  # no transformers (text encoder), no PyAV (wav)
    from mediadiff.pipelines import AudioPipeline

    pipe = AudioPipeline.from_pretrained(AudioPipeline.DEFAULT_MODEL)
    out = pipe.generate("a square wave playing E4", seed=3, steps=4)
    written, rate = sf.read(tmp_path / "tone.wav", dtype="float32", always_2d=True)  # [t c]
    assert rate == out.sample_rate and written.shape == out.audio[0].T.shape
    np.testing.assert_allclose(written.T, out.audio[0], rtol=0, atol=1 / 2**15)  # the same clip (16-bit wav)


@pytest.mark.slow  # ~20 s on a shared 2-core machine
def test_generate_video_imports_no_transformers(tmp_path):
    run = _generate(tmp_path, "video", "a red circle moving right", "-o", "clip.mp4", "--steps", "2")
    assert run.returncode == 0 and run.stdout.startswith("wrote clip.mp4  (seed "), run.stderr
    assert _imported(run.stderr) == "imported: ['av']"  # PyAV writes the mp4; nothing else heavy
    assert (tmp_path / "clip.mp4").stat().st_size > 0


def test_an_error_still_exits_with_its_code_and_one_line(tmp_path):
    run = _generate(tmp_path, "audio", "a square wave", "-o", "tone.xyz")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[0].startswith("mediadiff generate audio: error: -o tone.xyz: unsupported")
    assert _imported(run.stderr) == "imported: []" and list(tmp_path.iterdir()) == []
