"""The perception node's parameters: names, defaults, descriptions, ranges and choices, one
validation used at start-up and for every live change, and their mapping onto the inference
settings. No node state here."""
from __future__ import annotations

import math

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..text import validate_queries

NODE_NAME = "patchalign_perception"

# name -> (default, description). Scene settings map onto SceneConfig fields.
PARAMETERS = {
    "checkpoint": ("", "a registered model name (python -m patchalign_ros models list) or weights (.safetensors + "
                       ".json or an official .pt); empty: the bundled default"),
    "model_registry": ("", "your own model registry YAML (adds to the shipped models/registry.yaml)"),
    "backend": ("auto", "encoder backend: auto (the fastest accurate one on this machine, measured once and cached) | torch | onnxruntime | tensorrt | torch-eager"),
    "precision": ("fp32", "fp32 | fp16 (CUDA, TensorRT) | bf16 (CPUs with AVX-512 bf16)"),
    "device": ("cpu", "torch device: cpu | cuda"),
    "text_encoder": ("", "minilm | sentence-transformers:DIR | openclip:MODEL@CKPT; empty: the model's own"),
    "input": ("points", "points: PointCloud2 on ~/input/points | depth: a depth image on ~/input/depth with "
                        "~/input/camera_info (and ~/input/color when use_color)"),
    "use_color": (False, "depth input: also synchronise a colour image on ~/input/color (rgb8 / bgr8) for the "
                         "labelled cloud"),
    "depth_scale": (0.0, "depth input: metres per unit of the depth image; 0: from its encoding (16UC1 mm, "
                         "32FC1 m)"),
    "sync_slop_s": (0.05, "depth input: largest stamp difference between a depth image and its camera_info / "
                          "colour image"),
    "queries": (["handle"], "part names published continuously on ~/segments (empty: only on request)"),
    "score_threshold": (0.5, "part probability below this is background"),
    "part_min_mean_score": (0.7, "a part is reported on an object only when its points' mean probability "
                                 "reaches this (object-level evidence)"),
    "max_part_fraction": (0.9, "a part covering more of an object than this is not reported"),
    "presence_threshold": (0.0, "report a part from this object-level presence probability up; 0: the model's own "
                                "operating point (its registry entry; chosen for precision >= 0.9 on real data)"),
    "background": (["body", "base", "side"], "names that compete with every query, so that one query "
                                             "cannot claim a whole object (['']: none)"),
    "publish_keypoints": (True, "compute keypoints for continuous results"),
    "publish_detections": (True, "publish vision_msgs/Detection3DArray on ~/detections (when vision_msgs is "
                                 "installed)"),
    "scene_mode": (True, "split clouds into objects (plane removal + clustering); false: one object"),
    "max_rate_hz": (30.0, "continuous inference rate limit (a camera's rate; frames that arrive while one is "
                          "processed are replaced by the newest)"),
    "reuse_max_age_s": (1.0, "an object unchanged since the last frame (its occupied voxels) reuses that "
                             "frame's encoder pass, for at most this long; 0: encode every object every frame"),
    "reliability": ("auto", "input QoS reliability: auto (match what the publishers offer, re-checked when "
                            "they change) | best_effort (SensorDataQoS) | reliable"),
    "qos_depth": (2, "input QoS depth"),
    "stale_input_s": (3.0, "warn when a publisher is matched but no cloud arrived for this long"),
    "target_frame": ("", "publish centroids, boxes, approach directions and keypoints in this frame (e.g. "
                         "base_link), via tf2 at the input's stamp; empty: the input's frame"),
    "tf_timeout_s": (0.2, "how long to wait for a transform at the input's stamp before skipping the frame"),
    "gravity": ([0.0, 0.0, 0.0], "gravity direction in the cloud frame (e.g. [0, 1, 0] for a level optical "
                                 "frame); all zero: not given"),
    "gravity_frame": ("", "a frame whose +z is up (e.g. base_link), looked up with tf2 when tf2_ros is "
                          "installed; empty: not used"),
    "up_tolerance_deg": (80.0, "largest angle between an optical frame's up (-y) and the support plane's normal"),
    "body_up_tolerance_deg": (15.0, "the same for a REP 103 body frame's +z (base_link, a LiDAR's frame): "
                                    "gravity-aligned, so tight"),
    "gravity_tolerance_deg": (20.0, "largest angle between a given gravity (parameter or tf) and the plane's normal"),
    "service_timeout_s": (5.0, "how long ~/query_parts waits for a cloud when the request gives no timeout"),
    "max_wait_s": (10.0, "upper bound on any ~/query_parts wait for a cloud, whatever the request asks"),
    "max_cloud_age_s": (10.0, "~/query_parts answers only from a cloud received this recently (0: any age)"),
    "autostart": (True, "configure and activate at start"),
    "warn_total_ms": (500.0, "diagnostics warn when a frame takes longer"),
    "threads": (0, "torch threads (0: torch's default)"),
    "scene.voxel_size": (0.01, "voxel grid for segmentation (m)"),
    "scene.plane_distance": (0.012, "RANSAC table-plane inlier distance (m)"),
    "scene.max_object_height": (0.6, "objects are points up to this height above the plane (m)"),
    "scene.band_floor": (0.0, "band points this high above the table near an object that connect to it join it "
                              "(lugs, handle feet inside the plane band; m); 0: off (README, scene mode)"),
    "scene.cluster_eps": (0.02, "object clustering distance (m)"),
    "scene.concave_deg": (15.0, "a concave bend sharper than this separates touching objects (deg)"),
    "scene.min_object_points": (150, "smallest object (points)"),
    "scene.min_object_extent": (0.03, "smallest object (m)"),
    "scene.max_object_extent": (1.0, "largest object (m)"),
    "scene.max_objects": (32, "objects per frame, nearest first; the rest is counted and reported"),
    "scene.crop_min": ([-1e9, -1e9, -1e9], "crop box minimum x, y, z in the cloud frame (m)"),
    "scene.crop_max": ([1e9, 1e9, 1e9], "crop box maximum x, y, z in the cloud frame (m)"),
}
SCENE_FIELDS = [name.split(".", 1)[1] for name in PARAMETERS if name.startswith("scene.")]
UP_FIELDS = ("up_tolerance_deg", "body_up_tolerance_deg", "gravity_tolerance_deg")  # SceneConfig fields too
# Take effect only at configure: read-only after start (change them with a new launch).
READ_ONLY = {"checkpoint", "model_registry", "backend", "precision", "device", "text_encoder", "threads",
             "autostart", "qos_depth", "input", "use_color", "sync_slop_s", "reuse_max_age_s"}
