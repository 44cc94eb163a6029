"""Scene mode: crop, voxel downsample, dominant plane removal, Euclidean clustering (open3d).

Works on the caller's valid points and returns each object as indices into them, so labels
map back to the source cloud. The support plane's normal is returned as the scene's "up"
(a free gravity estimate for tabletop scenes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SceneConfig:
    crop_min: list = field(default_factory=lambda: [-float("inf")] * 3)  # caller frame, metres
    crop_max: list = field(default_factory=lambda: [float("inf")] * 3)
    voxel_size: float = 0.01
    plane_distance: float = 0.01        # RANSAC inlier distance
    plane_min_fraction: float = 0.15    # a plane must hold this share of the points to be removed
    plane_iterations: int = 200
    cluster_eps: float = 0.02           # DBSCAN neighbour distance
    cluster_min_points: int = 6         # DBSCAN core size in voxels (a 2 cm disc of 1 cm voxels holds ~12)
    min_object_points: int = 100        # full-resolution points
    min_object_extent: float = 0.03     # largest side of the object's box, metres
    max_object_extent: float = 1.0
    max_objects: int = 8
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict | None) -> "SceneConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown scene settings: {', '.join(unknown)}")
        return cls(**data)


@dataclass
class SceneSegmentation:
    objects: list            # list of index arrays into the points given to segment()
    plane: np.ndarray | None  # (a, b, c, d) with (a, b, c) the unit normal pointing "up"
    up: np.ndarray | None


def _voxel_groups(points: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """(representative index per voxel, voxel id per point)."""
    if voxel <= 0:
        return np.arange(len(points)), np.arange(len(points))
    keys = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


class SceneSegmenter:
    def __init__(self, config: SceneConfig | None = None):
        self.config = config or SceneConfig()

    def segment(self, points: np.ndarray, sensor_origin=(0.0, 0.0, 0.0)) -> SceneSegmentation:
        import open3d as o3d

        cfg = self.config
        points = np.asarray(points, dtype=np.float64)
        keep = np.flatnonzero(np.all((points >= cfg.crop_min) & (points <= cfg.crop_max), axis=1))
        if len(keep) < cfg.min_object_points:
            return SceneSegmentation([], None, None)
        cropped = points[keep]
        reps, voxel_of = _voxel_groups(cropped, cfg.voxel_size)
        down = cropped[reps]
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(down))

        plane, up = None, None
        keep_voxel = np.ones(len(down), dtype=bool)
        if len(down) >= 3:
            o3d.utility.random.seed(cfg.seed)
            model, inliers = cloud.segment_plane(cfg.plane_distance, 3, cfg.plane_iterations)
            if len(inliers) >= cfg.plane_min_fraction * len(down):
                plane = np.asarray(model, dtype=np.float64)
                plane /= np.linalg.norm(plane[:3])
                # Orient the normal towards the sensor: a camera looks at a table from above.
                if np.dot(plane[:3], sensor_origin) + plane[3] < 0:
                    plane = -plane
                up = plane[:3].copy()
                signed = down @ plane[:3] + plane[3]
                keep_voxel = signed > cfg.plane_distance  # drop the plane and what lies beneath it
        voxel_ids = np.flatnonzero(keep_voxel)
        if len(voxel_ids) == 0:
            return SceneSegmentation([], plane, up)
        sub = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(down[voxel_ids]))
        labels = np.asarray(sub.cluster_dbscan(cfg.cluster_eps, cfg.cluster_min_points, print_progress=False))
        voxel_label = np.full(len(down), -1, dtype=np.int64)
        voxel_label[voxel_ids] = labels
        point_label = voxel_label[voxel_of]

        objects = []
        for lab in range(labels.max() + 1 if len(labels) else 0):
            members = keep[point_label == lab]
            if len(members) < cfg.min_object_points:
                continue
            pts = points[members]
            extent = float((pts.max(axis=0) - pts.min(axis=0)).max())
            if not cfg.min_object_extent <= extent <= cfg.max_object_extent:
                continue
            objects.append(members)
        # Nearest objects first: they are the ones a robot reaches for.
        objects.sort(key=lambda m: float(np.linalg.norm(points[m].mean(axis=0) - np.asarray(sensor_origin))))
        return SceneSegmentation(objects[:cfg.max_objects], plane, up)
