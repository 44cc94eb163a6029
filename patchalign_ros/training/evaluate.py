"""Evaluation on generated, held-out data (the protocol of the facts page, adapted).

Splits (shapes drawn with seeds never used for training):
* ``seen-full``   - training categories, new random shapes, whole surfaces;
* ``seen-depth``  - training categories, single-view simulated depth captures;
* ``unseen``      - categories (and their unique part names) held out of training, both kinds.
Per shape the candidate names are the category's part names; each point takes the argmax.
Shape IoU = mean over parts present in the ground truth; mIoU = mean over shapes; cIoU = mean
over categories. Boundary mIoU: the same on points whose 16 nearest neighbours mix labels.
Keypoints: ground truth = the surface point nearest each part instance's centre (four legs ->
four keypoints); predictions from the text scores by weighted clustering; IoU = TP / (TP + FP
+ FN) with matches within a geodesic distance (shortest paths on a 8-NN graph of the unit-
sphere-normalised shape) at thresholds 0.01 ... 0.10.

Two ways to score a split: ``model`` (the network's argmax over the category's part names, as
the paper scores) and ``deployed`` (``PartFinder.find_parts`` in object mode with the true up:
the sampling, gravity alignment, thresholds and part evidence gate users run; a part it does
not report scores 0). The deployed path also counts object-level presence for the names users
ask most (``training.negatives.COMMON_QUERIES``): a shape that has the part and reports it is a
true positive; two of those names the shape lacks are asked on their own, and a part reported
then is a false positive (precision / recall per name, false part points). With ``real_data``
the report adds object-mode part IoU on real development data (``evaluation.real_parts``),
through the same PartFinder.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..data.engine import depth_sample, full_sample, random_rotation_about_z
from ..data.shapes import SEEN_CATEGORIES, UNSEEN_CATEGORIES, make_shape
from ..inference import labeling
from ..inference.keypoints import cluster_keypoints
from ..model import PatchAlignModel
from ..text import PromptEmbedder

SPLITS = {"seen-full": (SEEN_CATEGORIES, 0.0), "seen-depth": (SEEN_CATEGORIES, 1.0), "unseen": (UNSEEN_CATEGORIES, 0.5)}
GEODESIC_THRESHOLDS = [round(0.01 * i, 2) for i in range(1, 11)]


@dataclass
class ShapeScore:
    category: str
    kind: str
    iou: float
    boundary_iou: float
    part_ious: dict
    keypoint_iou: dict


def eval_samples(split: str, shapes_per_category: int, n_points: int, seed: int = 10_000) -> list:
    categories, depth_fraction = SPLITS[split]
    rng = np.random.default_rng(seed + sum(map(ord, split)))
    samples = []
    for category in categories:
        for _ in range(shapes_per_category):
            shape = make_shape(category, rng)
            sample = depth_sample(shape, n_points, rng) if rng.random() < depth_fraction else None
            sample = sample or full_sample(shape, n_points, rng)
            sample.points = (sample.points @ random_rotation_about_z(rng).T).astype(np.float32)
            samples.append(sample)
    return samples


def shape_iou(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None):
    if mask is not None:
        pred, gt = pred[mask], gt[mask]
    ious = {}
    for part in np.unique(gt):
        union = np.sum((pred == part) | (gt == part))
        ious[int(part)] = float(np.sum((pred == part) & (gt == part)) / union) if union else 1.0
    return (float(np.mean(list(ious.values()))) if ious else float("nan")), ious


def boundary_mask(points: np.ndarray, labels: np.ndarray, k: int = 16) -> np.ndarray:
    _, nb = cKDTree(points).query(points, k=min(k, len(points)))
    return (labels[nb] != labels[:, None]).any(axis=1)


def geodesic_distances(points: np.ndarray, sources: np.ndarray, k: int = 8) -> np.ndarray:
    """(len(sources), N) shortest-path lengths on a symmetric kNN graph (inf if disconnected)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    dist, nb = cKDTree(points).query(points, k=k + 1)
    rows = np.repeat(np.arange(len(points)), k)
    graph = csr_matrix((dist[:, 1:].reshape(-1), (rows, nb[:, 1:].reshape(-1))), shape=(len(points),) * 2)
    return dijkstra(graph, directed=False, indices=sources)


def keypoint_iou(points, gt_kp_idx: np.ndarray, pred_kp_idx: np.ndarray) -> dict:
    if len(gt_kp_idx) == 0:
        return {}
    geo = geodesic_distances(points, gt_kp_idx)  # (G, N)
    out = {}
    for t in GEODESIC_THRESHOLDS:
        if len(pred_kp_idx) == 0:
            out[t] = 0.0
            continue
        d = geo[:, pred_kp_idx]  # (G, P)
        tp_pred = (d <= t).any(axis=0).sum()
        fn = (~(d <= t).any(axis=1)).sum()
        fp = len(pred_kp_idx) - tp_pred
        out[t] = float(tp_pred / max(tp_pred + fp + fn, 1))
    return out