# name -> (low, high) inclusive ranges
RANGES = {"score_threshold": (0.0, 1.0), "part_min_mean_score": (0.0, 1.0), "max_part_fraction": (0.0, 1.0),
          "presence_threshold": (0.0, 1.0), "depth_scale": (0.0, 1000.0), "sync_slop_s": (0.001, 10.0),
          "max_rate_hz": (0.01, 1000.0), "reuse_max_age_s": (0.0, 60.0), "qos_depth": (1, 1000), "stale_input_s": (0.1, 3600.0),
          "tf_timeout_s": (0.0, 10.0), "up_tolerance_deg": (1.0, 89.0), "body_up_tolerance_deg": (1.0, 89.0),
          "gravity_tolerance_deg": (1.0, 89.0), "service_timeout_s": (0.0, 3600.0), "max_wait_s": (0.0, 3600.0),
          "max_cloud_age_s": (0.0, 1e6), "warn_total_ms": (1.0, 1e6), "threads": (0, 256),
          "scene.voxel_size": (0.001, 0.2), "scene.plane_distance": (0.001, 0.2),
          "scene.max_object_height": (0.01, 10.0), "scene.band_floor": (0.0, 0.2), "scene.cluster_eps": (0.002, 0.5), "scene.concave_deg": (1.0, 180.0),
          "scene.min_object_points": (1, 10_000_000), "scene.min_object_extent": (0.0, 100.0),
          "scene.max_object_extent": (0.001, 100.0), "scene.max_objects": (1, 1000)}
CHOICES = {"backend": ("torch", "onnxruntime", "tensorrt", "auto", "torch-eager"),
           "precision": ("fp32", "fp16", "bf16"), "reliability": ("auto", "best_effort", "reliable"),
           "input": ("points", "depth")}


