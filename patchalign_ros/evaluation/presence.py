"""Counting mistakes: object-level "part present" precision / recall on real captures, through the
deployed scene path (``PartFinder.find_parts(scene=True)``, the node's defaults), and the fit of
the presence calibration on the tune split.

Per capture and query (``handle``, ``grip``, ``cap``, ``lid``; truth in ``real_captures``):

* every labelled object whose truth is known counts once: **reported** when a reported part of
  that name has most of its points on it; its **score** is the highest presence probability of
  the predicted objects lying mostly on it (for the PR curve);
* on mOSD (every object labelled) a part reported on an object that is mostly table is a false
  object too;
* **false part points**: the query's points on objects without the part (and on the table);
* part IoU where a mask exists (test34's handle, the learn lugs), scene mode over the owning
  object's points and object mode on its ground-truth points with the table's up.

Tune and held-out splits are reported apart; nothing is chosen on the held-out one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..inference.presence import round_down
from .metrics import mask_iou, sampling_seeds
from .real_captures import QUERY_ATTRIBUTE, Capture, load_captures, table_up

QUERIES = ["handle", "grip", "cap", "lid"]
MIN_QUERY_POSITIVES = 5  # a query's own operating point needs this many tune objects with the part


def _majority(obj_ids: np.ndarray) -> tuple[int, float]:
    if len(obj_ids) == 0:
        return 0, 0.0
    values, counts = np.unique(obj_ids, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]), float(counts[best] / len(obj_ids))


def evaluate_capture(finder, capture: Capture, queries: list, object_mode: bool = True) -> dict:
    """Each query in its own request, as a user asks for one part: in one request, names of one
    part ("handle" and "grip", "lid" and "cap") would compete with each other, which changes both
    the labels and the presence features (the margin over the best other name is 0)."""
    rows = [_evaluate_request(finder, capture, [q], object_mode) for q in queries]
    row = dict(rows[0], queries={q: r["queries"][q] for q, r in zip(queries, rows)})
    row["ms"] = round(sum(r["ms"] for r in rows) / len(rows), 1)  # per request
    return row


def _evaluate_request(finder, capture: Capture, queries: list, object_mode: bool) -> dict:
    t0 = time.perf_counter()
    result = finder.find_parts(capture.cloud, queries, scene=True, keypoints=False)
    ms = (time.perf_counter() - t0) * 1e3
    gt = capture.object_id
    labels = result.point_label_array()
    pred_objects = []
    for o in result.objects:
        owner, share = _majority(gt[o.point_indices])
        pred_objects.append((o, owner if share >= 0.5 else -1))
    row = {"capture": capture.name, "source": capture.source, "split": capture.split, "ms": round(ms, 1),
           "objects_found": len(result.objects), "up_source": result.up_source, "queries": {}}
    for qi, q in enumerate(queries):
        entries, false_objects = [], []
        # (owning ground-truth object, score) of every reported part of this name
        reported_parts = [(_majority(gt[p.point_indices])[0], p.score)
                          for o, _ in pred_objects for p in o.parts if p.label == q]
        for k in sorted(capture.truth):
            truth = capture.truth_of(k, q)
            if truth is None:
                continue
            on_k = [o for o, owner in pred_objects if owner == k]
            score = max([o.presence.get(q, 0.0) for o in on_k], default=0.0)
            on_part = [part_score for owner, part_score in reported_parts if owner == k]
            reported = bool(on_part)
            score = max([score] + on_part)
            entries.append({"object": k, "truth": truth, "reported": reported, "score": round_down(score)})
        if capture.all_objects_labelled:
            for o, _ in pred_objects:
                if _majority(gt[o.point_indices])[0] in (0, 1):  # mostly table: no object there
                    parts = [p for p in o.parts if p.label == q]
                    false_objects.append({"reported": bool(parts), "score": round_down(o.presence.get(q, 0.0)),
                                          "points": int(sum(len(p.point_indices) for p in parts))})
        predicted = labels == qi
        negative = np.zeros(len(gt), dtype=bool)
        for k in capture.truth:
            if capture.truth_of(k, q) is False:
                negative |= gt == k
        if capture.all_objects_labelled:
            negative |= gt == 1
        ious = []
        attr = QUERY_ATTRIBUTE.get(q)
        mask = capture.part_masks.get(attr)
        if mask is not None and mask.any():
            owner = _majority(gt[mask])[0]
            sel = gt == owner
            entry = {"object": owner, "points": int(mask.sum()), "scene_iou": mask_iou(predicted[sel], mask[sel])}
            up = table_up(capture)
            if object_mode and up is not None:
                pts_all = capture.cloud.reshape(-1, 3)
                keep = sel & np.isfinite(pts_all).all(axis=1)
                alone = finder.find_parts(pts_all[keep], [q], scene=False, up=up, keypoints=False)
                entry["object_mode_iou"] = mask_iou(alone.point_label_array() == 0, mask[keep])
            ious.append(entry)
        row["queries"][q] = {"objects": entries, "false_objects": false_objects,
                             "false_part_points": int((predicted & negative).sum()),
                             "part_points": int(predicted.sum()), "iou": ious}
    row["_result"] = result
    return row


def _counts(rows: list, q: str) -> dict:
    tp = fp = fn = tn = 0
    false_points = 0
    scores, truths = [], []
    ious, ious_obj = [], []
    for r in rows:
        d = r["queries"].get(q)
        if d is None:
            continue
        for e in d["objects"]:
            tp += e["reported"] and e["truth"]
            fp += e["reported"] and not e["truth"]
            fn += (not e["reported"]) and e["truth"]
            tn += (not e["reported"]) and not e["truth"]
            scores.append(e["score"])
            truths.append(bool(e["truth"]))
        for e in d["false_objects"]:
            fp += e["reported"]
            scores.append(e["score"])
            truths.append(False)
        false_points += d["false_part_points"]
        for e in d["iou"]:
            ious.append(e["scene_iou"])
            if "object_mode_iou" in e:
                ious_obj.append(e["object_mode_iou"])
    out = {"positives": int(sum(truths)), "negatives": int(len(truths) - sum(truths)), "tp": int(tp),
           "fp": int(fp), "fn": int(fn), "tn": int(tn),
           "precision": float(tp / (tp + fp)) if tp + fp else None,
           "recall": float(tp / (tp + fn)) if tp + fn else None, "false_part_points": int(false_points),
           "pr_curve": pr_curve(np.asarray(scores), np.asarray(truths)),
           "_scores": scores, "_truths": truths}
    if ious:
        out["scene_iou"] = float(np.mean(ious))
        out["masks"] = len(ious)
    if ious_obj:
        out["object_mode_iou"] = float(np.mean(ious_obj))
    return out


def pr_curve(scores: np.ndarray, truths: np.ndarray) -> list:
    """[(threshold, precision, recall)] at every distinct score (presence from it up)."""
    if len(scores) == 0 or truths.sum() == 0:
        return []
    out = []
    for t in np.unique(scores)[::-1]:
        sel = scores >= t
        if t <= 0:
            break
        tp = int((sel & truths).sum())
        out.append((round(float(t), 4), round(tp / int(sel.sum()), 4), round(tp / int(truths.sum()), 4)))
    return out


def summarize(rows: list, queries: list) -> dict:
    out = {}
    for split in ("tune", "held-out"):
        chosen = [r for r in rows if r["split"] == split]
        if not chosen:
            continue
        out[split] = {q: _counts(chosen, q) for q in queries}
        for source in sorted({r["source"] for r in chosen}):
            out[f"{split} / {source}"] = {q: _counts([r for r in chosen if r["source"] == source], q) for q in queries}
    return out


def format_summary(summary: dict) -> str:
    lines = [f"{'split / source':28s} {'query':7s} {'pos':>4s} {'neg':>4s} {'TP':>3s} {'FP':>3s} {'FN':>3s} "
             f"{'prec':>5s} {'recall':>6s} {'false pts':>9s} {'IoU':>5s}"]
    for key, per_query in summary.items():
        for q, c in per_query.items():
            prec = "-" if c["precision"] is None else f"{c['precision']:.2f}"
            rec = "-" if c["recall"] is None else f"{c['recall']:.2f}"
            iou = f"{c['scene_iou']:.2f}" if "scene_iou" in c else "-"
            lines.append(f"{key:28s} {q:7s} {c['positives']:4d} {c['negatives']:4d} {c['tp']:3d} {c['fp']:3d} "
                         f"{c['fn']:3d} {prec:>5s} {rec:>6s} {c['false_part_points']:9d} {iou:>5s}")
    return "\n".join(lines)


def save_pr_png(summary: dict, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in ("tune", "held-out") if s in summary]
    fig, axes = plt.subplots(1, len(splits) + 1, figsize=(5.5 * (len(splits) + 1), 4.5), squeeze=False)
    reliability = axes[0][-1]
    reliability.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    for k, split in enumerate(splits):  # calibration: predicted presence vs observed share, pooled queries
        p = np.concatenate([np.asarray(c.get("_scores", []), dtype=float) for c in summary[split].values()])
        y = np.concatenate([np.asarray(c.get("_truths", []), dtype=float) for c in summary[split].values()])
        if len(p):
            xs, ys = _reliability_points(p, y)
            reliability.plot(xs, ys, "-o", color=f"C{k}", label=f"{split} ({len(p)} objects x queries)")
    reliability.set_xlabel("presence probability (part score)")
    reliability.set_ylabel("share of objects that have the part")
    reliability.set_title("reliability (all queries pooled)", fontsize=9)
    reliability.legend(fontsize=7)
    for ax, split in zip(axes[0], splits):
        for k, (q, c) in enumerate(summary[split].items()):
            if not c["pr_curve"]:
                continue
            curve = np.asarray(c["pr_curve"])
            ax.plot(curve[:, 2], curve[:, 1], "-o", ms=2, color=f"C{k}",
                    label=f"{q} ({c['positives']}+/{c['negatives']}-)")
            if c["recall"] is not None and c["precision"] is not None:
                ax.plot([c["recall"]], [c["precision"]], "*", ms=12, color=f"C{k}")
        ax.axhline(0.9, color="0.6", lw=0.8, ls="--")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall (objects with the part)")
        ax.set_ylabel("precision (objects reported)")
        ax.set_title(f"{split}: presence PR curve, * = operating point", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _scene_rows(finder, captures: list, queries: list, object_mode: bool, progress: bool) -> list:
    from tqdm import tqdm

    rows = []
    for cap in tqdm(captures, desc="presence", disable=not progress, unit="capture"):
        row = evaluate_capture(finder, cap, queries, object_mode)
        row.pop("_result")
        rows.append(row)
    return rows


def run_presence_evaluation(finder, data_root, out_dir, queries=None, splits=("tune", "held-out"),
                            object_mode: bool = True, progress: bool = True, seeds: int = 1) -> dict:
    """The scene path on the labelled captures: object-level presence counts, PR curves and false
    part points per split and source. ``seeds`` > 1: every capture is run with the sampling seeds
    0..seeds-1 and the counts are over (object, seed) pairs: a mistake one sample makes counts."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    queries = list(queries or QUERIES)
    captures = load_captures(data_root, splits)
    if not captures:
        raise FileNotFoundError(f"no labelled real captures under {data_root} (expects real_scans/mosd, "
                                "real_scans/mosd_learn, real_scans/realsense_6dof)")
    rows = [{**row, "seed": seed} for seed in sampling_seeds(finder, seeds)
            for row in _scene_rows(finder, captures, queries, object_mode, progress)]
    summary = summarize(rows, queries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = {k: {q: {f: v for f, v in c.items() if not f.startswith("_")} for q, c in per.items()}
              for k, per in summary.items()}
    report = {"data_root": str(data_root), "queries": queries, "seeds": seeds,
              "presence_model": finder.presence.to_dict() if finder.presence else None,
              "summary": public, "captures": rows}
    # compact: with several seeds the per-capture rows run to megabytes indented
    (out / "presence_report.json").write_text(json.dumps(report, separators=(",", ":")) + "\n")
    save_pr_png(summary, out / "presence_pr.png")
    return report


# -- calibration ----------------------------------------------------------------------------
def collect_features(finder, captures: list, queries: list, progress: bool = True) -> list:
    """(features (3,), truth, source) per predicted object and query whose truth is known, on the
    deployed scene path (the distribution the node sees)."""
    from tqdm import tqdm

    out = []
    for cap in tqdm(captures, desc="presence features", disable=not progress, unit="capture"):
        for q in queries:  # one request per query (see evaluate_capture)
            result = finder.find_parts(cap.cloud, [q], scene=True, keypoints=False)
            for o in result.objects:
                owner, share = _majority(cap.object_id[o.point_indices])
                if share < 0.5:
                    continue
                truth = False if (owner in (0, 1) and cap.all_objects_labelled) else cap.truth_of(owner, q)
                if truth is None or q not in o.presence_features:
                    continue
                out.append((o.presence_features[q], bool(truth), cap.source))
    return out


def generated_features(finder, queries: list, shapes_per_category: int = 2, seed: int = 1600,
                       progress: bool = True) -> list:
    """The same features on generated robot-camera views (seen categories, a seed training does
    not use), object mode with the true up; truth from the shape's part names."""
    from tqdm import tqdm

    from ..data.engine import robot_depth_sample
    from ..data.sensors import SENSORS
    from ..data.shapes import SEEN_CATEGORIES, make_shape, related_words

    rng = np.random.default_rng(seed)
    families = list(SENSORS.values())
    out = []
    jobs = [c for c in SEEN_CATEGORIES for _ in range(shapes_per_category)]
    for category in tqdm(jobs, desc="generated features", disable=not progress, unit="shape"):
        shape = make_shape(category, rng)
        sample = robot_depth_sample(shape, None, rng, families[rng.integers(len(families))])
        if sample is None:
            continue
        words = set().union(*(related_words(p) for p in shape.part_names))
        seen = set(np.unique(sample.labels).tolist())
        visible_words = set().union(*(related_words(shape.part_names[i]) for i in seen)) if seen else set()
        for q in queries:  # one request per query (see evaluate_capture)
            qwords = related_words(q)
            if qwords & words and not qwords & visible_words:
                continue  # the shape has the part but this view does not see it
            result = finder.find_parts(sample.points.astype(np.float64), [q], scene=False,
                                       up=np.array([0.0, 0.0, 1.0]), keypoints=False)
            out.append((result.objects[0].presence_features[q], bool(qwords & visible_words), "generated"))
    return out


def fit_presence(samples: list, note: str = ""):
    """Logistic regression of truth on the features (threshold set by ``choose_threshold``)."""
    from sklearn.linear_model import LogisticRegression

    from ..inference.presence import PresenceModel

    x = np.stack([s[0] for s in samples])
    y = np.array([s[1] for s in samples])
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    return PresenceModel(lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), 0.5, note)


