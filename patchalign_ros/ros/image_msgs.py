"""sensor_msgs/Image and CameraInfo <-> numpy: depth images (REP 118 encodings), colour images
and camera models, every size and encoding checked first (a bad message raises
DepthFormatError with the reason and never reads out of bounds)."""
from __future__ import annotations

import numpy as np

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
