"""Point cloud + part names -> named part segments and keypoints (the library's main entry).

    finder = PartFinder.load()                      # bundled default model + its text encoder
    result = finder.find_parts(points, ["handle"], scene=True)
    result.to_dict()                                # the CLI's JSON

Indices in results always refer to the caller's points in their order (organized input:
row-major), and invalid points (NaN/Inf) are never labelled.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..model import CheckpointError, PatchAlignModel
from ..text import PromptEmbedder, check_dimensions, validate_queries
from ..text.encoders import lazy_text_encoder
from . import labeling
from .keypoints import FewShotKeypoints, cluster_keypoints, features_at
from .object_memory import ObjectMemory, Remembered
from .preprocess import PreparedObject, checked_cloud, prepare_object, sample_indices, sample_indices_batch
from .presence import PresenceModel, presence_features
from .scene import SceneConfig, SceneSegmenter, UpPrior
from .scene_memory import SceneMemory, frame_points, scene_context

DEFAULT_MODEL_NAME = "default"


def _single_threaded_blas():
    """numpy's OpenBLAS threads keep spinning after each (small) product of the scene stage and
    take the cores from the encoder that runs next: measured here, the encoder of a real frame
    took 2x as long. One BLAS thread is as fast for these sizes. Scoped to our calls (the
    caller's numpy keeps its settings); a no-op without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


_THREADPOOLS = None
UNKNOWN_LABEL = "unknown"


def model_dirs() -> list[Path]:
    """Where bundled models are looked for: $PATCHALIGN_MODEL_DIR, the source tree's models/,
    the installed share/patchalign_ros/models."""
    dirs = []
    if os.environ.get("PATCHALIGN_MODEL_DIR"):
        dirs.append(Path(os.environ["PATCHALIGN_MODEL_DIR"]))
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("patchalign_ros")) / "models")
    except Exception:  # no ament index (pip install of the core) or package not installed
        pass
    import sys

    dirs.append(Path(sys.prefix) / "share" / "patchalign_ros" / "models")
    return dirs


def default_checkpoint() -> Path:
    for d in model_dirs():
        candidate = d / f"{DEFAULT_MODEL_NAME}.safetensors"
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        "no bundled default model found (looked for default.safetensors in "
        + ", ".join(str(d) for d in model_dirs())
        + "); pass --checkpoint PATH, or train one with `python -m patchalign_ros train`")


@dataclass
class InferenceConfig:
    sampling: str = "random"         # random (as in training) | fps
    label_mode: str = "nearest"      # nearest | membership
    score_threshold: float = 0.5     # part probability below this -> background
    min_part_points: int = 5
    # Object-level evidence (chosen on the real development data: mOSD false positives and the
    # object-mode real parts of `evaluate --real-data`): a part is reported on an object only when
    # its points' mean probability reaches part_min_mean_score and it covers between min_ and
    # max_part_fraction of the object (a label on nearly all of it is no part; drill grips and
    # bodies take 35-60 %, so 0.35 dropped them); pieces of it smaller than half its largest
    # connected piece (connected through neighbouring patches) are dropped.
    part_min_mean_score: float = 0.7
    min_part_fraction: float = 0.02
    max_part_fraction: float = 0.9
    keypoint_threshold: float = 0.6
    keypoint_eps: float = 0.08       # clustering radius as a fraction of the object's diagonal
    keypoint_min_weight: float = 3.0
    max_keypoints: int = 8
    unknown_threshold: float = 0.5   # name-every-part mode: below this a point is "unknown"
    # Competitors for every query: a point takes a query's label only where the query beats these
    # names too (and the other queries), so one query cannot claim an object because nothing else
    # was asked. Names sharing a word with a query's names are left out ("body" for "container");
    # [] turns it off. No "top"/"surface": a lid or a cap is the top.
    background: list = field(default_factory=lambda: ["body", "base", "side"])
    # Object-level presence model (inference.presence: coefficients + operating threshold), from the
    # model's registry entry; None: the part evidence gate above decides and the score is the
    # part's mean point probability.
    presence: dict | None = None
    presence_threshold: float | None = None  # None: the presence model's own operating point
    # A query that is one of a part's names is embedded as the mean over all that part's names
    # ("grip" = handle, grip, grab handle, holder), as training drew them: one word's quirks in the
    # text space do not decide (measured: "grip" alone put parts on boxes and tins).
    synonym_ensemble: bool = True
    # Frames of a stream (find_parts(..., memory_key=...)): an object that looks as it did in the
    # last frame of the same view reuses its encoder pass for up to this long (inference/
    # object_memory.py); 0: every object is encoded in every frame.
    reuse_max_age_s: float = 0.0
    # Test-time views: each object is encoded this many times (other random samples of its
    # points, turned about up by 360/views degrees where up is known) and its point
    # probabilities and presence statistics are the views' means. Costs views x the encoder.
    test_views: int = 1
    min_points: int = 32             # fewer valid points than this is an input error
    seed: int = 0
    scene: SceneConfig = field(default_factory=SceneConfig)

    def __post_init__(self):
        if isinstance(self.test_views, bool) or not isinstance(self.test_views, (int, np.integer)) \
                or not 1 <= self.test_views <= 16:
            raise ValueError(f"test_views must be an integer from 1 to 16, got {self.test_views!r}")
        self.test_views = int(self.test_views)

    @classmethod
    def from_dict(cls, data: dict | None) -> "InferenceConfig":
        data = dict(data or {})
        scene = SceneConfig.from_dict(data.pop("scene", None))
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown inference settings: {', '.join(unknown)}")
        return cls(scene=scene, **data)