def choose_threshold(summary_split: dict, target_precision: float = 0.9) -> tuple[float, dict]:
    """The lowest presence threshold whose object-level precision, pooled over the queries, reaches
    ``target_precision`` on one split's summary (its PR points); (threshold, pooled counts)."""
    scores, truths = [], []
    for c in summary_split.values():
        scores += c["_scores"]
        truths += c["_truths"]
    scores, truths = np.asarray(scores), np.asarray(truths, dtype=bool)
    best = None
    for t in np.unique(scores):
        if t <= 0:
            continue
        at = _at_threshold(scores, truths, t)
        if at["precision"] is not None and at["precision"] >= target_precision:
            best = (float(t), at)
            break
    if best is None:  # never reached: the most precise point with any recall
        return 0.99, {"precision": None, "recall": 0.0}
    return best


def _at_threshold(scores: np.ndarray, truths: np.ndarray, threshold: float) -> dict:
    """Object-level precision (None where nothing passes) and recall from ``threshold`` up."""
    sel = scores >= threshold
    hits = float((sel & truths).sum())
    return {"precision": hits / sel.sum() if sel.any() else None, "recall": hits / max(truths.sum(), 1)}


def _counts_at(counts: dict, threshold: float) -> dict:
    """``_at_threshold`` on one query's tune PR points (``_scores``, ``_truths``)."""
    return _at_threshold(np.asarray(counts["_scores"]), np.asarray(counts["_truths"], dtype=bool), threshold)


