"""LoRA (Hu et al. 2022) through peft: the adapter on a backbone, its file, the trainer's LoRA runs (only the
adapters train and are saved, exact resume, export merges), and the pipelines' and CLI's load / scale / merge."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mediadiff.cli import main as cli_main
from mediadiff.diffusion import FlowSchedule
from mediadiff.nn.lora import (
    LoraSettings,
    add_lora,
    has_lora,
    load_lora,
    lora_state_dict,
    lora_targets,
    merge_lora,
    read_lora,
    save_lora,
    set_lora_scale,
    unload_lora,
)
from mediadiff.pipelines import VideoPipeline
from mediadiff.train import TrainConfig, config_from_args, recipe_parser
from mediadiff.train.trainer import LORA_NAME
from mediadiff.video import CausalVideoVAE, DiT
from tests.test_pipeline import randomize
from tests.test_train import checkpoint_tensors, make_trainer, parts

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_TARGETS = ("conv_in", "blocks", "text", "conv_out")  # TinyBackbone: every conv and the text projection


def tiny_dit(seed=0, width=32):
    torch.manual_seed(seed)
    return randomize(DiT(in_channels=4, width=width, depth=1, heads=2, context_dim=16), seed).eval()


def dit_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 2, 8, 8, generator=g)  # [b c t h w]
    t = torch.rand(2, generator=g)
    ctx = torch.randn(2, 5, 16, generator=g)  # [b l d]
    return x, t, {"context": ctx, "context_mask": torch.ones(2, 5, dtype=torch.bool)}


def trained_adapter(model, seed=3):
    """Give the (zero-initialised) B matrices random values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def test_an_adapter_starts_as_the_identity_and_scales_merges_and_unloads(tmp_path):
    model = tiny_dit()
    x, t, cond = dit_inputs()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    base = model(x, t, **cond)

    names = add_lora(model, LoraSettings(rank=4))
    assert has_lora(model) and names and all(".lora_" in n for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(names)  # the base is frozen
    assert any("to_qkv" in n for n in names) and any("to_out" in n for n in names)
    assert torch.equal(model(x, t, **cond), base)  # B = 0: the same function

    trained_adapter(model)
    adapted = model(x, t, **cond)
    assert (adapted - base).abs().max() > 1e-3
    set_lora_scale(model, 0.0)
    assert torch.equal(model(x, t, **cond), base)
    set_lora_scale(model, 0.5)
    half = model(x, t, **cond)
    set_lora_scale(model, 1.0)
    # the update is linear in the scale wherever the adapters sit before the output (one block: nearly so)
    assert not torch.allclose(half, adapted) and not torch.allclose(half, base)

    path = save_lora(model, tmp_path / "a.safetensors", info={"base": "tiny"})
    state, settings, info = read_lora(path)
    assert settings == LoraSettings(rank=4) and info == {"base": "tiny"}
    assert state.keys() == lora_state_dict(model).keys() and all(".default." not in k for k in state)

    merge_lora(model)
    torch.testing.assert_close(model(x, t, **cond), adapted, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="merged"):
        set_lora_scale(model, 2.0)
    unload_lora(model)  # a merged adapter stays folded in
    assert not has_lora(model) and model.state_dict().keys() == base_state.keys()
    torch.testing.assert_close(model(x, t, **cond), adapted, atol=1e-5, rtol=1e-5)

    # the file on a fresh base model gives the adapted model back exactly; unloading restores the base bitwise
    fresh = tiny_dit()
    assert load_lora(fresh, path, scale=1.0) == {"base": "tiny"}
    assert torch.equal(fresh(x, t, **cond), adapted)
    assert not any(p.requires_grad for p in fresh.parameters())
    unload_lora(fresh)
    assert all(torch.equal(v, base_state[k]) for k, v in fresh.state_dict().items())


def test_a_file_that_does_not_fit_is_refused_and_the_model_left_as_it_was(tmp_path):
    model = tiny_dit()
    add_lora(model, LoraSettings(rank=2))
    path = save_lora(model, tmp_path / "a.safetensors", info={"base": "dit-32"})

    wider = tiny_dit(width=64)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"a\.safetensors \(trained on dit-32\): does not fit DiT"):
        load_lora(wider, path)
    assert not has_lora(wider) and all(torch.equal(v, before[k]) for k, v in wider.state_dict().items())

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match=r"plain\.safetensors: not a mediadiff LoRA file"):
        read_lora(plain)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match=r"junk\.safetensors: not a readable safetensors file"):
        read_lora(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        read_lora(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="already carries"):
        add_lora(model, LoraSettings(rank=2))
    with pytest.raises(ValueError, match="select no linear or convolution layer of DiT; its layer names"):
        lora_targets(tiny_dit(), ("nothing_like_this",))
    for bad in (dict(rank=0), dict(rank=2, alpha=0), dict(rank=2, targets=())):
        with pytest.raises(ValueError, match="LoRA"):
            LoraSettings(**bad)


def test_targets_are_suffixes_regexes_or_containers():
    model = tiny_dit()
    qkv = lora_targets(model, ("to_qkv",))
    assert qkv and all(n.endswith(".to_qkv") for n in qkv)
    assert lora_targets(model, (r"blocks\.0\..*to_qkv",)) == [n for n in qkv if n.startswith("blocks.0.")]
    inside = lora_targets(model, ("blocks",))  # a container: every linear layer in it
    assert set(qkv) < set(inside) and all(n.startswith("blocks.") for n in inside)


# ------------------------------------------------------------------------------------ training


def lora_trainer(out, **overrides):
    return make_trainer(out, lora_rank=4, lora_targets=TINY_TARGETS, **overrides)


def test_a_lora_run_trains_and_saves_only_the_adapters_and_resumes_exactly(tmp_path):
    init = parts()["model"].state_dict()
    straight = lora_trainer(tmp_path / "a")
    straight.fit()
    first = lora_trainer(tmp_path / "b")
    first.fit(until=3)
    second = lora_trainer(tmp_path / "b", resume=True)
    assert second.step == 3
    second.fit()

    ck_a, a = checkpoint_tensors(tmp_path / "a")
    ck_b, b = checkpoint_tensors(tmp_path / "b")
    assert ck_a.name == ck_b.name == "step-00000006" and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-exact resume
    model_keys = [k for k in a if k.startswith("model.")]
    assert model_keys and all(".lora_" in k for k in model_keys)  # only adapters in the checkpoint
    assert any("conv_in.lora_A" in k for k in model_keys) and any("text.lora_B" in k for k in model_keys)
    # the base weights did not move; the adapters did (B starts at zero)
    model = straight.unwrapped_model
    for name, p in model.named_parameters():
        if ".lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p.detach().cpu(), init[key]), name
    assert any(a[k].abs().max() > 0 for k in model_keys if ".lora_B" in k)

    # the adapter file: small, the EMA's adapters, with the run in its metadata
    state, settings, info = read_lora(tmp_path / "a" / LORA_NAME)
    assert settings.rank == 4 and settings.targets == TINY_TARGETS and info["step"] == 6 and info["ema"]
    in_file = {
        k.removeprefix("model.").replace(".default.", "."): k.removeprefix("model.") for k in model_keys
    }
    assert state.keys() == in_file.keys()  # the file drops peft's adapter name, as diffusers' files do
    ema = load_file(ck_a / "ema.safetensors")
    assert all(torch.equal(state[k], ema[in_file[k]]) for k in state)
    n_adapter = sum(v.numel() for v in state.values())
    assert n_adapter < sum(v.numel() for v in init.values())

    # resuming with other LoRA settings, or without, is refused with the reason
    with pytest.raises(ValueError, match="LoRA adapters do not match"):
        make_trainer(tmp_path / "b", lora_rank=2, lora_targets=TINY_TARGETS, resume=True)
    with pytest.raises(ValueError, match="with LoRA adapters but this run has --lora-rank 0"):
        make_trainer(tmp_path / "b", resume=True)


def test_lora_flags_parse_and_check():
    parser = recipe_parser("test")
    args = parser.parse_args(["--output-dir", "x", "--lora-rank", "8", "--lora-targets", "to_q", "to_v"])
    config = config_from_args(args)
    assert config.lora == LoraSettings(rank=8, targets=("to_q", "to_v"))
    assert TrainConfig(output_dir="x").lora is None
    with pytest.raises(ValueError, match="lora_targets needs lora_rank"):
        TrainConfig(output_dir="x", lora_targets=("to_q",))
    with pytest.raises(ValueError, match="lora_rank"):
        TrainConfig(output_dir="x", lora_rank=-1)


# ------------------------------------------------------------------------------------ pipelines and CLI


@pytest.fixture(scope="module")
def pipe_and_lora(tmp_path_factory):
    """A tiny saved video pipeline and an adapter file for its backbone (random B, as if trained)."""
    from mediadiff.text import load_text_encoder
    from tests.test_text import tiny_folder

    root = tmp_path_factory.mktemp("lora")
    text = load_text_encoder(tiny_folder(root, "bert"))
    vae = randomize(CausalVideoVAE(latent_channels=4, channels=(8, 8)), 1, std=0.3)
    defaults = {"num_frames": 5, "height": 16, "width": 16, "steps": 2, "fps": 5}
    folder = VideoPipeline(tiny_dit(), vae, text, FlowSchedule(), defaults=defaults).save_pretrained(
        root / "pipe"
    )
    dit = VideoPipeline.from_pretrained(folder).backbone
    add_lora(dit, LoraSettings(rank=4))
    trained_adapter(dit, seed=5)
    return folder, save_lora(dit, root / "lora.safetensors", info={"base": "tiny"})


def test_a_pipeline_loads_scales_merges_and_unloads_an_adapter(pipe_and_lora):
    folder, lora = pipe_and_lora
    pipe = VideoPipeline.from_pretrained(folder)
    # float32 on any CPU: under bf16 autocast (auto on a CPU with native bf16) the merged weight is
    # rounded once and the adapter's product separately, up to 7 levels apart on these random weights
    pipe.autocast = False
    kw = dict(seed=1, steps=2, sampler="euler", guidance_scale=1.0)
    base = pipe("a red ball", **kw).frames
    assert pipe.load_lora(lora) == {"base": "tiny"}
    assert "LoRA lora.safetensors x1" in pipe.summary(pipe.resolve())
    adapted = pipe("a red ball", **kw).frames
    assert not torch.equal(torch.as_tensor(adapted), torch.as_tensor(base))
    with pytest.raises(ValueError, match="already carries a LoRA adapter"):
        pipe.load_lora(lora)
    pipe.set_lora_scale(0.0)
    assert (pipe("a red ball", **kw).frames == base).all()
    pipe.set_lora_scale(1.0)
    pipe.merge_lora()
    merged = pipe("a red ball", **kw).frames
    assert abs(merged.astype(int) - adapted.astype(int)).max() <= 1  # uint8 frames, float rounding
    with pytest.raises(ValueError, match="unload_lora"):
        pipe.save_pretrained(folder.parent / "with_lora")  # peft's wrapped keys would not reload
    pipe.unload_lora()
    assert pipe.lora is None and not has_lora(pipe.backbone)


def test_generate_with_lora(pipe_and_lora, tmp_path, capsys):
    folder, lora = pipe_and_lora
    common = ["generate", "video", "a red ball", "--model", str(folder), "--seed", "2", "--steps", "2"]
    assert cli_main([*common, "-o", str(tmp_path / "a.gif"), "--lora", str(lora), "--lora-scale", "0.5"]) == 0
    out, _ = capsys.readouterr()
    assert "LoRA lora.safetensors x0.5" in out and (tmp_path / "a.gif").stat().st_size > 0

    assert (
        cli_main([*common, "-o", str(tmp_path / "b.gif"), "--lora", str(tmp_path / "none.safetensors")]) == 2
    )
    assert "--lora" in capsys.readouterr().err and not (tmp_path / "b.gif").exists()
    assert cli_main([*common, "-o", str(tmp_path / "c.gif"), "--lora-scale", "2"]) == 2
    assert "--lora-scale goes with --lora FILE" in capsys.readouterr().err

    other = tiny_dit(width=64)
    add_lora(other, LoraSettings(rank=2))
    wrong = save_lora(other, tmp_path / "wrong.safetensors")
    assert cli_main([*common, "-o", str(tmp_path / "d.gif"), "--lora", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "error: --lora:" in err and "wrong.safetensors" in err and "does not fit" in err
    assert "Traceback" not in err and not (tmp_path / "d.gif").exists()


def test_a_recipe_fine_tunes_a_pretrained_model_with_lora_and_exports_it_merged(tmp_path):
    from tests.test_video_recipes import TINY_DIT, load_recipe

    recipe = load_recipe("shapes_dit")
    recipe.main([*TINY_DIT, "--output-dir", str(tmp_path / "base")])  # the "pretrained" model
    base_dir = recipe.main(
        [*TINY_DIT, "--output-dir", str(tmp_path / "base"), "--export", str(tmp_path / "p")]
    )
    base = VideoPipeline.from_pretrained(base_dir).backbone

    argv = [*TINY_DIT, "--output-dir", str(tmp_path / "ft"), "--init-from", str(base_dir), "--lora-rank", "4"]
    recipe.main(argv)
    _, settings, info = read_lora(tmp_path / "ft" / LORA_NAME)
    assert info["base"] == str(base_dir) and info["step"] == 2 and settings.rank == 4
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["train"]["init_from"] == str(base_dir)

    # --export without --init-from finds the base in the run's config and merges the adapters into it
    folder = recipe.main([*TINY_DIT, "--output-dir", str(tmp_path / "ft"), "--export", str(tmp_path / "q")])
    merged = VideoPipeline.from_pretrained(folder).backbone
    expected = VideoPipeline.from_pretrained(base_dir).backbone
    load_lora(expected, tmp_path / "ft" / LORA_NAME)
    t = torch.rand(2)
    x = torch.randn(2, base.config.in_channels, 2, 8, 8)  # [b c t h w]
    cond = {
        "context": torch.randn(2, 5, base.config.context_dim),
        "context_mask": torch.ones(2, 5, dtype=torch.bool),
    }
    with torch.no_grad():
        got, want, plain = merged(x, t, **cond), expected(x, t, **cond), base(x, t, **cond)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert not has_lora(merged) and merged.state_dict().keys() == base.state_dict().keys()
    assert (got - plain).abs().max() > 0  # the adapters changed the model


def test_lora_trains_on_an_adapted_diffusers_backbone(tmp_path):
    """A CogVideoX transformer from a diffusers folder, behind our backbone signature, fine-tuned by the trainer
    with LoRA on its attention projections (diffusers' to_q / to_k / to_v / to_out.0)."""
    from mediadiff.train import Trainer
    from mediadiff.train.testing import MovingSquares
    from tests.test_diffusers_video import build_cogvideox

    folder = build_cogvideox(tmp_path / "cog", rotary=True)
    pipe = VideoPipeline.from_diffusers(folder)
    before = {k: v.clone() for k, v in pipe.backbone.state_dict().items()}
    config = TrainConfig(
        output_dir=str(tmp_path / "run"), max_steps=4, batch_size=2, lr=1e-2, warmup_steps=0, log_every=1,
        checkpoint_every=100, ema_decay=0.0, mixed_precision="no", lora_rank=4,
    )  # fmt: skip
    trainer = Trainer(
        pipe.backbone, pipe.schedule, MovingSquares(4, num_frames=9, size=16), config, prediction=pipe.prediction,
        autoencoder=pipe.autoencoder, text_encoder=pipe.text_encoder,
    )  # fmt: skip
    trainer.fit()
    state, _, _ = read_lora(tmp_path / "run" / LORA_NAME)
    assert any(k.endswith("attn1.to_q.lora_A.weight") for k in state)
    assert any("to_out.0.lora_B" in k for k in state)
    assert any(v.abs().max() > 0 for k, v in state.items() if ".lora_B." in k)  # the adapters learned
    model = trainer.unwrapped_model
    for name, p in model.named_parameters():
        if ".lora_" not in name:
            assert torch.equal(p.detach(), before[name.replace(".base_layer", "")]), name  # the base stayed

    fresh = VideoPipeline.from_diffusers(folder)
    kw = dict(seed=0, steps=2, num_frames=9, height=16, width=16)
    base = fresh("a red square", **kw).frames
    fresh.load_lora(tmp_path / "run" / LORA_NAME)
    assert not (fresh("a red square", **kw).frames == base).all()


def test_the_shipped_adapters_teach_their_concepts():
    """shapes-dit + shapes-dit-colours draws orange and white; tones-dit + tones-dit-pitches plays C#5 and D5
    (benchmarks/lora.py measures them on 48 prompts each; here 6 held-out prompts, most must be right)."""
    from mediadiff.audio.detect import read_tones
    from mediadiff.audio.evaluate import eval_items as tone_items
    from mediadiff.audio.tones import EXTRA_PITCHES
    from mediadiff.pipelines import AudioPipeline
    from mediadiff.video.detect import detect_batch
    from mediadiff.video.shapes import ALL_COLOURS, EXTRA_COLOURS
    from mediadiff.video.shapes_eval import eval_items as shape_items

    video = VideoPipeline.from_pretrained("shapes-dit")
    info = video.load_lora("shapes-dit-colours")
    assert info["base"] == "shapes-dit" and video.lora.name == "shapes_dit_colours.safetensors"
    items = shape_items(6, 17, 64, colours=EXTRA_COLOURS)
    frames = video([it["text"] for it in items], seed=0).frames
    found = [d.colour for d in detect_batch(frames, colours=ALL_COLOURS)]
    assert sum(f == it["colour"] for f, it in zip(found, items)) >= 5, (found, [it["colour"] for it in items])

    audio = AudioPipeline.from_pretrained("tones-dit")
    audio.load_lora("tones-dit-pitches")
    notes = tone_items(6, pitches=EXTRA_PITCHES)
    clips = audio([it["text"] for it in notes], seed=0).audio
    heard = [r.midi for r in read_tones(clips.numpy() if hasattr(clips, "numpy") else clips)]
    assert sum(abs(h - it["midi"]) <= 0.5 for h, it in zip(heard, notes)) >= 5, (
        heard,
        [it["midi"] for it in notes],
    )
    with pytest.raises(FileNotFoundError, match="not a shipped adapter"):
        audio.resolve_lora("shapes-dit-colours")  # a video adapter is not an audio one
