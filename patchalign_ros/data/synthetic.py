"""Part-labelled objects built from mesh primitives, and tabletop scenes seen by a simulated
pinhole depth camera (open3d RaycastingScene), as organized clouds with NaN for no return.

Shapes are z-up, metres, resting on z = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LabeledMesh:
    category: str
    parts: list  # list of (part name, open3d.geometry.TriangleMesh)

    @property
    def part_names(self) -> list:
        return list(dict.fromkeys(name for name, _ in self.parts))


def _o3d():
    import open3d as o3d

    return o3d


def sample_surface(shape: LabeledMesh, n: int, rng: np.random.Generator, return_instances: bool = False):
    """(points (n, 3), part label index per point into shape.part_names), area-weighted; with
    ``return_instances`` also the index of the mesh (part instance: one of four legs) per point."""
    names = shape.part_names
    areas = np.array([mesh.get_surface_area() for _, mesh in shape.parts])
    counts = rng.multinomial(n, areas / areas.sum())
    pts, labels, instances = [], [], []
    for mesh_index, ((name, mesh), c) in enumerate(zip(shape.parts, counts)):
        if c == 0:
            continue
        v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
        tri_area = 0.5 * np.linalg.norm(np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]), axis=1)
        tri = rng.choice(len(t), c, p=tri_area / tri_area.sum())
        a, b = rng.random((2, c, 1))
        flip = (a + b) > 1
        a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
        p = v[t[tri, 0]] + a * (v[t[tri, 1]] - v[t[tri, 0]]) + b * (v[t[tri, 2]] - v[t[tri, 0]])
        pts.append(p)
        labels.append(np.full(c, names.index(name)))
        instances.append(np.full(c, mesh_index))
    if return_instances:
        return np.concatenate(pts), np.concatenate(labels), np.concatenate(instances)
    return np.concatenate(pts), np.concatenate(labels)


def bounding_sphere(shape: LabeledMesh) -> tuple[np.ndarray, float]:
    """Centre of the shape's bounding box and half its diagonal."""
    verts = np.concatenate([np.asarray(m.vertices) for _, m in shape.parts])
    return (verts.min(0) + verts.max(0)) / 2, float(np.linalg.norm(verts.max(0) - verts.min(0))) / 2


def orbit_eye(center: np.ndarray, distance: float, elevation: float, azimuth: float) -> np.ndarray:
    """A camera position ``distance`` from ``center`` at the given elevation/azimuth (radians)."""
    return center + distance * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                         np.sin(elevation)])


@dataclass
class PinholeHits:
    t: np.ndarray             # (H, W) ray length to the hit, inf where nothing is hit
    rays: np.ndarray          # (H, W, 6) origin and direction per pixel
    geometry_ids: np.ndarray  # (H, W) hit geometry id
    incidence: np.ndarray     # (H, W) |cos| between the ray and the hit surface's normal


def cast_pinhole(scene, intrinsic: np.ndarray, pose: np.ndarray, width: int, height: int) -> PinholeHits:
    """Cast one ray per pixel of a pinhole camera (``pose``: camera-to-world, optical frame)."""
    import open3d as o3d

    rays = scene.create_rays_pinhole(o3d.core.Tensor(intrinsic), o3d.core.Tensor(np.linalg.inv(pose)), width, height)
    hit = scene.cast_rays(rays)
    r = rays.numpy()
    dirs = r[..., 3:] / np.linalg.norm(r[..., 3:], axis=-1, keepdims=True)
    incidence = np.abs((hit["primitive_normals"].numpy() * dirs).sum(-1))
    return PinholeHits(hit["t_hit"].numpy(), r, hit["geometry_ids"].numpy(), incidence)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 camera-to-world pose of an optical-frame camera (z forward, x right, y down)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    pose[:3, 3] = eye
    return pose


@dataclass
class DepthCapture:
    points: np.ndarray        # (H, W, 3) in the camera optical frame, NaN where no return
    object_ids: np.ndarray    # (H, W) object index, -1 table, -2 nothing
    part_labels: np.ndarray   # (H, W) "object:part" index into part_names, -1 none
    part_names: list
    camera_pose: np.ndarray   # camera-to-world