def _precision_recall(at: dict) -> str:
    precision = "-" if at["precision"] is None else f"{at['precision']:.2f}"
    return f"precision {precision}, recall {at['recall']:.2f}"


def calibrate(finder, data_root, out_path, queries=None, target_precision: float = 0.9,
              generated_per_category: int = 2, progress: bool = True, seeds: int = 1) -> dict:
    """Fit the presence model of ``finder``'s network on the tune split (+ generated views),
    choose its threshold there, and write ``{"presence": ...}`` JSON (the registry's ``presence``).
    ``seeds`` > 1: the thresholds are chosen on the tune objects scored with sampling seeds
    0..seeds-1, (object, seed) pairs pooled: one random sample of each object's points set the
    operating point otherwise (measured: the "handle" point 0.81-0.99 over five seeds)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    queries = list(queries or QUERIES)
    tune = load_captures(data_root, ("tune",))
    if not tune:
        raise FileNotFoundError(f"no tune-split captures under {data_root}")
    finder.presence = None
    samples = collect_features(finder, tune, queries, progress)
    samples += generated_features(finder, queries, generated_per_category, progress=progress)
    model = fit_presence(samples, note=f"fitted on {len(samples)} (object, query) pairs: the tune split of the real "
                                       f"development captures ({len(tune)}) on the scene path + generated views")
    finder.presence = model  # the scene path again: which parts the new model reports
    rows = [row for _ in sampling_seeds(finder, seeds)
            for row in _scene_rows(finder, tune, queries, object_mode=False, progress=False)]
    summary = summarize(rows, queries)
    threshold, at = choose_threshold(summary["tune"], target_precision)
    model.threshold = threshold
    if seeds > 1:
        model.note += f"; thresholds over {seeds} sampling seeds of each tune object (pairs pooled)"
    model.note += f"; threshold {threshold:.3f}: pooled tune {_precision_recall(at)}"
    # per query where the tune split holds enough of it: the pooled point need not give each
    # query the target (measured: "handle" 0.67 at the pooled threshold). A query's own point only
    # ever raises the pooled one: a few tune objects must not open a low door ("cap" on tins' lids
    # reached 0.9 at 0.08)
    model.query_thresholds = {}
    for q in queries:
        c = summary["tune"][q]
        if c["positives"] >= MIN_QUERY_POSITIVES:
            t_q, at_q = choose_threshold({q: c}, target_precision)
            if at_q["precision"] is not None:
                applied = model.query_thresholds[q] = max(t_q, threshold)
                # the note gives the point in use and the tune counts there (a query whose own
                # point is below the pooled one is reported from the pooled one)
                own = "" if applied == t_q else f"; its own point {t_q:.3f}"
                model.note += f"; {q} {applied:.3f} (tune {_precision_recall(_counts_at(c, applied))}{own})"
    out = {"presence": model.to_dict(), "samples": len(samples), "seeds": seeds,
           "positives": int(sum(s[1] for s in samples)), "target_precision": target_precision,
           "tune_at_threshold": at}
    reliability_png(samples, model, Path(out_path).with_suffix(".png"))
    Path(out_path).write_text(json.dumps(out, indent=1) + "\n")
    return out


def _reliability_points(p: np.ndarray, y: np.ndarray, bins: int = 8) -> tuple[list, list]:
    """Mean predicted probability and observed share per non-empty probability bin."""
    which = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)) - 1, 0, bins - 1)
    chosen = [b for b in range(bins) if (which == b).any()]
    return [float(p[which == b].mean()) for b in chosen], [float(y[which == b].mean()) for b in chosen]


def reliability_png(samples: list, model, path, bins: int = 8) -> None:
    """Predicted presence against the observed share of objects with the part, per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    for k, source in enumerate(sorted({s[2] for s in samples})):
        chosen = [s for s in samples if s[2] == source]
        p = np.array([model.probability(s[0]) for s in chosen])
        y = np.array([s[1] for s in chosen], dtype=float)
        xs, ys = _reliability_points(p, y, bins)
        ax.plot(xs, ys, "-o", color=f"C{k}", label=f"{source} ({len(chosen)})")
    ax.axvline(model.threshold, color="C3", lw=0.8, label=f"threshold {model.threshold:.2f}")
    ax.set_xlabel("presence probability")
    ax.set_ylabel("share with the part")
    ax.set_title("presence calibration (tune split + generated)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
