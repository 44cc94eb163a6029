"""Reading point clouds from files: .pcd (ascii/binary/binary_compressed, organized), .ply,
.npy, .npz. Points come back in file order, NaN rows kept, so indices match the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class PointCloudReadError(ValueError):
    """A file cannot be read as a point cloud."""


def _pcd_header(path: Path) -> dict:
    header = {}
    with open(path, "rb") as fh:
        for _ in range(64):
            line = fh.readline()
            if not line:
                break
            text = line.decode("ascii", "replace").strip()
            if not text or text.startswith("#"):
                continue
            key, _, value = text.partition(" ")
            header[key.upper()] = value.strip()
            if key.upper() == "DATA":
                break
    if "DATA" not in header or "FIELDS" not in header:
        raise PointCloudReadError(f"{path}: not a PCD file (no FIELDS/DATA header)")
    return header


def _read_pcd(path: Path):
    header = _pcd_header(path)
    width, height = int(header.get("WIDTH", 0)), int(header.get("HEIGHT", 1))
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path), format="pcd", remove_nan_points=False,
                                    remove_infinite_points=False)
    pts = np.asarray(cloud.points)
    if len(pts) != width * height:
        raise PointCloudReadError(f"{path}: header says {width}x{height} points, read {len(pts)}")
    shape = (height, width) if height > 1 else None
    return pts, shape


def _read_ply(path: Path):
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path), format="ply", remove_nan_points=False,
                                    remove_infinite_points=False)
    pts = np.asarray(cloud.points)
    if len(pts) == 0:  # maybe a mesh without a vertex-only reading
        mesh = o3d.io.read_triangle_mesh(str(path))
        pts = np.asarray(mesh.vertices)
    return pts, None


def _from_array(arr: np.ndarray, path: Path):
    if arr.dtype.names:  # structured array with x, y, z fields
        if not {"x", "y", "z"} <= set(arr.dtype.names):
            raise PointCloudReadError(f"{path}: structured array without x, y, z fields")
        shape = arr.shape if arr.ndim == 2 else None
        arr = np.stack([arr["x"], arr["y"], arr["z"]], axis=-1)
    else:
        shape = None
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        shape = arr.shape[:2]
        arr = arr.reshape(-1, arr.shape[-1])
    elif arr.ndim == 3:
        arr = arr.reshape(-1, 3)
    if arr.ndim != 2 or arr.shape[1] < 3 or arr.dtype.kind not in "fiu":
        raise PointCloudReadError(f"{path}: expected an (N, 3) or (H, W, 3) numeric array, got {arr.shape} {arr.dtype}")
    return np.asarray(arr[:, :3], dtype=np.float64), shape


def read_pcd_fields(path) -> tuple[np.ndarray, tuple[int, int] | None, np.ndarray | None, np.ndarray | None]:
    """(points, organized shape, colours (N, 3) uint8 or None, per-point ``label`` field or None)
    of a PCD file, in file order with NaN rows kept (open3d's tensor reader keeps extra fields)."""
    path = Path(path)
    if not path.is_file():
        raise PointCloudReadError(f"file not found: {path}")
    header = _pcd_header(path)
    width, height = int(header.get("WIDTH", 0)), int(header.get("HEIGHT", 1))
    import open3d as o3d

    try:
        cloud = o3d.t.io.read_point_cloud(str(path), format="pcd", remove_nan_points=False,
                                          remove_infinite_points=False)
    except Exception as exc:
        raise PointCloudReadError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if "positions" not in cloud.point:
        raise PointCloudReadError(f"{path}: no x, y, z fields")
    pts = cloud.point["positions"].numpy().astype(np.float64)
    if len(pts) != width * height:
        raise PointCloudReadError(f"{path}: header says {width}x{height} points, read {len(pts)}")
    colors = cloud.point["colors"].numpy() if "colors" in cloud.point else None
    if colors is not None and colors.dtype != np.uint8:  # float colours in [0, 1]
        colors = np.clip(np.asarray(colors, dtype=np.float64) * 255.0, 0, 255).astype(np.uint8)
    labels = cloud.point["label"].numpy().reshape(-1).astype(np.int64) if "label" in cloud.point else None
    return pts, ((height, width) if height > 1 else None), colors, labels


def read_point_cloud_with_colors(path) -> tuple[np.ndarray, tuple[int, int] | None, np.ndarray | None]:
    """Like ``read_point_cloud``, plus colours (N, 3) uint8 where the file has them (PCD, PLY)."""
    path = Path(path)
    if path.suffix.lower() == ".pcd":
        pts, shape, colors, _ = read_pcd_fields(path)
        return pts, shape, colors
    pts, shape = read_point_cloud(path)
    colors = None
    if path.suffix.lower() == ".ply":
        import open3d as o3d

        cloud = o3d.io.read_point_cloud(str(path), format="ply", remove_nan_points=False,
                                        remove_infinite_points=False)
        if cloud.has_colors() and len(cloud.colors) == len(pts):
            colors = np.clip(np.asarray(cloud.colors) * 255.0, 0, 255).astype(np.uint8)
    return pts, shape, colors


def read_point_cloud(path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(points (N, 3) float64 in file order with NaN rows kept, organized (H, W) or None)."""
    path = Path(path)
    if not path.is_file():
        raise PointCloudReadError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".pcd":
            return _read_pcd(path)
        if suffix == ".ply":
            return _read_ply(path)
        if suffix == ".npy":
            return _from_array(np.load(path, allow_pickle=False), path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                for key in ("points", "xyz", "pos", "coords"):
                    if key in data.files:
                        return _from_array(data[key], path)
                if len(data.files) == 1:
                    return _from_array(data[data.files[0]], path)
                raise PointCloudReadError(f"{path}: no 'points' array among {data.files}")
    except PointCloudReadError:
        raise
    except Exception as exc:  # numpy/open3d/zip errors on corrupt files
        raise PointCloudReadError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    raise PointCloudReadError(f"unsupported file type {suffix!r} ({path}); use .pcd, .ply, .npy or .npz")