def check_parameter(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None."""
    if name in RANGES:
        low, high = RANGES[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or not low <= value <= high:
            return f"{name} must be a number in [{low}, {high}], got {value!r}"
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {' | '.join(CHOICES[name])}, got {value!r}"
    if name in ("queries", "background") and [q for q in value if q.strip()]:  # [''] (or []): none
        try:
            validate_queries([q for q in value if q.strip()])
        except ValueError as exc:
            return f"{name}: {exc}"
    if name == "gravity" and (len(value) != 3 or not all(math.isfinite(v) for v in value)):
        return f"gravity must be 3 finite numbers, got {list(value)!r}"
    if name in ("scene.crop_min", "scene.crop_max") and len(value) != 3:
        return f"{name} must be 3 numbers"
    if name == "device" and not (value == "cpu" or str(value).startswith("cuda")):
        return f"device must be cpu or cuda[:N], got {value!r}"
    if name in ("target_frame", "gravity_frame") and value and (value.startswith("/") or " " in value):
        return f"{name} must be a tf2 frame id (no leading '/', no spaces), got {value!r}"
    return None


def descriptor(name: str, text: str, default) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=text + (" (read-only after start)" if name in READ_ONLY else ""),
                               read_only=name in READ_ONLY)
    if name in RANGES:
        low, high = RANGES[name]
        if isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        else:
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
    if name in CHOICES:
        desc.additional_constraints = "one of: " + ", ".join(CHOICES[name])
    return desc


def declare_parameters(node) -> None:
    """Declare every parameter with its descriptor. A start-up value (YAML, -p) that fails
    validation is refused with an error line and the default is used instead, so the node
    never starts with a value that would break it later."""
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    for name, (default, text) in PARAMETERS.items():
        desc = descriptor(name, text, default)
        given = overrides.get(name)
        reason = None
        if given is not None:
            reason = check_parameter(name, given.value)
            if reason is None and type(given.value) is not type(default) and \
                    not (isinstance(default, float) and isinstance(given.value, int)):
                reason = f"{name} must be of type {type(default).__name__}, got {given.value!r}"
        if reason is not None:
            node.get_logger().error(f"refused start-up parameter: {reason}; using the default {default!r}")
            node.declare_parameter(name, default, desc, ignore_override=True)
            continue
        try:
            node.declare_parameter(name, default, desc)
        except Exception as exc:  # rclpy's own checks (type, range)
            node.get_logger().error(f"refused start-up parameter {name}: {exc}; using the default {default!r}")
            node.declare_parameter(name, default, desc, ignore_override=True)


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def scene_config(get):
    """SceneConfig from the parameters (``get(name)`` -> value)."""
    from ..inference.scene import SceneConfig

    return SceneConfig(**{f: _plain(get(f"scene.{f}")) for f in SCENE_FIELDS},
                       **{f: float(get(f)) for f in UP_FIELDS})


def inference_config(get):
    """InferenceConfig from the parameters."""
    from ..inference.pipeline import InferenceConfig

    return InferenceConfig(score_threshold=float(get("score_threshold")),
                           part_min_mean_score=float(get("part_min_mean_score")),
                           max_part_fraction=float(get("max_part_fraction")),
                           presence_threshold=float(get("presence_threshold")) or None,
                           background=[b for b in get("background") if b.strip()],
                           reuse_max_age_s=float(get("reuse_max_age_s")), scene=scene_config(get))


def apply_live(finder, get) -> None:
    """The thresholds that change live, onto a loaded PartFinder (before each frame)."""
    cfg = finder.config
    cfg.score_threshold = float(get("score_threshold"))
    cfg.part_min_mean_score = float(get("part_min_mean_score"))
    cfg.max_part_fraction = float(get("max_part_fraction"))
    cfg.presence_threshold = float(get("presence_threshold")) or None
    cfg.background = [b for b in get("background") if b.strip()]


def apply_scene_parameter(finder, name: str, value) -> None:
    """A scene.* or *_tolerance_deg change onto a loaded PartFinder's scene settings."""
    if name.startswith("scene.") or name in UP_FIELDS:
        field = name.split(".", 1)[1] if name.startswith("scene.") else name
        setattr(finder.config.scene, field, _plain(value))