@dataclass
class Part:
    label: str
    score: float
    point_indices: np.ndarray
    centroid: np.ndarray
    box_center: np.ndarray
    box_orientation: np.ndarray  # quaternion x, y, z, w
    box_size: np.ndarray
    approach: np.ndarray

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(float(self.score), 6),
                "point_indices": self.point_indices.tolist(), "centroid": _vec(self.centroid),
                "box": {"center": _vec(self.box_center), "orientation_xyzw": _vec(self.box_orientation),
                        "size": _vec(self.box_size)},
                "approach": _vec(self.approach)}


@dataclass
class Keypoint:
    label: str
    score: float
    position: np.ndarray
    normal: np.ndarray
    approach: np.ndarray

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(float(self.score), 6), "position": _vec(self.position),
                "normal": _vec(self.normal), "approach": _vec(self.approach)}


@dataclass
class ObjectResult:
    id: int
    point_indices: np.ndarray
    centroid: np.ndarray
    parts: list = field(default_factory=list)
    keypoints: list = field(default_factory=list)
    point_labels: np.ndarray | None = None  # per point of point_indices: index into queries, -1 none
    point_scores: np.ndarray | None = None  # per point: probability of its best query
    presence: dict = field(default_factory=dict)  # query -> probability that the object has the part
    presence_features: dict = field(default_factory=dict)  # query -> the statistics presence reads

    def to_dict(self) -> dict:
        return {"id": self.id, "point_indices": self.point_indices.tolist(), "centroid": _vec(self.centroid),
                "presence": {q: round(float(p), 6) for q, p in self.presence.items()},
                "parts": [p.to_dict() for p in self.parts], "keypoints": [k.to_dict() for k in self.keypoints]}


