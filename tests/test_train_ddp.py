"""Two CPU processes over gloo under torchrun: identical weights, different samples, exact resume."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from mediadiff.diffusion import FlowSchedule
    from mediadiff.train import TrainConfig, Trainer
    from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

    class Recording(MovingSquares):
        def __getitem__(self, index):
            self.seen.append(index)
            return super().__getitem__(index)

    def run(out, until=None, resume=False):
        torch.manual_seed(0)
        dataset = Recording(24, num_frames=4, size=8)
        dataset.seen = []
        config = TrainConfig(output_dir=out, max_steps=4, batch_size=3, lr=1e-3, ema_decay=0.9, log_every=2,
                             lr_schedule="cosine", warmup_steps=1, cond_dropout=0.3, resume=resume)
        trainer = Trainer(TinyBackbone(channels=4, width=16, depth=1, context_dim=8), FlowSchedule(), dataset, config,
                          prediction="flow", autoencoder=TinyAutoencoder(width=8), text_encoder=HashTextEncoder(dim=8))
        trainer.fit(until)
        return trainer, dataset

    def digest(sd):
        return hashlib.sha256(b"".join(v.detach().contiguous().numpy().tobytes() for _, v in sorted(sd.items()))).hexdigest()

    out = sys.argv[1]
    straight, data = run(f"{out}/straight")
    run(f"{out}/resumed", until=2)
    resumed, _ = run(f"{out}/resumed", resume=True)
    result = {
        "rank": straight.rank, "world_size": straight.world_size, "seen": data.seen,
        "distributed": str(straight.accelerator.distributed_type), "backend": str(straight.accelerator.state.backend),
        "weights": digest(straight.unwrapped_model.state_dict()), "ema": digest(straight.ema.module.state_dict()),
        "resumed_weights": digest(resumed.unwrapped_model.state_dict()),
        "resumed_ema": digest(resumed.ema.module.state_dict()),
    }
    with open(f"{out}/rank-{straight.rank}.json", "w") as f:
        json.dump(result, f)
    resumed.accelerator.end_training()
    """
)


def test_two_cpu_processes_over_gloo_stay_in_sync_and_split_the_data(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["distributed"].endswith("MULTI_CPU") and ranks[0]["backend"] == "gloo"
    # DDP kept the replicas identical: trained weights and EMA agree bit for bit
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["ema"] == ranks[1]["ema"]
    # each rank saw its own 3 clips per step: 4 steps x 3 = 12 each, disjoint within an epoch of 24
    seen = [r["seen"] for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 12 and not set(seen[0]) & set(seen[1])
    events = [json.loads(x) for x in (out / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("event") == "skipped"] and events[-1]["loss"] < 2  # it trained
    # 2 steps, stop, resume, 2 steps == 4 steps straight, in both processes
    for r in ranks:
        assert r["resumed_weights"] == r["weights"] and r["resumed_ema"] == r["ema"]
    # the checkpoint written by rank 0 holds those weights
    from safetensors.torch import load_file

    saved = load_file(out / "straight" / "checkpoints" / "step-00000004" / "model.safetensors")
    digest = hashlib.sha256(
        b"".join(v.contiguous().numpy().tobytes() for _, v in sorted(saved.items()))
    ).hexdigest()
    assert digest == ranks[0]["weights"]
    assert {p.name for p in (out / "straight" / "checkpoints" / "step-00000004").glob("rng-*.pt")} == {
        "rng-00000.pt",
        "rng-00001.pt",
    }
