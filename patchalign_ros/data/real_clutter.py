"""Training samples cut from the *tune* split of the real development captures
(``evaluation.real_captures``): each labelled object, gravity-aligned by its table, in random
yaw. Objects known to lack a part give all-negative targets for it (``Sample.absent``: a box has
no handle, no cap); the yellow container's labelled lug handles are real positive handles, and
upright tins and canisters give real lids (their top 1.5 cm, when it holds at least 15 % of the
object's points and spans the object's footprint: a tin on its side or standing on its edge shows
its lid sideways and is left out, ``evaluation.real_captures.lid_band``). The held-out split is
never read here.
"""
from __future__ import annotations

import numpy as np

from .engine import Sample, _resample_index, random_rotation_about_z

HANDLE_LIKE = ["handle", "spout", "knob", "trigger", "blade", "nozzle", "button"]
CLOSURE_LIKE = ["cap", "lid"]


def clutter_samples(data_root, n_points: int, views: int, seed: int = 0, progress: bool = True) -> list:
    from tqdm import tqdm

    from ..evaluation.real_captures import lid_band, load_captures, table_up
    from ..inference.preprocess import rotation_to_z

    rng = np.random.default_rng(seed)
    out = []
    for cap in tqdm(load_captures(data_root, splits=("tune",)), desc="real clutter", disable=not progress,
                    unit="capture"):
        up = table_up(cap)
        if up is None:
            continue
        rot = rotation_to_z(up)
        pts_all = cap.cloud.reshape(-1, 3)
        finite = np.isfinite(pts_all).all(axis=1)
        handle_mask = cap.part_masks.get("handle")
        for k, truth in sorted(cap.truth.items()):
            sel = (cap.object_id == k) & finite
            if sel.sum() < 100:
                continue
            absent = (HANDLE_LIKE if truth["handle"] is False else []) + (CLOSURE_LIKE if truth["closure"] is False else [])
            labels = np.zeros(int(sel.sum()), dtype=np.int16)
            names = ["body"]
            if truth["handle"] is True:
                if handle_mask is None or not handle_mask[sel].any():
                    continue  # a handle we cannot mask: no targets for it
                labels[handle_mask[sel]] = 1
                names = ["body", "handle"]
                absent = [a for a in HANDLE_LIKE if a not in ("handle", "knob")]
            elif truth["closure"] is True:
                lid = lid_band(pts_all[sel], up)
                if lid is None:
                    continue  # not upright: no lid mask from the height rule
                labels[lid] = 1
                names = ["body", "lid"]
            elif not absent:
                continue
            pts = (pts_all[sel] - pts_all[sel].mean(axis=0)) @ rot.T
            for _ in range(views):
                idx = _resample_index(len(pts), n_points, rng)
                yaw = random_rotation_about_z(rng, max_tilt_deg=3.0)
                out.append(Sample((pts[idx] @ yaw.T).astype(np.float32), labels[idx], names,
                                  f"real {cap.source}", "real", absent=absent or None))
    return out


# Scanned YCB objects without handles (and, where listed, without caps or lids): negatives in
# robot-camera views through the sensor models. 004_sugar_box is left out: a held-out RealSense
# frame shows that box.
_BOTH = HANDLE_LIKE + CLOSURE_LIKE
YCB_NEGATIVES = {
    "002_master_chef_can": HANDLE_LIKE, "003_cracker_box": _BOTH, "005_tomato_soup_can": HANDLE_LIKE,
    "007_tuna_fish_can": HANDLE_LIKE, "008_pudding_box": _BOTH, "009_gelatin_box": _BOTH,
    "010_potted_meat_can": HANDLE_LIKE, "011_banana": _BOTH, "012_strawberry": _BOTH, "013_apple": _BOTH,
    "014_lemon": _BOTH, "017_orange": _BOTH, "024_bowl": _BOTH, "026_sponge": _BOTH, "029_plate": _BOTH,
    "036_wood_block": _BOTH, "053_mini_soccer_ball": _BOTH, "055_baseball": _BOTH, "056_tennis_ball": _BOTH,
    "061_foam_brick": _BOTH, "065-a_cups": _BOTH, "065-e_cups": _BOTH, "065-j_cups": _BOTH,
    "077_rubiks_cube": _BOTH,
}


def ycb_negative_samples(mesh_dir, n_points: int, views: int, seed: int = 0, progress: bool = True) -> list:
    """``views`` robot-camera views (random sensor family, 0-2 occluders) of each YCB_NEGATIVES
    scan found in ``mesh_dir``, one part ("body"), with its absent parts."""
    from pathlib import Path

    import open3d as o3d
    from tqdm import tqdm

    from .engine import robot_depth_sample
    from .real_meshes import jitter_shape
    from .sensors import SENSORS
    from .synthetic import LabeledMesh

    rng = np.random.default_rng(seed)
    families = list(SENSORS.values())
    out = []
    found = [(stem, absent) for stem, absent in YCB_NEGATIVES.items() if (Path(mesh_dir) / f"{stem}.ply").is_file()]
    for stem, absent in tqdm(found, desc="YCB negatives", disable=not progress, unit="mesh"):
        mesh = o3d.io.read_triangle_mesh(str(Path(mesh_dir) / f"{stem}.ply"))
        if len(mesh.triangles) == 0:
            continue
        base = LabeledMesh(f"ycb {stem}", [("body", mesh)])
        made = 0
        for _ in range(3 * views):
            if made >= views:
                break
            sample = robot_depth_sample(jitter_shape(base, rng), n_points, rng, families[rng.integers(len(families))],
                                        clutter=int(rng.integers(0, 3)))
            if sample is None:
                continue
            yaw = random_rotation_about_z(rng)
            sample.points = (sample.points @ yaw.T).astype(np.float32)
            sample.kind, sample.absent = "real", list(absent)
            out.append(sample)
            made += 1
    return out
