"""The latent + text cache: same loss as encoding on the fly, fingerprint mismatches, interrupted builds."""

import json
import shutil

import pytest
import torch

from mediadiff.diffusion import FlowSchedule
from mediadiff.text import pack_context
from mediadiff.train import CacheError, CacheMismatchError, LatentCache, TrainConfig, Trainer
from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

pytestmark = pytest.mark.usefixtures("one_thread")


def parts(frames=4, ae_seed=0, te_seed=0, scale=1.0):
    torch.manual_seed(ae_seed)
    return {
        "dataset": MovingSquares(12, num_frames=frames, size=8),
        "autoencoder": TinyAutoencoder(width=8, scale=scale),
        "text_encoder": HashTextEncoder(dim=8, seed=te_seed),
    }


def open_or_build(path, p, **kwargs):
    return LatentCache.open_or_build(
        path, p["dataset"], autoencoder=p["autoencoder"], text_encoder=p["text_encoder"], progress=False,
        batch_size=5, shard_size=4, **kwargs,
    )  # fmt: skip


def test_cache_holds_the_encoded_items(tmp_path):
    p = parts()
    cache = open_or_build(tmp_path / "c", p)
    assert len(cache) == 12 and len(cache.meta["shards"]) == 3  # 4 + 4 + 4 items
    for i in (0, 5, 11):
        item, raw = cache[i], p["dataset"][i]
        with torch.no_grad():
            latent = p["autoencoder"].encode(raw["video"][None])[0]  # [c' f h' w']
        torch.testing.assert_close(item["latent"], latent, rtol=1e-6, atol=1e-6)
        tokens, mask = pack_context(*p["text_encoder"].encode([raw["text"]]))
        assert torch.equal(item["tokens"], tokens[0]) and torch.equal(item["mask"], mask[0])
    empty_tokens, empty_mask = pack_context(*p["text_encoder"].encode([""]))
    assert torch.equal(cache.empty[0], empty_tokens[0]) and torch.equal(cache.empty[1], empty_mask[0])
    with pytest.raises(IndexError):
        cache[12]


def test_training_from_the_cache_gives_the_same_loss_as_encoding_on_the_fly(tmp_path):
    runs = {}
    for name, cache_dir in (("fly", None), ("cached", tmp_path / "cache")):
        p = parts()
        torch.manual_seed(1)
        model = TinyBackbone(channels=4, width=16, depth=1, context_dim=8)
        config = TrainConfig(
            output_dir=str(tmp_path / name), max_steps=4, batch_size=3, grad_accum=2, lr=1e-3, cond_dropout=0.5,
            mixed_precision="no", log_every=1, ema_decay=0.0,
        )  # fmt: skip
        trainer = Trainer(model, FlowSchedule(), p["dataset"], config, prediction="flow",
                          autoencoder=p["autoencoder"], text_encoder=p["text_encoder"], cache_dir=cache_dir)  # fmt: skip
        trainer.fit()
        assert trainer.cached == (cache_dir is not None)
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = ([r["loss"] for r in lines if "event" not in r], trainer.unwrapped_model.state_dict())
    (fly_losses, fly_weights), (cached_losses, cached_weights) = runs["fly"], runs["cached"]
    assert len(fly_losses) == 4
    # 4 steps x 2 micro-batches x 3 clips with caption dropout 0.5: both branches of the dropout were taken
    assert fly_losses == pytest.approx(cached_losses, rel=1e-6, abs=0)
    for k in fly_weights:
        torch.testing.assert_close(fly_weights[k], cached_weights[k], rtol=1e-5, atol=1e-7)


