"""sensor_msgs/PointCloud2 <-> numpy and results -> patchalign_ros and vision_msgs messages
(images and camera models: image_msgs.py; moving results into another frame: transforms.py).

Parsing is one ``np.frombuffer`` over the message buffer with a structured dtype built from
``fields`` (any field order, padding, float32/float64 xyz, either byte order); every field and
the buffer length are validated first, so a malformed message raises CloudFormatError with
the reason and never reads out of bounds.
"""
from __future__ import annotations

import numpy as np

# sensor_msgs/PointField datatypes
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_NUMPY_TYPES = {INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2", INT32: "i4", UINT32: "u4",
                FLOAT32: "f4", FLOAT64: "f8"}

MAX_POINTS = 5_000_000  # a guard against absurd width*height claims (10 M points are refused)


class CloudFormatError(ValueError):
    """A PointCloud2 message that cannot be read; the message says why."""


def _xyz_dtype(msg) -> np.dtype:
    fields = {}
    for f in msg.fields:
        if f.name in ("x", "y", "z"):
            if f.name in fields:
                raise CloudFormatError(f"field {f.name!r} appears twice")
            fields[f.name] = f
    missing = [n for n in "xyz" if n not in fields]
    if missing:
        raise CloudFormatError(f"missing field(s) {', '.join(missing)}; have {[f.name for f in msg.fields]}")
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    spans = []
    for name in "xyz":
        f = fields[name]
        if f.datatype not in (FLOAT32, FLOAT64):
            kind = _NUMPY_TYPES.get(f.datatype, f"unknown datatype {f.datatype}")
            raise CloudFormatError(f"field {name!r} must be float32 or float64, got {kind}")
        if f.count != 1:
            raise CloudFormatError(f"field {name!r} has count {f.count}, expected 1")
        size = 4 if f.datatype == FLOAT32 else 8
        if f.offset < 0 or f.offset + size > msg.point_step:
            raise CloudFormatError(f"field {name!r} at offset {f.offset} (+{size}) lies outside point_step "
                                   f"{msg.point_step}")
        spans.append((f.offset, f.offset + size, name))
        names.append(name)
        formats.append(order + _NUMPY_TYPES[f.datatype])
        offsets.append(f.offset)
    spans.sort()
    for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise CloudFormatError(f"fields {an!r} and {bn!r} overlap")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})


def cloud_to_xyz(msg) -> np.ndarray:
    """(height, width, 3) float64 for organized clouds, (width, 3) for unorganized ones.
    NaN/Inf stay as they are (the caller decides what is valid)."""
    height, width, step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    if height == 0 or width == 0:
        raise CloudFormatError(f"empty cloud ({width}x{height})")
    if width * height > MAX_POINTS:
        raise CloudFormatError(f"{width * height} points exceed the limit of {MAX_POINTS}")
    if step <= 0:
        raise CloudFormatError(f"point_step is {step}")
    if row_step < width * step:
        raise CloudFormatError(f"row_step {row_step} is shorter than width*point_step {width * step}")
    dtype = _xyz_dtype(msg)
    data = msg.data
    buf = data if isinstance(data, (bytes, bytearray, memoryview)) else memoryview(data)
    nbytes = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
    if nbytes != row_step * height:
        raise CloudFormatError(f"data has {nbytes} bytes, expected row_step*height = {row_step * height}")
    rows = np.frombuffer(buf, dtype=np.uint8).reshape(height, row_step)[:, : width * step]
    points = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=-1).astype(np.float64)
    return xyz if height > 1 else xyz[0]


