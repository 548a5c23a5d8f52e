"""Video side: io, datasets, backbones (UNet3D, DiT), the causal video autoencoder, metrics."""
