import json
import subprocess
import sys
from pathlib import Path

from mediadiff.cli import main
from mediadiff.text import default_encoder_path


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_is_light():
    out = run_python(
        "import sys, mediadiff, mediadiff.diffusion, mediadiff.cli, mediadiff.text;"
        "print(sorted(m for m in ('transformers', 'diffusers', 'accelerate', 'librosa', 'av') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_design_entry_points_import():
    run_python("from mediadiff.diffusion import VPSchedule, FlowSchedule, EDMSchedule, sample, cfg")


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["torch"] != "not installed"
    assert info["device"]["type"] in ("cpu", "cuda")
    assert info["threads"] >= 1
    assert Path(info["text_encoder"], "config.json").is_file()


def test_info_text_and_console_script():
    exe = Path(sys.executable).with_name("mediadiff")
    cmd = [str(exe), "info"] if exe.exists() else [sys.executable, "-m", "mediadiff.cli", "info"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    assert "torch" in out and "device" in out and "text encoder" in out


def test_bundled_encoder_folder_is_a_hf_model_folder():
    path = default_encoder_path()
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert any(path.glob("*.safetensors"))


def test_video_text_nn_public_names_resolve_lazily():
    # every exported name resolves, and importing the packages pulls in neither PyAV nor transformers
    out = run_python(
        "import sys, mediadiff.video as v, mediadiff.text as t, mediadiff.nn as n\n"
        "print('av' in sys.modules, 'transformers' in sys.modules)\n"
        "[getattr(v, k) for k in v.__all__]; [getattr(t, k) for k in t.__all__]; [getattr(n, k) for k in n.__all__]\n"
        "print(v.UNet3D.__name__, v.DiT.__name__, v.CausalVideoVAE.__name__, t.TextEncoder.__name__)"
    )
    assert out.splitlines() == ["False False", "UNet3D DiT CausalVideoVAE TextEncoder"]
