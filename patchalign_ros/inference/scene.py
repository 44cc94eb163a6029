"""Scene mode: from a real camera/LiDAR cloud to one point set per object.

1. **Up.** A prior for "up" in the cloud's frame: given by the caller (a gravity vector or tf;
   the plane must agree within ``gravity_tolerance_deg``), a REP 103 body frame's +z
   (``base_link``, ``velodyne``, ...: gravity-aligned by definition, so as firm, within
   ``body_up_tolerance_deg``), or a REP 105 ``*_optical_frame``'s -y (pitch unknown: soft,
   within ``up_tolerance_deg`` of the side the sensor sees; no agreeing plane -> the largest
   plane, said so).
2. **Support plane.** RANSAC over a random sample of the *real* points (voxel counts would
   favour far, sparse backgrounds), hypotheses restricted to the prior (for a convention prior
   on the side the sensor sees, so walls facing the camera never pass), refined by least
   squares. With a firm up, several level planes may qualify (a LiDAR's sweep holds the floor,
   a table, shelves): the support is the highest one that is a surface (one connected piece at
   least ``min_support_side`` across both ways: not a box's top) with something standing on
   it (not a ceiling). Objects are the points above it within a height band and over its
   footprint (the convex hull of its inliers, as in PCL's polygonal prism). No plane -> said
   in the result and the prior is used as up; nothing is removed.
3. **Objects that touch.** Voxel normals (1 cm); neighbour pairs whose normals meet at a
   concave angle (LCCP's convexity criterion, Stein et al. 2014) are cut, and voxels with many
   such pairs (creases between touching or stacked objects) are held out of the connected
   components and re-attached to the nearest segment afterwards. Segments then rejoin where
   they belong together (``_merge_segments``): convex or smooth shared boundaries, concave
   pieces (a mug's inside), pieces too small to be objects, handles cut at their concave roots
   (even across a gap of missing depth, and thin ones that reach down to the table, as a mug's
   handle does) and caps on top.

Every object is returned as indices into the points given to ``segment()``, so labels map
back to the source cloud.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, cKDTree

# The frame conventions a prior can come from: (name, up vector in that frame).
FRAME_CONVENTIONS = {"optical": np.array([0.0, -1.0, 0.0]), "body": np.array([0.0, 0.0, 1.0])}


@dataclass
class SceneConfig:
    crop_min: list = field(default_factory=lambda: [-float("inf")] * 3)  # caller frame, metres
    crop_max: list = field(default_factory=lambda: [float("inf")] * 3)
    voxel_size: float = 0.01
    plane_distance: float = 0.012       # RANSAC inlier distance; objects start above it (m)
    plane_min_fraction: float = 0.05    # the support plane holds at least this share of the points
    plane_iterations: int = 300         # RANSAC hypotheses
    plane_sample: int = 20000           # real points RANSAC counts on
    up_tolerance_deg: float = 80.0      # largest angle between a frame-convention prior and the plane
                                        # normal (robot cameras look down 20-70 deg: the table is that far off -y)
    gravity_tolerance_deg: float = 20.0  # the same for a given gravity / up (tf, parameter, --up)
    body_up_tolerance_deg: float = 15.0  # the same for a REP 103 body frame's +z (base_link, a LiDAR)
    support_candidates: int = 4         # level planes considered with a firm up (floor, table, ...)
    min_support_side: float = 0.25      # a support surface is one piece this wide both ways (m)
    support_cell: float = 0.05          # grid cell for that connectivity (m; LiDAR rings are sparse)
    max_object_height: float = 0.6      # height band above the plane (m)
    hull_margin: float = 0.03           # objects may overhang the plane's footprint this much (m)
    normal_radius: float = 0.025        # voxel normal estimation radius (m)
    cluster_eps: float = 0.02           # neighbour distance between voxels of one object (m)
    concave_deg: float = 15.0           # a concave bend sharper than this separates surfaces
    crease_fraction: float = 0.1        # voxels with this share of concave pairs are creases
    min_segment_points: int = 150       # smaller pieces join a neighbour (handles, noise)
    min_segment_share: float = 0.3      # pieces off the plane on a neighbour's side, smaller than this
                                        # share of it, join it (handles cut at their concave roots)
    min_stacked_share: float = 0.12     # the same for pieces on the neighbour's top (caps)
    gap_eps: float = 0.04               # small pieces off the plane look this far for their host (m)
    thin_part_std: float = 0.006        # pieces this thin (smallest principal std, m) and flat
    thin_part_ratio: float = 0.25       # (smallest / largest std) are attached parts (handles, lugs):
                                        # they join their host even when they reach down to the plane
    concave_segment_share: float = 0.5  # pieces with more concave bends than this join a neighbour
    smooth_boundary_share: float = 0.8  # neighbours whose shared boundary is this convex/smooth join
    # Parts inside the plane's inlier band (an upturned container's lugs, a mug handle's foot,
    # every object's bottom centimetre): band points at least band_floor above the table near the
    # object (and 3.5 sigma of its depth noise there) that connect to the object in steps of at
    # most band_step join it, up to band_reach from its points above the band. 0 (default): off.
    # Measured on the 62 Kinect scans (README "Objects down to the table"): object IoU up, lugs
    # found, but mug handles in scene mode down on the tune red mug, so not on by default.
    band_floor: float = 0.0
    band_step: float = 0.006
    band_reach: float = 0.04
    min_object_points: int = 150        # full-resolution points
    min_object_extent: float = 0.03     # largest side of the object's box, metres
    max_object_extent: float = 1.0
    max_objects: int = 32               # nearest first; the rest is counted in ``dropped``
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict | None) -> "SceneConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown scene settings: {', '.join(unknown)}")
        return cls(**data)


@dataclass
class UpPrior:
    """Where "up" is believed to be, in the cloud's frame, and how firmly."""
    vector: np.ndarray
    source: str          # "given" (gravity, tf, --up) | "convention:optical" | "convention:body"
    hard: bool           # hard: a plane must agree; soft: try without the prior if none does

    def tolerance_deg(self, cfg: "SceneConfig") -> float:
        if not self.hard:
            return cfg.up_tolerance_deg
        return cfg.body_up_tolerance_deg if self.source == "convention:body" else cfg.gravity_tolerance_deg

    @classmethod
    def from_vector(cls, up, source: str = "up", hard: bool = True) -> "UpPrior":
        v = np.asarray(up, dtype=np.float64).reshape(-1)
        if v.shape != (3,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) < 1e-9:
            raise ValueError(f"up must be a non-zero finite 3-vector, got {up!r}")
        return cls(v / np.linalg.norm(v), source, hard)

    @classmethod
    def from_convention(cls, name: str) -> "UpPrior":
        if name not in FRAME_CONVENTIONS:
            raise ValueError(f"unknown frame convention {name!r}; choose from {sorted(FRAME_CONVENTIONS)}")
        # a body frame's z is gravity's (REP 103); an optical frame's -y is up only for a level camera
        return cls(FRAME_CONVENTIONS[name].copy(), f"convention:{name}", hard=name == "body")

    @classmethod
    def from_frame_id(cls, frame_id: str) -> "UpPrior":
        """REP 105 optical frames (``*_optical_frame``) look along +z with y down; every other
        frame is a REP 103 body frame with z up."""
        return cls.from_convention("optical" if "optical" in (frame_id or "").lower() else "body")


