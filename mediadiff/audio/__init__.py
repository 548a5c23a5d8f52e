"""Audio side: io, datasets (AudioFolder, Tones), the log-mel front end with Griffin-Lim and a trained
vocoder, backbones (UNet1D, mel UNet2D, DiT1D), the waveform autoencoder, a tone detector and losses.

Canonical layouts inside models: waveforms ``[b c t]`` float in [-1, 1]; spectrograms ``[b c m t]``
(``m`` mel bins, ``t`` frames). Names are imported from their submodules on first use, so
``import mediadiff.audio`` stays light (no PyAV, librosa or torchaudio until needed).
"""

from __future__ import annotations

from mediadiff.utils import lazy_exports

_EXPORTS: dict[str, str] = {
    # io
    "AUDIO_READ_EXTENSIONS": "io",
    "AUDIO_WRITE_FORMATS": "io",
    "AudioError": "io",
    "AudioInfo": "io",
    "probe": "io",
    "read_audio": "io",
    "resample": "io",
    "write_audio": "io",
    # datasets
    "AudioFolder": "datasets",
    "Tones": "tones",
    "WAVEFORMS": "tones",
    "CONTOURS": "tones",
    "PITCHES": "tones",
    "ALL_PITCHES": "tones",
    "EXTRA_PITCHES": "tones",
    "TRAIN_TEMPLATES": "tones",
    "HELDOUT_TEMPLATES": "tones",
    "HELDOUT_SEED": "tones",
    "midi_to_name": "tones",
    "name_to_midi": "tones",
    "synthesize_tone": "tones",
    # detector
    "ToneReading": "detect",
    "read_tone": "detect",
    "track_pitch": "detect",
    # mel front end, vocoders, losses
    "LogMel": "mel",
    "MelConfig": "mel",
    "GriffinLim": "mel",
    "Vocoder": "vocoder",
    "VocoderConfig": "vocoder",
    "ISTFTHead": "vocoder",
    "ConvNeXtBlock": "vocoder",
    "MultiResolutionSTFTLoss": "losses",
    "STFTDiscriminator": "losses",
    # backbones
    "UNet1D": "unet",
    "UNet1DConfig": "unet",
    "UNet2D": "unet",
    "UNet2DConfig": "unet",
    "DiT1D": "dit",
    "DiT1DConfig": "dit",
    # autoencoders
    "WaveformVAE": "autoencoder",
    "WaveformVAEConfig": "autoencoder",
    "MelAutoencoder": "autoencoder",
    "MelAutoencoderConfig": "autoencoder",
    "TONES_VAE_DIR": "autoencoder",
    "TONES_VOCODER_DIR": "vocoder",
    "Snake": "autoencoder",
    "load_autoencoder": "autoencoder",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
