"""One input topic with the reliability its publishers offer, and a watch for input that never
arrives. Each input of the node (a cloud, a depth image, its camera_info, a colour image) is
one of these."""
from __future__ import annotations

import time

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def reliability_name(policy) -> str:
    return "reliable" if policy == ReliabilityPolicy.RELIABLE else "best_effort"


class MatchedSubscription:
    """``auto`` reliability as rosbag2 does it: reliable only when every publisher offers
    reliable (a reliable reader cannot match a best-effort writer); best effort when any is
    best effort, which matches any writer. Without publishers: unchanged (best effort at
    first), so a publisher that restarts or a momentary gap in the graph does not flip the
    subscription. ``check()`` (a timer) follows changes and says why nothing arrives."""

    def __init__(self, node, msg_type, topic: str, callback, callback_group, what: str, size_hint: str):
        self.node, self.msg_type, self.topic, self.callback = node, msg_type, topic, callback
        self.group, self.what, self.size_hint = callback_group, what, size_hint
        self.sub = None
        self.reliability = None
        self.matched_since = None
        self.last_arrival = 0.0
        self.received = 0
        self.warning = ""

    @property
    def topic_name(self) -> str:
        return self.sub.topic_name if self.sub is not None else self.node.resolve_topic_name(self.topic)

    def _on_message(self, msg):
        self.last_arrival = time.monotonic()
        self.received += 1
        self.callback(msg)

    def offered(self) -> list:
        return [info.qos_profile.reliability for info in self.node.get_publishers_info_by_topic(self.topic_name)]

    def wanted(self, choice: str):
        if choice != "auto":
            return RELIABILITY[choice]
        offered = self.offered()
        if not offered:
            return self.reliability if self.reliability is not None else ReliabilityPolicy.BEST_EFFORT
        if all(r == ReliabilityPolicy.RELIABLE for r in offered):
            return ReliabilityPolicy.RELIABLE
        return ReliabilityPolicy.BEST_EFFORT

    def subscribe(self, choice: str, depth: int) -> None:
        reliability = self.wanted(choice)
        self.unsubscribe()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)
        self.sub = self.node.create_subscription(self.msg_type, self.topic, self._on_message, qos,
                                                 callback_group=self.group)
        self.reliability, self.matched_since = reliability, None
        self.node.get_logger().info(f"subscribed to {self.sub.topic_name} with {reliability_name(reliability)} QoS "
                                    f"(reliability: {choice})")

    def unsubscribe(self) -> None:
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
        self.sub, self.reliability = None, None

    def check(self, choice: str, depth: int, stale_s: float) -> str:
        """Resubscribe if the publishers' QoS asks for it; the reason nothing arrives, or ""."""
        if self.sub is None:
            return ""
        if self.wanted(choice) != self.reliability:
            self.subscribe(choice, depth)
        publishers = self.node.count_publishers(self.sub.topic_name)  # matched or not
        now = time.monotonic()
        if publishers == 0:
            self.matched_since, self.warning = None, ""
            return ""
        if self.matched_since is None:
            self.matched_since = now
        silent = now - max(self.last_arrival, self.matched_since)
        if silent <= stale_s:
            self.warning = ""
            return ""
        offered, ours = self.offered(), reliability_name(self.reliability)
        if ours == "best_effort" and any(r == ReliabilityPolicy.RELIABLE for r in offered):
            cause = (f"the publisher is reliable and this subscription best effort: large messages ({self.size_hint}) "
                     "are rarely delivered best effort over UDP; set reliability:=reliable or auto")
        elif ours == "reliable" and any(r != ReliabilityPolicy.RELIABLE for r in offered):
            cause = "a best-effort publisher cannot match this reliable subscription; set reliability:=auto"
        elif offered and all(r != ReliabilityPolicy.RELIABLE for r in offered):
            cause = ("the publisher is best effort: messages over ~1 MB are lost as UDP fragments between "
                     "processes (measured: qos-matrix); have the driver publish reliably, or send smaller ones")
        else:
            cause = "the publisher may not be publishing, or the network drops the messages"
        self.warning = (f"{publishers} publisher(s) on {self.sub.topic_name} but no {self.what} for {silent:.0f} s; "
                        f"likely cause: {cause}")
        return self.warning