def _placed_parts(shape, category: str, rotation, offset, part_names: list):
    """(mesh turned by ``rotation`` and moved to ``offset``, index of "category:part" in
    ``part_names``, added when new) for each part of ``shape``."""
    o3d = _o3d()
    for name, mesh in shape.parts:
        m = o3d.geometry.TriangleMesh(mesh)
        m.rotate(rotation, center=(0, 0, 0))
        m.translate(offset)
        key = f"{category}:{name}"
        if key not in part_names:
            part_names.append(key)
        yield m, part_names.index(key)


def tabletop_scene(rng: np.random.Generator, categories=("mug", "bottle", "box"), width: int = 640,
                   height: int = 480, noise: float = 0.001, gap: float | None = None,
                   eye=(0.0, -0.55, 0.45), grid_spacing: float | None = None) -> DepthCapture:
    """Objects standing apart on a table, captured by a depth camera looking down at them.
    ``gap``: instead of 22 cm apart, side by side along x with this gap between their
    bounding boxes (0: touching). ``eye``: the camera position (it looks at the scene centre).
    ``grid_spacing``: a cluttered table instead, the objects on a square grid this far apart
    (the table grows to hold them; place ``eye`` to see them all)."""
    from .shapes import make_shape  # shapes builds on LabeledMesh from this module

    o3d = _o3d()
    scene = o3d.t.geometry.RaycastingScene()
    side = int(np.ceil(np.sqrt(len(categories))))
    sx, sy = (1.2, 0.9) if grid_spacing is None else (max(1.2, side * grid_spacing + 0.3),) * 2
    table = o3d.geometry.TriangleMesh.create_box(sx, sy, 0.02)
    table.translate((-sx / 2, -sy / 2, -0.02))
    geom_ids = {scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(table)): (-1, -1)}
    part_names = []
    spacing = 0.22
    cursor = None
    for i, cat in enumerate(categories):
        shape = make_shape(cat, rng)
        offset = np.array([(i - (len(categories) - 1) / 2) * spacing, rng.uniform(-0.05, 0.05), 0.0])
        if grid_spacing is not None:
            offset = np.array([(i % side - (side - 1) / 2) * grid_spacing, (i // side - (side - 1) / 2) * grid_spacing,
                               0.0]) + np.r_[rng.uniform(-0.02, 0.02, 2), 0.0]
        yaw = rng.uniform(0, 2 * np.pi)
        rotation = o3d.geometry.TriangleMesh().get_rotation_matrix_from_xyz((0, 0, yaw))
        if gap is not None:  # pack the objects side by side, centred on y = 0
            verts = np.concatenate([np.asarray(mesh.vertices) for _, mesh in shape.parts]) @ rotation.T
            lo, hi = verts.min(axis=0), verts.max(axis=0)
            cursor = -0.25 if cursor is None else cursor
            offset = np.array([cursor - lo[0], -(lo[1] + hi[1]) / 2, 0.0])
            cursor = offset[0] + hi[0] + gap
        for m, part in _placed_parts(shape, cat, rotation, offset, part_names):
            geom_ids[scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))] = (i, part)
    pose = look_at(eye=eye, target=(0.0, 0.0, 0.05))
    fx = fy = 525.0 * width / 640
    intrinsic = np.array([[fx, 0, width / 2 - 0.5], [0, fy, height / 2 - 0.5], [0, 0, 1]])
    hits = cast_pinhole(scene, intrinsic, pose, width, height)
    t, geom, r = hits.t, hits.geometry_ids, hits.rays
    with np.errstate(invalid="ignore"):  # inf t (no hit) times a zero ray component
        world = r[..., :3] + r[..., 3:] * t[..., None]
        cam = (world - pose[:3, 3]) @ pose[:3, :3]  # world -> optical frame
    # Depth noise grows with range; grazing-angle returns drop out as on real sensors.
    grazing = hits.incidence < 0.12
    cam = cam + rng.normal(0, noise, cam.shape) * (cam[..., 2:3] ** 2)
    valid = np.isfinite(t) & ~grazing
    cam[~valid] = np.nan
    obj = np.full(geom.shape, -2)
    part = np.full(geom.shape, -1)
    for gid, (o, p) in geom_ids.items():
        m = (geom == gid) & valid
        obj[m], part[m] = o, p
    return DepthCapture(cam.astype(np.float32), obj, part, part_names, pose)


@dataclass
class LidarSweep:
    points: np.ndarray        # (N, 3) in the sensor's frame (REP 103: x forward, z up), returns only
    object_ids: np.ndarray    # (N,) object index on the table, -1 table top, -2 room (floor, walls, ...)
    part_labels: np.ndarray   # (N,) "object:part" index into part_names, -1 none
    part_names: list


