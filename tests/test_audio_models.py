"""The log-mel front end, Griffin-Lim, the vocoder, the losses and the waveform VAE."""

from __future__ import annotations

import math

import pytest
import torch

from mediadiff.audio.autoencoder import WaveformVAE, WaveformVAEConfig, load_autoencoder
from mediadiff.audio.losses import (
    MultiResolutionSTFTLoss,
    STFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    si_sdr,
)
from mediadiff.audio.mel import GriffinLim, LogMel, MelConfig
from mediadiff.audio.tones import Tones
from mediadiff.audio.vocoder import ISTFTHead, Vocoder, VocoderConfig, istft_same, peak_locked_advance
from mediadiff.nn import IdentityAutoencoder


def _tones(n: int = 4, num_samples: int = 16384) -> torch.Tensor:
    ds = Tones(seed=5, num_samples=num_samples)
    return torch.stack([ds[i]["audio"] for i in range(n)])  # [n 1 t]


# ----------------------------------------------------------------------------------------- mel


def test_log_mel_frames_divide_and_values_are_unit_scale():
    mel = LogMel()
    x = _tones()
    m = mel(x)
    assert m.shape == (4, 1, 128, 64)  # 16384 / 256 frames: same padding, not 65 as center=True gives
    assert -1.05 <= m.min() and m.max() <= 1.0 and m.std() > 0.2
    assert mel(torch.zeros(1, 1, 1024)).max() == pytest.approx(-1.0, abs=0.02)  # the floor maps to -1
    with pytest.raises(ValueError, match="multiple of the mel hop"):
        mel(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match=r"\[b c t\]"):
        mel(torch.zeros(1000))


def test_log_mel_frame_i_is_centred_on_sample_i_plus_half_hop():
    mel = LogMel()
    x = torch.zeros(1, 1, 4096)
    x[..., 10 * 256 + 128] = 1.0  # a click at the centre of frame 10
    energy = mel.magnitude(x)[0, 0].sum(0)  # [frames]
    assert int(energy.argmax()) == 10
    assert energy[9] == pytest.approx(energy[11].item(), rel=1e-3)  # symmetric around it


def test_griffin_lim_inverts_a_tone_and_is_reproducible():
    mel, gl = LogMel(), GriffinLim(n_iter=32)
    x = _tones(2)
    m = mel(x)
    y = gl(m)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert (mel(y) - m).abs().mean() < 0.2  # the spectrogram comes back
    assert torch.equal(gl(m), y)  # the random initial phase is seeded
    # aligned in time: the onset of the note lands where it was
    onset = lambda a: int((a.abs() > 0.05).float().argmax())  # noqa: E731
    assert abs(onset(y[0, 0]) - onset(x[0, 0])) < 128


def test_istft_same_reconstructs_and_keeps_length():
    n_fft, hop = 256, 64
    x = torch.randn(2, 64 * 40)
    window = torch.hann_window(n_fft)
    pad = (n_fft - hop) // 2
    frames = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0].unfold(1, n_fft, hop)
    spec = torch.fft.rfft(frames * window, dim=-1).transpose(1, 2)  # [b n_fft/2+1 f]
    assert spec.shape[-1] == 40
    y = istft_same(spec, n_fft, hop, window)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------- vocoder


def test_vocoder_shapes_presets_and_save_load(tmp_path):
    v = Vocoder.from_preset("tiny")
    x = _tones(2, 4096)
    m = v.mel_of(x)
    y = v(m)
    assert y.shape == x.shape
    stereo = v(torch.cat([m, m], dim=1))
    assert stereo.shape == (2, 2, 4096)
    torch.testing.assert_close(stereo[:, 0], stereo[:, 1])  # channels vocoded alike
    v.save_pretrained(tmp_path)
    w = Vocoder.from_pretrained(tmp_path)
    assert w.config == v.config and w.config.mel == MelConfig()
    torch.testing.assert_close(w(m), y)
    for name in ("S", "B"):
        assert Vocoder.presets[name].dim > Vocoder.presets["tiny"].dim
    with pytest.raises(ValueError, match=r"\[b c 128 f\]"):
        v(torch.zeros(1, 1, 64, 10))