def gt_keypoints(points: np.ndarray, labels: np.ndarray, instances: np.ndarray | None, part: int) -> np.ndarray:
    if instances is None:
        return np.empty(0, dtype=np.int64)
    idx = []
    for inst in np.unique(instances[labels == part]):
        members = np.flatnonzero((labels == part) & (instances == inst))
        if len(members) >= 10:
            c = points[members].mean(axis=0)
            idx.append(members[np.argmin(((points[members] - c) ** 2).sum(1))])
    return np.array(idx, dtype=np.int64)


def evaluate_model(model: PatchAlignModel, embedder: PromptEmbedder, samples: list, batch_size: int = 16,
                   keypoint_threshold: float = 0.6, progress: bool = True):
    from tqdm import tqdm

    scale, bias = model.logit_scale, model.config.logit_bias
    scores, predictions = [], []
    bar = tqdm(total=len(samples), desc="evaluating", disable=not progress, unit="shape")
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        pts = np.stack([s.points for s in batch]).astype(np.float64)
        pts = pts - pts.mean(axis=1, keepdims=True)
        pts /= np.linalg.norm(pts, axis=2).max(axis=1)[:, None, None]
        perm = np.asarray(model.config.axis_permutation)
        out = model.encode(pts[:, :, perm].astype(np.float32))
        feats = out.patch_features.cpu().numpy().astype(np.float64)
        centers = out.centers.cpu().numpy().astype(np.float64)
        for i, s in enumerate(batch):
            text = embedder.embed(s.part_names)
            probs_patch = labeling.sigmoid(labeling.patch_logits(feats[i], text, scale, bias))
            probs = labeling.point_patch_values(pts[i][:, perm], centers[i], probs_patch, "nearest")
            pred = probs.argmax(axis=1)
            gt = s.labels.astype(np.int64)
            iou, part_ious = shape_iou(pred, gt)
            bmask = boundary_mask(pts[i], gt)
            biou = shape_iou(pred, gt, bmask)[0] if bmask.any() else float("nan")
            kp = {}
            diag = float(np.linalg.norm(np.ptp(pts[i], axis=0)))
            for part in np.unique(gt):
                gt_idx = gt_keypoints(pts[i], gt, s.instances, part)
                weights = np.where(pred == part, probs[:, part], 0.0)
                cands = cluster_keypoints(pts[i], weights, keypoint_threshold, eps=0.08 * diag, min_weight=3)
                snap = cKDTree(pts[i])
                pred_idx = np.array([snap.query(c.position)[1] for c in cands], dtype=np.int64)
                for t, v in keypoint_iou(pts[i], gt_idx, pred_idx).items():
                    kp.setdefault(t, []).append(v)
            scores.append(ShapeScore(s.category, s.kind, iou, biou,
                                     {s.part_names[p]: v for p, v in part_ious.items()},
                                     {t: float(np.mean(v)) for t, v in kp.items()}))
            predictions.append(pred)
            bar.update(1)
    bar.close()
    return scores, predictions


def evaluate_deployed(finder, samples: list, progress: bool = True, seed: int = 0) -> tuple[list, dict]:
    """Shape IoU of ``PartFinder.find_parts(points, part names, up=+z)`` per sample (points no
    part claims count against every part), and presence counts {name: {tp, fn, fp, tn,
    false_part_points}} for the common query names (see the module docstring)."""
    from tqdm import tqdm

    from ..data.shapes import related_words
    from ..training.negatives import COMMON_QUERIES, absent_candidates

    rng = np.random.default_rng(seed)
    ious = []
    counts = {q: {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "false_part_points": 0} for q in COMMON_QUERIES}
    for s in tqdm(samples, desc="deployed path", disable=not progress, unit="shape"):
        pts = s.points.astype(np.float64)
        result = finder.find_parts(pts, list(s.part_names), scene=False, up=(0.0, 0.0, 1.0), keypoints=False)
        ious.append(shape_iou(result.point_label_array(), s.labels.astype(np.int64))[0])
        reported = {p.label for p in result.objects[0].parts}
        visible = {s.part_names[i] for i in np.unique(s.labels)}
        for q in COMMON_QUERIES:
            owned = [p for p in visible if related_words(p) & related_words(q)]
            if owned:
                counts[q]["tp" if any(p in reported for p in owned) else "fn"] += 1
        lacking = absent_candidates(s.part_names, COMMON_QUERIES)
        probes = list(rng.choice(lacking, min(2, len(lacking)), replace=False)) if lacking else []
        if probes:
            asked = finder.find_parts(pts, [str(q) for q in probes], scene=False, up=(0.0, 0.0, 1.0), keypoints=False)
            labels = asked.point_label_array()
            for k, q in enumerate(probes):
                hit = any(p.label == q for p in asked.objects[0].parts)
                counts[str(q)]["fp" if hit else "tn"] += 1
                counts[str(q)]["false_part_points"] += int((labels == k).sum())
    for c in counts.values():
        c["precision"] = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None
        c["recall"] = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else None
    return ious, counts


