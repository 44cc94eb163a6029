"""The node's /diagnostics entry: one DiagnosticStatus, worst problem first (not loaded, worker
errors, slow frames, silent or unpaired input, rejected input, scene warnings), with counters,
per-stage timings, each input topic's QoS, the output frame, where "up" came from and the
backend."""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from .input_qos import reliability_name
from .parameters import NODE_NAME


def inference_status(node) -> DiagnosticStatus:
    status = DiagnosticStatus(name=f"{NODE_NAME}: inference", hardware_id=NODE_NAME)
    total = float(node._last_timing.get("total", 0.0))
    if node._finder is None:
        status.level, status.message = DiagnosticStatus.ERROR, f"model not loaded: {node._load_error}"
    elif node._worker_error and time.monotonic() - node._worker_error_time < 10.0:
        status.level, status.message = DiagnosticStatus.ERROR, f"inference worker errors: {node._worker_error}"
    elif not node._active:
        status.level, status.message = DiagnosticStatus.OK, "inactive"
    elif total > float(node.p("warn_total_ms")):
        status.level, status.message = DiagnosticStatus.WARN, f"slow: last frame {total:.0f} ms"
    elif node._input_warning:
        status.level, status.message = DiagnosticStatus.WARN, node._input_warning
    elif node._stats["rejected"] and node._last_reject:
        status.level, status.message = DiagnosticStatus.WARN, f"rejected input; last: {node._last_reject}"
    elif node._scene_message:
        status.level, status.message = DiagnosticStatus.WARN, f"scene: {node._scene_message}"
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    status.values = [KeyValue(key=k, value=str(v)) for k, v in node._stats.items()]
    status.values += [KeyValue(key=f"{k}_ms", value=f"{v:.1f}") for k, v in node._last_timing.items()]
    status.values.append(KeyValue(key="reused_objects", value="{} of {}".format(*node._last_reused[:2])))
    status.values.append(KeyValue(key="scene_reused", value=str(bool(node._last_reused[2])).lower()))
    status.values.append(KeyValue(key="input", value=node.p("input")))
    if node._input is not None:
        for sub in node._input.subscriptions:
            if sub.sub is not None:
                status.values.append(KeyValue(key=f"reliability {sub.topic_name}",
                                              value=reliability_name(sub.reliability)))
        first = node._input.subscriptions[0]
        if first.sub is not None:
            status.values.append(KeyValue(key="input_reliability", value=reliability_name(first.reliability)))
    status.values.append(KeyValue(key="output_frame", value=node.p("target_frame") or "the input's frame"))
    if node._up_source:
        status.values.append(KeyValue(key="up_from", value=node._up_source))
    if node._frames is not None and node._frames.reason:
        status.values.append(KeyValue(key="tf", value=node._frames.reason))
    if node._outputs is not None and node._outputs.detections_note:
        status.values.append(KeyValue(key="detections", value=node._outputs.detections_note))
    status.values.append(KeyValue(key="backend", value=node._backend_summary()))
    finder = node._finder
    reason = getattr(finder.model.backend, "auto_reason", "") if finder is not None else ""
    if reason:
        status.values.append(KeyValue(key="backend_auto", value=reason))
    return status
