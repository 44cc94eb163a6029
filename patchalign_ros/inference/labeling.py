"""Patch scores -> point scores -> part segments, with boxes and approach directions."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def patch_logits(patch_features: np.ndarray, text: np.ndarray, scale: float, bias: float = 0.0,
                 starts: np.ndarray | None = None) -> np.ndarray:
    """(G, Q) calibrated logits: scale * cosine + bias (both inputs unit length). With ``starts``
    (Q,), ``text`` holds several rows per query (query q: rows starts[q] up to the next start) and
    a patch takes its best row's logit."""
    logits = scale * (patch_features @ text.T) + bias
    if starts is None or len(starts) == text.shape[0]:
        return logits
    return np.maximum.reduceat(logits, starts, axis=1)


def point_patch_values(points_model: np.ndarray, centers: np.ndarray, patch_values: np.ndarray,
                       mode: str = "nearest", sample_index: np.ndarray | None = None,
                       patch_index: np.ndarray | None = None, nearest: np.ndarray | None = None) -> np.ndarray:
    """Per-point values (M, Q) from per-patch values (G, Q).

    ``nearest``: each point takes its nearest patch centre's values (the official default).
    ``membership``: a sampled point averages the patches whose k-group holds it; every other
    point takes the value of its nearest sampled point.
    """
    if mode == "nearest":
        return patch_values[nearest if nearest is not None else nearest_patch(points_model, centers)]
    if mode != "membership":
        raise ValueError(f"unknown labelling mode {mode!r} (nearest or membership)")
    if sample_index is None or patch_index is None:
        raise ValueError("membership labelling needs sample_index and patch_index")
    n_sampled = len(sample_index)
    sums = np.zeros((n_sampled, patch_values.shape[1]))
    counts = np.zeros(n_sampled)
    groups = np.repeat(np.arange(len(patch_index)), patch_index.shape[1])
    np.add.at(sums, patch_index.reshape(-1), patch_values[groups])
    np.add.at(counts, patch_index.reshape(-1), 1.0)
    sampled_points = points_model[sample_index] if len(points_model) != n_sampled else points_model
    uncovered = counts == 0
    if uncovered.any():  # points no group reached take their nearest centre
        _, near = cKDTree(centers).query(sampled_points[uncovered], k=1)
        sums[uncovered], counts[uncovered] = patch_values[near], 1.0
    per_sample = sums / counts[:, None]
    _, nearest_sample = cKDTree(sampled_points).query(points_model, k=1)
    return per_sample[nearest_sample]


def assign_labels(point_probs: np.ndarray, threshold: float) -> np.ndarray:
    """Label per point: argmax query, or -1 where its probability is below ``threshold``."""
    best = point_probs.argmax(axis=1)
    best_prob = point_probs[np.arange(len(best)), best]
    return np.where(best_prob >= threshold, best, -1)


def oriented_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA box: (centre (3,), quaternion xyzw (4,), full extents (3,)), axes sorted by extent."""
    if len(points) < 3:
        center = points.mean(axis=0)
        return center, np.array([0.0, 0.0, 0.0, 1.0]), np.ptp(points, axis=0) if len(points) else np.zeros(3)
    mean = points.mean(axis=0)
    # the axes from at most 20k points (a strided subset): as good, and flat in the part's size
    subset = points[:: max(1, len(points) // 20000)]
    _, vecs = np.linalg.eigh(np.cov((subset - mean).T))
    axes = vecs[:, ::-1].copy()  # largest variance first
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1  # keep it a rotation
    local = (points - mean) @ axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    center = mean + axes @ ((lo + hi) / 2)
    return center, Rotation.from_matrix(axes).as_quat(), hi - lo


def approach_direction(part_centroid: np.ndarray, object_centroid: np.ndarray, up: np.ndarray | None) -> np.ndarray:
    """Unit vector from the gripper towards the part: from outside the object, through the
    part, towards the object's centre; a part on top (a lid) is approached from above."""
    outward = part_centroid - object_centroid
    norm = np.linalg.norm(outward)
    if up is not None:
        up = up / np.linalg.norm(up)
        if norm < 1e-6 or np.dot(outward, up) > 0.7 * norm:
            return -up
    if norm < 1e-6:
        return np.zeros(3)
    return -outward / norm


def surface_normal(points: np.ndarray, at: np.ndarray, object_centroid: np.ndarray, k: int = 16,
                   tree: cKDTree | None = None) -> np.ndarray:
    """PCA normal of the ``k`` points nearest ``at``, oriented away from the object centre
    (``tree``: a KD-tree of ``points`` to reuse across calls)."""
    if len(points) < 3:
        return np.zeros(3)
    _, idx = (tree or cKDTree(points)).query(at, k=min(k, len(points)))
    nb = points[np.atleast_1d(idx)]
    if len(nb) < 3:
        return np.zeros(3)
    _, vecs = np.linalg.eigh(np.cov((nb - nb.mean(axis=0)).T))
    normal = vecs[:, 0]
    if np.dot(normal, at - object_centroid) < 0:
        normal = -normal
    return normal


def nearest_patch(points_model: np.ndarray, centers: np.ndarray, chunk: int = 32768) -> np.ndarray:
    """Index of each point's nearest patch centre. Brute force over the G centres (SciPy's C
    loop sums the squared differences as a k-d tree does): ~3x faster than building and
    querying a tree for a few dozen centres; chunks bound the (points, G) buffer."""
    from scipy.spatial.distance import cdist

    points_model = np.asarray(points_model, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    out = np.empty(len(points_model), dtype=np.int64)
    for start in range(0, len(points_model), chunk):
        out[start:start + chunk] = cdist(points_model[start:start + chunk], centers, "sqeuclidean").argmin(axis=1)
    return out


def main_components(members: np.ndarray, nearest: np.ndarray, centers: np.ndarray, keep_share: float = 0.5,
                    reach: float = 1.6) -> np.ndarray:
    """``members`` restricted to its connected pieces holding at least ``keep_share`` of the
    largest piece's points: one handle stays, four chair legs of one size stay, stray patches
    elsewhere on the object go. Connectivity is taken between the patches the members fall in
    (each point belongs to its ``nearest`` patch centre): two patches touch when their centres
    are closer than ``reach`` times the typical spacing between neighbouring centres. The cost is
    one bincount over the points plus O(G^2) on the patches, whatever the object's size."""
    if members.sum() < 2:
        return members
    g = len(centers)
    count = np.bincount(nearest[members], minlength=g)
    active = np.flatnonzero(count)
    if len(active) < 2:
        return members
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    spacing = float(np.median(dist.min(axis=1)))
    comp = _components(dist[np.ix_(active, active)] <= reach * spacing)
    sizes = np.bincount(comp, weights=count[active])
    keep_patch = np.zeros(g, dtype=bool)
    keep_patch[active[sizes[comp] >= keep_share * sizes.max()]] = True
    return members & keep_patch[nearest]


def _components(adjacent: np.ndarray) -> np.ndarray:
    """Connected component of each node of a small symmetric boolean adjacency matrix, named by
    its lowest node: the transitive closure by repeated squaring (a handful of (G, G) products
    for G <= a few hundred patches; scipy's sparse graph machinery costs ~1 ms a call here)."""
    n = len(adjacent)
    reach = adjacent | np.eye(n, dtype=bool)
    while True:
        wider = (reach.astype(np.float32) @ reach.astype(np.float32)) > 0
        if np.array_equal(wider, reach):
            break
        reach = wider
    return reach.argmax(axis=1)
