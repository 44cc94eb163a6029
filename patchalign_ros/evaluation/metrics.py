"""Object-segmentation and part-mask metrics against per-point ground truth."""
from __future__ import annotations

import numpy as np


def gt_objects_from_labels(labels: np.ndarray, min_points: int = 1) -> dict:
    """mOSD convention: 0 unlabelled, 1 the table, 20, 30, ... objects whose geometrically
    disjoint pieces carry sub-labels (50, 51) -> {object id (label // 10): point indices}."""
    labels = np.asarray(labels).reshape(-1)
    objs = {}
    for lab in np.unique(labels[labels >= 10]):
        objs.setdefault(int(lab) // 10, []).append(np.flatnonzero(labels == lab))
    return {k: np.concatenate(v) for k, v in objs.items() if sum(len(x) for x in v) >= min_points}


def object_segmentation_scores(pred: list, gt: dict, num_points: int, overlap: float = 0.5,
                               split_share: float = 0.2) -> dict:
    """Per ground-truth object the best IoU over predicted objects; ``merged``: predicted objects
    holding at least ``overlap`` of two or more ground-truth objects; ``split``: ground-truth
    objects with at least ``split_share`` of their points in each of two or more predictions."""
    gt_ids = sorted(gt)
    gt_of = np.full(num_points, -1, dtype=np.int64)
    for j, k in enumerate(gt_ids):
        gt_of[gt[k]] = j
    sizes_gt = np.array([len(gt[k]) for k in gt_ids], dtype=np.float64)
    inter = np.zeros((len(pred), len(gt_ids)))
    for i, idx in enumerate(pred):
        g = gt_of[np.asarray(idx, dtype=np.int64)]
        g = g[g >= 0]
        if len(g):
            inter[i] = np.bincount(g, minlength=len(gt_ids))
    sizes_pred = np.array([len(p) for p in pred], dtype=np.float64)
    union = sizes_pred[:, None] + sizes_gt[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    best = iou.max(axis=0) if len(pred) else np.zeros(len(gt_ids))
    share = inter / np.maximum(sizes_gt[None, :], 1)
    merged = int(((share >= overlap).sum(axis=1) >= 2).sum()) if len(pred) else 0
    split = int(((share >= split_share).sum(axis=0) >= 2).sum()) if len(pred) else 0
    return {"best_iou": {int(k): float(b) for k, b in zip(gt_ids, best)}, "merged": merged, "split": split,
            "num_pred": len(pred), "num_gt": len(gt_ids)}


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def sampling_seeds(finder, seeds: int):
    """Set ``finder``'s sampling seed (each object's random sample of its points) to 0..seeds-1
    in turn, yielding each; one seed keeps the finder's own. Its seed is restored however the
    loop ends."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    kept = finder.config.seed
    try:
        for seed in range(seeds):
            finder.config.seed = seed if seeds > 1 else kept
            yield finder.config.seed
    finally:
        finder.config.seed = kept