def test_shipped_vocoder_loads_and_gives_back_the_spectrogram():
    from mediadiff.audio.tones import HELDOUT_SEED
    from mediadiff.audio.vocoder import TONES_VOCODER_DIR

    v = Vocoder.from_pretrained(TONES_VOCODER_DIR).eval()
    x = torch.stack([Tones(length=4, seed=HELDOUT_SEED)[i]["audio"] for i in range(4)])  # [4 1 t]
    with torch.no_grad():
        m = v.mel_of(x)
        y = v(m)
        griffin_lim = GriffinLim(v.config.mel)(m)
    assert y.shape == x.shape
    # a trained vocoder: closer to the input's log-mel than Griffin-Lim, and far closer than silence
    assert (v.mel_of(y) - m).abs().mean() < (v.mel_of(griffin_lim) - m).abs().mean()
    assert (v.mel_of(y) - m).abs().mean() < 0.2 * (v.mel_of(torch.zeros_like(x)) - m).abs().mean()
    from mediadiff.audio.detect import read_tones

    labels = [Tones(length=4, seed=HELDOUT_SEED).labels(i) for i in range(4)]
    for reading, label in zip(read_tones(y), labels, strict=True):  # the notes come back
        assert abs(reading.midi - label["midi"]) < 0.5 and reading.waveform == label["waveform"], (
            reading,
            label,
        )


def test_vocoder_head_fft_is_a_longer_window_at_the_same_hop(tmp_path):
    v = Vocoder(VocoderConfig(dim=16, num_blocks=1, head_fft=2048))
    assert v.head.n_fft == 2048 and v.head.hop == v.config.mel.hop_length
    m = v.mel_of(_tones(1, 4096))
    assert v(m).shape == (1, 1, 4096)
    v.save_pretrained(tmp_path)
    assert Vocoder.from_pretrained(tmp_path).config.head_fft == 2048


def test_integrated_phase_head_with_no_deviation_plays_its_bin_centres():
    """Oracle: zero phase deviation and one loud bin ``k`` give a sinusoid at ``k * sr / n_fft``, whatever n_fft."""
    for n_fft, k in ((1024, 40), (2048, 81)):
        head = ISTFTHead(4, n_fft, 256)
        bins = n_fft // 2 + 1
        with torch.no_grad():
            head.proj.weight.zero_()
            head.proj.bias.zero_()
            head.proj.bias[:bins] = -30.0  # silent log-magnitudes ...
            head.proj.bias[k] = 0.0  # ... but bin k; phase numbers 0 -> advance = bin centre
        y = head(torch.zeros(1, 4, 64))[0, 2048:-2048]  # [t] away from the edges
        spectrum = torch.fft.rfft(y * torch.hann_window(len(y)))
        peak = int(spectrum.abs().argmax())
        assert abs(peak * 16000 / len(y) - k * 16000 / n_fft) < 16000 / len(y)


def test_peak_locked_phase_plays_the_pitch_its_magnitudes_say():
    """Oracle: the true STFT magnitudes of a harmonic tone between bins, with peak-locked phases, play back
    at the tone's pitch (within 1 Hz, where the bins are 15.6 Hz apart) and keep its energy."""
    sr, n_fft, hop = 16000, 1024, 256
    window = torch.hann_window(n_fft)
    t = torch.arange(16384) / sr
    for f0 in (130.81, 311.13, 523.25):  # C3, D#4, C5
        x = 0.3 * sum(torch.sin(2 * math.pi * f0 * h * t) / h for h in range(1, 6))[None]  # [1 t]
        pad = (n_fft - hop) // 2
        frames = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0].unfold(1, n_fft, hop)
        log_mag = torch.fft.rfft(frames * window, dim=-1).transpose(1, 2).abs().clamp_min(1e-5).log()
        advance, lobe = peak_locked_advance(log_mag, hop, n_fft)  # [1 bins f] each
        phase = advance.double().cumsum(2).remainder(2 * math.pi).float() + lobe
        y = istft_same(torch.polar(log_mag.exp(), phase), n_fft, hop, window)[0, 2048:-2048]  # [t]
        spectrum = torch.fft.rfft(y * torch.hann_window(len(y)), n=8 * len(y)).abs()
        low = int(1.5 * f0 * 8 * len(y) / sr)  # below the second harmonic
        assert abs(int(spectrum[:low].argmax()) * sr / (8 * len(y)) - f0) < 1.0
        assert 0.8 < float(y.norm() / x[0, 2048:-2048].norm()) < 1.2
        # without the lobe offset the bins of each partial cancel
        flat = istft_same(torch.polar(log_mag.exp(), phase - lobe), n_fft, hop, window)[0, 2048:-2048]
        assert flat.norm() < y.norm()