@dataclass
class SegmentationResult:
    num_points: int
    num_valid_points: int
    queries: list
    objects: list
    timing_ms: dict
    organized_shape: tuple | None = None
    up: np.ndarray | None = None
    up_source: str = "none"          # "plane" | "given" | a prior's source | "none"
    plane: np.ndarray | None = None  # support plane (a, b, c, d), normal up; None: not found / object mode
    scene_message: str = ""          # what scene mode could not do or assumed (empty: all fine)
    dropped_objects: int = 0         # objects beyond scene.max_objects
    reused_objects: int = 0          # objects whose encoder pass came from the last frame (ObjectMemory)
    scene_reused: bool = False       # the scene split came from the last frame (SceneMemory)

    def to_dict(self) -> dict:
        out = {"num_points": self.num_points, "num_valid_points": self.num_valid_points,
               "queries": list(self.queries), "objects": [o.to_dict() for o in self.objects],
               "up": None if self.up is None else _vec(self.up), "up_source": self.up_source,
               "plane": None if self.plane is None else _vec(self.plane), "scene_message": self.scene_message,
               "dropped_objects": self.dropped_objects, "reused_objects": self.reused_objects,
               "scene_reused": self.scene_reused,
               "timing_ms": {k: round(v, 3) for k, v in self.timing_ms.items()}}
        if self.organized_shape:
            out["organized_shape"] = list(self.organized_shape)
        return out

    def point_label_array(self) -> np.ndarray:
        """Label per input point: index into ``queries``, -1 for background/invalid."""
        labels = np.full(self.num_points, -1, dtype=np.int64)
        for obj in self.objects:
            if obj.point_labels is not None:
                labels[obj.point_indices] = obj.point_labels
        return labels

    def point_score_array(self) -> np.ndarray:
        """Best-query probability per input point (0 outside objects and for invalid points)."""
        scores = np.zeros(self.num_points, dtype=np.float32)
        for obj in self.objects:
            if obj.point_scores is not None:
                scores[obj.point_indices] = obj.point_scores
        return scores


def _looks_like_a_camera_view(points: np.ndarray) -> bool:
    """A depth camera's cloud in its optical frame: (almost) every point in front (z > 0) and
    within its field of view (|x|, |y| < 1.5 z, i.e. under ~56 deg off axis)."""
    z = points[:, 2]
    inside = (z > 0) & (np.abs(points[:, 0]) < 1.5 * z) & (np.abs(points[:, 1]) < 1.5 * z)
    return len(points) > 0 and float(inside.mean()) > 0.99


def _vec(v) -> list:
    return [round(float(x), 6) for x in np.asarray(v).reshape(-1)]


class _Timer:
    def __init__(self):
        self.ms: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._last = self._t0

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = self.ms.get(name, 0.0) + (now - self._last) * 1e3
        self._last = now

    def done(self) -> dict:
        self.ms["total"] = (time.perf_counter() - self._t0) * 1e3
        return self.ms


@dataclass
class _ScoredFrame:
    timer: _Timer
    xyz: np.ndarray
    shape: tuple | None
    valid: np.ndarray
    up: np.ndarray | None
    objects: list  # (object id, point indices, PreparedObject, patch features, centers, point probs)
    scene: object = None  # SceneSegmentation in scene mode
    nearest: dict = field(default_factory=dict)  # object id -> each point's nearest patch
    patch_logits: dict = field(default_factory=dict)  # object id -> [(G, names) patch logits per view]
    reused: int = 0
    scene_reused: bool = False