@dataclass
class SceneSegmentation:
    objects: list             # list of index arrays into the points given to segment()
    plane: np.ndarray | None  # (a, b, c, d) with (a, b, c) the unit normal pointing "up"
    up: np.ndarray | None
    up_source: str = "none"   # "plane" | the prior's source | "none"
    message: str = ""         # what went wrong or was assumed (no plane, prior ignored, ...)
    dropped: int = 0          # objects beyond max_objects


def _voxel_means(points: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(voxel centroids (V, 3), voxel id per point, points per voxel)."""
    keys = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse).astype(np.float64)
    means = np.stack([np.bincount(inverse, points[:, k]) for k in range(3)], axis=1) / counts[:, None]
    return means, inverse, counts


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))


def fit_support_plane(points: np.ndarray, cfg: SceneConfig, prior: np.ndarray | None, rng: np.random.Generator,
                      sensor_origin=(0.0, 0.0, 0.0), facing: bool = False, tolerance: float | None = None,
                      min_count: int | None = None):
    """RANSAC plane (a, b, c, d), normal oriented up (towards the prior, else the sensor), or None.

    Hypotheses whose normal is more than ``up_tolerance_deg`` from ``prior`` are discarded
    before counting, so a wall or a far background cannot win on size alone. ``facing``: the
    cloud is in its sensor's frame, so each plane's seen side (its normal turned towards the
    sensor) is compared with the prior, sign included: a table seen from a camera pitched 80
    deg down is 80 deg off the optical -y, a wall in front of it more than 90 deg."""
    if len(points) < 3:
        return None
    # drawn with replacement: a permutation of 300k points would cost more than the fit
    sample = points[rng.integers(len(points), size=cfg.plane_sample)] if len(points) > cfg.plane_sample \
        else points
    trip = sample[rng.integers(len(sample), size=(cfg.plane_iterations, 3))]
    normals = np.cross(trip[:, 1] - trip[:, 0], trip[:, 2] - trip[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-9
    normals, trip = normals[ok] / norms[ok, None], trip[ok]
    if tolerance is None:
        tolerance = cfg.up_tolerance_deg if facing else cfg.gravity_tolerance_deg
    if prior is not None:
        cos_tol = np.cos(np.radians(tolerance))
        if facing:
            towards = np.asarray(sensor_origin, dtype=np.float64) - trip[:, 0]
            normals = np.where(((normals * towards).sum(axis=1) < 0)[:, None], -normals, normals)
            ok = normals @ prior >= cos_tol
        else:
            ok = np.abs(normals @ prior) >= cos_tol
        normals, trip = normals[ok], trip[ok]
    if len(normals) == 0:
        return None
    offsets = -(normals * trip[:, 0]).sum(axis=1)
    # Score every hypothesis on 2,000 points, then the 16 best on the whole sample.
    rough = _plane_inlier_counts(sample[:2000], normals, offsets, cfg.plane_distance)
    top = np.argsort(-rough)[:16]
    normals, offsets = normals[top], offsets[top]
    counts = _plane_inlier_counts(sample, normals, offsets, cfg.plane_distance)
    best = int(np.argmax(counts))
    if counts[best] < max(cfg.plane_min_fraction * len(sample) if min_count is None else min_count, 3):
        return None
    # Least-squares refinement on the inliers (twice: the refit may gain inliers).
    normal, offset = normals[best], offsets[best]
    for _ in range(2):
        inliers = sample[np.abs(sample @ normal + offset) < cfg.plane_distance]
        centroid = inliers.mean(axis=0)
        _, _, vt = np.linalg.svd(inliers - centroid, full_matrices=False)
        refined = vt[2]
        if prior is not None and angle_deg(refined, prior) > tolerance and angle_deg(-refined, prior) > tolerance:
            break
        normal, offset = refined, -float(refined @ centroid)
    plane = np.append(normal, offset)
    reference = prior if prior is not None else None
    if reference is not None:
        if normal @ reference < 0:
            plane = -plane
    elif np.dot(plane[:3], np.asarray(sensor_origin, dtype=np.float64)) + plane[3] < 0:
        plane = -plane  # a camera looks at a table from above
    return plane


def _pair_geometry(normals: np.ndarray, points: np.ndarray, i: np.ndarray, j: np.ndarray):
    """Per pair (i, j): (n_i - n_j) . (x_i - x_j) and n_i . n_j. The pair arrays are the scene
    stage's bulk, so one axis at a time: a (pairs, 3) product summed over its rows is several
    times slower in numpy, and these are the same sums in the same order."""
    convex = np.zeros(len(i))
    cosine = np.zeros(len(i))
    for axis in range(3):
        n_axis, x_axis = normals[:, axis], points[:, axis]
        ni, nj = n_axis[i], n_axis[j]
        convex += (ni - nj) * (x_axis[i] - x_axis[j])
        cosine += ni * nj
    return convex, cosine


def _plane_inlier_counts(points, normals, offsets, distance: float) -> np.ndarray:
    """Points within ``distance`` of each plane; in place, as a fresh (N, H) temporary per step
    costs more in page faults than the arithmetic."""
    dist = points @ normals.T
    dist += offsets
    np.abs(dist, out=dist)
    return np.count_nonzero(dist < distance, axis=0)


def _plane_basis(normal: np.ndarray) -> np.ndarray:
    helper = np.array([1.0, 0.0, 0.0]) if abs(normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(normal, helper)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(normal, u)], axis=1)  # (3, 2)


def inside_hull(hull_points_2d: np.ndarray, query_2d: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """Which ``query_2d`` points lie in the convex hull of ``hull_points_2d`` grown by
    ``margin``; None when there is no hull (fewer than 3 points, or collinear)."""
    if len(hull_points_2d) < 3:
        return None
    try:
        hull = ConvexHull(hull_points_2d)
    except Exception:  # qhull refuses degenerate input
        return None
    # hull.equations: unit outward normals and offsets, inside where n.x + b <= 0 for every edge;
    # one edge at a time, so no (points, edges) temporary
    x, y = np.ascontiguousarray(query_2d[:, 0]), np.ascontiguousarray(query_2d[:, 1])
    inside = np.ones(len(query_2d), dtype=bool)
    side = np.empty(len(query_2d))
    for nx, ny, offset in hull.equations:
        np.multiply(x, nx, out=side)
        side += y * ny
        side += offset
        inside &= side <= margin
    return inside


class SceneSegmenter:
    def __init__(self, config: SceneConfig | None = None):
        self.config = config or SceneConfig()

    # -- stage 1-2: up and the support plane -------------------------------------------------
    def find_plane(self, points: np.ndarray, prior: UpPrior | None, sensor_origin=(0.0, 0.0, 0.0)):
        """(plane or None, up or None, up source, message)."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        if prior is not None and prior.hard:
            plane = self._level_support(points, prior, rng, sensor_origin)
        else:
            plane = fit_support_plane(points, cfg, None if prior is None else prior.vector, rng, sensor_origin,
                                      facing=prior is not None)
        if plane is not None:
            return plane, plane[:3].copy(), "plane", ""
        if prior is not None and not prior.hard:
            plane = fit_support_plane(points, cfg, None, np.random.default_rng(cfg.seed), sensor_origin)
            if plane is not None:
                return plane, plane[:3].copy(), "plane", (
                    f"no support plane within {cfg.up_tolerance_deg:.0f} deg of the {prior.source} up "
                    f"{np.round(prior.vector, 3).tolist()}; used the largest plane "
                    f"({angle_deg(plane[:3], prior.vector):.0f} deg off)")
        if prior is not None:
            return None, prior.vector.copy(), prior.source, (
                f"no support plane found (within {prior.tolerance_deg(cfg):.0f} deg of the {prior.source} up"
                + ("; a pitched sensor's own body frame is not level: give gravity, or raise body_up_tolerance_deg"
                   if prior.source == "convention:body" else "") + "); "
                "objects are clustered without plane removal and aligned to the prior")
        return None, None, "none", "no support plane found and no up prior; objects are not gravity-aligned"

    def _level_support(self, points: np.ndarray, prior: UpPrior, rng, sensor_origin):
        """With a firm up: the highest of up to ``support_candidates`` level planes that is one
        surface ``min_support_side`` wide both ways and has points standing on it; else the
        largest level plane (None if there is none)."""
        cfg = self.config
        tolerance = prior.tolerance_deg(cfg)
        sample = points[rng.integers(len(points), size=cfg.plane_sample)] if len(points) > cfg.plane_sample \
            else points
        min_count = max(cfg.plane_min_fraction * len(sample) * 0.2, 50)  # a table in a LiDAR sweep is small
        rest, found = sample, []
        for k in range(cfg.support_candidates):
            # level planes are parallel: the others must agree with the first (the best estimate of level)
            plane = fit_support_plane(rest, cfg, prior.vector if k == 0 else found[0][:3], rng, sensor_origin,
                                      tolerance=tolerance if k == 0 else 5.0, min_count=None if k == 0 else min_count)
            if plane is None:
                break
            found.append(plane)
            rest = rest[np.abs(rest @ plane[:3] + plane[3]) > 2 * cfg.plane_distance]
            if len(rest) < min_count:
                break
        if len(found) <= 1:
            return found[0] if found else None
        for plane in sorted(found, key=lambda pl: pl[3]):  # highest first: -d is the height along up
            if self._is_support(sample, plane, len(points) / len(sample)):
                return plane
        return found[0]

    def _is_support(self, sample: np.ndarray, plane: np.ndarray, points_per_sample: float) -> bool:
        cfg = self.config
        height = sample @ plane[:3] + plane[3]
        basis = _plane_basis(plane[:3])
        flat = sample[np.abs(height) < cfg.plane_distance] @ basis
        piece = self._largest_piece(flat)
        if piece is None:
            return False
        above = (height > cfg.plane_distance) & (height < cfg.max_object_height)
        inside = inside_hull(flat[piece], sample[above] @ basis)
        standing = int(inside.sum()) if inside is not None else 0
        return standing * points_per_sample >= cfg.min_object_points  # the sample stands for the cloud

    def _largest_piece(self, flat: np.ndarray) -> np.ndarray | None:
        """Which of a plane's inliers (2D, in the plane) form its largest connected piece on a
        ``support_cell`` grid, or None when that piece is under ``min_support_side`` across
        either way. A level plane's inliers also hold the bands where it cuts walls and
        furniture: the piece is the surface itself."""
        from scipy.ndimage import label as label_cells

        cfg = self.config
        if len(flat) < 3:
            return None
        cells = np.floor((flat - flat.min(axis=0)) / cfg.support_cell).astype(np.int64)
        shape = cells.max(axis=0) + 1
        if shape.min() * cfg.support_cell < cfg.min_support_side:
            return None
        grid = np.zeros(tuple(shape), dtype=bool)
        grid[cells[:, 0], cells[:, 1]] = True
        pieces, _ = label_cells(grid, structure=np.ones((3, 3)))
        of_point = pieces[cells[:, 0], cells[:, 1]]
        member = of_point == np.bincount(of_point).argmax()
        centred = flat[member] - flat[member].mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        extent = np.ptp(centred @ vt.T, axis=0)
        return member if extent.min() >= cfg.min_support_side else None

    # -- stage 3: objects --------------------------------------------------------------------
    def segment(self, points: np.ndarray, sensor_origin=(0.0, 0.0, 0.0), prior: UpPrior | None = None
                ) -> SceneSegmentation:
        cfg = self.config
        points = np.asarray(points, dtype=np.float64)
        lo, hi = np.asarray(cfg.crop_min, dtype=np.float64), np.asarray(cfg.crop_max, dtype=np.float64)
        if np.all(np.isinf(lo)) and np.all(np.isinf(hi)):
            keep = np.arange(len(points))
        else:
            keep = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
        if len(keep) < cfg.min_object_points:
            return SceneSegmentation([], None, None if prior is None else prior.vector.copy(),
                                     "none" if prior is None else prior.source,
                                     f"only {len(keep)} points inside the crop box")
        cropped = points if len(keep) == len(points) else points[keep]
        plane, up, up_source, message = self.find_plane(cropped, prior, sensor_origin)
        if plane is not None:
            height = cropped @ plane[:3] + plane[3]
            above = (height > cfg.plane_distance) & (height < cfg.max_object_height)
            basis = _plane_basis(plane[:3])
            on_plane = np.abs(height) < cfg.plane_distance
            inl = np.flatnonzero(on_plane)
            if prior is not None and prior.hard:  # the table's own footprint, not where the plane cuts walls
                piece = self._largest_piece(cropped[inl] @ _plane_basis(plane[:3]))
                inl = inl[piece] if piece is not None else inl
            if len(inl) > 3000:
                inl = np.random.default_rng(cfg.seed).choice(inl, 3000, replace=False)
            cand = np.flatnonzero(above)
            inside = inside_hull(cropped[inl] @ basis, cropped[cand] @ basis, cfg.hull_margin) if len(cand) else None
            if inside is not None:
                cand = cand[inside]
        else:
            cand = np.arange(len(cropped))
        if len(cand) < cfg.min_object_points:
            return SceneSegmentation([], plane, up, up_source, message or "no points above the support plane")
        labels = self._split_objects(cropped[cand], sensor_origin,
                                     None if plane is None else cropped[cand] @ plane[:3] + plane[3])
        objects = []
        for members in _groups(labels):
            if len(members) < cfg.min_object_points:
                continue
            pts = cropped[cand[members]]
            extent = float(np.ptp(pts, axis=0).max())
            if not cfg.min_object_extent <= extent <= cfg.max_object_extent:
                continue
            objects.append(cand[members])
        if plane is not None and objects and cfg.band_floor > 0:
            objects = self._grow_into_band(cropped, height, on_plane, basis, objects)
        objects = [keep[m] for m in objects]
        # Nearest objects first: they are the ones a robot reaches for.
        origin = np.asarray(sensor_origin, dtype=np.float64)
        objects.sort(key=lambda m: float(np.linalg.norm(points[m].mean(axis=0) - origin)))
        dropped = max(0, len(objects) - cfg.max_objects)
        if dropped:
            message = "; ".join(filter(None, [message, f"{dropped} object(s) beyond max_objects "
                                                       f"{cfg.max_objects} not processed"]))
        return SceneSegmentation(objects[:cfg.max_objects], plane, up, up_source, message, dropped)

    def _grow_into_band(self, points, height, on_plane, basis, objects: list) -> list:
        """``objects`` (index arrays into ``points``, all above the band) with the band points
        that belong to them: higher than the table around each object by ``band_floor`` and by
        3.5 sigma of that table's height noise, reached from the object in steps of at most
        ``band_step`` through such points, within ``band_reach`` of the object's own points
        (in the plane). A band point two objects reach goes to the nearer one."""
        cfg = self.config
        band = np.flatnonzero(on_plane & (height > min(cfg.band_floor, cfg.plane_distance)))
        if len(band) == 0:
            return objects
        # (no footprint test: a band point must be within band_reach of an object, and objects are)
        flat_band = points[band] @ basis
        table = np.flatnonzero(on_plane)  # a sample: enough for the table's local height and noise
        if len(table) > 5000:
            table = table[np.random.default_rng(cfg.seed).integers(len(table), size=5000)]
        table_flat, table_h = points[table] @ basis, height[table]
        table_h_own = table_h[table_h <= cfg.band_floor]  # the table's own points, not band points of objects
        if len(table_h_own) < 20:
            return objects
        whole = _level_and_noise(table_h_own)  # where too few of the sample lie around an object
        claims = np.full(len(band), -1)
        claim_dist = np.full(len(band), np.inf)
        for k, members in enumerate(objects):
            # at most 1,000 of the object's points stand for it in the plane (a cm-scale question)
            sample = members if len(members) <= 1000 else members[:: int(np.ceil(len(members) / 1000))]
            flat = points[sample] @ basis
            lo, hi = flat.min(axis=0) - cfg.band_reach, flat.max(axis=0) + cfg.band_reach
            near = np.flatnonzero(np.all((flat_band >= lo) & (flat_band <= hi), axis=1))
            if len(near) == 0:
                continue
            # the table around this object (its box grown by band_reach): its height and noise there
            ring_h = table_h[np.all((table_flat >= lo) & (table_flat <= hi), axis=1)]
            ring_h = ring_h[ring_h <= cfg.band_floor]
            level, sigma = _level_and_noise(ring_h) if len(ring_h) >= 20 else whole
            near = near[height[band[near]] > level + max(cfg.band_floor, 3.5 * sigma)]
            low = members[height[members] < cfg.plane_distance + 2 * cfg.band_step]
            if len(near) == 0 or len(low) == 0:
                continue
            reach, _ = cKDTree(flat).query(flat_band[near], distance_upper_bound=cfg.band_reach)
            near, reach = near[np.isfinite(reach)], reach[np.isfinite(reach)]
            if len(near) == 0:
                continue
            # the eligible band points connected (steps <= band_step) to the object's lowest points
            xyz = points[band[near]]
            seed_dist, _ = cKDTree(points[low]).query(xyz, distance_upper_bound=cfg.band_step)
            pairs = cKDTree(xyz).query_pairs(cfg.band_step, output_type="ndarray")
            graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(near), len(near)))
            _, comp = connected_components(graph, directed=False)
            got = np.isin(comp, comp[np.isfinite(seed_dist)])
            near, reach = near[got], reach[got]
            better = reach < claim_dist[near]
            claims[near[better]], claim_dist[near[better]] = k, reach[better]
        return [np.concatenate([members, band[claims == k]]) if (claims == k).any() else members
                for k, members in enumerate(objects)]

    def _split_objects(self, pts: np.ndarray, sensor_origin, height: np.ndarray | None = None) -> np.ndarray:
        """Segment label per point of ``pts`` (points above the plane), -1 for none."""
        import open3d as o3d

        cfg = self.config
        vox, voxel_of, counts = _voxel_means(pts, cfg.voxel_size)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(vox))
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=cfg.normal_radius, max_nn=30))
        normals = np.asarray(cloud.normals)
        towards = np.asarray(sensor_origin, dtype=np.float64) - vox
        normals[(normals * towards).sum(axis=1) < 0] *= -1  # the sensor sees the outside
        tree = cKDTree(vox)
        pairs = tree.query_pairs(cfg.cluster_eps, output_type="ndarray")
        n = len(vox)
        if len(pairs) == 0:
            return np.arange(n)[voxel_of]
        i, j = pairs[:, 0], pairs[:, 1]
        # LCCP convexity: (n_i - n_j) . (x_i - x_j) > 0 for a convex connection.
        convex, cosine = _pair_geometry(normals, vox, i, j)
        convex = convex > 0
        bent = cosine < np.cos(np.radians(cfg.concave_deg))
        cut = ~convex & bent
        degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
        cuts = np.bincount(i[cut], minlength=n) + np.bincount(j[cut], minlength=n)
        crease = cuts > cfg.crease_fraction * np.maximum(degree, 1)
        link = ~cut & ~crease[i] & ~crease[j]
        graph = coo_matrix((np.ones(int(link.sum())), (i[link], j[link])), shape=(n, n))
        _, label = connected_components(graph, directed=False)
        solid = np.flatnonzero(~crease)
        if len(solid) and crease.any():  # creases join the nearest segment
            _, nearest = cKDTree(vox[solid]).query(vox[crease], k=1)
            label[crease] = label[solid[nearest]]
        _, label = np.unique(label, return_inverse=True)
        # Pairs that bend at all (> 3 deg) vote convex or concave for their segment.
        bends = cosine < np.cos(np.radians(3.0))
        # Voxels standing on the support plane: pieces holding one are objects on the table and
        # keep their own identity whatever their size (a handle or a cap never reaches down).
        voxel_height = np.zeros(n) if height is None else np.bincount(voxel_of, height) / counts
        grounded = np.zeros(n, dtype=bool) if height is None else voxel_height < cfg.plane_distance + cfg.voxel_size
        label = self._merge_segments(label.reshape(-1), counts, i, j, cut, convex[bends], i[bends], j[bends],
                                     grounded, voxel_height, tree)
        return label[voxel_of]

    def _merge_segments(self, label, counts, i, j, cut, bend_convex, bend_i, bend_j, grounded,
                        height, tree) -> np.ndarray:
        """Join segments that belong together, as LCCP does at the segment level:
        neighbours whose shared boundary is mostly convex or smooth (two halves of a mug wall
        parted by its handle, joined over the rim); concave pieces (mostly concave bends inside:
        the inside of a mug or bowl seen through its opening; an object seen from outside is
        convex) into the neighbour they touch most; and pieces too small to be an object into
        the larger neighbour they touch most (small: under min_segment_points, or, for pieces
        that do not stand on the plane, under min_segment_share of that neighbour when they hang
        on its side (handles) and under min_stacked_share when they sit on its top (caps; a
        larger object stacked on another stays itself)). Touching objects meet along concave
        creases and stay apart."""
        cfg = self.config
        parent = np.arange(int(label.max()) + 1)

        def root(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def join(a, b):
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
                return True
            return False

        gap_near = {}
        for _ in range(4):
            seg = np.array([root(x) for x in range(len(parent))])[label]
            k = len(parent)
            size = np.bincount(seg, weights=counts, minlength=k)
            thin = _thin_segments(seg, k, tree.data, counts, cfg.thin_part_std, cfg.thin_part_ratio)
            on_plane = np.bincount(seg, weights=grounded, minlength=k) > 0
            low = np.full(k, np.inf)
            high = np.full(k, -np.inf)
            np.minimum.at(low, seg, height)
            np.maximum.at(high, seg, height)
            inner = seg[bend_i] == seg[bend_j]
            concave = np.bincount(seg[bend_i][inner & ~bend_convex], minlength=k)
            convex = np.bincount(seg[bend_i][inner & bend_convex], minlength=k)
            concave_share = concave / np.maximum(concave + convex, 1)
            si, sj = seg[i], seg[j]
            across = si != sj  # (none: pieces may still be parted by a gap of missing depth)
            a = np.concatenate([si[across], sj[across]])
            b = np.concatenate([sj[across], si[across]])
            contact = coo_matrix((np.ones(len(a)), (a, b)), shape=(k, k)).tocsr()
            smooth = np.tile(~cut[across], 2).astype(np.float64)
            smooth_contact = coo_matrix((smooth, (a, b)), shape=(k, k)).tocsr()
            by_seg = np.argsort(seg, kind="stable")  # each segment's voxels: by_seg[first[s]:first[s + 1]]
            first = np.searchsorted(seg[by_seg], np.arange(k + 1))
            changed = False
            # rows read straight from the CSR arrays into dense buffers that are cleared after
            # each segment: O(neighbours) per segment, not O(segments)
            touching, smooth_row = np.zeros(k), np.zeros(k)
            # A small piece off the plane without contacts may be cut off by a gap of missing
            # depth (a moulded handle's edges): what lies within gap_eps of it is looked up for all
            # such pieces of the pass in one k-d tree call (noisy frames hold hundreds).
            gapped = set(np.flatnonzero((size > 0) & (np.diff(contact.indptr) == 0) & (~on_plane | thin)
                                        & (size < cfg.min_segment_share * size.max())).tolist())
            self._look_across_gaps(gapped, gap_near, by_seg, first, tree)
            for s in np.argsort(size):  # smallest first
                if size[s] == 0:
                    continue
                contacts = contact.indices[contact.indptr[s]:contact.indptr[s + 1]]
                touching[contacts] = contact.data[contact.indptr[s]:contact.indptr[s + 1]]
                smooth_row[smooth_contact.indices[smooth_contact.indptr[s]:smooth_contact.indptr[s + 1]]] = \
                    smooth_contact.data[smooth_contact.indptr[s]:smooth_contact.indptr[s + 1]]
                neighbours = contacts
                via_gap = False
                if s in gapped:
                    counts_near = np.bincount(seg[gap_near[s, first[s + 1] - first[s]]])
                    found = np.flatnonzero(counts_near)
                    counts_near = counts_near[found]
                    keep = found != s
                    neighbours, via_gap = found[keep], True
                    touching[neighbours] = counts_near[keep]
                try:
                    if len(neighbours):
                        changed |= self._merge_one(s, neighbours, contacts, touching, smooth_row, size, thin,
                                                   on_plane, low, high, concave_share, via_gap, join)
                finally:
                    touching[neighbours] = 0
                    touching[contacts] = 0
                    smooth_row[contacts] = 0
            if not changed:
                break
        seg = np.array([root(x) for x in range(len(parent))])[label]
        return np.unique(seg, return_inverse=True)[1].reshape(-1)

    def _look_across_gaps(self, pieces: set, found: dict, by_seg, first, tree) -> None:
        """``found[(piece, voxels)]``: the voxels within gap_eps of up to 100 of the piece's own.
        Segments only grow, so a root with as many voxels as before is the same piece: each is
        looked up once, not on every pass."""
        missing = [s for s in sorted(pieces) if (s, first[s + 1] - first[s]) not in found]
        if not missing:
            return
        samples = [by_seg[first[s]:first[s + 1]] for s in missing]
        samples = [m[:: max(1, len(m) // 100)] for m in samples]
        hits = tree.query_ball_point(tree.data[np.concatenate(samples)], self.config.gap_eps)
        start = 0
        for s, sample in zip(missing, samples):
            found[s, first[s + 1] - first[s]] = np.concatenate(hits[start:start + len(sample)]).astype(np.int64)
            start += len(sample)

    def _merge_one(self, s, neighbours, contacts, touching, smooth_row, size, thin, on_plane, low, high,
                   concave_share, via_gap, join) -> bool:
        """The joins of segment ``s`` (see _merge_segments); True when any was made."""
        cfg = self.config
        changed = False
        smooth_share = smooth_row[contacts] / np.maximum(touching[contacts], 1)
        for nb in contacts[(smooth_share >= cfg.smooth_boundary_share) & (touching[contacts] >= 3)]:
            changed |= join(s, nb)
        if concave_share[s] > cfg.concave_segment_share:
            return join(s, neighbours[np.argmax(touching[neighbours])]) or changed
        larger = neighbours[size[neighbours] > size[s]]
        if len(larger):
            best = larger[np.argmax(touching[larger])]
            on_side = low[s] < high[best] - 2 * cfg.voxel_size  # reaches below its top
            # a thin piece (a handle loop, a lug) reaching down to the plane is still a part
            share = (cfg.min_segment_share if thin[s] else 0.0) if on_plane[s] else \
                cfg.min_segment_share if on_side else 0.0 if via_gap else cfg.min_stacked_share
            if size[s] < max(cfg.min_segment_points, share * size[best]):
                changed |= join(s, best)
        return changed


def _thin_segments(seg: np.ndarray, k: int, vox: np.ndarray, counts: np.ndarray, max_std: float,
                   max_ratio: float) -> np.ndarray:
    """Per segment: is it thin and flat (a handle loop, a lug), from the principal spreads of its
    voxels (point-count weighted): smallest std under ``max_std`` and under ``max_ratio`` of the
    largest. Measured on the development scans: handles 0.18-0.22 cm and 0.07-0.12, whole
    objects >= 1.2 cm and >= 0.4."""
    w = np.bincount(seg, weights=counts, minlength=k)
    mean = np.stack([np.bincount(seg, weights=counts * vox[:, a], minlength=k) for a in range(3)], axis=1)
    mean /= np.maximum(w, 1e-9)[:, None]
    d = vox - mean[seg]
    cov = np.zeros((k, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            cov[:, a, b] = cov[:, b, a] = np.bincount(seg, weights=counts * d[:, a] * d[:, b], minlength=k)
    cov /= np.maximum(w, 1e-9)[:, None, None]
    spread = np.sqrt(np.clip(np.linalg.eigvalsh(cov), 0, None))  # ascending
    return (w > 0) & (spread[:, 0] < max_std) & (spread[:, 0] < max_ratio * np.maximum(spread[:, 2], 1e-9))


def _level_and_noise(heights: np.ndarray) -> tuple[float, float]:
    """A table's height (median) and depth noise (robust sigma: 1.4826 MAD) from its points."""
    level = float(np.median(heights))
    return level, 1.4826 * float(np.median(np.abs(heights - level)))


def _groups(labels: np.ndarray) -> list:
    """Index arrays of the points of each label >= 0."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return [order[s:e] for s, e in zip(starts, ends) if sorted_labels[s] >= 0]
