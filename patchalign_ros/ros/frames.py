"""Frames through tf2, when it is installed: gravity from ``gravity_frame``'s +z, and the
transform of results into ``target_frame`` at the input's stamp (a bounded wait). Without
tf2_ros the node keeps working in the input's frame and says why once."""
from __future__ import annotations

import numpy as np

from .transforms import quaternion_matrix


class FrameError(RuntimeError):
    """A transform that is not available (yet): the frame is skipped, the node goes on."""


class Frames:
    def __init__(self, node, target_frame: str, gravity_frame: str):
        self.node = node
        self.buffer = None
        self.listener = None
        self.reason = ""
        if not (target_frame or gravity_frame):
            return
        try:
            import tf2_ros  # optional: a normal ROS install has it; the PyPI wheels do not
        except ImportError:
            self.reason = ("tf2_ros cannot be imported (install ros-<distro>-tf2-ros; from the PyPI wheels: "
                           "../shared/tools/ros2-overlay)")
            return
        self.buffer = tf2_ros.Buffer()
        # its subscriptions are spun by the node's executor (a reentrant group of their own)
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    @property
    def available(self) -> bool:
        return self.buffer is not None

    def close(self) -> None:
        if self.listener is not None:
            self.listener.unregister()
        self.listener, self.buffer = None, None

    def lookup(self, target: str, source: str, stamp=None, timeout_s: float = 0.0):
        """(R, t) with p_target = R p_source + t, at ``stamp`` (a builtin_interfaces/Time; None:
        the newest), waiting up to ``timeout_s``."""
        if self.buffer is None:
            raise FrameError(f"no transform {source} -> {target}: {self.reason}")
        from rclpy.duration import Duration
        from rclpy.time import Time

        when = Time() if stamp is None else Time.from_msg(stamp)
        try:
            tf = self.buffer.lookup_transform(target, source, when, timeout=Duration(seconds=timeout_s))
        except Exception as exc:  # LookupException, ExtrapolationException, ConnectivityException, ...
            raise FrameError(f"no transform {source} -> {target} at the input's stamp within {timeout_s:g} s: "
                             f"{type(exc).__name__}: {str(exc).strip()[:200]}") from exc
        q, p = tf.transform.rotation, tf.transform.translation
        return quaternion_matrix((q.x, q.y, q.z, q.w)), np.array([p.x, p.y, p.z])

    def up_in(self, frame_id: str, gravity_frame: str) -> np.ndarray:
        """``gravity_frame``'s +z in ``frame_id`` (the newest transform: gravity does not move)."""
        rotation, _ = self.lookup(frame_id, gravity_frame)
        return rotation[:, 2]