class PartFinder:
    """A loaded model, its text encoder and the inference settings."""

    def __init__(self, model: PatchAlignModel, embedder: PromptEmbedder, config: InferenceConfig | None = None,
                 presence: dict | None = None):
        """``presence``: the model's calibration (its registry entry's ``presence``); the
        config's ``presence``, when set, replaces it."""
        check_dimensions(embedder.dim, model.config.text_dim, embedder.encoder.name)
        self.model = model
        self.embedder = embedder
        self.config = config or InferenceConfig()
        self.segmenter = SceneSegmenter(self.config.scene)
        self.presence = PresenceModel.from_dict(self.config.presence or presence)
        self.set_reuse(self.config.reuse_max_age_s)

    def set_reuse(self, max_age_s: float) -> None:
        """Reuse, for up to ``max_age_s`` (0: off), the encoder passes of unchanged objects and,
        for organized clouds whose depth did not change, the scene split of the last frame."""
        self.config.reuse_max_age_s = float(max_age_s)
        on = self.config.reuse_max_age_s > 0
        self.memory = ObjectMemory(self.config.reuse_max_age_s) if on else None
        self.scene_memory = SceneMemory(self.config.reuse_max_age_s) if on else None

    @classmethod
    def load(cls, checkpoint=None, text_encoder: str | None = None, device: str = "cpu",
             config: InferenceConfig | None = None, cache_dir="default", backend: str = "torch",
             precision: str = "fp32", registry=None) -> "PartFinder":
        """``checkpoint``: a registry name (``models list``; downloaded from the Hub when asked
        for and not cached), a path, or None for the bundled default. A registry entry also
        brings its text encoder, input settings and (without ``config``) default thresholds."""
        from ..registry import resolve

        entry = None
        if checkpoint is None:
            path = default_checkpoint()
            try:  # the bundled default's registry entry brings its calibration
                from ..registry import load_registry

                entry = load_registry(registry).get(DEFAULT_MODEL_NAME)
            except Exception:
                entry = None
        else:
            path, entry = resolve(checkpoint, registry)
        model = PatchAlignModel.from_checkpoint(path, device=device, backend=backend, precision=precision,
                                                config_overrides=entry.config if entry else None)
        spec = text_encoder or (entry.text_encoder if entry and entry.text_encoder else model.config.text_encoder)
        encoder = lazy_text_encoder(spec, model.config.text_dim, device=device)
        if config is None and entry is not None and entry.inference:
            config = InferenceConfig.from_dict(entry.inference)
        return cls(model, PromptEmbedder(encoder, cache_dir=cache_dir), config,
                   presence=entry.presence if entry is not None else None)

    # -- stages ---------------------------------------------------------------------------
    def _valid_points(self, points):
        return checked_cloud(points, self.config.min_points)

    @staticmethod
    def up_prior(up=None, frame: str | None = "auto", organized: bool = False, points=None) -> UpPrior | None:
        """The prior for "up": an explicit vector (hard), else the frame convention:
        ``optical`` (REP 105 camera frames, up about -y, soft), ``body`` (REP 103, +z, as firm as a
        given vector: ``body_up_tolerance_deg``), a ROS frame id
        (``*_optical_frame`` -> optical, any other -> body), ``auto`` or None. ``auto``:
        organized clouds come from cameras -> optical; an unorganized cloud whose points all lie
        in front of the origin along +z (a camera's view cone, not a LiDAR's surround) -> optical
        too; otherwise no prior."""
        if up is not None:
            return UpPrior.from_vector(up, "given", hard=True)
        if frame is None or frame == "none":
            return None
        if frame == "auto":
            if organized or (points is not None and _looks_like_a_camera_view(points)):
                return UpPrior.from_convention("optical")
            return None
        if frame in ("optical", "body"):
            return UpPrior.from_convention(frame)
        return UpPrior.from_frame_id(frame)

    def _objects(self, xyz, valid, scene: bool, prior: UpPrior | None, sensor_origin, shape=None, memory_key=None):
        """(objects as index arrays into ``xyz``, up, SceneSegmentation or None, scene reused)."""
        if not scene:
            up = None if prior is None or not prior.hard else prior.vector
            return [valid], up, None, False
        memory = self.scene_memory if memory_key is not None and shape is not None else None
        if memory is not None:
            points, ranges = frame_points(xyz, sensor_origin)
            context = scene_context(memory_key, shape, prior, sensor_origin, self.config.scene)
            kept = memory.recall(points, ranges, context)
            if kept is not None:
                return kept.objects, kept.up, kept, True
        seg = self.segmenter.segment(xyz[valid], sensor_origin=sensor_origin, prior=prior)
        seg = replace(seg, objects=[valid[o] for o in seg.objects])  # into the frame's points
        if memory is not None:
            memory.remember(points, ranges, seg, context)
        return seg.objects, seg.up, seg, False

    def prepare_objects(self, xyz: np.ndarray, objects: list, up=None, view: int = 0) -> list:
        """Model input per object; ``view`` v of ``test_views`` samples with seed + v and turns
        by v / test_views of a full turn about up (view 0: the plain pass)."""
        cfg = self.model.config
        seed = self.config.seed + view
        yaw = 2.0 * np.pi * view / max(1, self.config.test_views)
        if self.config.sampling == "random":
            # One generator per object, seeded alike: an object is sampled the same way whether
            # it comes from a scene or alone (object mode), whatever else is in the frame.
            samples = [sample_indices(xyz[idx], cfg.num_points, "random", np.random.default_rng(seed))
                       for idx in objects]
        else:
            samples = sample_indices_batch([xyz[idx] for idx in objects], cfg.num_points, self.config.sampling,
                                           np.random.default_rng(seed))
        return [prepare_object(xyz[idx], cfg.num_points, cfg.axis_permutation, up=up, index=sample, yaw=yaw)
                for idx, sample in zip(objects, samples)]

    def encode_prepared(self, prepared: list):
        """One encoder call for all objects of a frame; numpy (features, centers, patch_index)."""
        if not prepared:
            return None
        out = self.model.encode(np.stack([p.model_points for p in prepared]))
        return (out.patch_features.cpu().numpy().astype(np.float64),
                out.centers.cpu().numpy().astype(np.float64), out.patch_index.cpu().numpy())

    def encode_objects(self, xyz: np.ndarray, objects: list, up=None):
        prepared = self.prepare_objects(xyz, objects, up)
        return prepared, self.encode_prepared(prepared)

    @staticmethod
    def to_model_frame(prepared: PreparedObject, points: np.ndarray) -> np.ndarray:
        return ((points @ prepared.rotation.T) - prepared.center @ prepared.rotation.T) / prepared.scale

    def _object_probs(self, xyz, idx, prepared, feats, centers, patch_index, text):
        """(point probabilities (M, Q), each point's nearest patch, patch logits (G, Q))."""
        logits = labeling.patch_logits(feats, text[0], self.model.logit_scale, self.model.config.logit_bias, text[1])
        probs_patch = labeling.sigmoid(logits)
        pts_model = self.to_model_frame(prepared, xyz[idx])
        nearest = labeling.nearest_patch(pts_model, centers)
        if self.config.label_mode == "membership":
            # sample_index addresses the object's points; patch_index addresses the samples.
            return labeling.point_patch_values(pts_model, centers, probs_patch, "membership",
                                               prepared.sample_index, patch_index), nearest, logits
        return labeling.point_patch_values(pts_model, centers, probs_patch, "nearest", nearest=nearest), nearest, logits

    def competitors(self, queries: list) -> list:
        """The background names that compete with ``queries`` (none that may mean a query's part)."""
        from ..data.shapes import related_words
        from ..text.prompts import clean_label

        asked = set().union(*(related_words(q) for q in queries))
        taken = {clean_label(q) for q in queries}
        return [b for b in self.config.background if clean_label(b) not in taken and not (related_words(b) & asked)]

    # -- public API -----------------------------------------------------------------------
    def embed_queries(self, queries: list[str], category: str | None = None) -> np.ndarray:
        """Prompt-ensembled text embeddings (over the part's synonyms too, with
        ``synonym_ensemble``); with the object's category the official "a {part} of a {object}"
        ensemble is used."""
        if not self.config.synonym_ensemble:
            return self.embedder.embed(queries, category)
        from ..data.shapes import synonym_group

        return self._embed_groups([synonym_group(q) for q in queries], category)

    def _embed_groups(self, groups: list, category: str | None) -> np.ndarray:
        """One unit embedding per group of names: the mean of its names' prompt ensembles."""
        flat = self.embedder.embed([n for g in groups for n in g], category)
        out, i = [], 0
        for g in groups:
            mean = flat[i:i + len(g)].mean(axis=0)
            out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            i += len(g)
        return np.stack(out).astype(np.float32)

    def query_text(self, queries: list[str], category: str | None = None) -> tuple:
        """(embeddings (T, D), starts (Q,)): what the patches are scored against. A query has one
        row (``embed_queries``), or with ``synonym_ensemble`` one per part of its query family
        ("lid" and "cap": ``data.shapes.QUERY_FAMILIES``), of which each patch takes the best."""
        if not self.config.synonym_ensemble:
            return self.embedder.embed(queries, category), np.arange(len(queries))
        from ..data.shapes import family_groups

        per_query = [family_groups(q) for q in queries]
        starts = np.cumsum([0] + [len(g) for g in per_query[:-1]])
        return self._embed_groups([g for groups in per_query for g in groups], category), starts

    def _score_objects(self, points, names: list, scene: bool, up, frame, sensor_origin, category=None,
                       memory_key=None) -> "_ScoredFrame":
        """The stages shared by every mode: validate, embed text, split the scene, encode all
        objects in one batch, and score every object point against every name."""
        with _single_threaded_blas():
            return self._score_objects_inner(points, names, scene, up, frame, sensor_origin, category, memory_key)

    def _encode_objects(self, xyz, objects: list, up, memory_key, timer) -> tuple[list, int]:
        """Per object a list of (PreparedObject, features, centers, patch_index), one per test
        view: one encoder batch (every view of every object) for the objects the memory does not
        hold unchanged (all of them without a memory or a key)."""
        memory = self.memory if memory_key is not None and self.config.label_mode == "nearest" else None
        views = self.config.test_views
        context = (memory_key, None if up is None else np.asarray(up, dtype=np.float64), views)
        recalled, voxels, centroids = memory.recall(xyz, objects, context) if memory else \
            ([None] * len(objects), None, None)
        fresh = [i for i, r in enumerate(recalled) if r is None]
        fresh_objects = [objects[i] for i in fresh]
        prepared = [p for v in range(views) for p in self.prepare_objects(xyz, fresh_objects, up, view=v)]
        timer.lap("preprocess")
        feats, centers, patch_index = self.encode_prepared(prepared) or (None, None, None)
        timer.lap("encoder")
        encoded_at = time.monotonic()
        out = [None if r is None else r.views for r in recalled]
        n = len(fresh)
        for j, i in enumerate(fresh):
            out[i] = [(prepared[k], feats[k], centers[k], patch_index[k]) for k in range(j, views * n, n)]
        if memory:
            memory.remember([Remembered(voxels[i], centroids[i], out[i],
                                        encoded_at if recalled[i] is None else recalled[i].encoded_at)
                             for i in range(len(objects))], context)
        return out, len(objects) - len(fresh)

    def _score_objects_inner(self, points, names, scene, up, frame, sensor_origin, category, memory_key
                             ) -> "_ScoredFrame":
        timer = _Timer()
        xyz, shape, valid = self._valid_points(points)
        prior = self.up_prior(up, frame, organized=shape is not None,
                              points=xyz[valid[:: max(1, len(valid) // 5000)]] if shape is None else None)
        timer.lap("preprocess")
        text = self.query_text(names, category)
        timer.lap("text")
        objects, up, seg, scene_reused = self._objects(xyz, valid, scene, prior, sensor_origin, shape, memory_key)
        timer.lap("scene")
        encoded, reused = self._encode_objects(xyz, objects, up, memory_key, timer)
        scored, nearest, patch_logits = [], {}, {}
        for i, (idx, views) in enumerate(zip(objects, encoded)):
            per_view = [self._object_probs(xyz, idx, *view, text) for view in views]
            # view 0 is the plain pass: its patches name the points for connectivity and keypoints
            probs = per_view[0][0] if len(per_view) == 1 else np.mean([v[0] for v in per_view], axis=0)
            nearest[i], patch_logits[i] = per_view[0][1], [v[2] for v in per_view]
            prep, feats, centers, _ = views[0]
            scored.append((i, idx, prep, feats, centers, probs))
        return _ScoredFrame(timer, xyz, shape, valid, up, scored, seg, nearest, patch_logits, reused, scene_reused)

    @staticmethod
    def _result(frame: "_ScoredFrame", queries, objects, given_up: bool) -> SegmentationResult:
        seg = frame.scene
        result = SegmentationResult(len(frame.xyz), len(frame.valid), queries, objects, frame.timer.done(),
                                    frame.shape, frame.up, reused_objects=frame.reused,
                                    scene_reused=frame.scene_reused)
        if seg is not None:
            result.up_source, result.plane = seg.up_source, seg.plane
            result.scene_message, result.dropped_objects = seg.message, seg.dropped
        elif frame.up is not None:
            result.up_source = "given" if given_up else "none"
        return result

    def find_parts(self, points, queries, scene: bool = False, keypoints: bool = True, up=None,
                   sensor_origin=(0.0, 0.0, 0.0), min_score: float | None = None,
                   few_shot: FewShotKeypoints | None = None, category: str | None = None,
                   frame: str | None = "auto", memory_key: str | None = None) -> SegmentationResult:
        """Parts named by ``queries``. ``up``: the up direction in the cloud's frame (e.g. minus
        gravity), a hard prior for the support plane and the object alignment; without it
        scene mode takes up from the plane, guided by the ``frame`` convention (see
        ``up_prior``), and object mode does not gravity-align. ``memory_key``: the view this
        frame comes from (a stream's frame id); with ``reuse_max_age_s`` set, objects unchanged
        since the last frame of the same key reuse its encoder pass (see object_memory.py)."""
        queries = validate_queries(queries)
        threshold = self.config.score_threshold if min_score is None else float(min_score)
        names = queries + self.competitors(queries)
        scored = self._score_objects(points, names, scene, up, frame, sensor_origin, category,
                                     memory_key if few_shot is None else None)
        xyz, aligned_up = scored.xyz, scored.up
        results = []
        for obj_id, idx, prep, feats, centers, probs in scored.objects:
            obj = self._build_object(obj_id, xyz, idx, probs, queries, threshold, aligned_up, keypoints,
                                     scored.nearest[obj_id], centers, scored.patch_logits[obj_id])
            if few_shot is not None:
                obj.keypoints += self._few_shot_keypoints(few_shot, xyz, idx, prep, feats, centers, obj_id,
                                                          aligned_up)
            results.append(obj)
        scored.timer.lap("postprocess")
        return self._result(scored, queries, results, up is not None)

    def name_parts(self, points, vocabulary, scene: bool = False, up=None,
                   sensor_origin=(0.0, 0.0, 0.0), category: str | None = None,
                   frame: str | None = "auto") -> SegmentationResult:
        """Label every point with one vocabulary entry (or "unknown") and a confidence."""
        vocabulary = validate_queries(vocabulary)
        scored = self._score_objects(points, vocabulary, scene, up, frame, sensor_origin, category)
        given_up = up is not None
        xyz, up = scored.xyz, scored.up
        labels_out = list(vocabulary) + [UNKNOWN_LABEL]
        results = []
        for obj_id, idx, _, _, _, probs in scored.objects:
            best = probs.argmax(axis=1)
            conf = probs[np.arange(len(best)), best]
            best = np.where(conf >= self.config.unknown_threshold, best, len(vocabulary))
            obj = ObjectResult(obj_id, idx, xyz[idx].mean(axis=0), point_labels=np.where(best < len(vocabulary), best, -1),
                               point_scores=conf)
            for lab in np.unique(best):
                members = best == lab
                if members.sum() < self.config.min_part_points:
                    continue
                obj.parts.append(self._make_part(labels_out[lab], float(conf[members].mean()), idx[members],
                                                 xyz[idx[members]], obj.centroid, up))
            obj.parts.sort(key=lambda p: -p.score)
            results.append(obj)
        scored.timer.lap("postprocess")
        return self._result(scored, labels_out, results, given_up)

    # -- result building ------------------------------------------------------------------
    @staticmethod
    def _make_part(label, score, indices, pts, object_centroid, up) -> Part:
        centroid = pts.mean(axis=0)
        center, quat, size = labeling.oriented_box(pts)
        approach = labeling.approach_direction(centroid, object_centroid, up)
        return Part(label, score, indices.astype(np.int64), centroid, center, quat, size, approach)

    def _build_object(self, obj_id, xyz, idx, probs, queries, threshold, up, keypoints, nearest,
                      centers, patch_logits) -> ObjectResult:
        """``probs`` / ``patch_logits`` hold the queries' columns first, then the competitors'."""
        pts = xyz[idx]
        labels = labeling.assign_labels(probs, threshold)
        labels[labels >= len(queries)] = -1  # a competitor won: background
        q_probs = probs[:, :len(queries)]
        obj = ObjectResult(obj_id, idx, pts.mean(axis=0), point_labels=labels, point_scores=q_probs.max(axis=1))
        diag = float(np.linalg.norm(np.ptp(pts, axis=0)))
        cfg = self.config
        for q, name in enumerate(queries):
            members = labels == q
            presence = None
            # at the 0.5 it was fitted at; with test views, the views' mean
            features = np.mean([presence_features(view_logits, q) for view_logits in patch_logits], axis=0)
            obj.presence_features[name] = features
            if self.presence is not None:
                presence = self.presence.probability(features)
            if members.any():
                members = labeling.main_components(members, nearest, centers)
                share = members.mean()
                evident = (probs[members, q].mean() >= cfg.part_min_mean_score if presence is None
                           else presence >= (cfg.presence_threshold or self.presence.threshold_for(name)))
                if not (members.any() and cfg.min_part_fraction <= share <= cfg.max_part_fraction and evident):
                    members[:] = False  # not enough evidence for this part on this object
                labels[(labels == q) & ~members] = -1
            score = presence if presence is not None else float(probs[members, q].mean()) if members.any() else 0.0
            obj.presence[name] = score
            if members.sum() >= self.config.min_part_points:
                obj.parts.append(self._make_part(name, score, idx[members], pts[members], obj.centroid, up))
            if keypoints:
                obj.keypoints += self._keypoints_from_weights(name, pts, np.where(members, probs[:, q], 0.0),
                                                              self.config.keypoint_threshold, diag, obj_id, obj.centroid, up)
        return obj

    def _keypoints_from_weights(self, label, pts, weights, threshold, diag, obj_id, centroid, up,
                                refine=None) -> list:
        """Cluster the votes into keypoints; ``refine(members) -> point index`` may pick the
        position within each cluster (default: its weighted centre, snapped to a point)."""
        cfg = self.config
        found = cluster_keypoints(pts, weights, threshold, eps=max(cfg.keypoint_eps * diag, 1e-6),
                                  min_weight=cfg.keypoint_min_weight, max_keypoints=cfg.max_keypoints, seed=cfg.seed)
        out = []
        # Normals need only the points near each keypoint: a tree over at most 20k of them keeps
        # this from growing with the object (a 100k-point close-up).
        near = pts if len(pts) <= 20000 else pts[np.random.default_rng(cfg.seed).choice(len(pts), 20000, replace=False)]
        tree = cKDTree(near) if found else None
        for cand in found:
            position = pts[refine(cand.members)] if refine is not None else cand.position
            normal = labeling.surface_normal(near, position, centroid, tree=tree)
            approach = -normal if np.linalg.norm(normal) > 0 else labeling.approach_direction(position, centroid, up)
            out.append(Keypoint(label, cand.score, position, normal, approach))
        return out

    def _few_shot_keypoints(self, few_shot, xyz, idx, prep, feats, centers, obj_id, up) -> list:
        pts = xyz[idx]
        pts_model = self.to_model_frame(prep, pts)
        diag = float(np.linalg.norm(np.ptp(pts, axis=0)))
        out = []
        for label, sim in few_shot.similarity(feats).items():
            weights = labeling.point_patch_values(pts_model, centers, FewShotKeypoints.similarity_to_weights(sim)[:, None])[:, 0]
            examples = np.stack(few_shot.features[label])

            def best_match(members, examples=examples):
                # Patches vote for a region; the point whose interpolated feature matches an
                # example best is the keypoint (finer than the patch spacing).
                point_feats = features_at(pts_model[members], centers, feats)
                return members[int(np.argmax((point_feats @ examples.T).max(axis=1)))]

            out += self._keypoints_from_weights(label, pts, weights, 0.5, diag, obj_id, pts.mean(axis=0), up,
                                                refine=best_match)
        return out

    def add_keypoint_example(self, few_shot: FewShotKeypoints, points, keypoints, labels, up=None) -> None:
        """Encode an example shape and store its labelled keypoints (caller frame) for transfer."""
        xyz, _, valid = self._valid_points(points)
        prepared, (feats, centers, _) = self.encode_objects(xyz, [valid], up)
        kp_model = self.to_model_frame(prepared[0], np.asarray(keypoints, dtype=np.float64).reshape(-1, 3))
        few_shot.add_example(centers[0], feats[0], kp_model, list(labels))