def xyz_to_cloud(points: np.ndarray, header=None, extra_fields: dict | None = None):
    """A PointCloud2 (float32 x, y, z + optional extra float32/uint32 fields, little endian)
    from (N, 3) or organized (H, W, 3) points."""
    from sensor_msgs.msg import PointCloud2, PointField

    pts = np.asarray(points)
    height, width = (pts.shape[0], pts.shape[1]) if pts.ndim == 3 else (1, pts.shape[0])
    flat = pts.reshape(-1, 3)
    extra_fields = extra_fields or {}
    names = ["x", "y", "z"] + list(extra_fields)
    formats = ["<f4"] * 3 + ["<u4" if np.asarray(v).dtype.kind in "ui" else "<f4" for v in extra_fields.values()]
    # every field is 4 bytes: the packed records are the rows of one (N, fields) array, filled
    # column by column (a structured array's field writes cost twice as much)
    rec = np.empty((len(flat), len(names)), dtype="<f4")
    rec[:, :3] = flat
    as_uint = rec.view("<u4")
    for k, (values, fmt) in enumerate(zip(extra_fields.values(), formats[3:]), start=3):
        (as_uint if fmt == "<u4" else rec)[:, k] = np.asarray(values).reshape(-1)
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=4 * k, count=1, datatype=UINT32 if f == "<u4" else FLOAT32)
                  for k, (n, f) in enumerate(zip(names, formats))]
    msg.is_bigendian = False
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * width
    msg.is_dense = bool(np.isfinite(flat).all())
    msg.data = rec.tobytes()
    return msg


def set_xyz(target, values) -> None:
    target.x, target.y, target.z = (float(v) for v in values)


def result_to_msg(result, header=None):
    """SegmentationResult -> patchalign_ros/PartSegmentArray (header = the source cloud's)."""
    from patchalign_ros.msg import PartKeypoint, PartSegment, PartSegmentArray

    msg = PartSegmentArray()
    if header is not None:
        msg.header = header
        msg.cloud_frame_id = header.frame_id
    msg.queries = list(result.queries)
    for obj in result.objects:
        for part in obj.parts:
            seg = PartSegment(label=part.label, score=float(part.score), object_id=int(obj.id))
            seg.point_indices = part.point_indices.astype(np.uint32).tolist()
            set_xyz(seg.centroid, part.centroid)
            set_xyz(seg.box_pose.position, part.box_center)
            q = part.box_orientation
            seg.box_pose.orientation.x, seg.box_pose.orientation.y = float(q[0]), float(q[1])
            seg.box_pose.orientation.z, seg.box_pose.orientation.w = float(q[2]), float(q[3])
            set_xyz(seg.box_size, part.box_size)
            set_xyz(seg.approach, part.approach)
            msg.segments.append(seg)
        for kp in obj.keypoints:
            k = PartKeypoint(label=kp.label, score=float(kp.score), object_id=int(obj.id))
            set_xyz(k.position, kp.position)
            set_xyz(k.normal, kp.normal)
            set_xyz(k.approach, kp.approach)
            msg.keypoints.append(k)
    msg.num_objects = len(result.objects)
    msg.num_input_points = int(result.num_points)
    msg.num_valid_points = int(result.num_valid_points)
    t = result.timing_ms
    msg.preprocess_ms = float(t.get("preprocess", 0.0))
    msg.scene_ms = float(t.get("scene", 0.0))
    msg.encoder_ms = float(t.get("encoder", 0.0))
    msg.text_ms = float(t.get("text", 0.0))
    msg.postprocess_ms = float(t.get("postprocess", 0.0))
    msg.total_ms = float(t.get("total", 0.0))
    return msg


def segments_to_detections(msg):
    """vision_msgs/Detection3DArray from a PartSegmentArray: one detection per part (class =
    the query, score, its oriented box in the message's frame); needs vision_msgs."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    out = Detection3DArray()
    out.header = msg.header
    for seg in msg.segments:
        det = Detection3D()
        det.header = msg.header
        det.id = f"{seg.object_id}:{seg.label}"
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = seg.label
        hyp.hypothesis.score = float(seg.score)
        hyp.pose.pose = seg.box_pose
        det.results.append(hyp)
        det.bbox.center = seg.box_pose
        det.bbox.size = seg.box_size
        out.detections.append(det)
    return out
