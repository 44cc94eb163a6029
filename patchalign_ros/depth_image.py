"""Depth images -> organized point clouds, as ROS's depth_image_proc (point_cloud_xyz) does it.

A rectified depth image and its pinhole K give one point per pixel in the camera's optical
frame (x right, y down, z forward): x = (u - cx) z / fx, y = (v - cy) z / fy. Pixels without
a reading (0, NaN, Inf) become NaN, so point indices number pixels row-major, exactly as for
an organized PointCloud2. Encodings follow REP 118: 16UC1 in millimetres, 32FC1 in metres;
``depth_scale`` (metres per unit) covers any other integer encoding. No ROS import here: the
node, the CLI and the evaluation all use it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# encoding -> (numpy dtype, metres per unit); REP 118
DEPTH_ENCODINGS = {"16UC1": ("u2", 0.001), "mono16": ("u2", 0.001), "32FC1": ("f4", 1.0)}
MAX_PIXELS = 5_000_000  # the same guard as for clouds


class DepthFormatError(ValueError):
    """A depth image or camera model that cannot be used; the message says why."""


@dataclass(frozen=True)
class CameraIntrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int = 0   # 0: not known (then any image size is accepted)
    height: int = 0

    def __post_init__(self):
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in values):
            raise DepthFormatError(f"camera intrinsics must be finite, got fx={self.fx} fy={self.fy} "
                                   f"cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise DepthFormatError(f"focal lengths must be positive (an all-zero K means the camera is not "
                                   f"calibrated), got fx={self.fx} fy={self.fy}")

    @classmethod
    def from_k(cls, k, width: int = 0, height: int = 0) -> "CameraIntrinsics":
        """From a 3x3 K (or its 9 values row-major, as sensor_msgs/CameraInfo.k)."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise DepthFormatError(f"K must have 9 values, got {k.size}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    @property
    def k(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def silhouette(points: np.ndarray, k, shape, closing: int = 2) -> np.ndarray:
    """(H, W) bool: the pixels ``points`` (optical frame, (N, 3)) fall on through the 3x3 K,
    closed by ``closing`` iterations so that the gaps between projected points fill in."""
    from scipy.ndimage import binary_closing

    k = np.asarray(k, dtype=np.float64)
    h, w = shape
    p = np.asarray(points, dtype=np.float64)
    u = np.round(p[:, 0] * k[0, 0] / p[:, 2] + k[0, 2]).astype(int)
    v = np.round(p[:, 1] * k[1, 1] / p[:, 2] + k[1, 2]).astype(int)
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    hit = np.zeros((h, w), dtype=bool)
    hit[v[ok], u[ok]] = True
    return binary_closing(hit, iterations=closing) if closing else hit


def depth_to_metres(depth: np.ndarray, encoding: str | None = None, depth_scale: float | None = None) -> np.ndarray:
    """float64 metres, NaN where there is no reading. ``depth_scale`` (metres per unit)
    overrides the encoding's; without an encoding, integer images are millimetres and float
    images metres (what drivers publish as 16UC1 / 32FC1)."""
    d = np.asarray(depth)
    if d.ndim != 2:
        raise DepthFormatError(f"a depth image has one channel, got shape {d.shape}")
    if d.size == 0:
        raise DepthFormatError("empty depth image")
    if d.size > MAX_PIXELS:
        raise DepthFormatError(f"{d.size} pixels exceed the limit of {MAX_PIXELS}")
    if encoding is not None and encoding not in DEPTH_ENCODINGS and depth_scale is None:
        raise DepthFormatError(f"unknown depth encoding {encoding!r}; supported: {', '.join(DEPTH_ENCODINGS)} "
                               "(set depth_scale, metres per unit, for another integer encoding)")
    if depth_scale is not None and not (np.isfinite(depth_scale) and depth_scale > 0):
        raise DepthFormatError(f"depth_scale must be a positive number of metres per unit, got {depth_scale!r}")
    if d.dtype.kind in "ui":
        scale = depth_scale if depth_scale is not None else (DEPTH_ENCODINGS[encoding][1] if encoding else 0.001)
    elif d.dtype.kind == "f":
        scale = depth_scale if depth_scale is not None else 1.0
    else:
        raise DepthFormatError(f"depth must be integer or float, got {d.dtype}")
    z = d.astype(np.float64) * scale
    z[~np.isfinite(z) | (z <= 0)] = np.nan
    return z


def deproject(depth: np.ndarray, intrinsics: CameraIntrinsics, encoding: str | None = None,
              depth_scale: float | None = None) -> np.ndarray:
    """(H, W, 3) float64 points in the optical frame, NaN for pixels without depth."""
    z = depth_to_metres(depth, encoding, depth_scale)
    h, w = z.shape
    if intrinsics.width and intrinsics.height and (intrinsics.width, intrinsics.height) != (w, h):
        raise DepthFormatError(f"the depth image is {w}x{h} but the camera model is "
                               f"{intrinsics.width}x{intrinsics.height} (a different stream or binning?)")
    u = (np.arange(w, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(h, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    out = np.empty((h, w, 3))
    out[..., 0] = z * u[None, :]
    out[..., 1] = z * v[:, None]
    out[..., 2] = z
    return out


def load_depth(path) -> np.ndarray:
    """A depth image file: 16-bit PNG (millimetres, as drivers record 16UC1) or .npy (integer
    millimetres or float metres)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no depth image at {path}")
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DepthFormatError(f"cannot read {path} as a depth array: {exc}") from exc
        return data
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
                raise DepthFormatError(f"{path} is a {img.mode} image, not a one-channel depth image")
            data = np.array(img)
    except DepthFormatError:
        raise
    except Exception as exc:
        raise DepthFormatError(f"cannot read {path} as an image: {exc}") from exc
    return data.astype(np.uint16) if data.dtype.kind in "ui" else data


def load_intrinsics(text: str) -> CameraIntrinsics:
    """``fx,fy,cx,cy`` or a file: a ROS camera_calibration YAML (``camera_matrix: {data: [...]}``,
    ``image_width``/``image_height``), a YAML/JSON with ``k`` (a CameraInfo dump) or
    ``fx, fy, cx, cy``, or a .npy 3x3 K."""
    path = Path(text)
    if not path.is_file():
        parts = text.split(",")
        if len(parts) != 4:
            raise DepthFormatError(f"intrinsics must be fx,fy,cx,cy or a camera-info file, got {text!r}")
        try:
            return CameraIntrinsics(*(float(p) for p in parts))
        except ValueError as exc:
            raise DepthFormatError(f"intrinsics must be four numbers: {exc}") from exc
    if path.suffix.lower() == ".npy":
        return CameraIntrinsics.from_k(np.load(path, allow_pickle=False))
    import yaml

    raw = path.read_text()
    data = json.loads(raw) if path.suffix.lower() == ".json" else yaml.safe_load(raw)
    if not isinstance(data, dict):
        raise DepthFormatError(f"{path}: expected a mapping")
    width, height = int(data.get("image_width", data.get("width", 0)) or 0), \
        int(data.get("image_height", data.get("height", 0)) or 0)
    if isinstance(data.get("camera_matrix"), dict):
        return CameraIntrinsics.from_k(data["camera_matrix"].get("data", []), width, height)
    for key in ("k", "K", "intrinsics_matrix"):
        if key in data:
            return CameraIntrinsics.from_k(data[key], width, height)
    if all(key in data for key in ("fx", "fy", "cx", "cy")):
        return CameraIntrinsics(float(data["fx"]), float(data["fy"]), float(data["cx"]), float(data["cy"]),
                                width, height)
    raise DepthFormatError(f"{path}: no camera_matrix, k or fx/fy/cx/cy")
