"""Video VAE benchmark: held-out reconstruction quality and decode memory, chunked vs whole-clip.

    python benchmarks/video_vae.py                          # the shipped mediadiff/weights/video_vae_shapes
    python benchmarks/video_vae.py --model runs/my_vae/final --clips 64

Quality: reconstruction PSNR (dB, posterior mean, output clamped to [-1, 1], data range 2) on held-out
Shapes clips at 64x64, 17 frames: Shapes seed 12345, indices 0..clips-1 -- the held-out seed of
``recipes/video/train_vae.py``, which training never draws from (it trains on seed 0). The training
steps and time come from the ``training.json`` the recipe writes next to the weights.

Memory: peak resident memory added by one ``decode`` of a batch-1 latent for 17, 33, 65 and 257 frames,
whole clip and streamed in chunks of ``--chunk-size`` latent frames. Each measurement runs in a fresh
subprocess that loads the model, builds the latent, decodes it once to warm up, reads its resident set
``VmRSS``, resets the kernel's peak-RSS mark (``echo 5 > /proc/self/clear_refs``, Linux), decodes, and
reads the peak ``VmHWM``: the difference is the decode's own peak. glibc's mmap threshold is fixed at
64 KiB (``MALLOC_MMAP_THRESHOLD_``) so freed tensors leave the resident set at once and RSS tracks live
memory. On CUDA the same is read from ``torch.cuda.max_memory_allocated``. The peak includes the decoded
clip itself (the "output tensor" column): a chunked decode's peak is that plus a constant working set.
The resolution of the CPU method is a few MiB (allocator and oneDNN scratch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from memory import peak_mib, run_child

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "mediadiff" / "weights" / "video_vae_shapes"
HELDOUT_SEED = 12345
FRAMES = (17, 33, 65, 257)


def measure(model_dir: str, frames: int, chunk_size: int | None, device: str) -> dict:
    """Decode once (batch 1) in this process and report the peak memory the decode added, in MiB."""
    from mediadiff.video.autoencoder import load_autoencoder

    torch.set_num_threads(1)
    model = load_autoencoder(model_dir, device=device)
    size = 64
    z = torch.randn(model.latent_shape((1, 3, frames, size, size)), device=device)  # [1 zc fz hz wz]
    with torch.no_grad():
        model.decode(
            z, chunk_size=chunk_size
        )  # warm-up: one-off kernel set-up must not count as the decode's
        x, peak, seconds = peak_mib(lambda: model.decode(z, chunk_size=chunk_size), device)  # [1 3 f 64 64]
    assert x.shape[2] == frames
    return {"frames": frames, "chunk_size": chunk_size, "peak_mib": peak, "seconds": seconds}


def measure_in_subprocess(model_dir: str, frames: int, chunk_size: int | None, device: str) -> dict:
    return run_child(__file__, [model_dir, frames, chunk_size, device], ROOT)


@torch.no_grad()
def quality(model_dir: str, clips: int, batch_size: int, device: str) -> dict:
    from mediadiff.video.autoencoder import load_autoencoder
    from mediadiff.video.metrics import psnr
    from mediadiff.video.shapes import Shapes

    model = load_autoencoder(model_dir, device=device)
    data = Shapes(length=clips, num_frames=17, size=64, seed=HELDOUT_SEED)
    scores, latents, max_chunk_diff = [], [], 0.0
    for start in range(0, clips, batch_size):
        x = torch.stack([data[i]["video"] for i in range(start, min(clips, start + batch_size))]).to(device)
        z = model.encode(x)  # [b zc 5 16 16]
        rec = model.decode(z)  # [b 3 17 64 64]
        max_chunk_diff = max(max_chunk_diff, (model.decode(z, chunk_size=1) - rec).abs().max().item())
        scores.append(psnr(rec.clamp(-1, 1), x).cpu())
        latents.append(z.cpu())
    s = torch.cat(scores)
    z = torch.cat(latents)
    return {
        "psnr_mean": s.mean().item(),
        "psnr_min": s.min().item(),
        "psnr_std": s.std().item(),
        "latent_shape": list(z.shape[1:]),
        "latent_mean": z.mean().item(),
        "latent_std": z.std().item(),
        "max_chunk_diff": max_chunk_diff,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(SHIPPED), help="a folder written by save_pretrained")
    p.add_argument("--clips", type=int, default=64, help="held-out Shapes clips for the PSNR")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=1, help="latent frames per decode chunk")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(
            f"--model: {args.model} has no config.json (train one with recipes/video/train_vae.py)"
        )

    q = quality(args.model, args.clips, args.batch_size, args.device)
    info_path = Path(args.model) / "training.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    weights = Path(args.model) / "model.safetensors"
    print(f"## Video VAE `{args.model}` on {args.device}\n")
    print("| | |\n|---|---|")
    print(
        f"| parameters | {q['params'] / 1e6:.2f} M ({weights.stat().st_size / 2**20:.1f} MiB safetensors) |"
    )
    print(f"| latent per 17x64x64 clip | {' x '.join(map(str, q['latent_shape']))} (c f h w) |")
    print(
        f"| held-out PSNR, {args.clips} Shapes clips (seed {HELDOUT_SEED}) | {q['psnr_mean']:.2f} dB "
        f"(std {q['psnr_std']:.2f}, min {q['psnr_min']:.2f}) |"
    )
    print(f"| latents mean / std | {q['latent_mean']:.3f} / {q['latent_std']:.3f} |")
    print(f"| max abs(chunked - whole) decode | {q['max_chunk_diff']:.1e} |")
    if info:
        print(
            f"| training | {info.get('steps')} steps x batch {info.get('batch_size')}, "
            f"{info.get('frames')} frames, {info.get('train_seconds', 0) / 60:.1f} min, "
            f"{info.get('torch_threads')} CPU thread(s), {info.get('precision')} |"
        )
        print(f"| command | `{info.get('command')}` |")

    print(f"\n### Peak memory of `decode` (batch 1, 64x64, chunk = {args.chunk_size} latent frame(s))\n")
    print(
        "| frames | output tensor: MiB | whole clip: peak MiB | whole: s | chunked: peak MiB | chunked: s |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for frames in FRAMES:
        whole = measure_in_subprocess(args.model, frames, None, args.device)
        chunked = measure_in_subprocess(args.model, frames, args.chunk_size, args.device)
        output_mib = 3 * frames * 64 * 64 * 4 / 2**20  # the float32 result itself, [1 3 f 64 64]
        print(
            f"| {frames} | {output_mib:.1f} | {whole['peak_mib']:.0f} | {whole['seconds']:.2f} | "
            f"{chunked['peak_mib']:.0f} | {chunked['seconds']:.2f} |"
        )


if __name__ == "__main__":
    main()
