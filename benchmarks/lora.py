"""What a LoRA fine-tune taught a shipped model, and what it cost the old concepts: a paired evaluation.

The recipes (``recipes/video/shapes_dit.py --init-from shapes-dit --lora-rank R --colours all`` and
``recipes/audio/tones_latent.py --init-from tones-dit --lora-rank R --pitches all``) train LoRA adapters
(Hu et al. 2022) on the shipped model for concepts it never saw: the colours :data:`~mediadiff.video.shapes.
EXTRA_COLOURS` (orange, white) and the notes :data:`~mediadiff.audio.tones.EXTRA_PITCHES` (C#5, D5). This
script generates held-out prompts (the evaluation streams, never trained on) of the new concept and of the
old ones with the base model and with the adapter, the same prompts and seeds for both, reads them with the
analytic detectors (every colour of :data:`~mediadiff.video.shapes.ALL_COLOURS` in the palette, so the base
model is scored as strictly as the adapted one) and prints a table with 95% Wilson intervals, the
autoencoder's round trip of the same real clips (the ceiling any backbone can reach through it), the adapter's
size and the run's training time.

    .venv/bin/python benchmarks/lora.py video --lora runs/lora_colours/lora.safetensors --num 96
    .venv/bin/python benchmarks/lora.py audio --lora runs/lora_pitches/lora.safetensors --num 96
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediadiff.eval import pipeline_generator, wilson_interval  # noqa: E402
from mediadiff.nn.lora import read_lora  # noqa: E402


def video_task(num: int):
    """(pipeline class, base model, groups {name: items}, fields, read(clips, items) -> per-field hits, real(items))."""
    from mediadiff.pipelines import VideoPipeline
    from mediadiff.video.detect import detect_batch
    from mediadiff.video.shapes import ALL_COLOURS, COLOURS, EXTRA_COLOURS, Shapes
    from mediadiff.video.shapes_eval import EVAL_SEED, eval_items

    groups = {
        f"new colours ({', '.join(EXTRA_COLOURS)})": eval_items(num, 17, 64, colours=EXTRA_COLOURS),
        "old colours (the six)": eval_items(num, 17, 64, colours=COLOURS),
    }

    def read(clips: np.ndarray, items: list[dict]) -> dict[str, list[bool]]:
        found = detect_batch(clips, colours=ALL_COLOURS)
        hits = {
            k: [getattr(d, k) == it[k] for d, it in zip(found, items)]
            for k in ("colour", "shape", "direction")
        }
        hits["all"] = [all(h) for h in zip(*hits.values())]
        return hits

    def real(items: list[dict]) -> torch.Tensor:
        """The clips the prompts describe, drawn as the evaluation stream drew their labels."""
        colours = EXTRA_COLOURS if items[0]["colour"] in EXTRA_COLOURS else COLOURS
        data = Shapes(length=1, num_frames=17, size=64, seed=EVAL_SEED, colours=colours)
        clips = [data[it["index"]] for it in items]
        assert all(c["text"] == it["text"] for c, it in zip(clips, items))
        return torch.stack([c["video"] for c in clips])  # [b 3 f h w]

    def to_clips(x: torch.Tensor) -> np.ndarray:
        return (
            ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
        )  # [b f h w 3]

    return (
        VideoPipeline,
        "shapes-dit",
        groups,
        ("colour", "shape", "direction", "all"),
        read,
        real,
        to_clips,
        "frames",
    )


def audio_task(num: int):
    """The audio counterpart of :func:`video_task` (Tones, the note reader)."""
    from mediadiff.audio.detect import read_tones
    from mediadiff.audio.evaluate import eval_items
    from mediadiff.audio.tones import EXTRA_PITCHES, HELDOUT_SEED, PITCHES, Tones, midi_to_name
    from mediadiff.pipelines import AudioPipeline

    groups = {
        f"new notes ({', '.join(midi_to_name(m) for m in EXTRA_PITCHES)})": eval_items(
            num, pitches=EXTRA_PITCHES
        ),
        "old notes (C3..C5)": eval_items(num, pitches=PITCHES),
    }

    def read(clips: np.ndarray, items: list[dict]) -> dict[str, list[bool]]:
        found = read_tones(clips)
        hits = {
            "pitch": [abs(r.midi - it["midi"]) <= 0.5 for r, it in zip(found, items)],
            "waveform": [r.waveform == it["waveform"] for r, it in zip(found, items)],
            "contour": [r.contour == it["contour"] for r, it in zip(found, items)],
        }
        hits["all"] = [all(h) for h in zip(*hits.values())]
        return hits

    def real(items: list[dict]) -> torch.Tensor:
        """The notes the prompts describe, synthesised as the held-out stream drew their labels."""
        pitches = EXTRA_PITCHES if items[0]["midi"] in EXTRA_PITCHES else PITCHES
        data = Tones(length=1, seed=HELDOUT_SEED, pitches=pitches)
        notes = [data[it["index"]] for it in items]
        assert all(n["text"] == it["text"] for n, it in zip(notes, items))
        return torch.stack([n["audio"] for n in notes])  # [b 1 t]

    return (
        AudioPipeline,
        "tones-dit",
        groups,
        ("pitch", "waveform", "contour", "all"),
        read,
        real,
        np.asarray,
        "audio",
    )


def training_minutes(metrics: Path, step: int | None) -> float | None:
    """Minutes from the run's (last) start, after its cache was built, to the log record of ``step``, the
    adapter's step (a run stopped later, or one with periodic evaluations after it, counts only up to it)."""
    if step is None or not metrics.is_file():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    starts = [r["time"] for r in records if r.get("event") == "start" and r.get("step", 0) < step]
    ends = [r["time"] for r in records if r.get("step") == step and "loss" in r and "event" not in r]
    return round((ends[0] - starts[-1]) / 60, 1) if starts and ends else None