def summarize(scores: list) -> dict:
    cats = {}
    for s in scores:
        cats.setdefault(s.category, []).append(s.iou)
    parts = {}
    for s in scores:
        for name, v in s.part_ious.items():
            parts.setdefault(name, []).append(v)
    kp = {}
    for s in scores:
        for t, v in s.keypoint_iou.items():
            kp.setdefault(t, []).append(v)
    return {
        "shapes": len(scores),
        "mIoU": float(np.nanmean([s.iou for s in scores])) * 100,
        "cIoU": float(np.mean([np.nanmean(v) for v in cats.values()])) * 100,
        "boundary_mIoU": float(np.nanmean([s.boundary_iou for s in scores])) * 100,
        "keypoint_IoU": {str(t): float(np.mean(v)) * 100 for t, v in sorted(kp.items())},
        "per_category_mIoU": {c: float(np.nanmean(v)) * 100 for c, v in sorted(cats.items())},
        "per_part_IoU": {p: float(np.mean(v)) * 100 for p, v in sorted(parts.items())},
    }


def save_examples(path, samples: list, predictions: list, count: int = 8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..visualize import label_colors

    pick = np.linspace(0, len(samples) - 1, min(count, len(samples))).astype(int)
    fig = plt.figure(figsize=(4 * len(pick), 8), dpi=80)
    for col, i in enumerate(pick):
        s, pred = samples[i], predictions[i]
        colors = label_colors(len(s.part_names))
        for row, (lab, title) in enumerate(((s.labels, "truth"), (pred, "predicted"))):
            ax = fig.add_subplot(2, len(pick), row * len(pick) + col + 1, projection="3d")
            p = s.points
            ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=colors[np.asarray(lab, dtype=int)], s=2, linewidths=0)
            ax.set_title(f"{s.category} ({s.kind}) {title}", fontsize=8)
            ax.set_axis_off()
            if row == 0:
                handles = [plt.Line2D([], [], marker="o", ls="", color=colors[j], label=n) for j, n in enumerate(s.part_names)]
                ax.legend(handles=handles, fontsize=6, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_evaluation(checkpoint, out_dir, splits=("seen-full", "seen-depth", "unseen"), shapes_per_category: int = 6,
                   text_encoder: str | None = None, progress: bool = True, real_data=None,
                   inference_config=None, deployed: bool = True) -> dict:
    from ..inference.pipeline import PartFinder

    # through PartFinder.load: a registry name (or None, the bundled default) brings the model's
    # presence calibration, as users get it
    finder = PartFinder.load(checkpoint, text_encoder=text_encoder, config=inference_config, cache_dir=None)
    model, embedder = finder.model, finder.embedder
    if not (deployed or real_data):
        finder = None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint), "shapes_per_category": shapes_per_category, "splits": {}}
    for split in splits:
        t0 = time.time()
        samples = eval_samples(split, shapes_per_category, model.config.num_points)
        scores, preds = evaluate_model(model, embedder, samples, progress=progress)
        summary = summarize(scores)
        if finder is not None and deployed:
            ious, presence = evaluate_deployed(finder, samples, progress)
            summary["deployed_mIoU"] = float(np.nanmean(ious)) * 100
            summary["deployed_presence"] = presence
        summary["seconds"] = time.time() - t0
        summary["examples_png"] = str(save_examples(out_dir / f"examples_{split}.png", samples, preds))
        report["splits"][split] = summary
    if real_data:
        from ..evaluation.real_parts import run_real_parts

        report["real"] = run_real_parts(finder, real_data, out_dir, progress=progress)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def format_table(report: dict) -> str:
    lines = [f"{'split':12s} {'shapes':>6s} {'mIoU':>6s} {'deployed':>8s} {'cIoU':>6s} {'bIoU':>6s} "
             f"{'kpIoU@.05':>9s} {'kpIoU@.10':>9s}"]
    for split, s in report["splits"].items():
        kp = s["keypoint_IoU"]
        lines.append(f"{split:12s} {s['shapes']:6d} {s['mIoU']:6.1f} {s.get('deployed_mIoU', float('nan')):8.1f} "
                     f"{s['cIoU']:6.1f} {s['boundary_mIoU']:6.1f} "
                     f"{kp.get('0.05', float('nan')):9.1f} {kp.get('0.1', float('nan')):9.1f}")
    def share(v):
        return "-" if v is None else f"{v:.2f}"

    for split, s in report["splits"].items():
        if "deployed_presence" in s:
            lines.append(f"{split}: part present, deployed path (precision / recall / false points): " + ", ".join(
                f"{q} {share(c['precision'])}/{share(c['recall'])}/{c['false_part_points']}"
                for q, c in s["deployed_presence"].items() if c["tp"] + c["fp"] + c["fn"]))
    if "real" in report:
        from ..evaluation.real_parts import format_summary

        lines += ["", "real development data, object mode through PartFinder:", format_summary(report["real"])]
    return "\n".join(lines)