def test_a_cache_built_by_other_parts_is_refused_or_rebuilt(tmp_path):
    path = tmp_path / "c"
    key = open_or_build(path, parts()).key
    assert open_or_build(path, parts()).key == key  # same parts: reused
    changes = {
        "autoencoder.weights": parts(ae_seed=1),
        "autoencoder.config.scale": parts(scale=0.5),
        "text_encoder": parts(te_seed=1),
        "dataset.probe_shapes": parts(frames=2),
    }
    for what, p in changes.items():
        with pytest.raises(CacheMismatchError, match=what.replace(".", r"\.")):
            open_or_build(path, p, on_mismatch="error")
        assert LatentCache(path).key == key  # a refusal leaves the cache alone
    messages = []
    rebuilt = open_or_build(path, parts(frames=2), log=messages.append)
    assert rebuilt.key != key and rebuilt[0]["latent"].shape[1] == 2
    assert "rebuilding" in messages[0] and "dataset.probe_shapes" in messages[0]
    with pytest.raises(CacheMismatchError, match=r"extra\.fps"):
        open_or_build(path, parts(frames=2), extra={"fps": 8}, on_mismatch="error")


class Crashing(torch.utils.data.Dataset):
    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == self.at:
            raise RuntimeError("worker died")
        return self.inner[i]


def test_an_interrupted_or_damaged_cache_is_detected_and_never_used(tmp_path):
    path = tmp_path / "c"
    p = parts()
    p_crash = {**p, "dataset": Crashing(p["dataset"], at=9)}
    with pytest.raises(RuntimeError, match="worker died"):
        LatentCache.build(path, p_crash["dataset"], autoencoder=p["autoencoder"], text_encoder=p["text_encoder"],
                          progress=False, batch_size=2, shard_size=2, fingerprint={"v": 1}, data_key="video")  # fmt: skip
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing half-written is left in place
    # a hard crash (no cleanup) leaves a temporary folder; a folder without meta.json is incomplete
    cache = open_or_build(path, p)
    shutil.copytree(path, tmp_path / ".c.tmp-123-456")
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    (broken / "meta.json").unlink()
    with pytest.raises(CacheError, match="incomplete"):
        LatentCache(broken)
    # a truncated shard is damaged
    shard = path / cache.meta["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CacheError, match=r"damaged.*shard-00001"):
        LatentCache(path)
    messages = []
    repaired = open_or_build(path, p, log=messages.append)
    assert "damaged" in messages[0] and len(repaired) == 12
    assert not (tmp_path / ".c.tmp-123-456").exists()  # the stale temporary build was cleaned up
    torch.testing.assert_close(repaired[5]["latent"], cache[5]["latent"])
    rebuilt = open_or_build(broken, p)
    assert rebuilt.key == cache.key


def test_the_data_key_is_named_by_the_dataset_or_the_caller_never_assumed(tmp_path):
    class Plain(torch.utils.data.Dataset):  # no data_key attribute: the caller must name it
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"audio": torch.zeros(2, 8), "text": "a tone"}

    with pytest.raises(ValueError, match=r"name the data key of Plain.*keys \['audio', 'text'\]"):
        LatentCache.build(tmp_path / "a", Plain(), autoencoder=None, text_encoder=None, progress=False)
    with pytest.raises(KeyError, match=r"Plain items have no 'video' \(keys: \['audio', 'text'\]\)"):
        LatentCache.build(tmp_path / "b", Plain(), autoencoder=None, text_encoder=None, data_key="video")
    cache = LatentCache.build(tmp_path / "c", Plain(), autoencoder=None, text_encoder=None, data_key="audio",
                              progress=False)  # fmt: skip
    assert cache.meta["fingerprint"]["data_key"] == "audio" and cache[0]["latent"].shape == (2, 8)
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=2, mixed_precision="no")
    model = TinyBackbone(channels=2, width=8, depth=1, context_dim=None, dims=1)
    with pytest.raises(ValueError, match="pass data_key="):
        Trainer(model, FlowSchedule(), Plain(), config, prediction="flow")
    trainer = Trainer(model, FlowSchedule(), Plain(), config, prediction="flow", data_key="audio")
    assert trainer.data_key == "audio" and trainer.fit()["step"] == 1
    # a cache given as the dataset: its items are latents, the key is the one it was built with
    assert Trainer(model, FlowSchedule(), cache, config, prediction="flow").data_key == "audio"
