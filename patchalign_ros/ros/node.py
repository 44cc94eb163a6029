"""patchalign_perception: PointCloud2 in; named part segments, labelled points, markers and
keypoint poses out; ``~/query_parts`` service; /diagnostics.

A lifecycle node (as nav2 and yolo_ros do it): configure loads the model and text encoder and
creates the publishers (a missing or broken checkpoint leaves it unconfigured with the reason
logged, the process up, and the service answering with that reason); activate subscribes to
the input and starts the inference worker; deactivate unsubscribes, stops the worker and drops
pending clouds; cleanup frees the model. ``autostart`` (default) configures and activates.

Threads: continuous inference runs on a supervised worker thread (newest frame wins; an
exception is counted, logged and reported as ERROR in diagnostics, never ends the worker).
Executor callbacks sit in separate groups: cloud intake, query service, timers, and rclpy's
own parameter and lifecycle services; query calls run one at a time, so however many callers
wait for a first cloud, intake and parameters keep their threads.
"""
from __future__ import annotations

import math
import sys
import threading
import time

import numpy as np

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from patchalign_ros.msg import PartSegmentArray
from patchalign_ros.srv import QueryParts

from ..inference.preprocess import InputError
from ..text import validate_queries
from .conversions import CloudFormatError, cloud_to_xyz, result_to_msg
from .visuals import keypoint_poses, labeled_cloud, markers

NODE_NAME = "patchalign_perception"

# name -> (default, description). Scene settings map onto SceneConfig fields.
PARAMETERS = {
    "checkpoint": ("", "a registered model name (python -m patchalign_ros models list) or weights (.safetensors + "
                       ".json or an official .pt); empty: the bundled default"),
    "model_registry": ("", "your own model registry YAML (adds to the shipped models/registry.yaml)"),
    "backend": ("torch", "encoder backend: torch | onnxruntime | tensorrt | auto | torch-eager"),
    "precision": ("fp32", "fp32 | fp16 (CUDA, TensorRT) | bf16 (CPUs with AVX-512 bf16)"),
    "device": ("cpu", "torch device: cpu | cuda"),
    "text_encoder": ("", "minilm | sentence-transformers:DIR | openclip:MODEL@CKPT; empty: the model's own"),
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
    "scene_mode": (True, "split clouds into objects (plane removal + clustering); false: one object"),
    "max_rate_hz": (5.0, "continuous inference rate limit; newer frames replace older ones"),
    "reliability": ("auto", "input QoS reliability: auto (match what the publishers offer, re-checked when "
                            "they change) | best_effort (SensorDataQoS) | reliable"),
    "qos_depth": (2, "input QoS depth"),
    "stale_input_s": (3.0, "warn when a publisher is matched but no cloud arrived for this long"),
    "gravity": ([0.0, 0.0, 0.0], "gravity direction in the cloud frame (e.g. [0, 1, 0] for a level optical "
                                 "frame); all zero: not given"),
    "gravity_frame": ("", "a frame whose +z is up (e.g. base_link), looked up with tf2 when tf2_ros is "
                          "installed; empty: not used"),
    "up_tolerance_deg": (80.0, "largest angle between the frame convention's up and the support plane's normal"),
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
# Take effect only at configure: read-only after start (change them with a new launch).
READ_ONLY = {"checkpoint", "model_registry", "backend", "precision", "device", "text_encoder", "threads",
             "autostart", "qos_depth"}
# name -> (low, high) inclusive ranges
RANGES = {"score_threshold": (0.0, 1.0), "part_min_mean_score": (0.0, 1.0), "max_part_fraction": (0.0, 1.0),
          "presence_threshold": (0.0, 1.0),
          "max_rate_hz": (0.01, 1000.0), "qos_depth": (1, 1000), "stale_input_s": (0.1, 3600.0),
          "up_tolerance_deg": (1.0, 89.0), "gravity_tolerance_deg": (1.0, 89.0), "service_timeout_s": (0.0, 3600.0), "max_wait_s": (0.0, 3600.0),
          "max_cloud_age_s": (0.0, 1e6), "warn_total_ms": (1.0, 1e6), "threads": (0, 256),
          "scene.voxel_size": (0.001, 0.2), "scene.plane_distance": (0.001, 0.2),
          "scene.max_object_height": (0.01, 10.0), "scene.cluster_eps": (0.002, 0.5), "scene.concave_deg": (1.0, 180.0),
          "scene.min_object_points": (1, 10_000_000), "scene.min_object_extent": (0.0, 100.0),
          "scene.max_object_extent": (0.001, 100.0), "scene.max_objects": (1, 1000)}
CHOICES = {"backend": ("torch", "onnxruntime", "tensorrt", "auto", "torch-eager"),
           "precision": ("fp32", "fp16", "bf16"), "reliability": ("auto", "best_effort", "reliable")}
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=256, reliability=ReliabilityPolicy.RELIABLE)


