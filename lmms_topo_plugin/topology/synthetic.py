"""Seeded synthetic depth sequences of point clouds for tests and benchmarks.

A latent cloud (a few Gaussian clusters and a noisy circle in ``latent_dim`` dimensions) drifts by small
random rotations from depth to depth and is embedded in ``dim`` dimensions with small isotropic noise. At
``transition`` the cloud is replaced by an independent one, which then drifts on: decoder layer
``transition - 1`` (input ``h_{transition-1}``, output ``h_transition``) is the one abrupt change.
"""

from __future__ import annotations

import math

import torch


def _latent_cloud(n: int, latent_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Half the points in 4 Gaussian clusters, half on a noisy unit circle in the first two coordinates."""
    clusters = n // 2
    centres = 2.0 * torch.randn(4, latent_dim, generator=generator)
    labels = torch.randint(0, 4, (clusters,), generator=generator)
    blobs = centres[labels] + 0.3 * torch.randn(clusters, latent_dim, generator=generator)
    angles = 2 * math.pi * torch.rand(n - clusters, generator=generator)
    ring = 0.1 * torch.randn(n - clusters, latent_dim, generator=generator)
    ring[:, 0] += 3.0 * torch.cos(angles)
    ring[:, 1] += 3.0 * torch.sin(angles)
    return torch.cat([blobs, ring])


def _small_rotation(latent_dim: int, angle: float, generator: torch.Generator) -> torch.Tensor:
    """exp of a random skew-symmetric matrix scaled so that it rotates by about ``angle`` radians."""
    a = torch.randn(latent_dim, latent_dim, generator=generator, dtype=torch.float64)
    skew = a - a.T
    skew *= angle / torch.linalg.matrix_norm(skew, ord=2)
    return torch.linalg.matrix_exp(skew).float()


def drifting_clouds(
    num_depths: int,
    n: int,
    dim: int,
    *,
    transition: int | None = None,
    latent_dim: int = 8,
    angle: float = 0.2,
    noise: float = 0.02,
    seed: int = 0,
) -> torch.Tensor:
    """Point clouds ``[n, num_depths, dim]`` (the layout of ``stats["last_token"]``), float32."""
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.randn(latent_dim, dim, generator=generator) / math.sqrt(latent_dim)
    latent = _latent_cloud(n, latent_dim, generator)
    states = torch.empty(n, num_depths, dim)
    for depth in range(num_depths):
        if depth == transition:
            latent = _latent_cloud(n, latent_dim, generator)
        elif depth:
            latent = latent @ _small_rotation(latent_dim, angle, generator)
        states[:, depth] = latent @ embedding + noise * torch.randn(n, dim, generator=generator)
    return states
