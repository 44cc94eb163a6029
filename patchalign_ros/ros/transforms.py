"""Rotations and moving a PartSegmentArray's geometry into another frame (no tf2 needed here:
the node's frames.py looks the transform up)."""
from __future__ import annotations

import numpy as np

from .conversions import set_xyz

def quaternion_matrix(q) -> np.ndarray:
    """3x3 rotation of a unit quaternion (x, y, z, w)."""
    x, y, z, w = (float(v) for v in q)
    n = x * x + y * y + z * z + w * w
    if n < 1e-12:
        raise ValueError("zero quaternion")
    s = 2.0 / n
    return np.array([[1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
                     [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
                     [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)]])


def matrix_quaternion(m) -> np.ndarray:
    """(x, y, z, w) of a 3x3 rotation (Shepperd's method)."""
    m = np.asarray(m, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q)
    return q / np.linalg.norm(q)


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
