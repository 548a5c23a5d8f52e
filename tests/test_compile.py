"""torch.compile of the backbones and of a pipeline's sampling (``DiffusionPipeline.compile``, ``--compile``).

Tolerances. TorchInductor fuses kernels and reorders float32 reductions (layer / group norms, softmax,
the sums inside matmuls and convolutions), so compiled outputs differ from eager ones by rounding:
measured here up to 7e-7 on outputs of magnitude ~0.5 (a few float32 ulps, eps = 1.2e-7, grown by
the sqrt of the reduction lengths). The backbone checks allow 1e-5 relative to the output's largest
magnitude, ~15x that and far below what a wrong graph gives (a dropped mask, a wrong axis or a stale
weight moves outputs by 1e-2 or more). A few ODE steps carry the per-step difference to the sampled
latents with a growth of order one, so whole clips get 1e-4 of the signal's range.

Compilation is slow on a CPU (10-20 s for a tiny DiT, minutes for the U-Nets' many small kernels
on a loaded 2-core machine), so the default run compiles two tiny DiT1D graphs; the other backbones,
LoRA after compile and the command line are marked slow.
"""

import numpy as np
import pytest
import torch

from mediadiff.audio import DiT1D, UNet1D, UNet2D, WaveformVAE
from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import AudioPipeline
from mediadiff.text import load_text_encoder
from mediadiff.video import DiT, UNet3D
from tests.test_pipeline import randomize
from tests.test_text import tiny_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def _inductor_reason() -> str | None:
    """Why TorchInductor cannot compile CPU kernels here (None when it can)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as err:  # torch's InvalidCxxCompiler when no g++ / clang++ is found
        return f"TorchInductor needs a C++ compiler on the CPU ({type(err).__name__})"
    return None


needs_inductor = pytest.mark.skipif(_inductor_reason() is not None, reason=str(_inductor_reason()))


def compiled_graphs() -> int:
    """How many graphs dynamo has compiled in this process (one more per compile or recompile)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def graph_breaks() -> int:
    return sum(torch._dynamo.utils.counters["graph_break"].values())


def close(compiled: torch.Tensor, eager: torch.Tensor, rel: float) -> bool:
    """``|compiled - eager| <= rel * max|eager|`` everywhere, and the outputs are not trivially zero."""
    scale = eager.abs().max()
    return bool(scale > 1e-3) and bool((compiled - eager).abs().max() <= rel * scale)


# ------------------------------------------------------------------------------------ backbones

# name -> (class, tiny-config overrides, input x shape)
BACKBONES = {
    "DiT1D": (DiT1D, {}, (2, 16, 64)),
    "DiT": (DiT, {}, (2, 8, 5, 16, 16)),
    "UNet3D": (UNet3D, {}, (2, 3, 4, 16, 16)),
    "UNet1D": (UNet1D, {}, (2, 1, 4096)),
    "UNet2D": (UNet2D, {}, (2, 1, 32, 32)),
}


def backbone_and_inputs(name: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    cls, overrides, shape = BACKBONES[name]
    model = randomize(cls.from_preset("tiny", **overrides), 3, std=0.05).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)  # [b c ...]
    t = torch.rand(shape[0], generator=g)  # [b]
    context = torch.randn(shape[0], 7, model.config.context_dim, generator=g)  # [b l d]
    mask = torch.ones(shape[0], 7, dtype=torch.bool)
    mask[1, 3:] = False  # a shorter second prompt: the mask must reach the compiled attention
    return model, (x, t, context, mask)


def check_backbone(name: str) -> None:
    model, inputs = backbone_and_inputs(name)
    with torch.no_grad():
        eager = model(*inputs)
        torch._dynamo.reset()
        before, breaks = compiled_graphs(), graph_breaks()
        compiled = torch.compile(model)(*inputs)
        assert compiled_graphs() == before + 1  # compiled (not silently run eager), as one graph
        assert graph_breaks() == breaks
        assert close(compiled, eager, 1e-5), float((compiled - eager).abs().max())
        # and it is the model's function, not the graph of some other input: a changed mask changes it
        other = inputs[3].clone()
        other[0, 2:] = False
        assert not close(torch.compile(model)(*inputs[:3], other), eager, 1e-3)