def test_prior_vocoder_starts_at_the_mel_pseudo_inverse():
    """An untrained ``prior=True, phase="locked"`` vocoder plays the pitch of a tone between mel bands:
    its magnitudes are the mel's pseudo-inverse, its phases locked to their peaks."""
    torch.manual_seed(0)
    v = Vocoder(VocoderConfig(dim=16, num_blocks=1, phase="locked", prior=True)).eval()
    t = torch.arange(16384) / 16000
    f0 = 277.18  # C#4
    x = 0.3 * sum(torch.sin(2 * math.pi * f0 * h * t) / h for h in range(1, 6)).view(1, 1, -1)  # [1 1 t]
    mel = v.mel_of(x)
    linear = v._mel.linear_magnitude(mel)  # [1 1 bins f]
    assert linear.shape == (1, 1, 513, 64) and linear.min() >= 0
    with torch.no_grad():
        y = v(mel)[0, 0, 2048:-2048]  # [t]
    spectrum = torch.fft.rfft(y * torch.hann_window(len(y)), n=8 * len(y)).abs()
    low = int(1.5 * f0 * 8 * len(y) / 16000)
    played = int(spectrum[:low].argmax()) * 16000 / (8 * len(y))
    assert abs(12 * math.log2(played / f0)) < 0.5  # the eval's bar; half a bin (7.8 Hz) is the prior's limit
    with pytest.raises(ValueError, match="prior=True needs"):
        VocoderConfig(prior=True, head_fft=2048)


def test_phase_from_prior_keeps_the_pitch_whatever_the_correction():
    """With ``phase_from_prior`` the locked phase follows the prior's peaks: a large random magnitude
    correction changes the timbre but the played pitch stays the input's; locked to the corrected
    magnitudes instead, the same correction moves it."""
    t = torch.arange(16384) / 16000
    f0 = 207.65  # G#3
    x = 0.3 * torch.sin(2 * math.pi * f0 * t).view(1, 1, -1)  # [1 1 t]

    def played(phase_from_prior: bool) -> float:
        torch.manual_seed(0)
        cfg = VocoderConfig(
            dim=16, num_blocks=1, phase="locked", prior=True, phase_from_prior=phase_from_prior
        )
        v = Vocoder(cfg).eval()
        torch.nn.init.normal_(v.head.proj.weight, std=0.3)  # corrections of about a neper, varying by bin
        with torch.no_grad():
            y = v(v.mel_of(x))[0, 0, 2048:-2048]  # [t]
        spectrum = torch.fft.rfft(y * torch.hann_window(len(y)), n=8 * len(y)).abs()
        return int(spectrum.argmax()) * 16000 / (8 * len(y))

    assert abs(12 * math.log2(played(True) / f0)) < 0.25
    assert abs(12 * math.log2(played(False) / f0)) > 0.5
    with pytest.raises(ValueError, match="phase_from_prior needs"):
        VocoderConfig(phase_from_prior=True)


def test_richardson_lucy_draws_the_prior_back_to_a_low_sine():
    """The lowest note, a C3 sine between FFT bins: its log-mel's pseudo-inverse spreads it over the mel
    band and peaks off it; Richardson-Lucy steps give back a spectrum whose mel matches the input's and
    whose (parabola-refined) peak sits closer to the sine, without a negative number."""
    lm = LogMel()
    f0 = 130.81  # C3: bin 8.37 of 1024 at 16 kHz
    t = torch.arange(16384) / 16000
    mel = lm((0.5 * torch.sin(2 * math.pi * f0 * t)).view(1, 1, -1))  # [1 1 128 64]
    fb = lm.mel.mel_scale.fb  # [bins m]
    target = lm.denormalize(mel).exp()[0, 0]  # [m f]

    def semitones_off(linear: torch.Tensor) -> float:
        m = linear[0, 0, :, 32].clamp_min(1e-8).log()  # [bins] a middle frame
        p = int(m.argmax())
        offset = 0.5 * (m[p - 1] - m[p + 1]) / (m[p - 1] - 2 * m[p] + m[p + 1])
        return abs(12 * math.log2((p + float(offset)) * 16000 / 1024 / f0))

    def mel_error(linear: torch.Tensor) -> float:
        return float((fb.T @ linear[0, 0] - target).abs().mean() / target.mean())

    pinv, sharp = lm.linear_magnitude(mel), lm.linear_magnitude(mel, iterations=10)
    assert sharp.min() >= 0 and sharp.shape == pinv.shape == (1, 1, 513, 64)
    assert mel_error(sharp) < 0.02 and mel_error(sharp) < mel_error(pinv)
    assert semitones_off(sharp) < 0.3 < 0.4 < semitones_off(pinv)  # measured: 0.27 and 0.42
    with pytest.raises(ValueError, match="iterations"):
        lm.linear_magnitude(mel, iterations=-1)
    with pytest.raises(ValueError, match="needs prior=True"):
        VocoderConfig(prior_iterations=3)


