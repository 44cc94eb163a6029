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

from .metrics import mask_iou, sampling_seeds

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


SENSOR_OF_SOURCE = {"mOSD test": "Kinect", "mOSD learn": "Kinect", "RealSense": "RealSense"}
CLOSURE_QUERY = {"mustard": "cap"}  # what a user calls the closure; "lid" for tins and canisters


def capture_cases(data_root, splits=("held-out",)) -> list:
    """Object-mode cases from the labelled real captures (``real_captures``): every object with a
    part mask — mOSD test34's mug handle (its sub-label), the mOSD learn lug handles, the RealSense
    mug handles and closures (``realsense_part_masks``) — and every upright tin or canister known
    to have a lid (the top 1.5 cm, ``lid_band``). The object's own points, up = its table's normal.
    Group: part, sensor and split, so that held-out numbers are read apart. Also every object
    known to lack a handle or a closure, asked for it (part "no handle" / "no closure", an empty
    mask): anything reported there is a false part."""
    from .presence import _majority
    from .real_captures import lid_band, load_captures, table_up

    cases = []
    for capture in load_captures(data_root, splits):
        up = table_up(capture)
        if up is None:
            continue
        pts_all = capture.cloud.reshape(-1, 3)
        finite = np.isfinite(pts_all).all(axis=1)
        sensor = SENSOR_OF_SOURCE[capture.source]
        for attr, mask in capture.part_masks.items():
            owner = _majority(capture.object_id[mask])[0]
            idx = np.flatnonzero((capture.object_id == owner) & finite)
            query = "handle" if attr == "handle" else CLOSURE_QUERY.get(capture.name, "lid")
            cases.append(PartCase(f"{capture.name} {attr}", f"{attr} · {sensor} · {capture.split}",
                                  f"real {sensor} capture", pts_all[idx], up, query, mask[idx], "part mask",
                                  {"split": capture.split, "sensor": sensor, "part": attr}))
        cases += _negative_cases(capture, pts_all, finite, up, sensor)
        if capture.source == "RealSense":
            continue  # their closures are masked above
        for k, truth in sorted(capture.truth.items()):
            idx = np.flatnonzero((capture.object_id == k) & finite)
            if truth["closure"] is not True or len(idx) < 100:
                continue
            lid = lid_band(pts_all[idx], up)
            if lid is not None:
                cases.append(PartCase(f"{capture.name} object {k} lid", f"closure · {sensor} · {capture.split}",
                                      f"real {sensor} capture", pts_all[idx], up, "lid", lid, "top 1.5 cm",
                                      {"split": capture.split, "sensor": sensor, "part": "closure"}))
    return cases


NEGATIVE_QUERY = {"handle": "handle", "closure": "lid"}
PART_LESS = "no "  # the part name, and so the group key, of objects known to lack the part


def _part_less(key: str) -> bool:
    return key.startswith(PART_LESS)


def _negative_cases(capture, pts_all, finite, up, sensor) -> list:
    """Objects of ``capture`` known to lack a handle or a closure, each asked for it alone (those
    smaller than the scene stage's smallest object left out)."""
    from ..inference.scene import SceneConfig

    cases = []
    for k, truth in sorted(capture.truth.items()):
        idx = np.flatnonzero((capture.object_id == k) & finite)
        if len(idx) < SceneConfig.min_object_points:
            continue
        for attr, query in NEGATIVE_QUERY.items():
            if truth.get(attr) is False:
                part = PART_LESS + attr
                cases.append(PartCase(f"{capture.name} object {k} {part}", f"{part} · {sensor} · {capture.split}",
                                      f"real {sensor} capture", pts_all[idx], up, query, np.zeros(len(idx), bool),
                                      "known to lack it", {"split": capture.split, "sensor": sensor, "part": part}))
    return cases


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
    return (capture_cases(root, ("held-out",))
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
            "mean_score_on_truth": round(float(scores[case.truth].mean()), 4) if case.truth.any() else None,
            "false_points": int((pred & ~case.truth).sum()), "ms": round(ms, 1), "pred": pred}


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


# What users call each masked part (the vocabulary check): every word is scored on every case.
PART_WORDS = {"handle": ["handle", "grip"], "closure": ["lid", "cap", "top"], "tip": ["tip"], "spout": ["spout"]}
PART_WORDS.update({PART_LESS + part: PART_WORDS[part] for part in NEGATIVE_QUERY})
# Scanned meshes no model was trained on (``MeshRule.train`` False) rendered through the fitted
# sensor models: real geometry, simulated sensors, so reported as their own "sensor".
RENDER_SENSORS = {"Kinect model": "kinect", "RealSense model": "active_stereo_filtered"}


