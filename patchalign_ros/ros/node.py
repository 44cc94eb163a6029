"""patchalign_perception: point clouds or depth images in; named part segments, detections,
labelled points, markers and keypoint poses out; ``~/query_parts`` service; /diagnostics.

A lifecycle node (as nav2 and yolo_ros do it): configure loads the model and text encoder and
creates the publishers (a missing or broken checkpoint leaves it unconfigured with the reason
logged, the process up, and the service answering with that reason); activate subscribes to
the input and starts the inference worker; deactivate unsubscribes, stops the worker and drops
pending input; cleanup frees the model. ``autostart`` (default) configures and activates.

The parts live in their own modules: parameters (names, checks, descriptors), inputs (cloud
or depth + camera_info adapters, each topic QoS-matched by input_qos), worker (newest-wins
mailbox and the supervised thread), frames (tf2: gravity, target_frame), outputs
(publishers). Executor callbacks sit in separate groups: intake, query service, timers, and
rclpy's own parameter and lifecycle services; query calls run one at a time, so however many
callers wait for a first input, intake and parameters keep their threads.
"""
from __future__ import annotations

import signal
import sys
import threading
import time

import numpy as np

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from patchalign_ros.srv import QueryParts

from .conversions import result_to_msg
from .frames import FrameError, Frames
from .diagnostics import inference_status
from .inputs import BAD_INPUT, INPUTS
from .outputs import OutputPublishers
from .query_service import answer_query
from .transforms import transform_segments
from .parameters import (NODE_NAME, PARAMETERS, apply_live, apply_scene_parameter, check_parameter,  # noqa: F401
                         declare_parameters, inference_config)
from .worker import FrameMailbox, SupervisedWorker

SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=256, reliability=ReliabilityPolicy.RELIABLE)


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._finder = None
        self._load_error = "not configured yet"
        self._active = False
        self._mailbox = FrameMailbox()
        self._worker = SupervisedWorker(self._worker_step, self._on_worker_error)
        self._infer_lock = threading.Lock()
        self._worker_error, self._worker_error_time = "", 0.0
        self._last_run = 0.0
        self._stats = {"received": 0, "processed": 0, "dropped": 0, "rejected": 0, "failed": 0, "errors": 0}
        self._last_timing = {}
        # (objects whose encoder pass was reused, objects, scene split reused) of the last frame
        self._last_reused = (0, 0, False)
        self._last_reject = ""
        self._scene_message = ""
        self._logged_causes = set()
        self._outputs = None
        self._input = None
        self._frames = None
        self._input_warning = ""
        self._up_source = ""
        # Separate groups: intake is never starved by queries waiting for an input, queries run
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

    def p(self, name):
        return self.get_parameter(name).value

    def _log_once(self, cause: str, text: str, level: str = "warning") -> None:
        if cause not in self._logged_causes:  # once per cause, not once per frame
            self._logged_causes.add(cause)
            getattr(self.get_logger(), level)(text)

    def _on_set_parameters(self, params):
        for prm in params:
            if prm.name in PARAMETERS:
                reason = check_parameter(prm.name, prm.value)
                if reason is not None:
                    return SetParametersResult(successful=False, reason=reason)
        if self._finder is not None:  # accepted: scene settings apply live, thresholds at each frame
            for prm in params:
                apply_scene_parameter(self._finder, prm.name, prm.value)
        return SetParametersResult(successful=True)

    # -- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state):
        from ..inference.pipeline import PartFinder

        if self.p("threads"):
            import torch

            torch.set_num_threads(int(self.p("threads")))
        step = "set up the input"
        try:
            self._input = INPUTS[self.p("input")](self, self._on_input, self._intake_group, self.p)
            step = "load the model"
            self._finder = PartFinder.load(self.p("checkpoint") or None, text_encoder=self.p("text_encoder") or None,
                                           device=self.p("device"), config=inference_config(self.p),
                                           backend=self.p("backend"), precision=self.p("precision"),
                                           registry=self.p("model_registry") or None)
        except Exception as exc:  # any failure leaves the node up and says why
            self._finder, self._input = None, None
            self._load_error = f"cannot {step}: {type(exc).__name__}: {exc}"
            self.get_logger().error(self._load_error)
            return TransitionCallbackReturn.FAILURE
        self._load_error = ""
        cfg = self._finder.model.config
        self.get_logger().info(f"model {cfg.name} ({cfg.depth} blocks, {cfg.trans_dim}-d, G={cfg.num_group}) on "
                               f"{self._finder.model.backend_name} with text encoder {self._finder.embedder.encoder.name}")
        reason = getattr(self._finder.model.backend, "auto_reason", "")
        if reason:
            self.get_logger().info(f"backend auto: {reason}")
        self._outputs = OutputPublishers(self, bool(self.p("publish_detections")))
        self._frames = Frames(self, self.p("target_frame"), self.p("gravity_frame"))
        if self._frames.reason:
            self.get_logger().warning(f"target_frame / gravity_frame set, but {self._frames.reason}: results stay "
                                      "in the input's frame, up from the frame convention")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        self._mailbox.clear()
        self._start_worker()
        self._active = True
        for sub in self._input.subscriptions:
            sub.subscribe(self.p("reliability"), int(self.p("qos_depth")))
        return super().on_activate(state)

    def _release(self, unload: bool) -> None:
        self._active = False
        if self._input is not None:
            for sub in self._input.subscriptions:
                sub.unsubscribe()
        self._stop_worker()
        self._mailbox.clear()  # a stale frame must not be processed after reactivation
        if unload:
            if self._outputs is not None:
                self._outputs.destroy()
            if self._frames is not None:
                self._frames.close()
            with self._infer_lock:  # a query still running keeps its finder until it is done
                self._finder = None
            self._outputs, self._frames, self._input = None, None, None
            self._load_error = "not configured (cleaned up)"

    def on_deactivate(self, state):
        self._release(unload=False)
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self._release(unload=True)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        self._release(unload=False)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        self.get_logger().error(f"lifecycle error in state {state.label}; stopping and unloading")
        self._release(unload=True)
        return TransitionCallbackReturn.SUCCESS  # -> unconfigured, ready to configure again

    def autostart(self) -> bool:
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def _start_worker(self):
        self._worker.start()

    def _stop_worker(self):
        self._worker.stop(self._mailbox, warn=self.get_logger().warning)

    # -- input -----------------------------------------------------------------------------
    def _on_input(self, item):
        self._stats["received"] += 1
        if self._mailbox.put(item):
            self._stats["dropped"] += 1  # newest frame wins

    def _check_input(self):
        """Timer: follow the publishers' QoS and notice input that never arrives or never pairs."""
        if self._input is None or not self._active:
            return
        warnings = [sub.check(self.p("reliability"), int(self.p("qos_depth")), float(self.p("stale_input_s")))
                    for sub in self._input.subscriptions]
        warnings.append(self._input.status(float(self.p("stale_input_s"))))
        self._input_warning = "; ".join(w for w in warnings if w)
        for w in filter(None, warnings):
            self._log_once("input:" + w.split("likely cause:")[-1][:80], w)

    def _reject(self, reason: str, cause: str):
        self._stats["rejected"] += 1
        self._last_reject = reason
        self._log_once(cause, f"rejected an input: {reason}")

    def _up_for(self, frame_id: str):
        """(up vector or None, frame hint): the ``gravity`` parameter, else tf2's ``gravity_frame``
        +z in the input's frame, else None and the frame id for the REP 103/105 convention."""
        gravity = np.asarray(self.p("gravity"), dtype=np.float64)
        if np.linalg.norm(gravity) > 0:
            self._up_source = "the gravity parameter"
            return -gravity, frame_id
        frames = self._frames
        if frames is not None and frames.available and self.p("gravity_frame") and frame_id:
            try:
                up = frames.up_in(frame_id, self.p("gravity_frame"))
                self._up_source = f"gravity_frame {self.p('gravity_frame')} (tf2)"
                return up, frame_id
            except FrameError as exc:  # not yet available, or no such frame
                self._log_once(f"tf-gravity:{frame_id}", f"{exc}; using the frame convention")
        self._up_source = f"the frame convention of {frame_id or 'an empty frame id'}"
        return None, frame_id

    # -- inference -------------------------------------------------------------------------
    def _run(self, item, queries, min_score=None, keypoints=True):
        t0 = time.perf_counter()
        frame = self._input.to_frame(item)
        convert_ms = (time.perf_counter() - t0) * 1e3
        target = self.p("target_frame")
        with self._infer_lock:
            finder = self._finder
            if finder is None:
                raise RuntimeError(f"model not loaded: {self._load_error}")
            moved = None
            if target and target != frame.header.frame_id and self._frames.available:  # a missing tf skips the frame
                moved = self._frames.lookup(target, frame.header.frame_id, frame.header.stamp,
                                            float(self.p("tf_timeout_s")))
            apply_live(finder, self.p)
            up, hint = self._up_for(frame.header.frame_id)
            result = finder.find_parts(frame.points, queries, scene=bool(self.p("scene_mode")), keypoints=keypoints,
                                       min_score=min_score, up=up, frame=hint or "auto",
                                       memory_key=frame.header.frame_id)
        self._scene_message = result.scene_message
        if result.scene_message:
            self._log_once("scene:" + result.scene_message.split(";")[0][:40], f"scene: {result.scene_message}")
        result.timing_ms["preprocess"] = result.timing_ms.get("preprocess", 0.0) + convert_ms
        result.timing_ms["total"] = result.timing_ms.get("total", 0.0) + convert_ms
        self._last_timing = dict(result.timing_ms)
        self._last_reused = (result.reused_objects, len(result.objects), result.scene_reused)
        out = result_to_msg(result, frame.header)
        if moved is not None:
            transform_segments(out, *moved, target)
        return frame, result, out

    def _on_worker_error(self, exc):
        """Whatever one iteration raises is counted, logged once per cause and reported as
        ERROR in diagnostics; the loop goes on."""
        self._stats["errors"] += 1
        self._worker_error, self._worker_error_time = f"{type(exc).__name__}: {exc}", time.monotonic()
        self._log_once("worker:" + type(exc).__name__ + str(exc)[:60],
                       f"inference worker error (it keeps running): {self._worker_error}", "error")

    def _worker_step(self, generation: int):
        item = self._mailbox.take(0.5, self._worker.stop_event)
        if item is None or not self._worker.is_current(generation):
            return
        queries = [q for q in self.p("queries") if q.strip()]
        outputs = self._outputs
        if not queries or outputs is None or not outputs.listened():
            return  # nobody listens: skip the work
        wait = 1.0 / float(self.p("max_rate_hz")) - (time.monotonic() - self._last_run)
        if wait > 0 and self._worker.stop_event.wait(wait):
            return
        item = self._mailbox.newer(item)
        self._last_run = time.monotonic()
        try:
            frame, result, out = self._run(item, queries, keypoints=bool(self.p("publish_keypoints")))
        except BAD_INPUT as exc:
            self._reject(str(exc), type(exc).__name__ + str(exc).split(":")[0])
            return
        except Exception as exc:  # one bad frame must not stop the node
            self._stats["failed"] += 1
            self.get_logger().error(f"inference failed on a frame: {type(exc).__name__}: {exc}")
            return
        self._stats["processed"] += 1
        if self._active and self._worker.is_current(generation) and self._outputs is not None:
            self._outputs.publish(frame, result, out, max(1.0, 3.0 / float(self.p("max_rate_hz"))))

    # -- service ---------------------------------------------------------------------------
    def _on_query(self, request, response):
        return answer_query(self, request, response)

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
        msg = DiagnosticArray(status=[inference_status(self)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(argv=None) -> int:
    """Ctrl-C at any moment exits 0 without a traceback: while importing and loading (the
    entry script's handler, then rclpy's, which chains to it) as while spinning."""
    node = executor = None
    try:
        rclpy.init(args=argv if argv is not None else sys.argv)
        node = PerceptionNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        if node.p("autostart") and not node.autostart():
            node.get_logger().error("configure failed; the node stays up (unconfigured) and answers with the reason")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        # Ctrl-C reaches the node twice under `ros2 launch` (the terminal's process group and
        # launch forwarding it): a second one must not interrupt the clean-up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node._active = False
            node._stop_worker()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