@pytest.mark.parametrize("phase", ["integrated", "absolute", "locked"])
def test_istft_head_gets_gradients_everywhere(phase):
    head = ISTFTHead(16, 256, 64, phase)
    out = head(torch.randn(2, 16, 8))
    assert out.shape == (2, 8 * 64)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


# ----------------------------------------------------------------------------------------- losses


def test_multi_resolution_stft_loss_and_si_sdr():
    loss = MultiResolutionSTFTLoss()
    x = _tones(2)
    assert loss(x, x) < 1e-6
    noisy = x + 0.05 * torch.randn_like(x)
    assert loss(noisy, x) > 0.1 and loss(0.5 * x, x) > loss(0.9 * x, x)
    assert si_sdr(3.0 * x, x).min() > 60  # scale-invariant
    noise = torch.randn_like(x)
    noise = noise / noise.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True) / math.sqrt(10)  # 10 dB
    torch.testing.assert_close(si_sdr(x + noise, x), torch.full((2,), 10.0), atol=0.5, rtol=0)
    with pytest.raises(ValueError, match="differ"):
        loss(x, x[..., :1024])


def test_stft_discriminator_and_gan_losses():
    d = STFTDiscriminator(channels=8)
    x = _tones(2, 4096)
    logits, features = d(x)
    assert len(logits) == len(features) == 3 and all(f.dim() == 4 for f in features[0])
    fake_logits, fake_features = d(0.5 * x)
    assert discriminator_hinge_loss(logits, fake_logits) > 0
    assert generator_hinge_loss(fake_logits) >= 0
    assert feature_matching_loss(features, features) == 0
    assert feature_matching_loss(features, fake_features) > 0


# ----------------------------------------------------------------------------------------- VAE


# a tiny model of the STFT-in / ISTFT-out variant, and a tiny one of the default (Oobleck-style) layout
TINY = dict(
    channels=(16, 24, 32),
    latent_channels=4,
    patch=64,
    strides=(2, 2),
    decoder_strides=(),
    analysis="stft",
    head="istft",
    dilations=(),
    decoder_dilations=(),
    weight_norm=False,
)
TINY_DEFAULT = dict(channels=(8, 8, 8, 8), latent_channels=4)
# log-mel in, a log-mel through a (locked-phase, prior) vocoder out: 256x at the mel's frame rate
TINY_MEL = dict(
    channels=(16,),
    latent_channels=4,
    patch=256,
    strides=(),
    analysis="mel",
    head="vocoder",
    dilations=(1,),
    decoder_dilations=(1,),
    vocoder=VocoderConfig(dim=16, num_blocks=1, phase="locked", prior=True, prior_iterations=2),
)


def test_vae_shapes_for_several_lengths_and_heads():
    for kwargs in (
        TINY,
        TINY_DEFAULT,
        {**TINY, "head": "fold"},
        {**TINY, "patch": 16, "strides": (4, 4)},
        {**TINY, "in_channels": 2},
        {**TINY_DEFAULT, "in_channels": 2},
        TINY_MEL,
        {**TINY_MEL, "in_channels": 2},
    ):
        vae = WaveformVAE(**kwargs).eval()
        r, c = vae.config.ratio, vae.config.in_channels
        for frames in (1, 3, 16):
            x = torch.rand(2, c, frames * r) * 2 - 1
            z = vae.encode(x)
            assert z.shape == vae.latent_shape(x.shape) == (2, 4, frames)
            assert vae.decode(z).shape == x.shape
    assert WaveformVAEConfig(strides=(3, 2), channels=(8, 8, 8), patch=32).ratio == 192
    vae = WaveformVAE(**{**TINY_DEFAULT, "channels": (8, 8, 8), "strides": (3, 2), "patch": 32})
    assert vae(torch.zeros(1, 1, 192 * 5))[0].shape == (1, 1, 960)  # odd strides line up too