def ycb_held_out_cases(mesh_dir, views: int = 4, seed: int = 11) -> list:
    """Object-mode cases from the held-out YCB meshes (the pitcher and the tools with handles:
    fork, screwdrivers, clamps): for every part of ``PART_WORDS`` the mesh has, ``views``
    robot-camera renders per sensor model with that part in sight (one clutter object occluding)."""
    from ..data.engine import robot_depth_sample
    from ..data.real_meshes import YCB_RULES, load_ycb
    from ..data.sensors import SENSORS

    if not Path(mesh_dir).is_dir():
        return []
    meshes = load_ycb(mesh_dir)
    cases = []
    for stem, shape in meshes.items():
        if YCB_RULES[stem].train:
            continue
        parts = [p for p in shape.part_names if p in PART_WORDS]
        kind = "pitcher" if shape.category == "pitcher" else "tools"  # a mug-like handle, or a tool's
        for part in parts:
            for sensor_name, sensor in RENDER_SENSORS.items():
                rng = np.random.default_rng(seed)
                made = tries = 0
                while made < views and tries < 20 * views:
                    tries += 1
                    sample = robot_depth_sample(shape, None, rng, SENSORS[sensor], clutter=1)
                    if sample is None:
                        continue
                    truth = sample.labels == shape.part_names.index(part)
                    if truth.sum() < 20:
                        continue  # the part is out of sight in this view
                    made += 1
                    sensor_label = f"YCB {kind}, {sensor_name}"
                    cases.append(PartCase(f"YCB {stem} {part} view {made}", f"{part} · {sensor_label} · held-out",
                                          f"YCB scan (held out of training), {sensor_name} render",
                                          sample.points.astype(np.float64), np.array([0.0, 0.0, 1.0]), part, truth,
                                          "part rule", {"split": "held-out", "sensor": sensor_label, "part": part}))
    return cases