@needs_inductor
def test_compiled_dit1d_matches_eager():
    check_backbone("DiT1D")


@needs_inductor
@pytest.mark.slow
@pytest.mark.parametrize("name", ["DiT", "UNet3D", "UNet1D", "UNet2D"])
def test_compiled_backbone_matches_eager(name):
    check_backbone(name)


# ------------------------------------------------------------------------------------ pipelines


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("text"), "bert")


def audio_pipe(bert_dir) -> AudioPipeline:
    """A tiny DiT1D pipeline on a tiny waveform VAE (2048 samples -> 4x128 latents), 3 euler steps, CFG 3."""
    text = load_text_encoder(bert_dir)
    vae = randomize(WaveformVAE(latent_channels=4, patch=4, strides=(4,), channels=(8, 8)), 1, std=0.3).eval()
    dit = randomize(DiT1D(in_channels=4, patch=(2,), width=32, depth=1, heads=2, context_dim=16), 2).eval()
    defaults = {"num_samples": 2048, "steps": 3, "sampler": "euler", "guidance_scale": 3.0}
    pipe = AudioPipeline(dit, vae, text, FlowSchedule(), defaults=defaults)
    pipe.autocast = False
    return pipe


@needs_inductor
def test_compiled_pipeline_matches_eager_and_compiles_once(bert_dir):
    pipe = audio_pipe(bert_dir)
    prompt = "a sine tone at C4"
    eager = pipe(prompt, seed=4).audio
    torch._dynamo.reset()
    assert pipe.compile() is pipe
    calls = []
    pipe.backbone.register_forward_hook(lambda *_: calls.append(1))
    before = compiled_graphs()
    compiled = pipe(prompt, seed=4).audio
    assert len(calls) == 3  # one batched (cond + uncond) call per step
    assert compiled_graphs() == before + 1  # every step ran the first step's graph: no recompile
    scale = np.abs(eager).max()
    assert scale > 1e-3 and np.abs(compiled - eager).max() <= 1e-4 * scale
    assert np.abs(pipe(prompt, seed=5).audio - eager).max() > 1e-2 * scale  # another seed, another clip
    pipe(prompt, seed=6, steps=5)  # more steps: the same graph
    assert compiled_graphs() == before + 1
    assert type(pipe.backbone) is DiT1D and any(
        k.endswith("to_qkv.weight") for k in pipe.backbone.state_dict()
    )


def no_compiler(monkeypatch) -> None:
    """Make TorchInductor's C++ compiler search fail, as on a machine without g++."""
    from torch._inductor import cpp_builder, exc

    def search() -> str:
        raise exc.InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", search)


def test_compile_refuses_bad_arguments_and_a_missing_compiler(bert_dir, monkeypatch):
    pipe = audio_pipe(bert_dir)
    with pytest.raises(ValueError, match="mode must be one of"):
        pipe.compile(mode="fastest")
    with pytest.raises(ValueError, match="dynamic must be None, True or False"):
        pipe.compile(dynamic="yes")
    no_compiler(monkeypatch)
    with pytest.raises(RuntimeError, match=r"C\+\+ compiler.*apt-get install g\+\+"):
        pipe.compile()
    assert not hasattr(pipe.backbone, "_compiled_call_impl") or pipe.backbone._compiled_call_impl is None


