"""``~/query_parts``: the queries run on the newest input received within ``max_cloud_age_s``,
waiting (bounded) for one; every failure is an answer with its reason, never an exception."""
from __future__ import annotations

from ..text import validate_queries
from .inputs import BAD_INPUT
from .parameters import NODE_NAME


def answer_query(node, request, response):
    try:
        queries = validate_queries([q for q in request.queries])
    except ValueError as exc:
        response.success, response.message = False, f"bad queries: {exc}"
        return response
    if node._finder is None:
        response.success, response.message = False, f"model not loaded: {node._load_error}"
        return response
    if not node._active:
        response.success, response.message = False, ("the node is inactive (lifecycle): activate it, e.g. "
                                                      f"`ros2 lifecycle set /{NODE_NAME} activate`")
        return response
    asked = request.timeout_s if request.timeout_s >= 0 else float(node.p("service_timeout_s"))
    timeout = min(asked, float(node.p("max_wait_s")))
    max_age = float(node.p("max_cloud_age_s"))
    item = node._mailbox.fresh(max_age) or node._mailbox.wait_fresh(timeout, max_age, lambda: node._active)
    if item is None:
        topics = ", ".join(s.topic_name for s in node._input.subscriptions[:1]) if node._input else "its input"
        response.success, response.message = False, (
            f"no {'point cloud' if node.p('input') == 'points' else 'depth image + camera_info pair'} received "
            f"on {topics} within {timeout:.1f} s" +
            (f" (inputs older than max_cloud_age_s={max_age:g} s are not used)" if max_age > 0 else ""))
        return response
    min_score = request.min_score if request.min_score >= 0 else None
    try:
        _, _, out = node._run(item, queries, min_score=min_score, keypoints=request.include_keypoints)
    except BAD_INPUT as exc:
        node._reject(str(exc), type(exc).__name__ + str(exc).split(":")[0])
        response.success, response.message = False, f"the newest input cannot be used: {exc}"
        return response
    except Exception as exc:
        node._stats["failed"] += 1
        node.get_logger().error(f"query failed: {type(exc).__name__}: {exc}")
        response.success, response.message = False, f"inference failed: {type(exc).__name__}: {exc}"
        return response
    found = {}
    for seg in out.segments:
        found[seg.label] = found.get(seg.label, 0) + 1
    summary = ", ".join(f"{q}: {found.get(q, 0)}" for q in queries)
    response.success = True
    response.message = (f"{out.num_objects} object(s); parts found - {summary}; {out.total_ms:.0f} ms "
                        f"[{node._backend_summary()}]")
    response.result = out
    return response