def test_vae_bad_inputs_are_named():
    vae = WaveformVAE(**TINY)
    with pytest.raises(ValueError, match="multiple of 256"):
        vae.encode(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="1 channel"):
        vae.encode(torch.zeros(1, 2, 256))
    with pytest.raises(ValueError, match=r"\[b 4 f\]"):
        vae.decode(torch.zeros(1, 8, 4))
    with pytest.raises(ValueError, match="channels needs"):
        WaveformVAEConfig(channels=(8, 8))
    with pytest.raises(ValueError, match="head"):
        WaveformVAEConfig(head="mdct")


@pytest.mark.parametrize("kwargs", [TINY, TINY_DEFAULT, TINY_MEL])
def test_vae_every_parameter_gets_a_gradient(kwargs):
    vae = WaveformVAE(**kwargs)
    if (
        vae.config.head == "vocoder"
    ):  # a prior vocoder's correction starts at exactly 0 (so does its gradient)
        torch.nn.init.normal_(vae.vocoder.head.proj.weight, std=0.01)
    rec, posterior = vae(torch.rand(2, 1, 1024) * 2 - 1)
    (rec.square().mean() + posterior.kl().mean()).backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize(
    ("kwargs", "phase"),
    [
        ({**TINY, "head": "istft"}, "integrated"),
        ({**TINY, "head": "istft"}, "absolute"),
        ({**TINY, "head": "istft"}, "locked"),
        ({**TINY, "head": "fold"}, "absolute"),
        (TINY_DEFAULT, "absolute"),
        (TINY_MEL, "locked"),  # the phase model is the vocoder's
    ],
)
def test_vae_chunked_decode_equals_one_pass(kwargs, phase):
    torch.manual_seed(0)
    vae = WaveformVAE(**{**kwargs, "phase": phase}).eval()
    z = torch.randn(1, 4, 70)
    with torch.no_grad():
        full = vae.decode(z)
        for chunk in (1, 7, 32):
            torch.testing.assert_close(vae.decode(z, chunk_size=chunk), full, atol=1e-5, rtol=0)
        # too little overlap is visibly different: the default overlap is doing the work
        assert (vae.decode(z, chunk_size=8, overlap=0) - full).abs().max() > 1e-3
        # decoder_context bounds the receptive field: a change at frame 35 stays within it
        z2 = z.clone()
        z2[..., 35] += 1.0
        changed = ((vae.decode(z2) - full).abs()[0, 0] > 0).nonzero()
        r, ctx = vae.config.ratio, vae.config.decoder_context
        assert changed.min() >= (35 - ctx) * r
        if phase == "absolute":
            assert changed.max() < (36 + ctx) * r
        else:  # an integrated (or locked) phase carries a change forward to the end: chunks carry it too
            assert changed.max() == z.shape[-1] * r - 1


def test_vae_with_a_vocoder_head_reads_the_log_mel_and_round_trips(tmp_path):
    vae = WaveformVAE(**TINY_MEL).eval()
    x = _tones(2, 4096)
    torch.testing.assert_close(vae.analyse(x), vae.vocoder.mel_of(x).flatten(1, 2))  # one analysis
    rec, _, mel = vae(x, sample=False, with_mel=True)
    assert rec.shape == x.shape and mel.shape == (2, 1, 128, 16)
    nothing, _, same = vae(x, sample=False, with_mel=True, render=False)  # the log-mel alone
    assert nothing is None
    torch.testing.assert_close(same, mel)
    with pytest.raises(ValueError, match="render=False needs"):
        WaveformVAE(**TINY)(torch.zeros(1, 1, 1024), render=False)
    vae.save_pretrained(tmp_path)
    loaded = load_autoencoder(tmp_path)
    assert loaded.config == vae.config and loaded.config.vocoder == vae.config.vocoder
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), vae.decode(vae.encode(x)))
    with pytest.raises(ValueError, match="patch must be 256"):
        WaveformVAEConfig(**{**TINY_MEL, "patch": 64})
    with pytest.raises(ValueError, match="decoder's frames are 512"):
        WaveformVAEConfig(
            **{**TINY_MEL, "patch": 256, "strides": (2,), "channels": (8, 8), "decoder_strides": ()}
        )
    with pytest.raises(ValueError, match="mel differ"):
        WaveformVAEConfig(**{**TINY_MEL, "mel": MelConfig(n_mels=80)})


