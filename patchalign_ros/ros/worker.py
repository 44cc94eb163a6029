"""Frames in, one at a time: a newest-wins mailbox and the supervised thread that serves it.

The mailbox keeps the newest input for continuous output (a newer one replaces it: the robot
wants the present, not a backlog) and, apart from it, the newest input for the query service
with its arrival time. The worker survives whatever one frame raises: the error is counted
and reported, the loop goes on. A generation number retires a worker that outlives its stop,
so two never serve at once."""
from __future__ import annotations

import threading
import time


class FrameMailbox:
    def __init__(self):
        self.cond = threading.Condition()
        self.latest = None       # newest input (for the service)
        self.latest_time = 0.0   # when it arrived (monotonic)
        self.pending = None      # newest input not yet processed (for continuous output)
        self.wait_deadline = 0.0

    def put(self, item) -> bool:
        """Store ``item``; True when it replaced one that was never processed."""
        with self.cond:
            self.latest_time = time.monotonic()
            self.latest = item
            dropped = self.pending is not None
            self.pending = item
            self.cond.notify_all()
            return dropped

    def take(self, timeout: float, stop: threading.Event):
        with self.cond:
            self.cond.wait_for(lambda: self.pending is not None or stop.is_set(), timeout=timeout)
            item, self.pending = self.pending, None
            return item

    def newer(self, item):
        """A newer pending input if one arrived meanwhile, else ``item``."""
        with self.cond:
            if self.pending is not None:
                item, self.pending = self.pending, None
            return item

    def clear(self) -> None:
        with self.cond:
            self.latest, self.pending = None, None
            self.cond.notify_all()

    def fresh(self, max_age: float):
        with self.cond:
            return self._fresh_locked(max_age)

    def _fresh_locked(self, max_age: float):
        if self.latest is not None and (max_age <= 0 or time.monotonic() - self.latest_time <= max_age):
            return self.latest
        return None

    def wait_fresh(self, timeout: float, max_age: float, keep_waiting):
        """Wait (bounded) for an input newer than ``max_age``. Service calls run one at a time;
        callers queued behind one that is waiting share its deadline instead of each waiting
        in turn."""
        now = time.monotonic()
        deadline = now + timeout
        with self.cond:
            if self.wait_deadline > now:
                deadline = min(deadline, self.wait_deadline)
            else:
                self.wait_deadline = deadline
            self.cond.wait_for(lambda: self._fresh_locked(max_age) is not None or not keep_waiting(),
                               timeout=max(0.0, deadline - time.monotonic()))
            return self._fresh_locked(max_age)


class SupervisedWorker:
    """Runs ``step(generation)`` in a loop on its own thread until stopped; ``on_error(exc)``
    hears what a step raised (the loop goes on)."""

    def __init__(self, step, on_error, name: str = "patchalign-inference"):
        self.step, self.on_error, self.name = step, on_error, name
        self.stop_event = threading.Event()
        self.generation = 0
        self.thread = None

    def is_current(self, generation: int) -> bool:
        return generation == self.generation and not self.stop_event.is_set()

    def _loop(self, generation: int) -> None:
        while self.is_current(generation):
            try:
                self.step(generation)
            except Exception as exc:
                self.on_error(exc)
                time.sleep(0.05)

    def start(self) -> None:
        self.stop(None)
        self.stop_event.clear()
        self.generation += 1
        self.thread = threading.Thread(target=self._loop, args=(self.generation,), name=self.name, daemon=True)
        self.thread.start()

    def stop(self, mailbox: FrameMailbox | None, warn=None) -> None:
        """Stop and wait: a frame in progress finishes first (``warn(text)`` every 5 s of it)."""
        self.generation += 1
        self.stop_event.set()
        if mailbox is not None:
            with mailbox.cond:
                mailbox.cond.notify_all()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            waited = 0.0
            while thread.is_alive():
                thread.join(timeout=5.0)
                waited += 5.0
                if thread.is_alive() and warn is not None:
                    warn(f"inference worker still finishing a frame after {waited:.0f} s")
        self.thread = None

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()
