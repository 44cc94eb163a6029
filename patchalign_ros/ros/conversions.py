"""sensor_msgs/PointCloud2 and Image / CameraInfo <-> numpy, results -> patchalign_ros and
vision_msgs messages, and moving results into another frame.

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
    rec = np.zeros(len(flat), dtype=np.dtype({"names": names, "formats": formats}))
    rec["x"], rec["y"], rec["z"] = flat[:, 0], flat[:, 1], flat[:, 2]
    for name, values in extra_fields.items():
        rec[name] = np.asarray(values).reshape(-1)
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=rec.dtype.fields[n][1], count=1,
                             datatype=UINT32 if f == "<u4" else FLOAT32) for n, f in zip(names, formats)]
    msg.is_bigendian = False
    msg.point_step = rec.dtype.itemsize
    msg.row_step = msg.point_step * width
    msg.is_dense = bool(np.isfinite(flat).all())
    msg.data = rec.tobytes()
    return msg


def _set_xyz(target, values) -> None:
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
            _set_xyz(seg.centroid, part.centroid)
            _set_xyz(seg.box_pose.position, part.box_center)
            q = part.box_orientation
            seg.box_pose.orientation.x, seg.box_pose.orientation.y = float(q[0]), float(q[1])
            seg.box_pose.orientation.z, seg.box_pose.orientation.w = float(q[2]), float(q[3])
            _set_xyz(seg.box_size, part.box_size)
            _set_xyz(seg.approach, part.approach)
            msg.segments.append(seg)
        for kp in obj.keypoints:
            k = PartKeypoint(label=kp.label, score=float(kp.score), object_id=int(obj.id))
            _set_xyz(k.position, kp.position)
            _set_xyz(k.normal, kp.normal)
            _set_xyz(k.approach, kp.approach)
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


# -- depth input -------------------------------------------------------------------------------
_IMAGE_TYPES = {"16UC1": "u2", "mono16": "u2", "32FC1": "f4", "rgb8": "u1", "bgr8": "u1", "rgba8": "u1",
                "bgra8": "u1", "mono8": "u1", "8UC1": "u1", "16SC1": "i2", "32SC1": "i4"}
SCALED_DEPTH_ENCODINGS = ("mono8", "8UC1", "16SC1", "32SC1")  # only with depth_scale
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}


def _image_array(msg, allowed) -> np.ndarray:
    from ..depth_image import DepthFormatError

    if msg.encoding not in allowed:
        raise DepthFormatError(f"image encoding {msg.encoding!r} is not supported here; use one of "
                               f"{', '.join(allowed)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise DepthFormatError(f"empty image ({w}x{h})")
    channels = _CHANNELS.get(msg.encoding, 1)
    dtype = np.dtype(_IMAGE_TYPES[msg.encoding]).newbyteorder(">" if msg.is_bigendian else "<")
    row = w * channels * dtype.itemsize
    if step < row:
        raise DepthFormatError(f"image step {step} is shorter than width*pixel size {row}")
    data = msg.data
    buf = data if isinstance(data, (bytes, bytearray, memoryview)) else memoryview(data)
    nbytes = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
    if nbytes != step * h:
        raise DepthFormatError(f"image data has {nbytes} bytes, expected step*height = {step * h}")
    rows = np.frombuffer(buf, dtype=np.uint8).reshape(h, step)[:, :row]
    img = np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)
    return img[..., 0] if channels == 1 else img


def image_to_depth(msg, depth_scale: float | None = None) -> np.ndarray:
    """sensor_msgs/Image (16UC1 mm, 32FC1 m, or any integer encoding with ``depth_scale``) ->
    (H, W) metres, NaN without a reading."""
    from ..depth_image import DEPTH_ENCODINGS, DepthFormatError, depth_to_metres

    if msg.encoding not in DEPTH_ENCODINGS:
        if depth_scale is None or msg.encoding not in SCALED_DEPTH_ENCODINGS:
            raise DepthFormatError(f"depth encoding {msg.encoding!r} is not supported; use 16UC1 (mm) or 32FC1 "
                                   f"(m), or set depth_scale for an integer encoding ({', '.join(SCALED_DEPTH_ENCODINGS)})")
        return depth_to_metres(_image_array(msg, SCALED_DEPTH_ENCODINGS), None, depth_scale)
    return depth_to_metres(_image_array(msg, tuple(DEPTH_ENCODINGS)), msg.encoding, depth_scale)


def camera_info_to_intrinsics(msg):
    """sensor_msgs/CameraInfo -> CameraIntrinsics (K, width, height); a zero K is refused."""
    from ..depth_image import CameraIntrinsics

    return CameraIntrinsics.from_k(list(msg.k), int(msg.width), int(msg.height))


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image rgb8 / bgr8 / rgba8 / bgra8 -> (H, W, 3) uint8 RGB."""
    img = _image_array(msg, ("rgb8", "bgr8", "rgba8", "bgra8"))
    img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1] if msg.encoding.startswith("bgr") else img)


def depth_to_image_msg(depth_m: np.ndarray, header=None, millimetres: bool = True):
    """(H, W) metres -> sensor_msgs/Image, 16UC1 millimetres (as drivers publish; NaN -> 0) or 32FC1."""
    from sensor_msgs.msg import Image

    d = np.asarray(depth_m, dtype=np.float64)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = d.shape
    if millimetres:
        data = np.where(np.isfinite(d), np.round(d * 1000.0), 0).clip(0, 65535).astype("<u2")
        msg.encoding, msg.step = "16UC1", 2 * d.shape[1]
    else:
        data = d.astype("<f4")
        msg.encoding, msg.step = "32FC1", 4 * d.shape[1]
    msg.is_bigendian = 0
    msg.data = data.tobytes()
    return msg


def intrinsics_to_camera_info(intrinsics, width: int, height: int, header=None):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in intrinsics.k.reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# -- frames ------------------------------------------------------------------------------------
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
        _set_xyz(p, r @ np.array([p.x, p.y, p.z]) + t)

    def vector(v):
        _set_xyz(v, r @ np.array([v.x, v.y, v.z]))

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