def test_shipped_vae_keeps_the_notes():
    """The shipped Tones VAE: 16 x 64 unit-scale latents per clip, and the held-out notes come back."""
    from mediadiff.audio.autoencoder import TONES_VAE_DIR
    from mediadiff.audio.detect import read_tones
    from mediadiff.audio.tones import HELDOUT_SEED

    vae = load_autoencoder(TONES_VAE_DIR).eval()
    data = Tones(length=4, seed=HELDOUT_SEED)
    x = torch.stack([data[i]["audio"] for i in range(4)])  # [4 1 16384]
    with torch.no_grad():
        z = vae.encode(x)
        y = vae.decode(z)
        chunked = vae.decode(z, chunk_size=16)
    assert z.shape == (4, 16, 64) and 0.5 < z.std() < 2.0 and z.mean().abs() < 0.5
    torch.testing.assert_close(chunked, y, atol=1e-4, rtol=0)
    for reading, i in zip(read_tones(y), range(4), strict=True):
        label = data.labels(i)
        assert abs(reading.midi - label["midi"]) < 0.5 and reading.waveform == label["waveform"], (
            reading,
            label,
        )


def test_vae_save_load_and_latent_stats(tmp_path):
    vae = WaveformVAE(**TINY).eval()
    vae.set_latent_stats(torch.arange(4.0), torch.full((4,), 2.0))
    vae.save_pretrained(tmp_path)
    loaded = load_autoencoder(tmp_path)
    assert isinstance(loaded, WaveformVAE) and loaded.config == vae.config
    x = _tones(1, 2048)
    torch.testing.assert_close(loaded.encode(x), vae.encode(x))
    raw = vae.encode_posterior(x).mean
    torch.testing.assert_close(vae.encode(x), (raw - torch.arange(4.0).view(-1, 1)) * 2.0)
    IdentityAutoencoder(in_channels=1, axes=1).save_pretrained(tmp_path / "id")
    ident = load_autoencoder(tmp_path / "id")
    assert ident.latent_shape((2, 1, 100)) == (2, 1, 100)
    with pytest.raises(ValueError, match="3 axes"):
        ident.encode(torch.zeros(1, 1, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_audio_models_run_on_cuda_in_bf16():
    x = _tones(2, 4096)
    mel = LogMel()
    for model, inputs in ((Vocoder.from_preset("tiny"), mel(x)), (WaveformVAE(**TINY), x)):
        model.eval()
        with torch.no_grad():
            cpu = model(inputs) if isinstance(model, Vocoder) else model(inputs, sample=False)[0]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                gpu = (
                    model.cuda()(inputs.cuda())
                    if isinstance(model, Vocoder)
                    else model.cuda()(inputs.cuda(), sample=False)[0]
                )
        assert torch.isfinite(gpu.float()).all()
        assert (gpu.float().cpu() - cpu).abs().mean() < 0.05 * cpu.abs().mean() + 1e-3
    torch.testing.assert_close(LogMel().cuda()(x.cuda()).cpu(), mel(x), atol=1e-4, rtol=1e-4)


def test_integrated_phase_makes_any_frequency_from_steady_features():
    """Shift-invariant features (the same every frame) give a pure partial off the hop's harmonics only
    with the integrated phase; absolute phases repeat every hop and land on multiples of sr / hop."""
    n_fft, hop, sr = 1024, 256, 16000
    for phase, expect_any in (("integrated", True), ("absolute", False)):
        head = ISTFTHead(4, n_fft, hop, phase)
        with torch.no_grad():
            head.proj.weight.zero_()
            bias = torch.full((n_fft + 2,), -20.0)  # log-magnitudes: silence ...
            k = 10  # ... but bin 10 (156.25 Hz, not a multiple of 62.5 Hz)
            bias[k] = 0.0
            bias[n_fft // 2 + 1 :] = 0.0  # zero phase numbers (integrated: bin-centre advance)
            head.proj.bias.copy_(bias)
        y = head(torch.zeros(1, 4, 64))[0, 4096:12288]
        spectrum = torch.fft.rfft(y * torch.hann_window(len(y))).abs()
        peak = float(spectrum.argmax()) * sr / len(y)
        if expect_any:
            assert peak == pytest.approx(156.25, abs=3)
        else:
            assert round(peak / 62.5) * 62.5 == pytest.approx(peak, abs=3)