def lidar_sweep(rng: np.random.Generator, categories=("mug", "bottle", "box"), beams: int = 64,
                azimuth_steps: int = 2048, fov_deg=(-30.0, 10.0), sensor_height: float = 1.0,
                table_distance: float = 0.9, noise: float = 0.003) -> LidarSweep:
    """A 360-degree spinning LiDAR in a 6 x 5 m room: floor, four walls, a 0.75 m table in front
    of the sensor (along +x) with objects on it, a cabinet by a wall. The cloud is in the
    sensor's own frame, z up, as a Velodyne or Ouster driver publishes it."""
    from .shapes import make_shape

    o3d = _o3d()
    scene = o3d.t.geometry.RaycastingScene()
    ids = {}

    def add(mesh, obj, part=-1):
        ids[scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))] = (obj, part)

    floor_z = -sensor_height
    room = [((6.0, 5.0, 0.05), (-2.5, -2.5, floor_z - 0.05)), ((6.0, 0.05, 2.6), (-2.5, -2.55, floor_z)),
            ((6.0, 0.05, 2.6), (-2.5, 2.5, floor_z)), ((0.05, 5.0, 2.6), (-2.55, -2.5, floor_z)),
            ((0.05, 5.0, 2.6), (3.5, -2.5, floor_z)), ((0.5, 0.9, 0.9), (-2.5, 1.0, floor_z))]
    for size, corner in room:
        m = o3d.geometry.TriangleMesh.create_box(*size)
        add(m.translate(corner), -2)
    top_z = floor_z + 0.75
    top = o3d.geometry.TriangleMesh.create_box(0.8, 1.2, 0.03).translate((table_distance - 0.4, -0.6, top_z - 0.03))
    add(top, -1)
    for lx in (table_distance - 0.35, table_distance + 0.3):
        for ly in (-0.55, 0.5):
            add(o3d.geometry.TriangleMesh.create_box(0.05, 0.05, 0.72).translate((lx, ly, floor_z)), -2)
    part_names = []
    for i, cat in enumerate(categories):
        shape = make_shape(cat, rng)
        offset = np.array([table_distance + rng.uniform(-0.1, 0.1), (i - (len(categories) - 1) / 2) * 0.3, top_z])
        rotation = o3d.geometry.TriangleMesh().get_rotation_matrix_from_xyz((0, 0, rng.uniform(0, 2 * np.pi)))
        for m, part in _placed_parts(shape, cat, rotation, offset, part_names):
            add(m, i, part)
    elevation = np.radians(np.linspace(fov_deg[0], fov_deg[1], beams))
    azimuth = np.linspace(-np.pi, np.pi, azimuth_steps, endpoint=False)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    rays = np.concatenate([np.zeros_like(dirs), dirs], axis=1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    t, geom = hit["t_hit"].numpy(), hit["geometry_ids"].numpy()
    ok = np.isfinite(t)
    t = t[ok] + rng.normal(0, noise, int(ok.sum()))  # range noise, as LiDARs have
    points = dirs[ok] * t[:, None]
    obj = np.full(len(points), -2)
    part = np.full(len(points), -1)
    for gid, (o, p) in ids.items():
        m = geom[ok] == gid
        obj[m], part[m] = o, p
    return LidarSweep(points, obj, part, part_names)


def write_pcd(path, points: np.ndarray, binary_compressed: bool = True) -> None:
    """Write an organized (H, W, 3) or (N, 3) cloud as PCD, NaN kept (open3d's writer)."""
    o3d = _o3d()
    pts = points.reshape(-1, 3).astype(np.float64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if not o3d.io.write_point_cloud(str(path), cloud, write_ascii=False, compressed=binary_compressed):
        raise OSError(f"could not write {path}")
    if points.ndim == 3:  # open3d writes WIDTH=N HEIGHT=1; make it organized
        _set_pcd_size(path, points.shape[1], points.shape[0])


def _set_pcd_size(path, width: int, height: int) -> None:
    data = open(path, "rb").read()
    end = data.index(b"DATA")
    end = data.index(b"\n", end) + 1
    lines = data[:end].decode("ascii").splitlines()
    out = [f"WIDTH {width}" if ln.startswith("WIDTH") else f"HEIGHT {height}" if ln.startswith("HEIGHT") else ln
           for ln in lines]
    with open(path, "wb") as fh:
        fh.write(("\n".join(out) + "\n").encode("ascii") + data[end:])