def check_parameter(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None."""
    if name in RANGES:
        low, high = RANGES[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or not low <= value <= high:
            return f"{name} must be a number in [{low}, {high}], got {value!r}"
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {' | '.join(CHOICES[name])}, got {value!r}"
    if name == "queries" and [q for q in value if q.strip()]:  # [''] (or []): only on request
        try:
            validate_queries([q for q in value if q.strip()])
        except ValueError as exc:
            return f"queries: {exc}"
    if name == "background" and [b for b in value if b.strip()]:
        try:
            validate_queries([b for b in value if b.strip()])
        except ValueError as exc:
            return f"background: {exc}"
    if name == "gravity" and (len(value) != 3 or not all(math.isfinite(v) for v in value)):
        return f"gravity must be 3 finite numbers, got {list(value)!r}"
    if name in ("scene.crop_min", "scene.crop_max") and len(value) != 3:
        return f"{name} must be 3 numbers"
    if name == "device" and not (value == "cpu" or str(value).startswith("cuda")):
        return f"device must be cpu or cuda[:N], got {value!r}"
    return None


def _descriptor(name: str, text: str, default) -> ParameterDescriptor:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange

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


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._finder = None
        self._load_error = "not configured yet"
        self._active = False
        self._cond = threading.Condition()
        self._infer_lock = threading.Lock()
        self._latest = None         # newest cloud (for the service), with its arrival time
        self._latest_time = 0.0      # when the newest cloud arrived (monotonic)
        self._pending = None        # newest cloud not yet processed (for continuous output)
        self._stop = threading.Event()
        self._worker = None
        self._worker_generation = 0
        self._worker_error = ""
        self._worker_error_time = 0.0
        self._wait_deadline = 0.0
        self._last_run = 0.0
        self._stats = {"received": 0, "processed": 0, "dropped": 0, "rejected": 0, "failed": 0, "errors": 0}
        self._last_timing = {}
        self._last_reject = ""
        self._scene_message = ""
        self._logged_causes = set()
        self._pubs = {}
        self._sub = None
        self._sub_reliability = None
        self._matched_since = None
        self._input_warning = ""
        self._tf_buffer = None
        # Separate groups: intake is never starved by queries waiting for a cloud, queries run
        # one at a time (inference is serial anyway), timers have their own; rclpy's parameter
        # and lifecycle services stay in the node's default group.
        self._intake_group = MutuallyExclusiveCallbackGroup()
        self._query_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        # The service exists in every state, so a caller always learns why nothing comes back.
        # Requests wait in DDS while another is served; the default history (KEEP_LAST 10) would
        # silently drop a burst of more than 10 concurrent calls.
        self.create_service(QueryParts, "~/query_parts", self._on_query, callback_group=self._query_group,
                            qos_profile=SERVICE_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._timer_group)
        self.create_timer(1.0, self._check_input, callback_group=self._timer_group)

    def _declare_parameters(self):
        """Declare every parameter with its descriptor. A start-up value (YAML, -p) that fails
        validation is refused with an error line and the default is used instead, so the node
        never starts with a value that would break it later."""
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        for name, (default, text) in PARAMETERS.items():
            desc = _descriptor(name, text, default)
            given = overrides.get(name)
            reason = None
            if given is not None:
                reason = check_parameter(name, given.value)
                if reason is None and type(given.value) is not type(default) and \
                        not (isinstance(default, float) and isinstance(given.value, int)):
                    reason = f"{name} must be of type {type(default).__name__}, got {given.value!r}"
            if reason is not None:
                self.get_logger().error(f"refused start-up parameter: {reason}; using the default {default!r}")
                self.declare_parameter(name, default, desc, ignore_override=True)
                continue
            try:
                self.declare_parameter(name, default, desc)
            except Exception as exc:  # rclpy's own checks (type, range)
                self.get_logger().error(f"refused start-up parameter {name}: {exc}; using the default {default!r}")
                self.declare_parameter(name, default, desc, ignore_override=True)

    # -- parameters ------------------------------------------------------------------------
    def p(self, name):
        return self.get_parameter(name).value

    def _on_set_parameters(self, params):
        for prm in params:
            if prm.name not in PARAMETERS:
                continue
            reason = check_parameter(prm.name, prm.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        for prm in params:  # accepted: apply what applies live
            if prm.name.startswith("scene.") or prm.name in ("up_tolerance_deg", "gravity_tolerance_deg"):
                finder = self._finder
                if finder is not None:
                    field = prm.name.split(".", 1)[1] if prm.name.startswith("scene.") else prm.name
                    value = list(prm.value) if isinstance(prm.value, (list, tuple)) else prm.value
                    setattr(finder.config.scene, field, value)
        return SetParametersResult(successful=True)

    def _inference_config(self):
        from ..inference.pipeline import InferenceConfig
        from ..inference.scene import SceneConfig

        scene = SceneConfig(**{f: (list(self.p(f"scene.{f}")) if isinstance(self.p(f"scene.{f}"), (list, tuple))
                                   else self.p(f"scene.{f}"))
                               for f in SCENE_FIELDS}, up_tolerance_deg=float(self.p("up_tolerance_deg")),
                           gravity_tolerance_deg=float(self.p("gravity_tolerance_deg")))
        return InferenceConfig(score_threshold=float(self.p("score_threshold")),
                               part_min_mean_score=float(self.p("part_min_mean_score")),
                               max_part_fraction=float(self.p("max_part_fraction")),
                               presence_threshold=float(self.p("presence_threshold")) or None,
                               background=[b for b in self.p("background") if b.strip()], scene=scene)

    # -- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state):
        from ..inference.pipeline import PartFinder

        if self.p("threads"):
            import torch

            torch.set_num_threads(int(self.p("threads")))
        try:
            self._finder = PartFinder.load(self.p("checkpoint") or None, text_encoder=self.p("text_encoder") or None,
                                           device=self.p("device"), config=self._inference_config(),
                                           backend=self.p("backend"), precision=self.p("precision"),
                                           registry=self.p("model_registry") or None)
        except Exception as exc:  # any load failure leaves the node up and says why
            self._finder = None
            self._load_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"cannot load the model: {self._load_error}")
            return TransitionCallbackReturn.FAILURE
        self._load_error = ""
        cfg = self._finder.model.config
        self.get_logger().info(f"model {cfg.name} ({cfg.depth} blocks, {cfg.trans_dim}-d, G={cfg.num_group}) on "
                               f"{self._finder.model.backend_name} with text encoder {self._finder.embedder.encoder.name}")
        self._pubs = {
            "segments": self.create_lifecycle_publisher(PartSegmentArray, "~/segments", 10),
            "labeled_points": self.create_lifecycle_publisher(PointCloud2, "~/labeled_points", 2),
            "markers": self.create_lifecycle_publisher(MarkerArray, "~/markers", 2),
            "keypoints": self.create_lifecycle_publisher(PoseArray, "~/keypoints", 10),
        }
        self._tf_buffer = self._make_tf_listener() if self.p("gravity_frame") else None
        return TransitionCallbackReturn.SUCCESS

    # -- input QoS -------------------------------------------------------------------------
    def _offered_reliabilities(self) -> list:
        topic = self.resolve_topic_name("~/input/points")
        return [info.qos_profile.reliability for info in self.get_publishers_info_by_topic(topic)]

    def _wanted_reliability(self):
        """``auto``, as rosbag2 does: reliable only when every publisher offers reliable (a
        reliable reader cannot match a best-effort writer); best effort when any is best effort,
        which matches any writer. Without publishers: unchanged (best effort at first), so a
        publisher that restarts or a momentary gap in the graph does not flip the subscription."""
        choice = self.p("reliability")
        if choice != "auto":
            return RELIABILITY[choice]
        offered = self._offered_reliabilities()
        if not offered:
            return self._sub_reliability if self._sub_reliability is not None else ReliabilityPolicy.BEST_EFFORT
        if all(r == ReliabilityPolicy.RELIABLE for r in offered):
            return ReliabilityPolicy.RELIABLE
        return ReliabilityPolicy.BEST_EFFORT

    def _subscribe(self, reliability):
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(self.p("qos_depth")), reliability=reliability)
        self._sub = self.create_subscription(PointCloud2, "~/input/points", self._on_cloud, qos,
                                             callback_group=self._intake_group)
        self._sub_reliability = reliability
        self._matched_since = None
        name = "reliable" if reliability == ReliabilityPolicy.RELIABLE else "best_effort"
        self.get_logger().info(f"subscribed to {self._sub.topic_name} with {name} QoS "
                               f"(reliability: {self.p('reliability')})")

    def _check_input(self):
        """Timer: follow the publishers' QoS (``auto``) and notice input that never arrives."""
        if self._sub is None or not self._active:
            return
        wanted = self._wanted_reliability()
        if wanted != self._sub_reliability:  # auto following the publishers, or a changed setting
            self._subscribe(wanted)
        # publishers in the graph, matched or not: an incompatible QoS never matches
        publishers = self.count_publishers(self._sub.topic_name)
        now = time.monotonic()
        if publishers == 0:
            self._matched_since, self._input_warning = None, ""
            return
        if self._matched_since is None:
            self._matched_since = now
        last = max(self._latest_time, self._matched_since)
        if now - last > float(self.p("stale_input_s")):
            offered = self._offered_reliabilities()
            ours = "reliable" if self._sub_reliability == ReliabilityPolicy.RELIABLE else "best_effort"
            cause = ""
            if ours == "best_effort" and any(r == ReliabilityPolicy.RELIABLE for r in offered):
                cause = ("the publisher is reliable and this subscription best effort: large clouds (a 640x480 "
                         "cloud is ~5 MB) are rarely delivered best effort over UDP; set reliability:=reliable "
                         "or auto")
            elif ours == "reliable" and any(r != ReliabilityPolicy.RELIABLE for r in offered):
                cause = "a best-effort publisher cannot match this reliable subscription; set reliability:=auto"
            elif offered and all(r != ReliabilityPolicy.RELIABLE for r in offered):
                cause = ("the publisher is best effort: clouds over ~1 MB are lost as UDP fragments between "
                         "processes (measured: qos-matrix); have the driver publish reliably, or send smaller clouds")
            else:
                cause = "the publisher may not be publishing, or the network drops the messages"
            self._input_warning = (f"{publishers} publisher(s) on {self._sub.topic_name} but no cloud for "
                                   f"{now - last:.0f} s; likely cause: {cause}")
            if "input:" + cause not in self._logged_causes:  # once per cause
                self._logged_causes.add("input:" + cause)
                self.get_logger().warning(self._input_warning)
        else:
            self._input_warning = ""

    # -- gravity ---------------------------------------------------------------------------
    def _make_tf_listener(self):
        try:
            import tf2_ros  # optional: a normal ROS install has it; the PyPI wheels do not
        except ImportError:
            self.get_logger().warning(f"gravity_frame {self.p('gravity_frame')!r} is set but tf2_ros cannot be "
                                      "imported; using the frame convention instead")
            return None
        buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(buffer, self)
        return buffer

    def _up_for(self, frame_id: str):
        """(up vector or None, frame hint): the ``gravity`` parameter, else tf2's ``gravity_frame``
        +z in the cloud frame, else None and the frame id for the REP 103/105 convention."""
        gravity = np.asarray(self.p("gravity"), dtype=np.float64)
        if np.linalg.norm(gravity) > 0:
            return -gravity, frame_id
        if self._tf_buffer is not None and frame_id:
            try:
                from rclpy.time import Time

                tf = self._tf_buffer.lookup_transform(frame_id, self.p("gravity_frame"), Time())
                q = tf.transform.rotation
                # +z of gravity_frame expressed in the cloud frame: third column of R(q)
                up = np.array([2 * (q.x * q.z + q.w * q.y), 2 * (q.y * q.z - q.w * q.x),
                               1 - 2 * (q.x * q.x + q.y * q.y)])
                return up, frame_id
            except Exception as exc:  # not yet available, or no such frame
                cause = f"tf {self.p('gravity_frame')} -> {frame_id}: {type(exc).__name__}"
                if cause not in self._logged_causes:
                    self._logged_causes.add(cause)
                    self.get_logger().warning(f"no transform ({cause}); using the frame convention")
        return None, frame_id

    def on_activate(self, state):
        self._drop_clouds()
        self._start_worker()
        self._active = True
        self._subscribe(self._wanted_reliability())
        return super().on_activate(state)

    def on_deactivate(self, state):
        self._active = False
        self._unsubscribe()
        self._stop_worker()
        self._drop_clouds()  # a stale frame must not be processed after reactivation
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self._active = False
        self._unsubscribe()
        self._stop_worker()
        self._drop_clouds()
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        with self._infer_lock:  # a query still running keeps its finder until it is done
            self._finder = None
        self._tf_buffer = None
        self._load_error = "not configured (cleaned up)"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        self._active = False
        self._unsubscribe()
        self._stop_worker()
        self._drop_clouds()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        self.get_logger().error(f"lifecycle error in state {state.label}; stopping and unloading")
        self.on_cleanup(state)
        return TransitionCallbackReturn.SUCCESS  # -> unconfigured, ready to configure again

    def _unsubscribe(self):
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub, self._sub_reliability = None, None

    def _drop_clouds(self):
        with self._cond:
            self._latest, self._pending = None, None

    def _start_worker(self):
        self._stop_worker()
        self._stop.clear()
        self._worker_generation += 1
        self._worker = threading.Thread(target=self._worker_loop, args=(self._worker_generation,),
                                        name="patchalign-inference", daemon=True)
        self._worker.start()

    def _stop_worker(self):
        """Stop the worker and wait for it: a frame in progress finishes first (the generation
        number also retires a worker that outlives the wait, so two never serve at once)."""
        self._worker_generation += 1
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            waited = 0.0
            while worker.is_alive():
                worker.join(timeout=5.0)
                waited += 5.0
                if worker.is_alive():
                    self.get_logger().warning(f"inference worker still finishing a frame after {waited:.0f} s")
        self._worker = None

    def autostart(self) -> bool:
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    # -- input -----------------------------------------------------------------------------
    def _on_cloud(self, msg):
        with self._cond:
            self._stats["received"] += 1
            self._latest_time = time.monotonic()
            self._latest = msg
            if self._pending is not None:
                self._stats["dropped"] += 1  # newest frame wins
            self._pending = msg
            self._cond.notify_all()

    def _reject(self, reason: str, cause: str):
        self._stats["rejected"] += 1
        self._last_reject = reason
        if cause not in self._logged_causes:  # once per cause, not once per frame
            self._logged_causes.add(cause)
            self.get_logger().warning(f"rejected a point cloud: {reason}")

    def _subscribed(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in self._pubs.values())

    # -- inference -------------------------------------------------------------------------
    def _run(self, msg, queries, min_score=None, keypoints=True):
        t0 = time.perf_counter()
        xyz = cloud_to_xyz(msg)
        convert_ms = (time.perf_counter() - t0) * 1e3
        with self._infer_lock:
            finder = self._finder
            if finder is None:
                raise RuntimeError(f"model not loaded: {self._load_error}")
            finder.config.score_threshold = float(self.p("score_threshold"))
            finder.config.part_min_mean_score = float(self.p("part_min_mean_score"))
            finder.config.max_part_fraction = float(self.p("max_part_fraction"))
            finder.config.presence_threshold = float(self.p("presence_threshold")) or None
            finder.config.background = [b for b in self.p("background") if b.strip()]
            up, frame = self._up_for(msg.header.frame_id)
            result = finder.find_parts(xyz, queries, scene=bool(self.p("scene_mode")), keypoints=keypoints,
                                       min_score=min_score, up=up, frame=frame or "auto")
        if result.scene_message:
            self._scene_message = result.scene_message
            cause = "scene:" + result.scene_message.split(";")[0][:40]
            if cause not in self._logged_causes:
                self._logged_causes.add(cause)
                self.get_logger().warning(f"scene: {result.scene_message}")
        else:
            self._scene_message = ""
        result.timing_ms["preprocess"] = result.timing_ms.get("preprocess", 0.0) + convert_ms
        result.timing_ms["total"] = result.timing_ms.get("total", 0.0) + convert_ms
        self._last_timing = dict(result.timing_ms)
        return xyz, result, result_to_msg(result, msg.header)

    def _worker_loop(self, generation: int):
        """Supervised: whatever one iteration raises is counted, logged once per cause and
        reported as ERROR in diagnostics; the loop goes on."""
        while not self._stop.is_set() and generation == self._worker_generation:
            try:
                self._worker_step(generation)
            except Exception as exc:
                self._stats["errors"] += 1
                self._worker_error = f"{type(exc).__name__}: {exc}"
                self._worker_error_time = time.monotonic()
                cause = "worker:" + type(exc).__name__ + str(exc)[:60]
                if cause not in self._logged_causes:
                    self._logged_causes.add(cause)
                    self.get_logger().error(f"inference worker error (it keeps running): {self._worker_error}")
                time.sleep(0.05)

    def _worker_step(self, generation: int):
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._stop.is_set(), timeout=0.5)
            msg, self._pending = self._pending, None
        if msg is None or self._stop.is_set() or generation != self._worker_generation:
            return
        queries = [q for q in self.p("queries") if q.strip()]
        if not queries or not self._subscribed():
            return  # nobody listens: skip the work
        wait = 1.0 / float(self.p("max_rate_hz")) - (time.monotonic() - self._last_run)
        if wait > 0 and self._stop.wait(wait):
            return
        with self._cond:  # a newer frame may have arrived while waiting
            if self._pending is not None:
                msg, self._pending = self._pending, None
        self._last_run = time.monotonic()
        try:
            xyz, result, out = self._run(msg, queries, keypoints=bool(self.p("publish_keypoints")))
        except (CloudFormatError, InputError) as exc:
            self._reject(str(exc), type(exc).__name__ + str(exc).split(":")[0])
            return
        except Exception as exc:  # one bad frame must not stop the node
            self._stats["failed"] += 1
            self.get_logger().error(f"inference failed on a frame: {type(exc).__name__}: {exc}")
            return
        self._stats["processed"] += 1
        if self._active and generation == self._worker_generation:
            self._publish(xyz, result, out)

    def _publish(self, xyz, result, out):
        pubs = self._pubs
        if not pubs or not self._active:
            return
        pubs["segments"].publish(out)
        if pubs["labeled_points"].get_subscription_count():
            pubs["labeled_points"].publish(labeled_cloud(xyz, result, out.header))
        pubs["markers"].publish(markers(out, lifetime_s=max(1.0, 3.0 / float(self.p("max_rate_hz")))))
        pubs["keypoints"].publish(keypoint_poses(out))

    # -- service ---------------------------------------------------------------------------
    def _fresh_cloud(self):
        with self._cond:
            return self._fresh_cloud_locked()

    def _wait_for_cloud(self, timeout: float):
        """Wait (bounded) for a cloud newer than ``max_cloud_age_s``. Calls run one at a time;
        callers queued behind one that is waiting share its deadline instead of each waiting in
        turn."""
        now = time.monotonic()
        deadline = now + timeout
        with self._cond:
            if self._wait_deadline > now:
                deadline = min(deadline, self._wait_deadline)
            else:
                self._wait_deadline = deadline
            self._cond.wait_for(lambda: self._fresh_cloud_locked() is not None or not self._active,
                                timeout=max(0.0, deadline - time.monotonic()))
            return self._fresh_cloud_locked()

    def _fresh_cloud_locked(self):
        """The newest cloud if it is recent enough (``max_cloud_age_s``); hold ``_cond``."""
        max_age = float(self.p("max_cloud_age_s"))
        if self._latest is not None and (max_age <= 0 or time.monotonic() - self._latest_time <= max_age):
            return self._latest
        return None

    def _on_query(self, request, response):
        try:
            queries = validate_queries([q for q in request.queries])
        except ValueError as exc:
            response.success, response.message = False, f"bad queries: {exc}"
            return response
        if self._finder is None:
            response.success, response.message = False, f"model not loaded: {self._load_error}"
            return response
        if not self._active:
            response.success, response.message = False, ("the node is inactive (lifecycle): activate it, e.g. "
                                                          f"`ros2 lifecycle set /{NODE_NAME} activate`")
            return response
        asked = request.timeout_s if request.timeout_s >= 0 else float(self.p("service_timeout_s"))
        timeout = min(asked, float(self.p("max_wait_s")))
        msg = self._fresh_cloud() or self._wait_for_cloud(timeout)
        if msg is None:
            topic = self._sub.topic_name if self._sub is not None else "~/input/points"
            age = float(self.p("max_cloud_age_s"))
            response.success, response.message = False, (
                f"no point cloud received on {topic} within {timeout:.1f} s" +
                (f" (clouds older than max_cloud_age_s={age:g} s are not used)" if age > 0 else ""))
            return response
        min_score = request.min_score if request.min_score >= 0 else None
        try:
            _, result, out = self._run(msg, queries, min_score=min_score, keypoints=request.include_keypoints)
        except (CloudFormatError, InputError) as exc:
            self._reject(str(exc), type(exc).__name__ + str(exc).split(":")[0])
            response.success, response.message = False, f"the newest cloud cannot be used: {exc}"
            return response
        except Exception as exc:
            self._stats["failed"] += 1
            self.get_logger().error(f"query failed: {type(exc).__name__}: {exc}")
            response.success, response.message = False, f"inference failed: {type(exc).__name__}: {exc}"
            return response
        found = {}
        for seg in out.segments:
            found[seg.label] = found.get(seg.label, 0) + 1
        summary = ", ".join(f"{q}: {found.get(q, 0)}" for q in queries)
        response.success = True
        response.message = (f"{out.num_objects} object(s); parts found - {summary}; {out.total_ms:.0f} ms "
                            f"[{self._backend_summary()}]")
        response.result = out
        return response

    def _backend_summary(self) -> str:
        finder = self._finder
        if finder is None:
            return "no model"
        model = finder.model
        providers = getattr(model.backend, "providers", None)
        precision = getattr(model.backend, "precision", "fp32") if model.backend is not None else "fp32"
        text = f"{model.backend_name} {precision} on {model.device}"
        return text + (f" ({', '.join(providers)})" if providers else "")

    # -- diagnostics -----------------------------------------------------------------------
    def _publish_diagnostics(self):
        status = DiagnosticStatus(name=f"{NODE_NAME}: inference", hardware_id=NODE_NAME)
        total = float(self._last_timing.get("total", 0.0))
        if self._finder is None:
            status.level, status.message = DiagnosticStatus.ERROR, f"model not loaded: {self._load_error}"
        elif self._worker_error and time.monotonic() - self._worker_error_time < 10.0:
            status.level, status.message = DiagnosticStatus.ERROR, f"inference worker errors: {self._worker_error}"
        elif not self._active:
            status.level, status.message = DiagnosticStatus.OK, "inactive"
        elif total > float(self.p("warn_total_ms")):
            status.level, status.message = DiagnosticStatus.WARN, f"slow: last frame {total:.0f} ms"
        elif self._input_warning:
            status.level, status.message = DiagnosticStatus.WARN, self._input_warning
        elif self._stats["rejected"] and self._last_reject:
            status.level, status.message = DiagnosticStatus.WARN, f"rejected clouds; last: {self._last_reject}"
        elif self._scene_message:
            status.level, status.message = DiagnosticStatus.WARN, f"scene: {self._scene_message}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "ok"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in self._stats.items()]
        status.values += [KeyValue(key=f"{k}_ms", value=f"{v:.1f}") for k, v in self._last_timing.items()]
        if self._sub is not None:
            status.values.append(KeyValue(key="input_reliability", value="reliable" if self._sub_reliability ==
                                          ReliabilityPolicy.RELIABLE else "best_effort"))
        status.values.append(KeyValue(key="backend", value=self._backend_summary()))
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(argv=None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = PerceptionNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    if node.p("autostart") and not node.autostart():
        node.get_logger().error("configure failed; the node stays up (unconfigured) and answers with the reason")
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C reaches the node twice under `ros2 launch` (the terminal's process group and
        # launch forwarding it): a second one must not interrupt the clean-up.
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node._active = False
        node._stop_worker()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
