"""Audio autoencoder benchmark: Griffin-Lim, the trained vocoder, the waveform VAE and diffusers' Oobleck.

    python benchmarks/audio_autoencoders.py                      # shipped vocoder + VAE, runs/oobleck/final
    python benchmarks/audio_autoencoders.py --clips 64 --oobleck runs/oobleck/final --vae runs/audio_vae/final

Quality, on held-out Tones clips (seed :data:`~mediadiff.audio.tones.HELDOUT_SEED`, which the recipes
refuse to train on; 16 kHz, 16384 samples): each row turns a clip into its code (a normalised log-mel
for Griffin-Lim and the vocoder, the posterior-mean latent for the VAEs) and back, and scores

- ``MR-STFT``: the multi-resolution STFT distance of the training loss (spectral convergence plus
  log-magnitude L1 over 5 resolutions; lower is better);
- ``SI-SDR``: scale-invariant SDR in dB (Le Roux et al. 2019), for the VAEs only: a mel spectrogram
  keeps no phase, so the waveform of a vocoder need not line up sample by sample;
- ``pitch kept``: the share of clips whose start pitch (pYIN, :mod:`mediadiff.audio.detect`) stays within
  half a semitone of the label; ``waveform kept``: the share whose waveform class is read back right;
- ``decode s / s audio``: decode time of the batch over the seconds of audio it makes (one thread).

Memory: the peak memory one ``decode`` of a batch-1 code adds, for 1, 8 and 32 s of audio, each in a fresh
subprocess (see ``benchmarks/memory.py``); the VAE both whole and in chunks of ``--chunk-size`` latent
frames with its receptive field as overlap. The training rows come from each model's ``training.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from memory import peak_mib, run_child
from timing import timed

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "mediadiff" / "weights"
SECONDS = (1, 8, 32)


def _load(kind: str, path: str | None, device: str):
    """A decoder row: (code function, decode function, model or None)."""
    from mediadiff.audio.autoencoder import load_autoencoder
    from mediadiff.audio.mel import GriffinLim, LogMel, MelConfig
    from mediadiff.audio.vocoder import Vocoder

    if kind == "griffin-lim":  # path: the number of mel bands ("80"), or None for the default
        config = MelConfig(n_mels=int(path)) if path else MelConfig()
        mel, gl = LogMel(config).to(device), GriffinLim(config, n_iter=32).to(device)
        return mel, gl, None
    if kind == "vocoder":
        vocoder = Vocoder.from_pretrained(path, device=device).eval()
        return vocoder.mel_of, vocoder, vocoder
    vae = load_autoencoder(path, device=device).eval()
    return vae.encode, vae.decode, vae


def measure(kind: str, path: str | None, seconds: float, chunk: int | None, device: str) -> dict:
    """Decode one batch-1 code of ``seconds`` of audio in this process; peak MiB and time."""
    from mediadiff.audio.tones import synthesize_tone

    torch.set_num_threads(1)
    code, decode, _ = _load(kind, path, device)
    n = int(seconds * 16000) // 1024 * 1024
    x = torch.from_numpy(synthesize_tone("sawtooth", 57, "rising", num_samples=n))[None, None].to(device)
    with torch.no_grad():
        c = code(x)  # [1 ...]
        if chunk:
            run = lambda: decode(c, chunk_size=chunk)  # noqa: E731
        else:
            run = lambda: decode(c)  # noqa: E731
        run()  # warm-up: one-off kernel set-up must not count
        y, peak, secs = peak_mib(run, device)
    assert y.shape[-1] == n, (y.shape, n)
    return {"peak_mib": peak, "seconds": secs}


@torch.no_grad()
def quality(kind: str, path: str | None, clips: int, batch_size: int, device: str) -> dict:
    from mediadiff.audio.detect import read_tones, score_tones
    from mediadiff.audio.losses import MultiResolutionSTFTLoss, si_sdr
    from mediadiff.audio.tones import HELDOUT_SEED, Tones

    torch.set_num_threads(1)
    code, decode, model = _load(kind, path, device)
    data = Tones(length=clips, seed=HELDOUT_SEED)
    items = [data[i] for i in range(clips)]
    xs, ys, decode_seconds = [], [], 0.0
    for start in range(0, clips, batch_size):
        x = torch.stack([it["audio"] for it in items[start : start + batch_size]]).to(device)  # [b 1 t]
        c = code(x)
        t0 = time.perf_counter()
        y = decode(c).float().clamp(-1, 1)  # [b 1 t]
        decode_seconds += time.perf_counter() - t0
        xs.append(x.cpu())
        ys.append(y.cpu())
    x, y = torch.cat(xs), torch.cat(ys)
    scores = score_tones(read_tones(y, data.sample_rate), items)
    return {
        "mrstft": MultiResolutionSTFTLoss()(y, x).item(),
        "si_sdr": si_sdr(y, x).mean().item(),
        "pitch": scores["pitch"],
        "waveform": scores["waveform"],
        "contour": scores["contour"],
        "rtf": decode_seconds / (clips * data.num_samples / data.sample_rate),
        "params": sum(p.numel() for p in model.parameters()) if model is not None else 0,
    }


def presets_table(device: str, repeats: int) -> None:
    """Parameters and CPU times of the vocoder presets and the autoencoder defaults (batch 1, 1 s of audio)."""
    from mediadiff.audio.autoencoder import OobleckVAE, WaveformVAE
    from mediadiff.audio.vocoder import Vocoder

    torch.set_num_threads(1)
    dev = torch.device(device)
    x = torch.rand(1, 1, 16384, device=dev) * 2 - 1  # [1 1 16384]
    models = [(f"Vocoder-{name}", Vocoder.from_preset(name)) for name in Vocoder.presets]
    models += [("WaveformVAE (default)", WaveformVAE()), ("OobleckVAE (default)", OobleckVAE())]
    if (WEIGHTS / "audio_vae_tones" / "config.json").is_file():
        from mediadiff.audio.autoencoder import load_autoencoder

        models.append(
            ("WaveformVAE (shipped: mel in, vocoder head)", load_autoencoder(WEIGHTS / "audio_vae_tones"))
        )
    print(f"\n### Presets: parameters and time on {device}, one thread, batch 1, 16384 samples (ms)\n")
    print("| model | params | forward | train step (forward, backward, AdamW) |")
    print("|---|---:|---:|---:|")
    for name, model in models:
        model = model.to(dev)
        is_vocoder = name.startswith("Vocoder")
        inputs = model.mel_of(x) if is_vocoder else x

        def forward(model=model, inputs=inputs, is_vocoder=is_vocoder):
            return model(inputs) if is_vocoder else model(inputs, sample=False)[0]

        opt = torch.optim.AdamW(model.parameters())

        def step(forward=forward, opt=opt):
            loss = (forward().float() - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        with torch.no_grad():
            fwd = timed(forward, repeats, dev)
        train_ms = timed(step, repeats, dev)
        params = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {params / 1e6:.2f} M | {fwd:.1f} | {train_ms:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocoder", default=str(WEIGHTS / "audio_vocoder_tones"), help="a Vocoder folder")
    p.add_argument("--vae", default=str(WEIGHTS / "audio_vae_tones"), help="a WaveformVAE folder")
    p.add_argument("--oobleck", default=str(ROOT / "runs" / "oobleck" / "final"), help="an OobleckVAE folder")
    p.add_argument("--clips", type=int, default=64, help="held-out Tones clips")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--chunk-size", type=int, default=64, help="latent frames per chunk of the chunked VAE decode"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the decode-memory table")
    p.add_argument("--presets", action="store_true", help="only the parameters and times of the presets")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats of --presets")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    from mediadiff.utils import machine

    info = machine(args.device)
    where = (
        f"{info['device']} ({info.get('gpu', info['cpu'])}), {info['cpu_count']} cores, torch {info['torch']}"
    )
    if args.presets:
        print(where)
        presets_table(args.device, args.repeats)
        return

    from mediadiff.audio.mel import MelConfig

    rows = [
        (f"Griffin-Lim (32 it., {MelConfig.n_mels} mels)", "griffin-lim", None),
        ("Griffin-Lim (32 it., 80 mels)", "griffin-lim", "80"),
    ]
    for name, kind, path in (
        ("vocoder", "vocoder", args.vocoder),
        ("waveform VAE", "vae", args.vae),
        ("diffusers Oobleck", "vae", args.oobleck),
    ):
        if (Path(path) / "config.json").is_file():
            rows.append((name, kind, path))
        else:
            print(f"(skipping {name}: no model at {path})")

    print(f"## Audio autoencoders on {args.clips} held-out Tones clips ({where}, one thread)\n")
    print(
        "| decoder | params | MR-STFT | SI-SDR dB | pitch kept | waveform kept | contour kept | decode s / s audio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, kind, path in rows:
        q = quality(kind, path, args.clips, args.batch_size, args.device)
        sdr = f"{q['si_sdr']:.1f}" if kind == "vae" else "n/a"
        params = f"{q['params'] / 1e6:.2f} M" if q["params"] else "0"
        print(
            f"| {name} | {params} | {q['mrstft']:.3f} | {sdr} | {100 * q['pitch']:.1f}% | "
            f"{100 * q['waveform']:.1f}% | {100 * q['contour']:.1f}% | {q['rtf']:.4f} |",
            flush=True,
        )

    print("\n### Training (from each model's training.json)\n")
    print("| model | steps x batch | crop | train minutes | threads | precision | command |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, kind, path in rows:
        if kind == "griffin-lim":
            continue
        info_path = Path(path) / "training.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            print(
                f"| {name} | {info.get('steps')} x {info.get('batch_size')} | {info.get('crop')} | "
                f"{info.get('train_seconds', 0) / 60:.1f} | {info.get('torch_threads')} | {info.get('precision')} | "
                f"`{info.get('command')}` |"
            )

    if args.no_memory:
        return
    print(f"\n### Peak memory and time of one decode (batch 1) against length, on {args.device}\n")
    variants = []
    for name, kind, path in rows:
        if kind == "griffin-lim" and path:  # the 80-band reference: the same memory as the default
            continue
        variants.append((name, kind, path, None))
        if name == "waveform VAE":
            variants.append((f"{name}, chunks of {args.chunk_size}", kind, path, args.chunk_size))
    print("| decoder | " + " | ".join(f"{s} s: MiB / s" for s in SECONDS) + " |")
    print("|---|" + "---:|" * len(SECONDS))
    for name, kind, path, chunk in variants:
        cells = []
        for seconds in SECONDS:
            m = run_child(__file__, [kind, path, seconds, chunk, args.device], ROOT)
            cells.append(f"{m['peak_mib']:.0f} / {m['seconds']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n(the output itself: {4 * 16000 / 2**20:.2f} MiB per second of float32 audio)")


if __name__ == "__main__":
    main()
