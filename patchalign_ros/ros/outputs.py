"""What the node publishes: ~/segments (PartSegmentArray), ~/labeled_points, ~/markers,
~/keypoints and, when vision_msgs is installed, ~/detections (Detection3DArray). Lifecycle
publishers: silent while the node is inactive."""
from __future__ import annotations

from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from patchalign_ros.msg import PartSegmentArray

from .conversions import segments_to_detections
from .visuals import keypoint_poses, labeled_cloud, markers


def detection_type():
    """vision_msgs' Detection3DArray, or None when vision_msgs is not installed."""
    try:
        from vision_msgs.msg import Detection3DArray
    except ImportError:
        return None
    return Detection3DArray


class OutputPublishers:
    def __init__(self, node, detections: bool):
        self.node = node
        self.pubs = {
            "segments": node.create_lifecycle_publisher(PartSegmentArray, "~/segments", 10),
            "labeled_points": node.create_lifecycle_publisher(PointCloud2, "~/labeled_points", 2),
            "markers": node.create_lifecycle_publisher(MarkerArray, "~/markers", 2),
            "keypoints": node.create_lifecycle_publisher(PoseArray, "~/keypoints", 10),
        }
        self.detections_note = ""
        if detections:
            kind = detection_type()
            if kind is None:
                self.detections_note = ("vision_msgs is not installed: ~/detections is not published "
                                        "(install ros-<distro>-vision-msgs; PartSegmentArray has the same parts)")
                node.get_logger().warning(self.detections_note)
            else:
                self.pubs["detections"] = node.create_lifecycle_publisher(kind, "~/detections", 10)

    def listened(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in self.pubs.values())

    def publish(self, frame, result, out, marker_lifetime_s: float) -> None:
        """``out``: the PartSegmentArray (already in the output frame); the labelled cloud stays
        in the input's frame, where its points are."""
        pubs = self.pubs
        pubs["segments"].publish(out)
        if pubs["labeled_points"].get_subscription_count():
            pubs["labeled_points"].publish(labeled_cloud(frame.points, result, frame.header, frame.colors))
        pubs["markers"].publish(markers(out, lifetime_s=marker_lifetime_s))
        pubs["keypoints"].publish(keypoint_poses(out))
        if "detections" in pubs:
            pubs["detections"].publish(segments_to_detections(out))

    def destroy(self) -> None:
        for pub in self.pubs.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.pubs = {}
