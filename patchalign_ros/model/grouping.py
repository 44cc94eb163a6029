"""Farthest point sampling and kNN grouping in plain torch (CPU or GPU, no CUDA extensions).

Matches the official pipeline: FPS starts at point index 0, and each centre's k nearest
points include the centre itself. Ties are broken towards the lower index (torch.argmax /
stable sort), which is what a sequential reading of the CUDA kernel does.
"""
from __future__ import annotations

import numpy as np
import torch


def _fps_numpy(pts: np.ndarray, num_samples: int) -> np.ndarray:
    # On the CPU the loop's many tiny steps are cheaper in numpy than as torch ops, which also
    # stall badly (OpenMP spin-waits) when other processes load the cores. One contiguous array
    # per axis and in-place float32 arithmetic: 6x faster than (B, N, 3) differences and an
    # einsum for a frame's batch of objects, and the same sums in the same order (same indices).
    batch, n, _ = pts.shape
    axes = [np.ascontiguousarray(pts[..., a], dtype=np.float32) for a in range(3)]
    index = np.zeros((batch, num_samples), dtype=np.int64)
    min_dist = np.full((batch, n), np.inf, dtype=np.float32)
    dist, term = np.empty((batch, n), dtype=np.float32), np.empty((batch, n), dtype=np.float32)
    farthest = np.zeros(batch, dtype=np.int64)
    rows = np.arange(batch)
    for i in range(num_samples):
        index[:, i] = farthest
        for a, coord in enumerate(axes):
            out = dist if a == 0 else term
            np.subtract(coord, coord[rows, farthest][:, None], out=out)
            np.multiply(out, out, out=out)
            if a:
                dist += term
        np.minimum(min_dist, dist, out=min_dist)
        farthest = min_dist.argmax(axis=1)
    return index


def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Indices (B, num_samples) of farthest point samples of ``points`` (B, N, 3), seeded at 0."""
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    batch, n, _ = points.shape
    if num_samples > n:
        raise ValueError(f"cannot sample {num_samples} centres from {n} points")
    if points.device.type == "cpu":
        return torch.from_numpy(_fps_numpy(points.detach().float().numpy(), num_samples))
    pts = points.float()
    index = torch.zeros(batch, num_samples, dtype=torch.long, device=points.device)
    min_dist = torch.full((batch, n), float("inf"), device=points.device)
    arange = torch.arange(batch, device=points.device)
    farthest = torch.zeros(batch, dtype=torch.long, device=points.device)
    for i in range(num_samples):
        index[:, i] = farthest
        centre = pts[arange, farthest].unsqueeze(1)  # (B, 1, 3)
        dist = ((pts - centre) ** 2).sum(-1)
        min_dist = torch.minimum(min_dist, dist)
        farthest = torch.argmax(min_dist, dim=1)
    return index


def knn_group(points: torch.Tensor, centers: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, G, k) of the k nearest ``points`` (B, N, 3) of each centre (B, G, 3),
    nearest first (a centre taken from ``points`` is its own first neighbour)."""
    n = points.shape[1]
    if k > n:
        raise ValueError(f"group size k={k} is larger than the number of points {n}")
    # Exact differences rather than the matmul expansion: the expansion's rounding can
    # reorder near-ties and so change which points join a group.
    dist = torch.cdist(centers.float(), points.float(), compute_mode="donot_use_mm_for_euclid_dist")
    return torch.topk(dist, k, dim=-1, largest=False, sorted=True).indices


def gather_points(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """points (B, N, C) gathered by index (B, ...) -> (B, ..., C)."""
    batch = points.shape[0]
    flat = index.reshape(batch, -1)
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return out.reshape(*index.shape, points.shape[-1])


def group_points(points: torch.Tensor, num_group: int, group_size: int):
    """FPS + kNN. Returns (neighborhood (B,G,k,3) relative to centres, centers (B,G,3),
    patch_index (B,G,k))."""
    center_index = farthest_point_sample(points, num_group)
    centers = gather_points(points, center_index)
    patch_index = knn_group(points, centers, group_size)
    neighborhood = gather_points(points, patch_index) - centers.unsqueeze(2)
    return neighborhood, centers, patch_index
