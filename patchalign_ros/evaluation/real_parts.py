"""Object-mode part IoU on real development data, through ``PartFinder`` (the deployed path:
sampling, gravity alignment, thresholds and the part evidence gate, all as users run them).

Cases (each: an object's points, its up direction, one query, a ground-truth mask):

* ``mosd``: mOSD test34, the one mug whose handle the Kinect sees (its own sub-label 60); up =
  the labelled table's normal, turned towards the camera.
* ``clorox``: the PCL Kinect scan ``milk_cartoon_all_small_clorox.pcd``; the Clorox bottle's and
  the detergent jug's moulded handles and both caps, masked by hand as pixel polygons drawn on the
  RGB and depth images (``PIXEL_MASKS``; pictures: ``clorox_masks.png``). The object's points are
  the scene stage's object (the deployed path) that holds the mask; up = the scene's up.
* ``bottle``: the PartNet-Mobility bottle with human labels (lid 7, neck 6, body 5; y up).
  Synthetic geometry, human labels.
* ``ycb``: Kinect-model depth renders (``data.sensors``) of the real YCB scans with the part
  rules of ``data.real_meshes``; the pitcher is held out of training, the others (mug handle,
  drill grip, bottle caps) are meshes the new model trained on (other views) and are marked so.

A part the finder does not report scores IoU 0: that is what a user gets.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import mask_iou

# Hand-drawn image polygons (x, y pixel coordinates, 640x480) on milk_cartoon_all_small_clorox.pcd,
# checked on zoomed RGB and depth crops: the handle is the loop between the hole (no depth) and
# the outer edge, the cap the coloured top.
PIXEL_MASKS = {
    "clorox handle": ("handle", [(466, 92), (503, 92), (506, 166), (488, 166), (466, 100)]),
    "clorox cap": ("cap", [(425, 60), (470, 60), (470, 97), (425, 97)]),
    "detergent handle": ("handle", [(140, 185), (160, 178), (186, 195), (199, 215), (199, 248), (178, 248),
                                    (180, 232), (160, 215), (150, 204)]),
    "detergent cap": ("cap", [(90, 130), (152, 130), (152, 178), (90, 178)]),
}
CLOROX_SCAN = "milk_cartoon_all_small_clorox.pcd"
YCB_CASES = [  # (mesh, part, query, held out of training)
    ("019_pitcher_base", "handle", "handle", True),
    ("025_mug", "handle", "handle", False),
    ("035_power_drill", "handle", "grip", False),
    ("006_mustard_bottle", "cap", "cap", False),
    ("021_bleach_cleanser", "cap", "cap", False),
]


@dataclass
class PartCase:
    name: str
    group: str               # what the score is averaged under
    source: str
    points: np.ndarray
    up: np.ndarray
    query: str
    truth: np.ndarray
    note: str = ""
    extras: dict = field(default_factory=dict)


def _toward_camera(normal, points):
    normal = normal / np.linalg.norm(normal)
    return -normal if normal @ (np.zeros(3) - points.mean(axis=0)) < 0 else normal


def _plane_normal(points):
    centred = points - points.mean(axis=0)
    return np.linalg.svd(centred, full_matrices=False)[2][2]


def mosd_cases(scan_dir) -> list:
    from ..pointcloud_io import read_pcd_fields

    path = Path(scan_dir) / "test34.pcd"
    if not path.is_file():
        return []
    xyz, _, _, labels = read_pcd_fields(path)
    table = xyz[(labels == 1) & np.isfinite(xyz).all(axis=1)]
    up = _toward_camera(_plane_normal(table), table)
    mug = np.flatnonzero(labels // 10 == 6)
    return [PartCase("mOSD test34 mug", "mug handle", "real Kinect scan", xyz[mug], up, "handle",
                     labels[mug] == 60, "sub-label 60")]


def _polygon_pixels(polygon, shape) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return MplPath(polygon).contains_points(np.c_[xx.ravel(), yy.ravel()]).reshape(-1)


def clorox_cases(path, finder) -> list:
    from ..pointcloud_io import read_pcd_fields

    path = Path(path)
    if not path.is_file():
        return []
    xyz, shape, colors, _ = read_pcd_fields(path)
    scene = finder.find_parts(xyz.reshape(shape[0], shape[1], 3), ["handle"], scene=True, keypoints=False)
    cases = []
    for name, (part, polygon) in PIXEL_MASKS.items():
        mask = _polygon_pixels(polygon, shape)
        best = max(scene.objects, key=lambda o: mask[o.point_indices].sum(), default=None)
        if best is None or not mask[best.point_indices].any():
            continue
        idx = best.point_indices
        group = "bottle cap" if part == "cap" else "jug handle"
        cases.append(PartCase(f"PCL scan {name}", group, "real Kinect scan", xyz[idx], scene.up, part, mask[idx],
                              "hand-drawn pixel polygon", {"indices": idx, "shape": shape, "colors": colors}))
    return cases


def annotated_bottle_cases(directory) -> list:
    from ..data.engine import read_partnet_mobility_point_sample

    directory = Path(directory)
    if not directory.is_dir():
        return []
    pts, labels = read_partnet_mobility_point_sample(directory)
    up = np.array([0.0, 1.0, 0.0])
    return [PartCase(f"annotated bottle {q}", "bottle lid/neck/body", "human labels (CAD)", pts, up, q, labels == lab)
            for q, lab in (("lid", 7), ("cap", 7), ("neck", 6), ("body", 5))]


def ycb_render_cases(mesh_dir, views: int = 6, seed: int = 7) -> list:
    from ..data.engine import robot_depth_sample
    from ..data.real_meshes import load_ycb
    from ..data.sensors import SENSORS

    meshes = load_ycb(mesh_dir) if Path(mesh_dir).is_dir() else {}
    cases = []
    for stem, part, query, held_out in YCB_CASES:
        if stem not in meshes:
            continue
        shape = meshes[stem]
        rng = np.random.default_rng(seed)
        made = 0
        while made < views:
            sample = robot_depth_sample(shape, None, rng, SENSORS["kinect"], clutter=1)
            if sample is None:
                continue
            truth = sample.labels == shape.part_names.index(part)
            if truth.sum() < 20:  # the part is out of sight in this view
                continue
            made += 1
            group = {"handle": "mug handle", "cap": "bottle cap"}.get(part, part)
            if stem == "035_power_drill":
                group = "drill grip"
            if stem == "019_pitcher_base":
                group = "pitcher handle (held out)"
            cases.append(PartCase(f"YCB {stem} view {made}", group,
                                  "YCB scan, Kinect-model render" + ("" if held_out else " (mesh seen in training)"),
                                  sample.points.astype(np.float64), np.array([0.0, 0.0, 1.0]), query, truth))
    return cases


def collect_cases(data_root, finder, ycb_views: int = 6) -> list:
    """Every case whose data exists under ``data_root`` (the ``../shared/data`` layout)."""
    root = Path(data_root)
    return (mosd_cases(root / "real_scans" / "mosd")
            + clorox_cases(root / "real_scans" / CLOROX_SCAN, finder)
            + annotated_bottle_cases(root / "annotated_shapes" / "partnet_mobility_bottle_3763")
            + ycb_render_cases(root / "meshes" / "ycb", views=ycb_views))


def score_case(finder, case: PartCase) -> dict:
    t0 = time.perf_counter()
    result = finder.find_parts(case.points, [case.query], scene=False, up=case.up, keypoints=False)
    ms = (time.perf_counter() - t0) * 1e3
    pred = result.point_label_array() == 0
    scores = result.point_score_array()
    return {"case": case.name, "group": case.group, "source": case.source, "query": case.query,
            "points": int(len(case.points)), "truth_points": int(case.truth.sum()),
            "iou": mask_iou(pred, case.truth), "reported": bool(pred.any()),
            "mean_score_on_truth": float(scores[case.truth].mean()) if case.truth.any() else None,
            "ms": round(ms, 1), "pred": pred}


def summarize(rows: list) -> dict:
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["iou"])
    return {g: {"cases": len(v), "mean_iou": float(np.mean(v))} for g, v in sorted(groups.items())}


def save_cases_png(cases: list, rows: list, path) -> None:
    """Truth and prediction per case, side views in the case's up frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..inference.preprocess import rotation_to_z

    n = len(cases)
    cols = 4
    fig, axes = plt.subplots(int(np.ceil(n / cols)) * 2, cols, figsize=(4 * cols, 6.4 * np.ceil(n / cols)), squeeze=False)
    for k, (case, row) in enumerate(zip(cases, rows)):
        r, c = 2 * (k // cols), k % cols
        pts = (case.points - case.points.mean(axis=0)) @ rotation_to_z(np.asarray(case.up, float)).T
        for ax, mask, title in ((axes[r, c], case.truth, "truth"), (axes[r + 1, c], row["pred"], f"IoU {row['iou']:.2f}")):
            ax.scatter(pts[~mask, 0], pts[~mask, 2], s=0.5, color="0.7")
            ax.scatter(pts[mask, 0], pts[mask, 2], s=1.5, color="C3")
            ax.set_aspect("equal")
            ax.set_title(f"{case.name}: {case.query} ({title})", fontsize=7)
            ax.set_axis_off()
    for k in range(n, axes.shape[0] // 2 * cols):  # the empty slots of the last row
        axes[2 * (k // cols), k % cols].set_axis_off()
        axes[2 * (k // cols) + 1, k % cols].set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=40)
    plt.close(fig)


def run_real_parts(finder, data_root, out_dir, ycb_views: int = 6, progress: bool = True) -> dict:
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = collect_cases(data_root, finder, ycb_views)
    if not cases:
        raise FileNotFoundError(f"no real development data under {data_root} (expects real_scans/, meshes/ycb/, "
                                "annotated_shapes/)")
    rows = [score_case(finder, c) for c in tqdm(cases, desc="real parts", disable=not progress, unit="case")]
    save_cases_png(cases, rows, out / "real_parts.png")
    report = {"data_root": str(data_root), "summary": summarize(rows),
              "cases": [{k: v for k, v in r.items() if k != "pred"} for r in rows]}
    (out / "real_parts.json").write_text(json.dumps(report, indent=2))
    return report


def format_summary(report: dict) -> str:
    lines = [f"{'group':32s} {'cases':>5s} {'mean IoU':>8s}"]
    for g, s in report["summary"].items():
        lines.append(f"{g:32s} {s['cases']:5d} {s['mean_iou']:8.3f}")
    return "\n".join(lines)


def save_pixel_masks_png(path, scan) -> None:
    """The hand-drawn polygons over the RGB image, for checking them by eye."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..pointcloud_io import read_pcd_fields

    xyz, shape, colors, _ = read_pcd_fields(scan)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    axes[0].imshow(colors.reshape(shape[0], shape[1], 3))
    axes[1].imshow(xyz[:, 2].reshape(shape), cmap="jet")
    for ax in axes:
        for k, (name, (_, poly)) in enumerate(PIXEL_MASKS.items()):
            ax.add_patch(plt.Polygon(poly, fill=False, color=f"C{k}", lw=1.5, label=name))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
