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
    absent: list | None = None  # part names known to be missing (real clutter); None: the vocabulary decides


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


def _part_scene(shape: LabeledMesh):
    """A ray-casting scene of the shape's part meshes, and per geometry id its part index (into
    ``shape.part_names``) and mesh (part instance) index. Geometry added later (table, clutter)
    has neither."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    gid_part, gid_mesh = {}, {}
    for mesh_index, (name, mesh) in enumerate(shape.parts):
        gid = scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        gid_part[gid], gid_mesh[gid] = shape.part_names.index(name), mesh_index
    return scene, gid_part, gid_mesh


def _object_returns(gids: np.ndarray, gid_part: dict, gid_mesh: dict):
    """Which returns hit the object (not table or clutter), and their part and instance indices."""
    on_object = np.array([int(g) in gid_part for g in gids], dtype=bool)
    kept = gids[on_object]
    return (on_object, np.array([gid_part[int(g)] for g in kept], dtype=np.int16),
            np.array([gid_mesh[int(g)] for g in kept], dtype=np.int64))


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

    from .sensors import depth_edges

    scene, gid_part, gid_mesh = _part_scene(shape)
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
    valid &= ~(depth_edges(depth)[0] & (rng.random(valid.shape) < 0.5))
    if valid.sum() < min_points:
        return None
    tt = t[valid] + rng.normal(0, noise, valid.sum()) * t[valid] ** 2  # noise grows with range squared
    pts = r[..., :3][valid] + r[..., 3:][valid] * tt[:, None]
    on_object, labels, instances = _object_returns(hits.geometry_ids[valid], gid_part, gid_mesh)
    if on_object.sum() < min_points:  # table/clutter returns are dropped
        return None
    pts = pts[on_object]
    idx = _resample_index(len(pts), n, rng)
    return Sample(pts[idx].astype(np.float32), labels[idx], shape.part_names, shape.category, "depth",
                  instances[idx])


def _add_clutter(scene, o3d, center, radius, eye, rng, count: int):
    """Boxes and cans on the table around the object, some between it and the camera."""
    for _ in range(count):
        size = radius * rng.uniform(0.3, 0.9)
        if rng.random() < 0.5:  # towards the camera
            spot = center + (eye - center) * rng.uniform(0.15, 0.45) * np.array([1, 1, 0])
        else:
            angle = rng.uniform(0, 2 * np.pi)
            spot = center + radius * rng.uniform(1.1, 2.0) * np.array([np.cos(angle), np.sin(angle), 0])
        spot = spot + rng.normal(0, 0.3 * radius, 3) * [1, 1, 0]
        height = size * rng.uniform(0.6, 2.0)
        if rng.random() < 0.5:
            mesh = o3d.geometry.TriangleMesh.create_box(size, size, height).translate((-size / 2, -size / 2, 0))
        else:
            mesh = o3d.geometry.TriangleMesh.create_cylinder(radius=size / 2, height=height).translate((0, 0, height / 2))
        mesh.translate((spot[0], spot[1], 0.0))
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))


def robot_depth_sample(shape: LabeledMesh, n: int | None, rng, sensor=None, min_points: int = 150,
                       clutter: int = 0, elevation_deg=(20.0, 70.0), distance_m=(0.45, 1.4)) -> Sample | None:
    """One view of the object on a table as a robot's depth camera sees it: real distances
    (0.45-1.4 m) and focal lengths (640x480 intrinsics), looking down 20-70 deg, the sensor's
    noise (``data.sensors``: quantisation, flying pixels, holes, smooth stereo noise), and
    ``clutter`` other objects around it that occlude. Only the window around the object is
    rendered. Table and clutter returns are dropped, as the scene stage drops them."""
    import open3d as o3d

    from .sensors import SENSORS, apply_sensor

    sensor = sensor or SENSORS["kinect"]
    scene, gid_part, gid_mesh = _part_scene(shape)
    center, radius = bounding_sphere(shape)
    elev, azim = np.deg2rad(rng.uniform(*elevation_deg)), rng.uniform(0, 2 * np.pi)
    dist = max(rng.uniform(*distance_m), 2.0 * radius)
    eye = orbit_eye(center, dist, elev, azim)
    pose = look_at(eye, center)
    table = o3d.geometry.TriangleMesh.create_box(20 * radius, 20 * radius, 0.01).translate(
        (center[0] - 10 * radius, center[1] - 10 * radius, -0.01))
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(table))
    if clutter:
        _add_clutter(scene, o3d, center, radius, eye, rng, clutter)
    focal = sensor.focal_px * rng.uniform(0.95, 1.05)
    half = int(min(200, np.ceil(focal * 1.2 * radius / max(dist - radius, 1e-3)))) + 2
    intrinsic = np.array([[focal, 0, half], [0, focal, half], [0, 0, 1]])
    hits = cast_pinhole(scene, intrinsic, pose, 2 * half, 2 * half)
    dirs = hits.rays[..., 3:] / np.linalg.norm(hits.rays[..., 3:], axis=-1, keepdims=True)
    along = dirs @ pose[:3, 2]  # cos between each ray and the optical axis
    t_metric = hits.t * np.linalg.norm(hits.rays[..., 3:], axis=-1)
    depth = np.where(np.isfinite(hits.t), t_metric * along, np.nan)
    noisy = apply_sensor(depth, hits.incidence, sensor, rng)
    valid = np.isfinite(noisy)
    on_object, labels, instances = _object_returns(hits.geometry_ids[valid], gid_part, gid_mesh)
    if on_object.sum() < min_points:
        return None
    pts = eye + dirs[valid][on_object] * (noisy[valid][on_object] / along[valid][on_object])[:, None]
    idx = np.arange(len(pts)) if n is None else _resample_index(len(pts), n, rng)  # None: every return
    return Sample(pts[idx].astype(np.float32), labels[idx], shape.part_names, shape.category, "depth",
                  instances[idx])


def generate_samples(categories, shapes_per_category: int, n_points: int, seed: int, depth_fraction: float = 0.5,
                     progress: bool = True, clutter_fraction: float = 0.0, sensor_fraction: float = 0.0,
                     real_meshes: dict | None = None, real_views: int = 0):
    """Yield samples: for each category, shapes with random proportions, each seen either
    whole or as one depth view, in random yaw. ``sensor_fraction`` of the depth views are
    robot-camera views with a sensor model (``robot_depth_sample``, the family drawn at random),
    else the older close-up views. ``real_meshes`` ({name: LabeledMesh}, e.g. the labelled YCB
    scans) add ``real_views`` rescaled robot-camera views of each mesh."""
    from tqdm import tqdm

    from .sensors import SENSORS

    rng = np.random.default_rng(seed)
    families = list(SENSORS.values())
    jobs = [(c, None) for c in categories for _ in range(shapes_per_category)]
    jobs += [(None, name) for name in sorted(real_meshes or {}) for _ in range(real_views)]
    for category, mesh_name in tqdm(jobs, desc="generating", disable=not progress, unit="shape"):
        if mesh_name is not None:
            from .real_meshes import jitter_shape

            shape = jitter_shape(real_meshes[mesh_name], rng)
            for _ in range(5):  # a view almost always sees enough of a real object
                sample = robot_depth_sample(shape, n_points, rng, families[rng.integers(len(families))],
                                            clutter=int(rng.integers(0, 3)) if rng.random() < clutter_fraction else 0)
                if sample is not None:
                    break
            sample = sample or full_sample(shape, n_points, rng)
        else:
            shape = make_shape(category, rng)
            sample = None
            if rng.random() < depth_fraction:
                occluded = clutter_fraction > 0 and rng.random() < clutter_fraction  # no draw when off
                if sensor_fraction > 0 and rng.random() < sensor_fraction:
                    sample = robot_depth_sample(shape, n_points, rng, families[rng.integers(len(families))],
                                                clutter=int(rng.integers(1, 3)) if occluded else 0)
                else:
                    sample = depth_sample(shape, n_points, rng, table=occluded, clutter=occluded)
            if sample is None:
                sample = full_sample(shape, n_points, rng)
        rot = random_rotation_about_z(rng)
        sample.points = (sample.points @ rot.T).astype(np.float32)
        yield sample


def write_shards(samples, out_dir, shard_size: int = 512, prefix: str = "shard") -> list:
    """Write samples to ``{prefix}_NNNNN.npz`` (+ ``index.json`` for the default prefix); returns
    the shard paths. ``prefix`` adds a second set beside the first (e.g. ``shard_clutter``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, buf = [], []

    def flush():
        if not buf:
            return
        max_parts = max(len(s.part_names) for s in buf)
        names = np.array([s.part_names + [""] * (max_parts - len(s.part_names)) for s in buf])
        path = out_dir / f"{prefix}_{len(paths):05d}.npz"
        extra = {}
        if any(s.absent is not None for s in buf):  # "-" marks "not given" (the vocabulary decides)
            max_absent = max(len(s.absent or ["-"]) for s in buf)
            extra["absent"] = np.array([(s.absent if s.absent is not None else ["-"]) + [""] * (max_absent - len(s.absent or ["-"]))
                                        for s in buf])
        np.savez_compressed(path, points=np.stack([s.points for s in buf]), labels=np.stack([s.labels for s in buf]),
                            part_names=names, category=np.array([s.category for s in buf]),
                            kind=np.array([s.kind for s in buf]), **extra)
        paths.append(path)
        buf.clear()

    count = 0
    for s in samples:
        buf.append(s)
        count += 1
        if len(buf) >= shard_size:
            flush()
    flush()
    index = out_dir / ("index.json" if prefix == "shard" else f"index_{prefix}.json")
    index.write_text(json.dumps({"samples": count, "shards": [p.name for p in paths]}, indent=1))
    return paths


class ShardDataset:
    """All samples of a shard directory in memory (they are small); indexable, len()."""

    def __init__(self, root):
        root = Path(root)
        shards = sorted(root.glob("shard_*.npz"))
        if not shards:
            raise FileNotFoundError(f"no shards in {root}")
        pts, labels, names, cats, kinds, absent = [], [], [], [], [], []
        for path in shards:
            with np.load(path, allow_pickle=False) as d:
                pts.append(d["points"])
                labels.append(d["labels"])
                names += [[n for n in row if n] for row in d["part_names"].tolist()]
                cats += d["category"].tolist()
                kinds += d["kind"].tolist()
                if "absent" in d:
                    absent += [None if row[0] == "-" else [n for n in row if n] for row in d["absent"].tolist()]
                else:
                    absent += [None] * len(d["points"])
        self.points = np.concatenate(pts)
        self.labels = np.concatenate(labels)
        self.part_names, self.categories, self.kinds, self.absent = names, cats, kinds, absent

    def __len__(self):
        return len(self.points)

    def __getitem__(self, i) -> Sample:
        return Sample(self.points[i], self.labels[i], self.part_names[i], self.categories[i], self.kinds[i],
                      absent=self.absent[i])


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
