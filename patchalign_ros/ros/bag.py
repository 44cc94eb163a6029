"""Offline processing of rosbag2 recordings: PointCloud2 in, the node's outputs out.

Reading and writing bags uses the pure-Python ``rosbags`` library (rosbag2_py is not on PyPI);
messages are (de)serialised with rclpy's own CDR code, so a result in the output bag is byte
for byte what the node would publish.
"""
from __future__ import annotations

from pathlib import Path

from ..text import validate_queries

NS = "/patchalign_perception"
OUTPUT_TOPICS = {
    f"{NS}/segments": "patchalign_ros/msg/PartSegmentArray",
    f"{NS}/labeled_points": "sensor_msgs/msg/PointCloud2",
    f"{NS}/markers": "visualization_msgs/msg/MarkerArray",
    f"{NS}/keypoints": "geometry_msgs/msg/PoseArray",
}


def _interface_dir() -> Path:
    """The .msg files of this package: the source tree's, else the installed share/."""
    here = Path(__file__).resolve().parents[2] / "msg"
    if here.is_dir():
        return here
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("patchalign_ros")) / "msg"


def _typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(_interface_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"patchalign_ros/msg/{path.stem}"))
    store.register(types)
    return store


def process_bag(in_bag, out_bag, queries, checkpoint=None, text_encoder=None, topic=None, scene=True,
                keypoints=True, progress=True, reuse_max_age_s: float = 1.0, backend: str = "auto",
                precision: str = "fp32") -> dict:
    """Run part finding on every PointCloud2 of ``in_bag`` (or of ``topic``) and write the
    node's four outputs, stamped like their source messages, to a new bag ``out_bag``.

    As the node runs a stream: the cloud's frame id is its up convention and its memory key, so
    with ``reuse_max_age_s`` > 0 (the node's default, 1 s) a view that did not change keeps its
    scene split and encoder passes (0: every cloud afresh); ``backend`` auto as the node's.
    The returned ``timing`` is per cloud, conversion to the four output messages (bag reading
    and writing excluded)."""
    import time

    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader, Writer
    from sensor_msgs.msg import PointCloud2
    from tqdm import tqdm

    from ..inference.pipeline import PartFinder
    from ..inference.preprocess import InputError
    from .conversions import CloudFormatError, cloud_to_xyz, result_to_msg
    from .visuals import keypoint_poses, labeled_cloud, markers

    queries = validate_queries(queries)
    out_bag = Path(out_bag)
    if out_bag.exists():
        raise FileExistsError(f"output bag {out_bag} exists; choose a new path")
    store = _typestore()
    finder = PartFinder.load(checkpoint, text_encoder=text_encoder, backend=backend, precision=precision)
    finder.set_reuse(reuse_max_age_s)
    stats = {"clouds": 0, "processed": 0, "rejected": 0, "reasons": [],
             "backend": getattr(finder.model.backend, "auto_reason", "") or backend}
    runs, frame_ms = [], []
    with Reader(in_bag) as reader, Writer(out_bag, version=9) as writer:
        clouds = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/PointCloud2"
                  and (topic is None or c.topic == topic)]
        if not clouds:
            raise ValueError(f"no sensor_msgs/msg/PointCloud2 {'on ' + topic if topic else 'topic'} in {in_bag}")
        conns = {t: writer.add_connection(t, mt, typestore=store) for t, mt in OUTPUT_TOPICS.items()}
        total = sum(c.msgcount for c in clouds)
        for _, timestamp, raw in tqdm(reader.messages(connections=clouds), total=total, desc="clouds",
                                      disable=not progress):
            stats["clouds"] += 1
            msg = deserialize_message(bytes(raw), PointCloud2)
            frame_id = msg.header.frame_id
            start = time.perf_counter()
            try:
                xyz = cloud_to_xyz(msg)
                result = finder.find_parts(xyz, queries, scene=scene, keypoints=keypoints, frame=frame_id or "auto",
                                           memory_key=frame_id)
            except (CloudFormatError, InputError) as exc:
                stats["rejected"] += 1
                stats["reasons"].append(str(exc))
                continue
            out = result_to_msg(result, msg.header)
            outputs = ((f"{NS}/segments", out), (f"{NS}/labeled_points", labeled_cloud(xyz, result, msg.header)),
                       (f"{NS}/markers", markers(out)), (f"{NS}/keypoints", keypoint_poses(out)))
            frame_ms.append((time.perf_counter() - start) * 1e3)
            runs.append(result)
            for name, message in outputs:
                writer.write(conns[name], timestamp, serialize_message(message))
            stats["processed"] += 1
    stats["timing"] = stream_timing(runs, frame_ms)
    return stats


def stream_timing(runs: list, frame_ms: list) -> dict | None:
    """Per-cloud cost of a processed stream: end-to-end median and 90th percentile, stage
    medians, and how much came from the last frame (as `bench` counts them). None for no clouds."""
    import numpy as np

    from ..bench import _reuse_counts, _stage_medians

    if not runs:
        return None
    median = float(np.median(frame_ms))
    return {"clouds": len(runs), "median_ms": round(median, 1), "p90_ms": round(float(np.percentile(frame_ms, 90)), 1),
            "hz": round(1e3 / median, 2) if median > 0 else None, "stages_ms": _stage_medians(runs),
            "objects_median": float(np.median([len(r.objects) for r in runs])), **_reuse_counts(runs)}


def format_timing(timing: dict | None) -> str:
    if not timing:
        return "no cloud processed: no timing"
    stages = ", ".join(f"{k} {v}" for k, v in timing["stages_ms"].items() if k != "total")
    return (f"per cloud, conversion to the four outputs: median {timing['median_ms']} ms ({timing['hz']} Hz), "
            f"p90 {timing['p90_ms']} ms over {timing['clouds']} clouds; stages (ms, median): {stages}; "
            f"objects {timing['objects_median']:g}, of them reused {timing['reused_objects_median']:g} (median); "
            f"scene split reused in {100 * timing['scene_reused_share']:.0f}% of clouds")