def run_capture_parts(finders: dict, data_root, out_dir, splits=("held-out",), words: bool = False,
                      progress: bool = True, seeds: int = 1) -> dict:
    """Object-mode part IoU on the labelled real captures (``capture_cases``) and, with the
    held-out split, renders of the held-out YCB meshes (``ycb_held_out_cases``), for each model
    of ``finders`` ({label: PartFinder}), grouped by part, sensor and split; with ``words`` every
    name of ``PART_WORDS`` is asked on every case, else the case's own query. ``seeds`` > 1: every
    case is scored with the sampling seeds 0..seeds-1 (each object's random sample of its points)
    and a group's numbers are the means over the seeds, with the seeds' range: one sample can
    land far from the mean (a held-out mug's handle: 0.00-0.83). Writes ``parts_report.json``
    and ``parts_iou.png``."""
    from dataclasses import replace

    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = capture_cases(data_root, splits)
    if "held-out" in splits:
        cases += ycb_held_out_cases(Path(data_root) / "meshes" / "ycb")
    if not cases:
        raise FileNotFoundError(f"no labelled real captures of split(s) {list(splits)} under {data_root}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    report = {"data_root": str(data_root), "splits": list(splits), "seeds": seeds, "models": {}}
    for label, finder in finders.items():
        rows = []
        for case in tqdm(cases, desc=f"parts {label}", disable=not progress, unit="case"):
            for word in (PART_WORDS[case.extras["part"]] if words else [case.query]):
                for seed in sampling_seeds(finder, seeds):  # the caller's seed is left as it was
                    row = score_case(finder, replace(case, query=word))
                    row.pop("pred")
                    row.update({"word": word, "seed": seed, **case.extras})
                    rows.append(row)
        summary = {}
        for r in rows:
            key = f"{r['part']} · {r['sensor']} · {r['split']}" + (f" · \"{r['word']}\"" if words else "")
            summary.setdefault(key, {}).setdefault(r["seed"], []).append(r)
        report["models"][label] = {"summary": {k: _summarize_group(k, v) for k, v in sorted(summary.items())},
                                   "cases": rows}
    # compact: with several seeds and every word the per-case rows run to megabytes indented
    (out / "parts_report.json").write_text(json.dumps(report, separators=(",", ":")) + "\n")
    save_parts_png(report, out / "parts_iou.png")
    return report


def _group_summary(by_seed: dict) -> dict:
    """A group's cases per seed -> mean IoU and found (means over the seeds; with more than one
    seed also the per-seed mean IoUs and their range)."""
    means = [float(np.mean(v)) for v in by_seed.values()]
    found = [int(sum(x > 0 for x in v)) for v in by_seed.values()]
    out = {"cases": len(next(iter(by_seed.values()))), "mean_iou": round(float(np.mean(means)), 3),
           "found": found[0] if len(found) == 1 else round(float(np.mean(found)), 1)}
    if len(means) > 1:
        out.update({"seeds": len(means), "mean_iou_per_seed": [round(m, 3) for m in means],
                    "mean_iou_range": [round(min(means), 3), round(max(means), 3)]})
    return out


def _summarize_group(key: str, by_seed: dict) -> dict:
    """{seed: rows} of one group -> its summary: false reports for the part-less groups, IoU else."""
    if _part_less(key):
        return _negative_summary(by_seed)
    return _group_summary({seed: [r["iou"] for r in rows] for seed, rows in by_seed.items()})


def _negative_summary(by_seed: dict) -> dict:
    """A group of objects without the part, per seed their rows -> false reports (objects a part
    was reported on) and false points, means over the seeds (with several, the range too)."""
    false = [sum(r["reported"] for r in v) for v in by_seed.values()]
    points = [sum(r["false_points"] for r in v) for v in by_seed.values()]
    out = {"cases": len(next(iter(by_seed.values()))), "false_reports": round(float(np.mean(false)), 1),
           "false_points": round(float(np.mean(points)), 1)}
    if len(false) > 1:
        out.update({"seeds": len(false), "false_reports_per_seed": false,
                    "false_reports_range": [min(false), max(false)]})
    return out


def _cell(c: dict | None) -> str:
    if not c:
        return "-"
    if "false_reports" in c:
        spread = f" [{c['false_reports_range'][0]}-{c['false_reports_range'][1]}]" if "false_reports_range" in c else ""
        return f"false {c['false_reports']:g}/{c['cases']}{spread}"
    if "mean_iou_range" not in c:
        return f"{c['mean_iou']:.3f} ({c['found']}/{c['cases']})"
    return f"{c['mean_iou']:.3f} [{c['mean_iou_range'][0]:.2f}-{c['mean_iou_range'][1]:.2f}] ({c['found']:g}/{c['cases']})"


def format_capture_parts(report: dict) -> str:
    labels = list(report["models"])
    keys = sorted({k for m in report["models"].values() for k in m["summary"]})
    seeds = report.get("seeds", 1)
    width = 22 if seeds == 1 else 30
    head = "mean IoU (found)" if seeds == 1 else f"mean of {seeds} seeds [range] (found)"
    lines = [f"{'part · sensor · split':44s} {'cases':>5s} " + " ".join(f"{m[:width]:>{width}s}" for m in labels),
             f"{'':44s} {'':5s} " + " ".join(f"{head:>{width}s}" for _ in labels)]
    for k in keys:
        cells = [report["models"][m]["summary"].get(k) for m in labels]
        n = next(c["cases"] for c in cells if c)
        lines.append(f"{k:44s} {n:5d} " + " ".join(f"{_cell(c):>{width}s}" for c in cells))
    if any(_part_less(k) for k in keys):
        lines.append("(\"no ...\" rows: objects known to lack the part, asked for it; false N/M: a part was "
                     "reported on N of M, mean over the seeds [range])")
    return "\n".join(lines)


def save_parts_png(report: dict, path) -> None:
    """Mean IoU per group, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["models"])
    every = sorted({k for m in report["models"].values() for k in m["summary"]})
    keys = [k for k in every if not _part_less(k)]
    negative = [k for k in every if _part_less(k)]
    fig, axes = plt.subplots(1, 2 if negative else 1, figsize=(max(6, 0.9 * len(every) * len(labels)), 4.5),
                             squeeze=False, gridspec_kw={"width_ratios": [max(len(keys), 1), len(negative)] if negative else [1]})
    ax = axes[0, 0]
    width = 0.8 / max(len(labels), 1)
    for j, m in enumerate(labels):
        cells = [report["models"][m]["summary"].get(k, {}) for k in keys]
        vals = [c.get("mean_iou", 0.0) for c in cells]
        spread = None  # with several seeds: whiskers over the seeds' range
        if any("mean_iou_range" in c for c in cells):
            spread = np.array([[v - c.get("mean_iou_range", [v, v])[0], c.get("mean_iou_range", [v, v])[1] - v]
                               for v, c in zip(vals, cells)]).T
        ax.bar(np.arange(len(keys)) + j * width, vals, width, label=m, yerr=spread, capsize=2)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2)
    ax.set_xticklabels([k.replace(" · ", "\n") for k in keys], fontsize=7)
    ax.set_ylabel("object-mode part IoU (mean)")
    ax.set_ylim(0, 1)
    seeds = report.get("seeds", 1)
    ax.set_title(f"real captures, split(s) {', '.join(report['splits'])}"
                 + (f"; mean of {seeds} sampling seeds, whiskers their range" if seeds > 1 else ""), fontsize=9)
    ax.legend(fontsize=7)
    if negative:  # the mistakes beside the hits: share of part-less objects given the part
        neg = axes[0, 1]
        for j, m in enumerate(labels):
            cells = [report["models"][m]["summary"].get(k, {}) for k in negative]
            neg.bar(np.arange(len(negative)) + j * width,
                    [c.get("false_reports", 0.0) / max(c.get("cases", 1), 1) for c in cells], width, label=m)
        neg.set_xticks(np.arange(len(negative)) + 0.4 - width / 2)
        neg.set_xticklabels([k.replace(" · ", "\n") for k in negative], fontsize=7)
        neg.set_ylabel("share of part-less objects given the part")
        neg.set_ylim(0, max(0.1, neg.get_ylim()[1]))
        neg.set_title("false parts (lower is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_capture_masks_png(data_root, path) -> list:
    """Each RealSense frame's part mask (``realsense_part_masks``) painted over its RGB crop, beside
    the plain crop, for checking the rules by eye; the names drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .real_captures import load_captures

    masked = [c for c in load_captures(data_root) if c.source == "RealSense" and c.part_masks]
    if not masked:
        raise FileNotFoundError(f"no RealSense frames with part masks under {data_root}/real_scans/realsense_6dof")
    fig, axes = plt.subplots(2, len(masked), figsize=(2.6 * len(masked), 5.6), squeeze=False)
    h, w = masked[0].cloud.shape[:2]
    for j, capture in enumerate(masked):
        ((attr, mask),) = capture.part_masks.items()
        ys, xs = np.divmod(np.flatnonzero(capture.object_id == 2), w)
        crop = (slice(max(ys.min() - 10, 0), ys.max() + 10), slice(max(xs.min() - 10, 0), xs.max() + 10))
        image = capture.colors.reshape(h, w, 3).astype(float)
        painted = image.copy()
        painted[mask.reshape(h, w)] = 0.4 * painted[mask.reshape(h, w)] + 0.6 * np.array([0.0, 255.0, 0.0])
        for row, picture in enumerate((image, painted)):
            axes[row, j].imshow(picture[crop].astype(np.uint8))
            axes[row, j].set_axis_off()
        axes[0, j].set_title(f"{capture.name} ({capture.split})", fontsize=8)
        axes[1, j].set_title(f"{attr}: {int(mask.sum())} points", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return [c.name for c in masked]


def save_lid_masks_png(data_root, path, columns: int = 9) -> dict:
    """Every Kinect tin or canister with a lid in view, its RGB crop with the top band painted:
    green where it is the lid mask (``lid_band``), red where the band is rejected (the tin lies on
    its side or stands on its edge: a strip of its side, not its lid), with the band's footprint
    coverage. Returns {"kept": [...], "rejected": [...]} as "capture/object" names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..visualize import save_figure_small
    from .real_captures import LID_BAND, footprint_coverage, lid_band, load_captures, table_up

    tiles, out = [], {"kept": [], "rejected": []}
    for capture in load_captures(data_root):
        up = table_up(capture)
        if capture.source == "RealSense" or up is None or capture.colors is None:
            continue
        pts_all = capture.cloud.reshape(-1, 3)
        finite = np.isfinite(pts_all).all(axis=1)
        for k, truth in sorted(capture.truth.items()):
            idx = np.flatnonzero((capture.object_id == k) & finite)
            if truth["closure"] is not True or len(idx) < 100:
                continue
            pts = pts_all[idx]
            height = pts @ up
            band = height >= height.max() - LID_BAND
            mask = lid_band(pts, up)
            cover = footprint_coverage(pts, band, up).min()
            name = f"{capture.name}/{k}"
            out["kept" if mask is not None else "rejected"].append(name)
            tiles.append((capture, idx, band, mask is not None,
                          f"{name} ({capture.split})\n{'lid' if mask is not None else 'no mask'}: "
                          f"band {band.mean():.2f}, cover {cover:.2f}"))
    if not tiles:
        raise FileNotFoundError(f"no Kinect captures with lids under {data_root}/real_scans")
    rows = -(-len(tiles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (capture, idx, band, kept, title) in zip(axes.ravel(), tiles):
        h, w = capture.cloud.shape[:2]
        ys, xs = np.divmod(idx, w)
        crop = (slice(max(ys.min() - 8, 0), ys.max() + 8), slice(max(xs.min() - 8, 0), xs.max() + 8))
        image = capture.colors.reshape(-1, 3).astype(float)
        image[idx[band]] = 0.4 * image[idx[band]] + 0.6 * np.array([0.0, 255.0, 0.0] if kept else [255.0, 0.0, 0.0])
        ax.imshow(image.reshape(h, w, 3)[crop].astype(np.uint8))
        ax.set_title(title, fontsize=7, color="black" if kept else "red")
    fig.tight_layout()
    save_figure_small(fig, path, dpi=48)
    plt.close(fig)
    return out
