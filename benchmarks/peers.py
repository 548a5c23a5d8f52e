"""Our backbones against the nearest diffusers models, side by side in one process: forward and train-step time.

    python benchmarks/peers.py                      # every pair, 1 thread, fp32, batch 1, median of 7
    python benchmarks/peers.py --pairs dit,dit1d --repeats 11
    python benchmarks/peers.py --device cuda --precision bf16

Each pair is one of our presets and a diffusers model configured to a similar parameter count, fed the
same input (issue 18's table):

- ``unet3d``: UNet3D-S against ``UNet3DConditionModel`` (64-128-256 channels, 2 layers per block,
  cross-attention at the two upper levels, width 384), pixels ``[1 3 16 32 32]``;
- ``dit``: DiT-S against ``CogVideoXTransformer3DModel`` (12 layers, 6 x 64 heads, patch 2, time
  embedding 384), the video VAE's latents ``[1 8 5 16 16]`` (320 tokens);
- ``unet1d``: UNet1D-S against ``UNet1DModel`` (Dance Diffusion's layout at 23.7 M parameters), one second
  of 16 kHz waveform ``[1 1 16384]`` (``UNet1DModel`` takes no text: ours pays its cross-attention);
- ``unet2d``: UNet2D-S against ``UNet2DConditionModel`` (64-128-256, cross-attention at the lowest
  level), a 128-bin log-mel ``[1 1 128 64]``;
- ``dit1d``: DiT1D-S against ``StableAudioDiTModel`` (12 layers, 6 x 64 heads, 3 key/value heads),
  waveform-VAE latents ``[1 16 64]`` (64 tokens);

every text-conditioned model with 16 text tokens of width 384 (all-MiniLM-L6-v2). A train step is forward
+ backward of the mean square of the output (no optimizer step, which is a function of the parameter
count alone); "forward" is one ``torch.no_grad`` call in eval mode. The two models alternate (ours, peer,
then peer, ours, ...) and each number is the median of ``--repeats`` pairs after two warm-up rounds, so both see
the same machine load; "cpu ms" is the process CPU time of the same calls (immune to the other core's
load when ``--threads 1``). ``GFLOP`` is one train step's floating-point work counted by
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions; 2 per multiply-add).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timing import perturb_
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from mediadiff.utils import cpu_name

TEXT_DIM = 384
TEXT_TOKENS = 16  # --text-tokens


@dataclass
class Pair:
    """Our model and its peer, each as ``(module, call)`` where ``call()`` returns the output tensor."""

    name: str
    input_shape: tuple[int, ...]
    ours: tuple[str, nn.Module, Callable[[], torch.Tensor]]
    peer: tuple[str, nn.Module, Callable[[], torch.Tensor]]


def _inputs(shape: tuple[int, ...], device: torch.device, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    x = torch.randn(*shape, generator=gen).to(device)  # [b c *s]
    t = torch.rand(shape[0], generator=gen).to(device)  # [b]
    context = torch.randn(shape[0], TEXT_TOKENS, TEXT_DIM, generator=gen).to(device)  # [b l d]
    return x, t, context


def _ours(cls: type, preset: str, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, gen, device, **kw):
    model = perturb_(cls.from_preset(preset, **kw), gen).to(device)
    return f"{cls.__name__}-{preset}", model, lambda: model(x, t, ctx)


def _diffusers_unet(cls: type, inputs: tuple, **config) -> tuple[str, nn.Module, Callable[[], torch.Tensor]]:
    """A diffusers text-conditioned U-Net (64-128-256 channels, 2 layers per block, 64-channel heads,
    cross-attention of width 384) with the given block types, perturbed, as ``(name, module, call)``."""
    x, t, ctx, gen, device = inputs
    unet = cls(
        block_out_channels=(64, 128, 256),
        layers_per_block=2,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=64,
        **config,
    )
    unet = perturb_(unet, gen).to(device)
    return cls.__name__, unet, lambda: unet(x, t * 1000, ctx, return_dict=False)[0]


def build(name: str, device: torch.device, batch: int) -> Pair:
    """The pair ``name`` (see the module docstring), randomly initialised and perturbed, on ``device``."""
    import diffusers

    gen = torch.Generator().manual_seed(0)
    if name == "unet3d":
        from mediadiff.video.unet3d import UNet3D

        x, t, ctx = _inputs((batch, 3, 16, 32, 32), device, gen)
        ours = _ours(UNet3D, "S", x, t, ctx, gen, device)
        peer = _diffusers_unet(
            diffusers.UNet3DConditionModel,
            (x, t, ctx, gen, device),
            in_channels=3,
            out_channels=3,
            down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        )
        return Pair(name, tuple(x.shape), ours, peer)
    if name == "dit":
        from mediadiff.video.diffusers_cogvideox import CogVideoXBackbone
        from mediadiff.video.dit import DiT

        x, t, ctx = _inputs((batch, 8, 5, 16, 16), device, gen)
        ours = _ours(DiT, "S", x, t, ctx, gen, device)
        model = diffusers.CogVideoXTransformer3DModel(
            num_attention_heads=6,
            attention_head_dim=64,
            in_channels=8,
            out_channels=8,
            time_embed_dim=384,
            text_embed_dim=TEXT_DIM,
            num_layers=12,
            sample_width=16,
            sample_height=16,
            sample_frames=17,
            patch_size=2,
            max_text_seq_length=TEXT_TOKENS,
        )
        peer = CogVideoXBackbone(perturb_(model, gen)).to(device)
        return Pair(
            name, tuple(x.shape), ours, ("CogVideoXTransformer3DModel", peer, lambda: peer(x, t, ctx))
        )
    if name == "unet1d":
        from mediadiff.audio.unet import UNet1D

        x, t, ctx = _inputs((batch, 1, 16384), device, gen)
        ours = _ours(UNet1D, "S", x, t, ctx, gen, device)
        # Dance Diffusion's block layout (diffusers' conversion script for harmonai's models), 8 levels
        widths = (32, 32, 64, 128, 128, 256, 256, 256)
        peer = diffusers.UNet1DModel(
            sample_size=16384,
            in_channels=1,
            out_channels=1,
            extra_in_channels=16,
            time_embedding_type="fourier",
            time_embedding_dim=16,  # 8 Fourier frequencies, as Dance Diffusion
            flip_sin_to_cos=True,
            use_timestep_embedding=False,
            block_out_channels=widths,
            down_block_types=("DownBlock1DNoSkip",) + ("DownBlock1D",) * 4 + ("AttnDownBlock1D",) * 3,
            up_block_types=("AttnUpBlock1D",) * 3 + ("UpBlock1D",) * 4 + ("UpBlock1DNoSkip",),
            mid_block_type="UNetMidBlock1D",
            downsample_each_block=True,
        )
        peer = perturb_(peer, gen).to(device)
        peer_call = lambda: peer(x, t * 1000, return_dict=False)[0]  # noqa: E731
        return Pair(name, tuple(x.shape), ours, ("UNet1DModel", peer, peer_call))
    if name == "unet2d":
        from mediadiff.audio.unet import UNet2D

        x, t, ctx = _inputs((batch, 1, 128, 64), device, gen)
        ours = _ours(UNet2D, "S", x, t, ctx, gen, device)
        peer = _diffusers_unet(
            diffusers.UNet2DConditionModel,
            (x, t, ctx, gen, device),
            in_channels=1,
            out_channels=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        )
        return Pair(name, tuple(x.shape), ours, peer)
    if name == "dit1d":
        from mediadiff.audio.diffusers_stable_audio import StableAudioBackbone
        from mediadiff.audio.dit import DiT1D

        x, t, ctx = _inputs((batch, 16, 64), device, gen)
        ours = _ours(DiT1D, "S", x, t, ctx, gen, device)
        model = diffusers.StableAudioDiTModel(
            sample_size=64,
            in_channels=16,
            out_channels=16,
            num_layers=12,
            attention_head_dim=64,
            num_attention_heads=6,
            num_key_value_attention_heads=3,
            cross_attention_dim=TEXT_DIM,
            cross_attention_input_dim=TEXT_DIM,
            global_states_input_dim=2 * TEXT_DIM,
            time_proj_dim=256,
        )
        peer = StableAudioBackbone(perturb_(model, gen), max_text_length=TEXT_TOKENS).to(device)
        # the two timing tokens StableAudio appends to the text: seconds_start, seconds_total
        timing = torch.randn(batch, 2, TEXT_DIM, generator=gen).to(device)  # [b 2 d]
        peer_ctx = torch.cat([ctx, timing], dim=1)  # [b l+2 d]
        return Pair(name, tuple(x.shape), ours, ("StableAudioDiTModel", peer, lambda: peer(x, t, peer_ctx)))
    raise ValueError(f"unknown pair {name!r}; known: {list(PAIRS)}")


PAIRS = ("unet3d", "dit", "unet1d", "unet2d", "dit1d")


def step_flops(model: nn.Module, call: Callable[[], torch.Tensor]) -> float:
    """Floating-point operations of one train step (forward + backward), counted by FlopCounterMode."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        call().float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def compare(pair: Pair, repeats: int, device: torch.device, precision: str) -> dict:
    """Interleaved forward and train-step times (wall and process CPU ms, medians) of both models."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def forward(model: nn.Module, call: Callable) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), autocast:
                call()

        return run

    def train(model: nn.Module, call: Callable) -> Callable[[], None]:
        def run() -> None:
            with autocast:
                loss = call().float().square().mean()
            loss.backward()
            model.zero_grad(set_to_none=True)

        return run

    row: dict = {"pair": pair.name, "input": list(pair.input_shape)}
    for side, (label, model, call) in (("ours", pair.ours), ("peer", pair.peer)):
        row[f"{side}_name"] = label
        row[f"{side}_params"] = sum(p.numel() for p in model.parameters())
        row[f"{side}_gflop"] = step_flops(model, call) / 1e9
    for kind, make, mode in (("fwd", forward, "eval"), ("train", train, "train")):
        fns = {}
        for side, (_, model, call) in (("ours", pair.ours), ("peer", pair.peer)):
            getattr(model, mode)()
            fns[side] = make(model, call)
        wall = {"ours": [], "peer": []}
        cpu = {"ours": [], "peer": []}
        for i in range(repeats + 2):
            # who goes first alternates (ours, peer; peer, ours; ...): a machine whose speed drifts over
            # the run favours neither
            for side in ("ours", "peer") if i % 2 == 0 else ("peer", "ours"):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                w, c = time.perf_counter(), time.process_time()
                fns[side]()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= 2:  # two warm-up rounds
                    wall[side].append(time.perf_counter() - w)
                    cpu[side].append(time.process_time() - c)
        for side in ("ours", "peer"):
            row[f"{side}_{kind}"] = 1000 * statistics.median(wall[side])
            row[f"{side}_{kind}_cpu"] = 1000 * statistics.median(cpu[side])
    return row


def machine(device: torch.device) -> str:
    """The device's name: the GPU, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, from {','.join(PAIRS)}")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per number (median)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--text-tokens", type=int, default=16, help="text tokens of the context (CogVideoX's own: 226)"
    )
    args = parser.parse_args()
    global TEXT_TOKENS
    TEXT_TOKENS = args.text_tokens
    names = args.pairs.split(",")
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        parser.error(f"--pairs: unknown {unknown}; known: {list(PAIRS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in tqdm(names, desc="pairs"):
        rows.append(compare(build(name, device, args.batch), args.repeats, device, args.precision))
    print(
        f"\n{device.type} ({machine(device)}), {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"{args.precision}, batch {args.batch}, {args.text_tokens} text tokens, median of {args.repeats} interleaved rounds; times in ms\n"
    )
    print(
        "| ours | peer (diffusers) | input | params ours / peer | train GFLOP ours / peer "
        "| forward ms ours / peer | **forward ratio** | train step ms ours / peer | train cpu ms ours / peer "
        "| **train ratio** |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['ours_name']} | {r['peer_name']} | {r['input']} "
            f"| {r['ours_params'] / 1e6:.1f}M / {r['peer_params'] / 1e6:.1f}M "
            f"| {r['ours_gflop']:.1f} / {r['peer_gflop']:.1f} "
            f"| {r['ours_fwd']:.1f} / {r['peer_fwd']:.1f} | **{r['ours_fwd'] / r['peer_fwd']:.2f}** "
            f"| {r['ours_train']:.1f} / {r['peer_train']:.1f} "
            f"| {r['ours_train_cpu']:.1f} / {r['peer_train_cpu']:.1f} "
            f"| **{r['ours_train'] / r['peer_train']:.2f}** |"
        )


if __name__ == "__main__":
    main()
