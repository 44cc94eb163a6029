"""RViz outputs of a result: a labelled PointCloud2, a MarkerArray and keypoint poses."""
from __future__ import annotations

import numpy as np

from .conversions import xyz_to_cloud


def _palette(n: int) -> np.ndarray:
    from ..visualize import label_colors

    return label_colors(max(n, 1))


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) 0-255 colours -> (N,) uint32 0x00RRGGBB."""
    c = np.asarray(rgb).astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def labeled_cloud(xyz: np.ndarray, result, header, colors: np.ndarray | None = None):
    """Valid points with x, y, z, rgb (packed float, as RViz expects), label (-1 none), score.
    ``colors`` ((N, 3) uint8, the camera's): what unlabelled points show; else grey."""
    from ..inference.preprocess import valid_indices

    flat = xyz.reshape(-1, 3)
    valid = valid_indices(flat)  # the pipeline's own test of a valid point
    labels = result.point_label_array()[valid]
    scores = result.point_score_array()[valid]
    packed = _pack_rgb(_palette(len(result.queries)) * 255)
    if colors is None:
        rgb = np.full(len(valid), _pack_rgb(np.array([[150, 150, 150]]))[0], dtype=np.uint32)
    else:
        rgb = _pack_rgb(np.asarray(colors).reshape(-1, 3)[valid])
    mask = labels >= 0
    rgb[mask] = packed[labels[mask]]
    rgb = rgb.view(np.float32)  # uint32 already: the packed bits, read as the float RViz expects
    return xyz_to_cloud(flat[valid], header,
                        extra_fields={"rgb": rgb, "label": labels.astype(np.int64).astype(np.float32),
                                      "score": scores.astype(np.float32)})


def approach_quaternion(approach) -> tuple:
    """Quaternion (x, y, z, w) turning +x onto the approach direction (identity if unknown)."""
    v = np.asarray(approach, dtype=np.float64)
    n = np.linalg.norm(v)
    if n < 1e-9:
        return (0.0, 0.0, 0.0, 1.0)
    v = v / n
    x = np.array([1.0, 0.0, 0.0])
    c = float(np.dot(x, v))
    if c < -0.999999:
        return (0.0, 0.0, 1.0, 0.0)  # 180 degrees about z
    axis = np.cross(x, v)
    q = np.array([axis[0], axis[1], axis[2], 1.0 + c])
    q /= np.linalg.norm(q)
    return tuple(float(a) for a in q)


def keypoint_poses(segments_msg):
    from geometry_msgs.msg import Pose, PoseArray

    out = PoseArray(header=segments_msg.header)
    for kp in segments_msg.keypoints:
        pose = Pose()
        pose.position = kp.position
        a = (kp.approach.x, kp.approach.y, kp.approach.z)
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = approach_quaternion(a)
        out.poses.append(pose)
    return out


def markers(segments_msg, lifetime_s: float = 0.0):
    """DELETEALL first (stale markers vanish), then a box and a text label per part and a
    sphere per keypoint, coloured like the labelled cloud."""
    from builtin_interfaces.msg import Duration
    from visualization_msgs.msg import Marker, MarkerArray

    header = segments_msg.header
    palette = _palette(len(segments_msg.queries))
    color_of = {q: palette[i] for i, q in enumerate(segments_msg.queries)}
    life = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    for i, seg in enumerate(segments_msg.segments):
        rgb = color_of.get(seg.label, (0.9, 0.9, 0.9))
        box = Marker(header=header, ns="part_boxes", id=i, type=Marker.CUBE, action=Marker.ADD, lifetime=life)
        box.pose = seg.box_pose
        box.scale.x, box.scale.y, box.scale.z = (max(v, 0.002) for v in (seg.box_size.x, seg.box_size.y, seg.box_size.z))
        box.color.r, box.color.g, box.color.b, box.color.a = float(rgb[0]), float(rgb[1]), float(rgb[2]), 0.35
        text = Marker(header=header, ns="part_labels", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                      lifetime=life, text=f"{seg.label} {seg.score:.2f}")
        text.pose.position.x, text.pose.position.y = seg.centroid.x, seg.centroid.y
        text.pose.position.z = seg.centroid.z
        text.pose.orientation.w = 1.0
        text.scale.z = 0.03
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        out.markers += [box, text]
    for i, kp in enumerate(segments_msg.keypoints):
        rgb = color_of.get(kp.label, (1.0, 1.0, 1.0))
        s = Marker(header=header, ns="keypoints", id=i, type=Marker.SPHERE, action=Marker.ADD, lifetime=life)
        s.pose.position = kp.position
        s.pose.orientation.w = 1.0
        s.scale.x = s.scale.y = s.scale.z = 0.015
        s.color.r, s.color.g, s.color.b, s.color.a = float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0
        out.markers.append(s)
    return out
