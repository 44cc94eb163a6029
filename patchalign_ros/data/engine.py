"""The data engine: part-labelled samples from the shape library, seen as a whole surface or
as a single-view depth capture, written to npz shards and read back for training.

A sample is ``points`` (N, 3) float32 (z-up, object frame), ``labels`` (N,) int16 indices into
``part_names`` (the shape's canonical part names), and its ``category``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .shapes import make_shape
from .synthetic import LabeledMesh, bounding_sphere, cast_pinhole, look_at, orbit_eye, sample_surface


@dataclass
class Sample:
    points: np.ndarray
    labels: np.ndarray
    part_names: list
    category: str
    kind: str  # "full" | "depth"
    instances: np.ndarray | None = None  # (N,) part-instance (mesh) index, when known


def random_rotation_about_z(rng, max_tilt_deg: float = 8.0) -> np.ndarray:
    """Random yaw plus a small tilt: headings do not matter, gravity is roughly known."""
    from scipy.spatial.transform import Rotation

    tilt = np.deg2rad(max_tilt_deg)
    return Rotation.from_euler("zxy", [rng.uniform(0, 2 * np.pi), rng.uniform(-tilt, tilt),
                                       rng.uniform(-tilt, tilt)]).as_matrix()


def _resample_index(total, n, rng):
    if total >= n:
        return rng.choice(total, n, replace=False)
    return np.concatenate([np.arange(total), rng.choice(total, n - total)])


def full_sample(shape: LabeledMesh, n: int, rng) -> Sample:
    pts, lab, inst = sample_surface(shape, n, rng, return_instances=True)
    return Sample(pts.astype(np.float32), lab.astype(np.int16), shape.part_names, shape.category, "full", inst)


def depth_sample(shape: LabeledMesh, n: int, rng, width: int = 200, height: int = 150,
                 noise: float = 0.0015, min_points: int = 200, table: bool = False,
                 clutter: bool = False) -> Sample | None:
    """Ray-cast one view of the object from a random viewpoint above the table, with depth
    noise growing with range, dropout at grazing angles and depth edges. None if too little is
    seen. Points are returned in the object frame (z-up), as the scene pipeline delivers them.

    ``table`` puts the object on a table plane and ``clutter`` a box between camera and object:
    their returns are dropped (plane removal and clustering separate them in a real scene),
    but they hide parts of the object as real ones do."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    names = shape.part_names
    gid_part, gid_mesh = {}, {}
    for mesh_index, (name, mesh) in enumerate(shape.parts):
        gid = scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        gid_part[gid], gid_mesh[gid] = names.index(name), mesh_index
    center, radius = bounding_sphere(shape)
    elev, azim = np.deg2rad(rng.uniform(10, 65)), rng.uniform(0, 2 * np.pi)  # draw order fixes the datasets
    dist = radius * rng.uniform(2.2, 3.5)
    eye = orbit_eye(center, dist, elev, azim)
    pose = look_at(eye, center)
    if table:
        plane = o3d.geometry.TriangleMesh.create_box(8 * radius, 8 * radius, 0.01).translate(
            (center[0] - 4 * radius, center[1] - 4 * radius, -0.01))
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(plane))
    if clutter:  # a box part-way along the line of sight, off to one side
        size = radius * rng.uniform(0.4, 0.9)
        spot = center + (eye - center) * rng.uniform(0.35, 0.6) + rng.normal(0, 0.5 * radius, 3) * [1, 1, 0]
        box = o3d.geometry.TriangleMesh.create_box(size, size, size).translate(
            (spot[0] - size / 2, spot[1] - size / 2, max(0.0, spot[2] - size)))
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(box))
    f = width / (2 * np.tan(np.deg2rad(rng.uniform(25, 35))))
    intrinsic = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    hits = cast_pinhole(scene, intrinsic, pose, width, height)
    t, r = hits.t, hits.rays
    valid = np.isfinite(t)
    valid &= hits.incidence > rng.uniform(0.05, 0.2)  # grazing returns drop out
    depth = np.where(valid, t, np.nan)
    # Depth edges lose returns on real sensors (mixed pixels): drop pixels next to a jump.
    pad = np.pad(depth, 1, constant_values=np.nan)
    jumps = np.zeros_like(valid)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = pad[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        jumps |= ~np.isfinite(nb) | (np.abs(nb - depth) > 0.02 * np.nan_to_num(depth, nan=1.0))
    valid &= ~(jumps & (rng.random(valid.shape) < 0.5))
    if valid.sum() < min_points:
        return None
    tt = t[valid] + rng.normal(0, noise, valid.sum()) * t[valid] ** 2  # noise grows with range squared
    pts = r[..., :3][valid] + r[..., 3:][valid] * tt[:, None]
    gids = hits.geometry_ids[valid]
    on_object = np.array([int(g) in gid_part for g in gids], dtype=bool)  # table/clutter returns dropped
    if on_object.sum() < min_points:
        return None
    pts, tt, gids = pts[on_object], tt[on_object], gids[on_object]
    labels = np.array([gid_part[int(g)] for g in gids], dtype=np.int16)
    instances = np.array([gid_mesh[int(g)] for g in gids], dtype=np.int64)
    idx = _resample_index(len(pts), n, rng)
    return Sample(pts[idx].astype(np.float32), labels[idx], names, shape.category, "depth", instances[idx])


def generate_samples(categories, shapes_per_category: int, n_points: int, seed: int, depth_fraction: float = 0.5,
                     progress: bool = True, clutter_fraction: float = 0.0):
    """Yield samples: for each category, shapes with random proportions, each seen either
    whole or as one depth view, in random yaw."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    jobs = [(c, i) for c in categories for i in range(shapes_per_category)]
    for category, _ in tqdm(jobs, desc="generating", disable=not progress, unit="shape"):
        shape = make_shape(category, rng)
        sample = None
        if rng.random() < depth_fraction:
            occluded = clutter_fraction > 0 and rng.random() < clutter_fraction  # no draw when off
            sample = depth_sample(shape, n_points, rng, table=occluded, clutter=occluded)
        if sample is None:
            sample = full_sample(shape, n_points, rng)
        rot = random_rotation_about_z(rng)
        sample.points = (sample.points @ rot.T).astype(np.float32)
        yield sample


def write_shards(samples, out_dir, shard_size: int = 512) -> list:
    """Write samples to ``shard_NNNNN.npz`` (+ ``index.json``); returns the shard paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, buf = [], []

    def flush():
        if not buf:
            return
        max_parts = max(len(s.part_names) for s in buf)
        names = np.array([s.part_names + [""] * (max_parts - len(s.part_names)) for s in buf])
        path = out_dir / f"shard_{len(paths):05d}.npz"
        np.savez_compressed(path, points=np.stack([s.points for s in buf]), labels=np.stack([s.labels for s in buf]),
                            part_names=names, category=np.array([s.category for s in buf]),
                            kind=np.array([s.kind for s in buf]))
        paths.append(path)
        buf.clear()

    count = 0
    for s in samples:
        buf.append(s)
        count += 1
        if len(buf) >= shard_size:
            flush()
    flush()
    (out_dir / "index.json").write_text(json.dumps({"samples": count, "shards": [p.name for p in paths]}, indent=1))
    return paths


class ShardDataset:
    """All samples of a shard directory in memory (they are small); indexable, len()."""

    def __init__(self, root):
        root = Path(root)
        shards = sorted(root.glob("shard_*.npz"))
        if not shards:
            raise FileNotFoundError(f"no shards in {root}")
        pts, labels, names, cats, kinds = [], [], [], [], []
        for path in shards:
            with np.load(path, allow_pickle=False) as d:
                pts.append(d["points"])
                labels.append(d["labels"])
                names += [[n for n in row if n] for row in d["part_names"].tolist()]
                cats += d["category"].tolist()
                kinds += d["kind"].tolist()
        self.points = np.concatenate(pts)
        self.labels = np.concatenate(labels)
        self.part_names, self.categories, self.kinds = names, cats, kinds

    def __len__(self):
        return len(self.points)

    def __getitem__(self, i) -> Sample:
        return Sample(self.points[i], self.labels[i], self.part_names[i], self.categories[i], self.kinds[i])


# --- readers for public part datasets (formats users have) ---------------------------------
def read_shapenetpart_txt(path) -> tuple[np.ndarray, np.ndarray]:
    """ShapeNetPart ``v0_normal`` file: rows ``x y z nx ny nz part_label``."""
    data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if data.shape[1] != 7:
        raise ValueError(f"{path}: expected 7 columns (xyz, normal, label), got {data.shape[1]}")
    return data[:, :3].astype(np.float32), data[:, 6].astype(np.int64)


def read_partnet_mobility_point_sample(directory) -> tuple[np.ndarray, np.ndarray]:
    """PartNet-Mobility ``point_sample/``: ``pts-10000.txt`` (x y z) and ``label-10000.txt``."""
    directory = Path(directory)
    pts_file = next(iter(sorted(directory.glob("pts-*.txt"))), None)
    lab_file = next(iter(sorted(directory.glob("label-*.txt"))), None)
    if pts_file is None or lab_file is None:
        raise FileNotFoundError(f"{directory}: expected pts-*.txt and label-*.txt")
    pts = np.loadtxt(pts_file, dtype=np.float32, ndmin=2)[:, :3]
    labels = np.loadtxt(lab_file, dtype=np.int64, ndmin=1)
    if len(labels) != len(pts):
        raise ValueError(f"{directory}: {len(pts)} points but {len(labels)} labels")
    return pts, labels


def read_keypointnet_json(path) -> dict:
    """KeypointNet annotations (a list of {"class_id", "model_id", "keypoints": [{"xyz",
    "semantic_id", "pcd_info"...}]}) -> {model_id: [(semantic_id, xyz), ...]}."""
    entries = json.loads(Path(path).read_text())
    out = {}
    for entry in entries:
        kps = [(int(k["semantic_id"]), np.asarray(k["xyz"], dtype=np.float32)) for k in entry.get("keypoints", [])]
        out[str(entry["model_id"])] = kps
    return out
