"""patchalign_perception: PointCloud2 in; named part segments, labelled points, markers and
keypoint poses out; ``~/query_parts`` service; /diagnostics.

A lifecycle node: configure loads the model and text encoder (a missing or broken checkpoint
leaves it unconfigured with the reason logged, the process up, and the service answering
with that reason); activate starts publishing. ``autostart`` (default) does both at start.
Inference runs on a worker thread (newest frame wins, nothing queues up), so the executor
keeps serving the service, parameters and lifecycle while a frame is processed.
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
    "part_min_mean_score": (0.8, "a part is reported on an object only when its points' mean probability "
                                 "reaches this (object-level evidence)"),
    "max_part_fraction": (0.35, "a part covering more of an object than this is not reported"),
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
    "up_tolerance_deg": (60.0, "largest angle between the up prior and the support plane's normal"),
    "service_timeout_s": (5.0, "how long ~/query_parts waits for a first cloud by default"),
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
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=256, reliability=ReliabilityPolicy.RELIABLE)
LIVE_PARAMETERS = {"queries", "score_threshold", "part_min_mean_score", "max_part_fraction", "publish_keypoints",
                   "max_rate_hz", "warn_total_ms"}


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, text) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=text))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._finder = None
        self._load_error = "not configured yet"
        self._active = False
        self._cond = threading.Condition()
        self._infer_lock = threading.Lock()
        self._latest = None         # newest cloud (for the service)
        self._pending = None        # newest cloud not yet processed (for continuous output)
        self._stop = threading.Event()
        self._worker = None
        self._last_run = 0.0
        self._stats = {"received": 0, "processed": 0, "dropped": 0, "rejected": 0, "failed": 0}
        self._last_timing = {}
        self._last_reject = ""
        self._scene_message = ""
        self._logged_causes = set()
        self._pubs = {}
        self._sub = None
        self._sub_reliability = None
        self._matched_since = None
        self._last_cloud_time = None
        self._input_warning = ""
        self._tf_buffer = None
        self._frames = MutuallyExclusiveCallbackGroup()
        self._requests = ReentrantCallbackGroup()
        # The service exists in every state, so a caller always learns why nothing comes back.
        # Requests wait in DDS while inference is busy; the default history (KEEP_LAST 10) would
        # silently drop a burst of more than 10 concurrent calls.
        self.create_service(QueryParts, "~/query_parts", self._on_query, callback_group=self._requests,
                            qos_profile=SERVICE_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._requests)
        self.create_timer(1.0, self._check_input, callback_group=self._frames)

    # -- parameters ------------------------------------------------------------------------
    def p(self, name):
        return self.get_parameter(name).value

    def _on_set_parameters(self, params):
        for prm in params:
            if prm.name == "queries":
                value = list(prm.value or [])
                if value:
                    try:
                        validate_queries(value)
                    except ValueError as exc:
                        return SetParametersResult(successful=False, reason=f"queries: {exc}")
            elif prm.name in ("score_threshold", "part_min_mean_score", "max_part_fraction") and \
                    not 0.0 <= float(prm.value) <= 1.0:
                return SetParametersResult(successful=False, reason=f"{prm.name} must be in [0, 1]")
            elif prm.name == "max_rate_hz" and float(prm.value) <= 0:
                return SetParametersResult(successful=False, reason="max_rate_hz must be > 0")
            elif prm.name == "reliability" and prm.value not in ("auto", "best_effort", "reliable"):
                return SetParametersResult(successful=False, reason="reliability: auto | best_effort | reliable")
            elif prm.name == "gravity" and (len(prm.value) != 3 or not all(math.isfinite(v) for v in prm.value)):
                return SetParametersResult(successful=False, reason="gravity must be 3 finite numbers")
            elif prm.name not in LIVE_PARAMETERS and self._finder is not None and prm.name in PARAMETERS:
                self.get_logger().info(f"parameter {prm.name} takes effect at the next configure")
        return SetParametersResult(successful=True)

    def _inference_config(self):
        from ..inference.pipeline import InferenceConfig
        from ..inference.scene import SceneConfig

        scene = SceneConfig(**{f: (list(self.p(f"scene.{f}")) if isinstance(self.p(f"scene.{f}"), (list, tuple))
                                   else self.p(f"scene.{f}"))
                               for f in SCENE_FIELDS}, up_tolerance_deg=float(self.p("up_tolerance_deg")))
        return InferenceConfig(score_threshold=float(self.p("score_threshold")),
                               part_min_mean_score=float(self.p("part_min_mean_score")),
                               max_part_fraction=float(self.p("max_part_fraction")), scene=scene)

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
        self._subscribe(self._wanted_reliability())
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
                                             callback_group=self._frames)
        self._sub_reliability = reliability
        self._matched_since = None
        name = "reliable" if reliability == ReliabilityPolicy.RELIABLE else "best_effort"
        self.get_logger().info(f"subscribed to {self._sub.topic_name} with {name} QoS "
                               f"(reliability: {self.p('reliability')})")

    def _check_input(self):
        """Timer: follow the publishers' QoS (``auto``) and notice input that never arrives."""
        if self._sub is None:
            return
        if self.p("reliability") == "auto":
            wanted = self._wanted_reliability()
            if wanted != self._sub_reliability:
                self._subscribe(wanted)
        # publishers in the graph, matched or not: an incompatible QoS never matches
        publishers = self.count_publishers(self._sub.topic_name)
        now = time.monotonic()
        if publishers == 0:
            self._matched_since, self._input_warning = None, ""
            return
        if self._matched_since is None:
            self._matched_since = now
        last = max(self._last_cloud_time or 0.0, self._matched_since)
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
        self._stop.clear()
        self._worker = threading.Thread(target=self._worker_loop, name="patchalign-inference", daemon=True)
        self._worker.start()
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state):
        self._active = False
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self._stop_worker()
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        self._finder = None
        self._load_error = "not configured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        self._active = False
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self):
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10)
        self._worker = None

    def autostart(self) -> bool:
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    # -- input -----------------------------------------------------------------------------
    def _on_cloud(self, msg):
        with self._cond:
            self._stats["received"] += 1
            self._last_cloud_time = time.monotonic()
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

    def _worker_loop(self):
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stop.is_set(), timeout=0.5)
                msg, self._pending = self._pending, None
            if msg is None or self._stop.is_set():
                continue
            queries = [q for q in self.p("queries") if q.strip()]
            if not queries or not self._subscribed():
                continue  # nobody listens: skip the work
            wait = 1.0 / float(self.p("max_rate_hz")) - (time.monotonic() - self._last_run)
            if wait > 0 and self._stop.wait(wait):
                break
            with self._cond:  # a newer frame may have arrived while waiting
                if self._pending is not None:
                    msg, self._pending = self._pending, None
            self._last_run = time.monotonic()
            try:
                xyz, result, out = self._run(msg, queries, keypoints=bool(self.p("publish_keypoints")))
            except (CloudFormatError, InputError) as exc:
                self._reject(str(exc), type(exc).__name__ + str(exc).split(":")[0])
                continue
            except Exception as exc:  # one bad frame must not stop the node
                self._stats["failed"] += 1
                self.get_logger().error(f"inference failed on a frame: {type(exc).__name__}: {exc}")
                continue
            self._stats["processed"] += 1
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
    def _on_query(self, request, response):
        try:
            queries = validate_queries([q for q in request.queries])
        except ValueError as exc:
            response.success, response.message = False, f"bad queries: {exc}"
            return response
        if self._finder is None:
            response.success, response.message = False, f"model not loaded: {self._load_error}"
            return response
        timeout = request.timeout_s if request.timeout_s >= 0 else float(self.p("service_timeout_s"))
        with self._cond:
            have = self._cond.wait_for(lambda: self._latest is not None, timeout=timeout)
            msg = self._latest
        if not have:
            topic = self._sub.topic_name if self._sub is not None else "~/input/points"
            response.success, response.message = False, f"no point cloud received on {topic} within {timeout:.1f} s"
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
        response.message = f"{out.num_objects} object(s); parts found - {summary}; {out.total_ms:.0f} ms"
        response.result = out
        return response

    # -- diagnostics -----------------------------------------------------------------------
    def _publish_diagnostics(self):
        status = DiagnosticStatus(name=f"{NODE_NAME}: inference", hardware_id=NODE_NAME)
        total = float(self._last_timing.get("total", 0.0))
        if self._finder is None:
            status.level, status.message = DiagnosticStatus.ERROR, f"model not loaded: {self._load_error}"
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
        node._active = False
        node._stop_worker()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
