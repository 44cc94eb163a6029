"""Input adapters: what the node listens to, and how one arrival becomes points.

``CloudInput``: sensor_msgs/PointCloud2 on ``~/input/points``. ``DepthInput``: a depth image on
``~/input/depth`` with its ``~/input/camera_info`` (and ``~/input/color`` when asked), paired
by message_filters' ApproximateTimeSynchronizer, deprojected as depth_image_proc does. Each
topic follows its publishers' QoS (``MatchedSubscription``). Conversion happens on the worker
thread (``to_frame``), so intake stays cheap.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ..depth_image import DepthFormatError, deproject
from ..inference.preprocess import InputError
from .conversions import CloudFormatError, cloud_to_xyz
from .frames import FrameError
from .image_msgs import camera_info_to_intrinsics, image_to_depth, image_to_rgb
from .input_qos import MatchedSubscription

BAD_INPUT = (CloudFormatError, DepthFormatError, InputError, FrameError)  # the input's fault: rejected, said why


@dataclass
class Frame:
    header: object                 # std_msgs/Header of the input (stamp, frame_id)
    points: np.ndarray             # (H, W, 3) organized or (N, 3), NaN where invalid
    colors: np.ndarray | None = None   # (H*W, 3) uint8 RGB, for organized input with colour


class CloudInput:
    kind = "points"

    def __init__(self, node, deliver, group, params):
        self.subscriptions = [MatchedSubscription(node, PointCloud2, "~/input/points", deliver, group, "cloud",
                                                  "a 640x480 cloud is ~5 MB")]

    def to_frame(self, msg) -> Frame:
        return Frame(msg.header, cloud_to_xyz(msg))

    def status(self, stale_s: float) -> str:
        return ""


class DepthInput:
    """Raises ImportError (with what to install) when message_filters is missing."""
    kind = "depth"

    def __init__(self, node, deliver, group, params):
        try:
            import message_filters
        except ImportError as exc:
            raise ImportError("input:=depth needs message_filters (ros-<distro>-message-filters; from the PyPI "
                              "wheels: ../shared/tools/ros2-overlay builds it); input:=points works without it"
                              ) from exc
        self.node, self.params = node, params
        self.filters = [message_filters.SimpleFilter() for _ in range(3 if params("use_color") else 2)]
        kinds = [(Image, "~/input/depth", "depth image", "a 640x480 16UC1 image is 600 KB"),
                 (CameraInfo, "~/input/camera_info", "camera_info", "small"),
                 (Image, "~/input/color", "colour image", "a 640x480 rgb8 image is 900 KB")]
        self.last_stamp = [None] * len(self.filters)
        self.paired_time = 0.0
        self.subscriptions = []
        for i, (f, (msg_type, topic, what, size)) in enumerate(zip(self.filters, kinds)):
            self.subscriptions.append(MatchedSubscription(node, msg_type, topic, self._arrived(i, f), group, what,
                                                          size))
        self.sync = message_filters.ApproximateTimeSynchronizer(self.filters, queue_size=10,
                                                                slop=float(params("sync_slop_s")))
        self.sync.registerCallback(lambda *msgs: self._paired(deliver, msgs))

    def _arrived(self, i, f):
        def callback(msg):
            self.last_stamp[i] = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            f.signalMessage(msg)
        return callback

    def _paired(self, deliver, msgs):
        self.paired_time = time.monotonic()
        deliver(tuple(msgs))

    def to_frame(self, msgs) -> Frame:
        depth_msg, info = msgs[0], msgs[1]
        scale = float(self.params("depth_scale")) or None
        depth = image_to_depth(depth_msg, scale)
        intrinsics = camera_info_to_intrinsics(info)
        points = deproject(depth, intrinsics)
        colors = None
        if len(msgs) > 2:
            rgb = image_to_rgb(msgs[2])
            if rgb.shape[:2] != depth.shape:
                raise DepthFormatError(f"the colour image is {rgb.shape[1]}x{rgb.shape[0]} but the depth image "
                                       f"{depth.shape[1]}x{depth.shape[0]}: register them (aligned_depth_to_color)")
            colors = rgb.reshape(-1, 3)
        return Frame(depth_msg.header, points, colors)

    def status(self, stale_s: float) -> str:
        """Why images arrive but no pair comes out, or ""."""
        arrivals = [s.last_arrival for s in self.subscriptions]
        now = time.monotonic()
        if not all(arrivals) or now - max(arrivals) > stale_s:
            return ""  # a silent topic: MatchedSubscription says so
        if now - self.paired_time <= stale_s:
            return ""
        stamps = [s for s in self.last_stamp if s is not None]
        spread = max(stamps) - min(stamps) if stamps else 0.0
        return (f"depth, camera_info{' and colour' if len(self.filters) > 2 else ''} arrive but none pair up "
                f"within sync_slop_s={float(self.params('sync_slop_s')):g} s (newest stamps {spread:.3f} s apart): "
                "check that the driver stamps them alike, or raise sync_slop_s")


INPUTS = {"points": CloudInput, "depth": DepthInput}
