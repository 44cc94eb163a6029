"""``evaluate-real``: the deployed scene path (``PartFinder.find_parts(scene=True)``, the
node's defaults) on labelled real scans, against their ground truth.

Reports per scan: object segmentation (per ground-truth object the best IoU over predicted
objects, merged and split counts, objects dropped), part IoU where a part mask exists in scene
mode and in object mode on the same object's ground-truth points with the same up, part
points reported on objects without that part (false positives), the support plane's
orientation, and timings; writes ``report.json`` and a PNG per scan.

Scan sets: a directory of mOSD-style PCDs (``label`` field: 1 table, 20, 30, ... objects,
sub-labels for disjoint pieces) and optional part masks given as label lists per scan
(``PART_MASKS``: mOSD test34's mug handle is its own sub-label 60). PCDs without a ``label``
field are run and pictured but not scored.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .metrics import gt_objects_from_labels, mask_iou, object_segmentation_scores

# Part ground truth by sub-label, checked by eye: {scan name: {part name: [labels]}}.
PART_MASKS = {"test34": {"handle": [60]}}


def find_scans(paths: list) -> list:
    scans = []
    for p in map(Path, paths):
        if p.is_dir():
            scans += sorted(p.rglob("*.pcd"))
        elif p.is_file():
            scans.append(p)
        else:
            raise FileNotFoundError(f"no such scan or directory: {p}")
    return scans


def evaluate_scan(finder, path: Path, queries: list, part_masks: dict, frame: str = "auto",
                  object_mode_check: bool = True) -> tuple[dict, dict]:
    from ..pointcloud_io import read_pcd_fields

    xyz, shape, colors, labels = read_pcd_fields(path)
    cloud = xyz.reshape(shape[0], shape[1], 3) if shape else xyz
    finder.find_parts(cloud, queries, scene=True, frame=frame)  # warm caches (text, allocator)
    t0 = time.perf_counter()
    result = finder.find_parts(cloud, queries, scene=True, frame=frame)
    wall_ms = (time.perf_counter() - t0) * 1e3
    point_labels = result.point_label_array()
    row = {"scan": path.name, "num_points": len(xyz), "organized": shape is not None,
           "objects_found": len(result.objects), "dropped_objects": result.dropped_objects,
           "up_source": result.up_source, "scene_message": result.scene_message,
           "up": None if result.up is None else [round(float(v), 4) for v in result.up],
           "timing_ms": {k: round(v, 2) for k, v in result.timing_ms.items()}, "wall_ms": round(wall_ms, 2)}
    extras = {"xyz": xyz, "shape": shape, "colors": colors, "result": result, "point_labels": point_labels}
    if labels is None:
        return row, extras
    gt = gt_objects_from_labels(labels)
    seg = object_segmentation_scores([o.point_indices for o in result.objects], gt, len(xyz))
    row["segmentation"] = seg
    masks = part_masks.get(path.stem, {})
    parts, fp = {}, {}
    for q, name in enumerate(result.queries):
        predicted = point_labels == q
        truth = np.isin(labels, masks.get(name, [])) if name in masks else np.zeros(len(xyz), dtype=bool)
        owner_ids = {oid for oid, idx in gt.items() if truth[idx].any()}
        owners = np.zeros(len(xyz), dtype=bool)
        for oid in owner_ids:
            owners[gt[oid]] = True
        # false positives: the part reported on points of objects (or the table) without it
        fp[name] = int((predicted & ~owners).sum())
        for oid in owner_ids:
            idx = gt[oid]
            entry = {"object": oid, "points": int(truth[idx].sum()),
                     "scene_iou": mask_iou(predicted[idx], truth[idx])}
            if object_mode_check and result.up is not None:
                alone = finder.find_parts(xyz[idx], [name], scene=False, up=result.up, keypoints=False)
                entry["object_mode_iou"] = mask_iou(alone.point_label_array() == 0, truth[idx])
            parts.setdefault(name, []).append(entry)
    row["parts"] = parts
    row["false_positive_points"] = fp
    extras["gt"] = gt
    return row, extras


def save_scan_png(path, extras: dict, row: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xyz, shape, colors, result = extras["xyz"], extras["shape"], extras["colors"], extras["result"]
    obj_id = np.full(len(xyz), -1)
    for k, obj in enumerate(result.objects):
        obj_id[obj.point_indices] = k
    part = extras["point_labels"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    palette = plt.get_cmap("tab20")
    if shape is not None:
        base = colors.reshape(shape[0], shape[1], 3).astype(float) / 255 if colors is not None else \
            np.zeros((shape[0], shape[1], 3))
        seg_img = base * 0.35
        flat = seg_img.reshape(-1, 3)
        has = obj_id >= 0
        object_palette = np.asarray([palette(i)[:3] for i in range(20)])
        flat[has] = flat[has] + 0.65 * object_palette[obj_id[has] % 20]
        axes[0].imshow(seg_img)
        from ..visualize import camera_image, paint_parts

        image = camera_image(xyz, shape, colors)
        paint_parts(axes[1], image, part, list(result.queries),
                    [(p.label, p.score, p.point_indices) for o in result.objects for p in o.parts])
    else:  # unorganized: top view along up
        from ..inference.scene import _plane_basis

        up = result.up if result.up is not None else np.array([0.0, 0.0, 1.0])
        ok = np.isfinite(xyz).all(axis=1)
        uv = np.zeros((len(xyz), 2))
        uv[ok] = xyz[ok] @ _plane_basis(up / np.linalg.norm(up))
        axes[0].scatter(uv[ok, 0], uv[ok, 1], s=0.3, c=[palette(i % 20) if i >= 0 else (0.8, 0.8, 0.8, 1)
                                                         for i in obj_id[ok]])
        axes[1].scatter(uv[ok, 0], uv[ok, 1], s=0.3, c=np.where(part[ok] >= 0, 1.0, 0.0), cmap="coolwarm")
        for a in axes:
            a.set_aspect("equal")
    seg = row.get("segmentation")
    title = f"{row['scan']}: {row['objects_found']} objects"
    if seg:
        best = list(seg["best_iou"].values())
        title += f", GT {seg['num_gt']}, mean best IoU {np.mean(best):.2f}, merged {seg['merged']}"
    axes[0].set_title(title)
    queries = ", ".join(result.queries)
    axes[1].set_title(f"parts ({queries}); FP points: {row.get('false_positive_points', {})}")
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summarize(rows: list) -> dict:
    best = [b for r in rows if "segmentation" in r for b in r["segmentation"]["best_iou"].values()]
    summary = {"scans": len(rows), "labelled_scans": sum("segmentation" in r for r in rows)}
    if best:
        best = np.asarray(best)
        summary.update({"gt_objects": int(len(best)), "mean_best_iou": float(best.mean()),
                        "share_best_iou_ge_0.8": float((best >= 0.8).mean()),
                        "merged": int(sum(r["segmentation"]["merged"] for r in rows if "segmentation" in r)),
                        "split": int(sum(r["segmentation"]["split"] for r in rows if "segmentation" in r))})
    parts = {}
    for r in rows:
        for name, entries in r.get("parts", {}).items():
            parts.setdefault(name, []).extend(entries)
    summary["parts"] = {name: {"masks": len(e), "scene_iou": float(np.mean([x["scene_iou"] for x in e])),
                               **({"object_mode_iou": float(np.mean([x["object_mode_iou"] for x in e]))}
                                  if all("object_mode_iou" in x for x in e) else {})}
                        for name, e in parts.items()}
    fps = {}
    for r in rows:
        for name, n in r.get("false_positive_points", {}).items():
            fps.setdefault(name, []).append(n)
    summary["false_positive_points_per_scan"] = {k: float(np.mean(v)) for k, v in fps.items()}
    totals = [r["timing_ms"]["total"] for r in rows if r["organized"]]
    if totals:
        summary["median_total_ms_organized"] = float(np.median(totals))
    return summary


def format_summary(rows: list, summary: dict) -> str:
    lines = [f"{'scan':<34} {'objs':>4} {'GT':>3} {'mean best':>9} {'merged':>6} {'split':>5} "
             f"{'FP pts':>7} {'ms':>6}  up"]
    for r in rows:
        seg = r.get("segmentation")
        fp = sum(r.get("false_positive_points", {}).values()) if "false_positive_points" in r else "-"
        mean_best = f"{np.mean(list(seg['best_iou'].values())):.3f}" if seg else "-"
        lines.append(f"{r['scan']:<34} {r['objects_found']:>4} {seg['num_gt'] if seg else '-':>3} {mean_best:>9} "
                     f"{seg['merged'] if seg else '-':>6} {seg['split'] if seg else '-':>5} {fp:>7} "
                     f"{r['timing_ms']['total']:>6.0f}  {r['up_source']}")
    if "mean_best_iou" in summary:
        lines.append(f"objects: {summary['gt_objects']} ground truth, mean best IoU {summary['mean_best_iou']:.3f}, "
                     f"{100 * summary['share_best_iou_ge_0.8']:.0f} % at >= 0.8, merged {summary['merged']}, "
                     f"split {summary['split']}")
    for name, p in summary.get("parts", {}).items():
        obj = f", object mode {p['object_mode_iou']:.3f}" if "object_mode_iou" in p else ""
        lines.append(f"part '{name}': {p['masks']} mask(s), scene-mode IoU {p['scene_iou']:.3f}{obj}")
    for name, n in summary.get("false_positive_points_per_scan", {}).items():
        lines.append(f"'{name}' points on objects without that part: {n:.0f} per scan")
    if "median_total_ms_organized" in summary:
        lines.append(f"median frame (organized scans): {summary['median_total_ms_organized']:.0f} ms")
    return "\n".join(lines)


def run_real_evaluation(finder, scan_paths: list, queries: list, out_dir, part_masks: dict | None = None,
                        frame: str = "auto", pictures: bool = True) -> dict:
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = PART_MASKS if part_masks is None else part_masks
    rows = []
    for path in tqdm(find_scans(scan_paths), desc="real scans", unit="scan"):
        row, extras = evaluate_scan(finder, path, queries, masks, frame)
        if pictures:
            png = out_dir / f"{path.stem}.png"
            save_scan_png(png, extras, row)
            row["png"] = str(png)
        rows.append(row)
    summary = summarize(rows)
    report = {"queries": list(queries), "frame": frame, "scans": rows, "summary": summary}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