@needs_inductor
@pytest.mark.slow
def test_new_prompt_lengths_compile_once_more_then_never(bert_dir):
    """dynamic=None: the second prompt length makes the context length symbolic; a third reuses it."""
    pipe = audio_pipe(bert_dir)
    torch._dynamo.reset()
    pipe.compile()
    start = compiled_graphs()
    pipe("a tone", seed=0)
    pipe("a sine tone at C4 rising", seed=0)
    assert compiled_graphs() == start + 2
    pipe("a square wave playing E4 falling slowly", seed=0)
    pipe("a saw", seed=0)
    assert compiled_graphs() == start + 2


@needs_inductor
@pytest.mark.slow
def test_lora_after_compile_runs_the_adapted_model(bert_dir, tmp_path):
    from mediadiff.nn.lora import LoraSettings, add_lora, save_lora
    from tests.test_lora import trained_adapter

    pipe = audio_pipe(bert_dir)
    adapted = audio_pipe(bert_dir).backbone  # the same seeded weights
    add_lora(adapted, LoraSettings(rank=2))
    trained_adapter(adapted, seed=7)
    lora = save_lora(adapted, tmp_path / "lora.safetensors", info={})
    eager = audio_pipe(bert_dir)
    eager.load_lora(lora)
    want = eager("a sine tone", seed=1).audio

    torch._dynamo.reset()
    pipe.compile()
    base = pipe("a sine tone", seed=1).audio
    pipe.load_lora(lora)
    got = pipe("a sine tone", seed=1).audio
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale < np.abs(base - want).max()
    pipe.merge_lora()
    assert np.abs(pipe("a sine tone", seed=1).audio - want).max() <= 1e-4 * scale


@needs_inductor
@pytest.mark.slow
def test_generate_compile_flag(bert_dir, tmp_path, capsys):
    from mediadiff.cli import main as cli_main

    folder = audio_pipe(bert_dir).save_pretrained(tmp_path / "pipe")
    common = ["generate", "audio", "a sine tone", "--model", str(folder), "--seed", "3", "--steps", "2"]
    torch._dynamo.reset()
    before = compiled_graphs()
    assert cli_main([*common, "-o", str(tmp_path / "c.wav"), "--compile"]) == 0
    assert compiled_graphs() == before + 1
    assert cli_main([*common, "-o", str(tmp_path / "e.wav")]) == 0
    assert compiled_graphs() == before + 1  # without the flag nothing compiles
    assert "wrote" in capsys.readouterr().out
    import soundfile as sf

    compiled, eager = sf.read(tmp_path / "c.wav")[0], sf.read(tmp_path / "e.wav")[0]
    assert np.abs(compiled - eager).max() <= 2 / 2**15  # 16-bit PCM: one step of rounding either way


@pytest.fixture
def saved_pipe(bert_dir, tmp_path):
    return audio_pipe(bert_dir).save_pretrained(tmp_path / "pipe")


def test_serve_compiles_each_model_it_loads_and_reports_a_missing_compiler(saved_pipe, monkeypatch):
    from mediadiff.serve import ModelCache, ServeError

    assert (
        getattr(ModelCache("cpu").get("audio", str(saved_pipe)).backbone, "_compiled_call_impl", None) is None
    )
    pipe = ModelCache("cpu", compile=True).get("audio", str(saved_pipe))
    assert pipe.backbone._compiled_call_impl is not None  # compiled in place; compiles at its first call
    no_compiler(monkeypatch)
    with pytest.raises(ServeError, match="C\\+\\+ compiler"):
        ModelCache("cpu", compile=True).get("audio", str(saved_pipe))


def test_generate_compile_without_a_compiler_is_one_line_and_exit_2(
    saved_pipe, tmp_path, capsys, monkeypatch
):
    from mediadiff.cli import main as cli_main

    no_compiler(monkeypatch)
    argv = [
        "generate",
        "audio",
        "a tone",
        "--model",
        str(saved_pipe),
        "-o",
        str(tmp_path / "a.wav"),
        "--compile",
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mediadiff generate audio: error: --compile:") and "apt-get install g++" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "a.wav").exists()
