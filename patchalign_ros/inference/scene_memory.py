"""The last frame's scene split, kept for an organized stream whose view has not changed.

A camera looking at a still table sends nearly the same depth image frame after frame, and the
scene stage (support plane, clustering, merging: ~80 ms for 17 objects on two cores) would find
the same objects again. For organized clouds (one point per pixel) a frame reuses the previous
split only when its points barely moved anywhere: per pixel, the point moved less than
``tolerance(r) = abs_tolerance + rel_tolerance * r^2`` at range r from the sensor (depth noise of
structured light and stereo grows as r^2; the defaults are ~8 sigma of the fitted Kinect model), and

* no connected blob of pixels that moved or newly got a depth reaches ``max_blob_pixels`` (the
  default, half the smallest object, cannot hide a new or moved object; depth sensors' edge
  pixels come and go every frame, each alone: with the Kinect model's edge drop the largest such
  blob on a 17-object table was 9 pixels, against ~3,500 pixels flickering in all),
* no remembered object has more than ``max_object_moved`` of its pixels moved (an object shifted
  by 1 cm moves a third of them) or lost more than ``max_object_lost`` of them (occluded).

Anything else - another view key, another image size, another "up" prior or sensor origin,
other scene settings, an older split than ``max_age_s`` - splits the scene afresh. A reused
object keeps its pixels that are still valid; everything after the split runs on the new points.
"""
from __future__ import annotations

import threading
import time
from dataclasses import astuple, dataclass, replace

import numpy as np

from .object_memory import same_up
from .scene import SceneSegmentation


@dataclass
class _Split:
    points: np.ndarray        # (H*W, 3) float32, NaN where invalid
    ranges: np.ndarray        # (H*W,) float32 range from the sensor per pixel, NaN where invalid
    segmentation: SceneSegmentation  # its objects: index arrays into the frame's points
    made_at: float
    context: tuple


def frame_points(xyz: np.ndarray, sensor_origin) -> tuple[np.ndarray, np.ndarray]:
    """((N, 3) float32 points, NaN rows where invalid; (N,) float32 range from the sensor)."""
    pts = xyz.astype(np.float32)
    origin = np.asarray(sensor_origin, dtype=np.float32)
    d = pts - origin if origin.any() else pts
    ranges = np.sqrt(np.einsum("ij,ij->i", d, d))
    pts[~np.isfinite(ranges)] = np.nan
    return pts, ranges


def scene_context(key, shape, prior, sensor_origin, scene_config) -> tuple:
    """What a split depends on besides the depth image: (key, (H, W), the prior's up or None,
    the prior's kind, sensor origin, scene settings)."""
    up = None if prior is None else np.asarray(prior.vector, dtype=np.float64) / np.linalg.norm(prior.vector)
    kind = None if prior is None else (prior.source, prior.hard)
    return (key, tuple(shape), up, kind, tuple(np.asarray(sensor_origin, dtype=np.float64).round(6)),
            astuple(scene_config))


def same_context(a: tuple, b: tuple) -> bool:
    """Equal contexts, "up" within a degree (``object_memory.same_up``)."""
    return a[:2] == b[:2] and a[3:] == b[3:] and same_up(a[2], b[2])


class SceneMemory:
    """The last split per stream, reused while the depth image stays the same. Thread-safe."""

    def __init__(self, max_age_s: float = 1.0, abs_tolerance: float = 0.003, rel_tolerance: float = 0.008,
                 max_blob_pixels: int = 75, max_object_moved: float = 0.02, max_object_lost: float = 0.25):
        self.max_age_s = float(max_age_s)
        self.abs_tolerance = float(abs_tolerance)
        self.rel_tolerance = float(rel_tolerance)
        self.max_blob_pixels = int(max_blob_pixels)
        self.max_object_moved = float(max_object_moved)
        self.max_object_lost = float(max_object_lost)
        self._last: _Split | None = None
        self._lock = threading.Lock()

    def pixel_changes(self, before: np.ndarray, ranges_before: np.ndarray, now: np.ndarray,
                      ranges_now: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(H*W,) bool each: moved beyond the noise, newly got a depth, lost its depth."""
        valid_before, valid_now = np.isfinite(ranges_before), np.isfinite(ranges_now)
        d = now - before
        with np.errstate(invalid="ignore"):
            moved = d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2 > \
                (self.abs_tolerance + self.rel_tolerance * ranges_before * ranges_before) ** 2
        return valid_before & valid_now & moved, ~valid_before & valid_now, valid_before & ~valid_now

    def recall(self, points: np.ndarray, ranges: np.ndarray, context: tuple) -> SceneSegmentation | None:
        """The last split with its objects cut to the pixels valid now, or None (split afresh).
        ``context[1]`` is the image's (H, W)."""
        from scipy import ndimage

        with self._lock:
            last = self._last
        if last is None or not same_context(last.context, context) or time.monotonic() - last.made_at > self.max_age_s \
                or last.points.shape != points.shape:
            return None
        moved, gained, lost = self.pixel_changes(last.points, last.ranges, points, ranges)
        for obj in last.segmentation.objects:
            if len(obj) and (moved[obj].mean() > self.max_object_moved or lost[obj].mean() > self.max_object_lost):
                return None
        fresh = moved | gained
        if fresh.sum() >= self.max_blob_pixels:  # only then can one blob be that large
            blobs, count = ndimage.label(fresh.reshape(context[1]))
            if count and np.bincount(blobs.reshape(-1))[1:].max() >= self.max_blob_pixels:
                return None
        valid = np.isfinite(ranges)
        return replace(last.segmentation, objects=[obj[valid[obj]] for obj in last.segmentation.objects])

    def remember(self, points, ranges, segmentation: SceneSegmentation, context) -> None:
        """``segmentation``: the frame's split, its objects as index arrays into ``points``."""
        with self._lock:
            self._last = _Split(points, ranges, segmentation, time.monotonic(), context)
