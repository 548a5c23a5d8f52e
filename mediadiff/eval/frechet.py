"""Frechet distance between Gaussians fitted to two sets of features, in standardised units.

``FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Frechet 1957; Dowson & Landau 1982; Heusel et
al. 2017, Eq. 6). :func:`feature_fd` first standardises every feature by a *reference* set's mean and
standard deviation, so no unit dominates; where the reference spread of a feature is below its
*resolution* (the smallest difference that matters, which the caller passes in), the resolution is used
instead, so a deviation from a constant reference feature counts in units of a visible difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Feature", "feature_fd", "frechet_distance", "marginal_fd", "standardiser"]


@dataclass(frozen=True)
class Feature:
    """One dimension of a feature space that a modality defines for the FD."""

    name: str
    resolution: float  # smallest difference that matters; the standardising scale never goes below it
    doc: str


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = np.linalg.eigh((a + a.T) / 2)  # [d] [d d]
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T  # [d d]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Dowson & Landau 1982; Heusel et al. 2017,
    Eq. 6). ``Tr (S1 S2)^(1/2)`` is computed as ``Tr (S1^(1/2) S2 S1^(1/2))^(1/2)``: the same
    eigenvalues, but of a symmetric PSD matrix, so two symmetric eigen-decompositions replace a
    general matrix square root and stay real and stable when a covariance is singular.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)  # [d] [d]
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: means {mu1.shape} {mu2.shape} and covariances {sigma1.shape} "
            f"{sigma2.shape} do not describe two Gaussians of the same dimension"
        )
    root1 = _sqrt_psd(sigma1)  # [d d]
    middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)  # [d] eigenvalues of S1 S2
    cross = np.sqrt(np.clip(middle, 0.0, None)).sum()
    diff = mu1 - mu2  # [d]
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross, 0.0))


def standardiser(
    reference: np.ndarray, resolution: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each feature on ``reference`` ``[m d]``; a scale never falls below ``resolution`` ``[d]``."""
    resolution = np.asarray(resolution, np.float64)  # [d]
    if reference.ndim != 2 or resolution.shape != (reference.shape[1],):
        raise ValueError(
            f"standardiser: {resolution.shape} resolutions for reference features {reference.shape}"
        )
    return reference.mean(axis=0), np.maximum(reference.std(axis=0, ddof=1), resolution)  # [d] [d]


def feature_fd(
    a: np.ndarray, b: np.ndarray, reference: np.ndarray, resolution: np.ndarray | Sequence[float]
) -> float:
    """FD (Heusel et al. 2017, Eq. 6) between feature sets ``a`` and ``b`` (``[n d]`` each), every feature
    standardised by ``reference`` ``[m d]`` with its scale floored at ``resolution`` ``[d]``."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"feature_fd: need two sets of >= 2 feature rows of one width, got {a.shape}, {b.shape}"
        )
    mean, scale = standardiser(reference, resolution)  # [d] [d]
    za, zb = (a - mean) / scale, (b - mean) / scale  # [n d] standardised
    return frechet_distance(za.mean(0), np.cov(za, rowvar=False), zb.mean(0), np.cov(zb, rowvar=False))


def marginal_fd(
    a: np.ndarray,
    b: np.ndarray,
    reference: np.ndarray,
    resolution: np.ndarray | Sequence[float],
    names: Sequence[str],
) -> dict[str, float]:
    """Per-feature 1-D FD, ``(m_a - m_b)^2 + (s_a - s_b)^2`` in standardised units: which features differ.

    The 1-D case of Dowson & Landau (1982); ``names[i]`` labels feature ``i``; values rounded to 4 places.
    """
    mean, scale = standardiser(reference, resolution)  # [d] [d]
    za, zb = (a - mean) / scale, (b - mean) / scale  # [n d]
    one = (za.mean(0) - zb.mean(0)) ** 2 + (za.std(0, ddof=1) - zb.std(0, ddof=1)) ** 2  # [d]
    if len(names) != len(one):
        raise ValueError(f"marginal_fd: {len(names)} names for {len(one)} features")
    return {name: round(float(v), 4) for name, v in zip(names, one)}
