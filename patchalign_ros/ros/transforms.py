"""Rotations and moving a PartSegmentArray's geometry into another frame (no tf2 needed here:
the node's frames.py looks the transform up)."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .conversions import set_xyz


def quaternion_matrix(q) -> np.ndarray:
    """3x3 rotation of a quaternion (x, y, z, w), as the rest of the package does it (scipy)."""
    return Rotation.from_quat(np.asarray(q, dtype=np.float64)).as_matrix()


def matrix_quaternion(m) -> np.ndarray:
    """(x, y, z, w) of a 3x3 rotation."""
    return Rotation.from_matrix(np.asarray(m, dtype=np.float64)).as_quat()


def transform_segments(msg, rotation: np.ndarray, translation: np.ndarray, frame_id: str):
    """A PartSegmentArray's geometry (centroids, boxes, approach directions, keypoints) moved
    into ``frame_id`` by p' = R p + t, in place. ``cloud_frame_id`` keeps the source cloud's
    frame, which ``point_indices`` refer to."""
    r, t = np.asarray(rotation, dtype=np.float64), np.asarray(translation, dtype=np.float64)

    def point(p):
        set_xyz(p, r @ np.array([p.x, p.y, p.z]) + t)

    def vector(v):
        set_xyz(v, r @ np.array([v.x, v.y, v.z]))

    msg.cloud_frame_id = msg.cloud_frame_id or msg.header.frame_id
    msg.header.frame_id = frame_id
    for seg in msg.segments:
        point(seg.centroid)
        point(seg.box_pose.position)
        o = seg.box_pose.orientation
        q = matrix_quaternion(r @ quaternion_matrix((o.x, o.y, o.z, o.w)))
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        vector(seg.approach)
    for kp in msg.keypoints:
        point(kp.position)
        vector(kp.normal)
        vector(kp.approach)
    return msg
