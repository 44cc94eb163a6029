"""Keypoints: zero-shot from text (weighted clustering of high-scoring points, as ZeroKey's
voting) and few-shot (labelled example shapes, transferred by patch-feature matching)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class KeypointCandidate:
    position: np.ndarray  # a point of the cloud (snapped), caller frame
    score: float
    members: np.ndarray   # indices of the points that voted for it


def weighted_dbscan(points: np.ndarray, weights: np.ndarray, eps: float, min_weight: float) -> np.ndarray:
    """DBSCAN where a point is core when the weights within ``eps`` (itself included) add up to
    ``min_weight``; clusters are the connected core points plus the border points next to them.
    Labels (N,), -1 for noise. Vectorised: KD-tree pairs and sparse connected components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(points)
    pairs = cKDTree(points).query_pairs(eps, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    neighbour_weight = (weights + np.bincount(i, weights=weights[j], minlength=n)
                        + np.bincount(j, weights=weights[i], minlength=n))
    core = neighbour_weight >= min_weight
    both = core[i] & core[j]
    graph = coo_matrix((np.ones(both.sum()), (i[both], j[both])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    labels = np.where(core, comp, -1)
    # border points: not core, within eps of a core point -> that core point's cluster
    for a, b in ((i, j), (j, i)):
        take = ~core[a] & core[b] & (labels[a] < 0)
        labels[a[take]] = comp[b[take]]
    # renumber clusters 0..K-1
    used = np.unique(labels[labels >= 0])
    remap = np.full(n if n else 1, -1)
    remap[used] = np.arange(len(used))
    return np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)


def cluster_keypoints(points: np.ndarray, weights: np.ndarray, threshold: float, eps: float,
                      min_weight: float = 2.0, max_keypoints: int = 16, max_voters: int = 512,
                      seed: int = 0) -> list[KeypointCandidate]:
    """One keypoint per spatially separate cluster of points with weight >= ``threshold``.

    Weighted DBSCAN (``weighted_dbscan``): a point is a core point when the weights within
    ``eps`` add up to ``min_weight``, so confident regions form clusters and scattered weak votes
    do not. Four chair legs give four clusters, hence four keypoints.
    """
    selected = np.flatnonzero(weights >= threshold)
    if len(selected) == 0:
        return []
    if len(selected) > max_voters:  # a random subset votes just as well and keeps clustering cheap
        selected = np.sort(np.random.default_rng(seed).choice(selected, max_voters, replace=False))
    pts, w = points[selected], weights[selected]
    labels = weighted_dbscan(pts, w, eps, min_weight)
    candidates = []
    for lab in range(labels.max() + 1):
        m = labels == lab
        centre = (pts[m] * w[m, None]).sum(axis=0) / w[m].sum()
        snapped = pts[m][np.argmin(((pts[m] - centre) ** 2).sum(axis=1))]
        candidates.append(KeypointCandidate(snapped, float(w[m].mean()), selected[m]))
    if not candidates:  # only isolated votes: keep the single strongest one
        best = int(np.argmax(w))
        candidates.append(KeypointCandidate(pts[best], float(w[best]), selected[[best]]))
    # Strong and well-supported first.
    candidates.sort(key=lambda c: -c.score * np.log1p(len(c.members)))
    return candidates[:max_keypoints]


def features_at(positions: np.ndarray, centers: np.ndarray, patch_features: np.ndarray, k: int = 3) -> np.ndarray:
    """Inverse-distance-weighted patch features at arbitrary positions (model frame), unit length."""
    k = min(k, len(centers))
    dist, idx = cKDTree(centers).query(positions, k=k)
    dist, idx = dist.reshape(len(positions), k), idx.reshape(len(positions), k)
    w = 1.0 / np.maximum(dist, 1e-6)
    feats = (patch_features[idx] * w[..., None]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


class FewShotKeypoints:
    """Keypoint labels learnt from a few example shapes.

    ``add_example`` stores the patch feature at each labelled keypoint of an encoded example;
    ``similarity`` scores a new shape's patches against them (max over the examples of a
    label), which the caller maps to points and clusters like zero-shot scores.
    """

    def __init__(self):
        self.features: dict[str, list[np.ndarray]] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.features)

    def add_example(self, centers: np.ndarray, patch_features: np.ndarray, keypoints_model: np.ndarray,
                    labels: list[str]) -> None:
        if len(keypoints_model) != len(labels):
            raise ValueError("one label per keypoint")
        if len(labels) == 0:
            raise ValueError("an example needs at least one labelled keypoint")
        feats = features_at(np.asarray(keypoints_model, dtype=np.float64), centers, patch_features)
        for label, f in zip(labels, feats):
            self.features.setdefault(label, []).append(f)

    def similarity(self, patch_features: np.ndarray) -> dict[str, np.ndarray]:
        """label -> (G,) best cosine similarity of each patch to that label's examples."""
        if not self.features:
            raise ValueError("no examples added")
        return {label: (patch_features @ np.stack(feats).T).max(axis=1) for label, feats in self.features.items()}

    @staticmethod
    def similarity_to_weights(sim: np.ndarray, spread: float = 0.25) -> np.ndarray:
        """Map similarities to [0, 1] votes: 1 at the best match, falling to 0 at ``spread`` of
        the way from the best down to the median patch (relative, since how far similarities
        spread differs a lot between models)."""
        top = float(sim.max())
        margin = max(spread * (top - float(np.median(sim))), 1e-6)
        return np.clip((sim - (top - margin)) / margin, 0.0, 1.0)
