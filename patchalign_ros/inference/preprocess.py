"""From a caller's cloud to model input: validity, sampling, centring/scaling, axes.

Every function keeps the map back to the caller's point indices, so results can name the
points of the cloud the user sent (row-major for organized clouds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model.grouping import farthest_point_sample


class InputError(ValueError):
    """The input cloud cannot be used (empty, all invalid, wrong shape, too few points)."""


def as_point_array(points) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(N, 3) float64 view of (N, >=3) or organized (H, W, >=3) input, plus (H, W) or None."""
    arr = np.asarray(points)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"points must be numeric, got dtype {arr.dtype}")
    shape = None
    if arr.ndim == 3:
        shape = (arr.shape[0], arr.shape[1])
        arr = arr.reshape(-1, arr.shape[2])
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise InputError(f"points must be (N, 3) or (H, W, 3), got shape {np.asarray(points).shape}")
    if arr.shape[0] == 0:
        raise InputError("the cloud is empty (0 points)")
    return np.ascontiguousarray(arr[:, :3], dtype=np.float64), shape


def valid_indices(points: np.ndarray) -> np.ndarray:
    """Indices of rows whose x, y, z are all finite (a row sum is finite exactly then, short of
    overflow beyond 1e308, and is one pass instead of a (N, 3) mask)."""
    return np.flatnonzero(np.isfinite(points[:, 0] + points[:, 1] + points[:, 2]))


def checked_cloud(points, min_points: int):
    """(xyz (N, 3), organized shape or None, indices of valid points), or InputError."""
    xyz, shape = as_point_array(points)
    valid = valid_indices(xyz)
    if len(valid) == 0:
        raise InputError(f"no valid points: all {len(xyz)} points are NaN or Inf")
    if len(valid) < min_points:
        raise InputError(f"too few valid points ({len(valid)}); need at least {min_points}")
    return xyz, shape, valid


def normalize_unit_sphere(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre on the centroid and scale so the farthest point has radius 1."""
    center = points.mean(axis=0)
    centred = points - center
    scale = float(np.sqrt((centred ** 2).sum(axis=1).max()))
    if not np.isfinite(scale) or scale <= 1e-9:
        raise InputError("all points coincide; cannot normalise a zero-size object")
    return centred / scale, center, scale


def rotation_to_z(up: np.ndarray) -> np.ndarray:
    """Rotation matrix R with R @ up = +z (Rodrigues), for gravity-aligning an object."""
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(up, z)
    c = float(np.dot(up, z))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1.0 / (1.0 + c))


def sample_indices(points: np.ndarray, n: int, method: str = "random", rng: np.random.Generator | None = None,
                   prefilter: int = 4) -> np.ndarray:
    """``n`` indices into ``points``. FPS runs on a random subset of at most ``prefilter * n``
    points (FPS over 100k points costs far more than it adds); fewer than ``n`` points are
    padded by repeating random points."""
    rng = rng if rng is not None else np.random.default_rng(0)
    total = len(points)
    if total <= n:
        pad = rng.choice(total, n - total, replace=True) if total < n else np.empty(0, dtype=np.int64)
        return np.concatenate([np.arange(total), pad]).astype(np.int64)
    if method == "random":
        return np.sort(rng.choice(total, n, replace=False)).astype(np.int64)
    if method != "fps":
        raise ValueError(f"unknown sampling method {method!r} (fps or random)")
    pool = np.arange(total)
    if total > prefilter * n:
        pool = np.sort(rng.choice(total, prefilter * n, replace=False))
    # Start FPS at a random point of the pool: seeding at 0 is the encoder's convention for
    # centres, not a requirement of input sampling, and a random start avoids a fixed bias.
    pool = np.roll(pool, -int(rng.integers(len(pool))))
    chosen = farthest_point_sample(torch.from_numpy(points[pool][None].astype(np.float32)), n)[0].numpy()
    return pool[chosen].astype(np.int64)


def sample_indices_batch(point_sets: list, n: int, method: str = "random", rng: np.random.Generator | None = None,
                         prefilter: int = 4) -> list:
    """``sample_indices`` for several objects; FPS runs once for the whole batch (one loop of
    ``n`` steps instead of one per object), on pools padded to the same size by repetition."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if method != "fps":
        return [sample_indices(p, n, method, rng) for p in point_sets]
    out, pools = [None] * len(point_sets), {}
    for i, pts in enumerate(point_sets):
        if len(pts) <= n:
            out[i] = sample_indices(pts, n, "random", rng)  # nothing to choose: all points (+ padding)
            continue
        size = min(len(pts), prefilter * n)
        pool = np.sort(rng.choice(len(pts), size, replace=False)) if len(pts) > size else np.arange(len(pts))
        pool = np.roll(pool, -int(rng.integers(len(pool))))
        pools[i] = np.concatenate([pool, rng.choice(pool, prefilter * n - len(pool))]) if len(pool) < prefilter * n \
            else pool
    if pools:
        keys = list(pools)
        batch = np.stack([point_sets[i][pools[i]] for i in keys]).astype(np.float32)
        chosen = farthest_point_sample(torch.from_numpy(batch), n).numpy()
        for row, i in enumerate(keys):
            out[i] = pools[i][chosen[row]].astype(np.int64)
    return out


@dataclass
class PreparedObject:
    model_points: np.ndarray   # (n, 3) float32, the encoder's input
    sample_index: np.ndarray   # (n,) indices into the object's points
    center: np.ndarray         # caller-frame centroid used for normalisation
    scale: float
    rotation: np.ndarray       # caller frame -> model frame (gravity alignment and axis swap)


def yaw_rotation(angle: float) -> np.ndarray:
    """Rotation by ``angle`` (radians) about +z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def prepare_object(points: np.ndarray, num_points: int, axis_permutation=(0, 1, 2), up=None,
                   method: str = "random", rng: np.random.Generator | None = None,
                   index: np.ndarray | None = None, yaw: float = 0.0) -> PreparedObject:
    """Sample (or use ``index``), gravity-align (``up`` -> +z, when given), turn by ``yaw``
    about up (only with ``up``: without it there is no axis the turn would keep), permute
    axes, normalise."""
    rotation = rotation_to_z(up) if up is not None else np.eye(3)
    if up is not None and yaw:
        rotation = yaw_rotation(yaw) @ rotation
    perm = np.asarray(axis_permutation, dtype=np.int64)
    if sorted(perm.tolist()) != [0, 1, 2]:
        raise ValueError(f"axis_permutation must permute (0, 1, 2), got {axis_permutation}")
    rotation = np.eye(3)[perm] @ rotation
    if index is None:
        index = sample_indices(points, num_points, method=method, rng=rng)
    rotated = points[index] @ rotation.T
    normed, center, scale = normalize_unit_sphere(rotated)
    return PreparedObject(normed.astype(np.float32), index, center @ rotation, scale, rotation)