def cell(hits: list[bool]) -> str:
    lo, hi = wilson_interval(sum(hits), len(hits))
    return f"{100 * np.mean(hits):.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modality", choices=["video", "audio"])
    parser.add_argument(
        "--lora", required=True, help="the adapter file (OUTPUT_DIR/lora.safetensors of the run)"
    )
    parser.add_argument(
        "--model", default=None, help="the base model (default: the file's base, else the shipped one)"
    )
    parser.add_argument("--num", type=int, default=96, help="prompts per group")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    pipeline_cls, shipped, groups, fields, read, real, to_clips, output = (
        video_task if args.modality == "video" else audio_task
    )(args.num)
    state, settings, info = read_lora(args.lora)
    base_name = args.model or info.get("base") or shipped
    pipe = pipeline_cls.from_pretrained(base_name)

    def run(items: list[dict]) -> dict[str, list[bool]]:
        generate = pipeline_generator(pipe, output=output)
        clips = np.concatenate(
            [
                generate(
                    [it["text"] for it in items[s : s + args.batch_size]],
                    [it["index"] for it in items[s : s + args.batch_size]],
                )
                for s in range(0, len(items), args.batch_size)
            ]
        )
        return read(clips, items)

    results: dict[str, dict[str, dict[str, list[bool]]]] = {}
    t0 = time.perf_counter()
    for name, items in groups.items():
        x = real(items)
        with torch.no_grad():
            round_trip = pipe.autoencoder.decode(pipe.autoencoder.encode(x)).float()
        results.setdefault(name, {})["autoencoder round trip (ceiling)"] = read(to_clips(round_trip), items)
        results[name]["base"] = run(items)
    pipe.load_lora(args.lora)
    for name, items in groups.items():
        results[name]["base + LoRA"] = run(items)
    seconds = time.perf_counter() - t0

    size = Path(args.lora).stat().st_size
    params = sum(v.numel() for v in state.values())
    run_dir = Path(info.get("run", Path(args.lora).parent))
    minutes = training_minutes(run_dir / "metrics.jsonl", info.get("step"))
    print(
        f"\n{args.modality}: {base_name} + {args.lora} (rank {settings.rank}, targets {', '.join(settings.targets)})"
    )
    print(
        f"adapter: {params:,} parameters, {size / 1e6:.2f} MB; {info.get('step')} steps, "
        f"training {minutes} min (after the cache); {args.num} prompts per group, sampled with the model's "
        f"defaults ({pipe.defaults['sampler']} {pipe.defaults['steps']} steps, cfg {pipe.defaults['guidance_scale']:g}); "
        f"evaluation {seconds / 60:.1f} min\n"
    )
    print("| prompts | model | " + " | ".join(f"{f} % [95% CI]" for f in fields) + " |")
    print("|---|---|" + "---|" * len(fields))
    for name, rows in results.items():
        for model, hits in rows.items():
            print(f"| {name} | {model} | " + " | ".join(cell(hits[f]) for f in fields) + " |")
    if args.json:
        summary = {
            name: {model: {f: float(np.mean(h[f])) for f in fields} for model, h in rows.items()}
            for name, rows in results.items()
        }
        Path(args.json).write_text(
            json.dumps({"lora": str(args.lora), "base": base_name, "params": params, "bytes": size,
                        "steps": info.get("step"), "train_minutes": minutes, "num": args.num, "results": summary}, indent=1)
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
