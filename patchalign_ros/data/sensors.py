"""Depth-sensor models for rendered views: what real depth cameras do to a perfect depth image.

Three families are modelled; each is a ``SensorModel`` applied to a rendered depth image (metres
along the optical axis, NaN where no return):

- ``kinect`` (structured light). Fitted on the mOSD Kinect scans in ``../shared/data/real_scans``
  by ``python -m patchalign_ros fit-sensor``: depth comes in disparity steps of
  2.85e-3 * z^2 m (measured: 1 mm at 0.7 m, 3 mm at 1.0 m, 5 mm at 1.3 m, 7 mm at 1.6 m, i.e.
  2.7-3.0e-3 * z^2 beyond 1 m) and the table plane scatters with a robust sigma of 1.4-2.1 mm at
  0.6-1.6 m, of which quantisation explains about half. Almost no flying pixels (< 0.5 % of depth
  edges carry a floating pixel): edges lose returns instead. Holes on objects cannot be measured
  there (the labels cover valid pixels only); the small hole rate is assumed.
- ``active_stereo`` (RealSense D4xx). Intel's RMS formula z^2 * subpixel / (f * baseline) with
  subpixel 0.08, f 615 px, baseline 50 mm gives 2.6e-3 * z^2. Measured on the 10 RealSense frames
  of ``../shared/data/real_scans/realsense_6dof`` (``fit-sensor --realsense``; a robust table-plane
  fit away from the object): 0.35 / 0.51 / 0.90 / 0.93 mm at 0.35 / 0.45 / 0.55 / 0.65 m, i.e.
  2.66e-3 * z^2 up to 0.65 m (the formula holds); depth in 0.1 mm steps; 1.5 % (at most 2 %)
  of an object's silhouette without depth; no floating pixels at the depth edges of these frames
  (0 of 1,722 edge pixels; the driver's filters may have removed them). The model's flying share
  (0.4) and holes (half the views, 6 %) are kept from the datasheet era for raw streams, which
  have them.
- ``active_stereo_filtered`` (RealSense D4xx as these frames show it, a filtered stream): the
  measured scatter 2.66e-3 * z^2, no flying pixels, holes on every view covering 1.5 % of it (the
  measured share of an object's silhouette). Training draws it beside the raw model (release 4).
- ``passive_stereo`` (ZED-class). Also not measurable here: large, spatially smooth surface noise
  (correlated over several pixels), edge fattening, holes on textureless regions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SensorModel:
    name: str
    focal_px: float             # focal length at 640x480
    quantisation: float         # depth step = quantisation * z^2 (0: none)
    white_sigma: float          # per-pixel Gaussian sigma = white_sigma * z^2
    smooth_sigma: float = 0.0   # spatially correlated sigma = smooth_sigma * z^2 ...
    smooth_px: float = 0.0      # ... correlated over this many pixels
    edge_drop: float = 0.5      # share of depth-edge pixels without a return
    flying: float = 0.0         # share of depth-edge pixels mixed between the two sides
    hole_chance: float = 0.0    # chance that a view has holes (dark or shiny patches) ...
    hole_fraction: float = 0.05  # ... covering about this share of the image
    grazing: tuple = (0.05, 0.2)  # returns with |cos incidence| under a value drawn here drop


SENSORS = {
    "kinect": SensorModel("kinect", 525.0, quantisation=2.85e-3, white_sigma=1.2e-3, edge_drop=0.5, flying=0.005,
                          hole_chance=0.2, hole_fraction=0.03),
    "active_stereo": SensorModel("active_stereo", 615.0, quantisation=0.0, white_sigma=2.6e-3, smooth_sigma=1.0e-3,
                                 smooth_px=3.0, edge_drop=0.3, flying=0.4, hole_chance=0.5, hole_fraction=0.06),
    "active_stereo_filtered": SensorModel("active_stereo_filtered", 615.0, quantisation=0.0, white_sigma=2.66e-3,
                                          edge_drop=0.3, flying=0.0, hole_chance=1.0, hole_fraction=0.015),
    "passive_stereo": SensorModel("passive_stereo", 700.0, quantisation=0.0, white_sigma=1.5e-3, smooth_sigma=5.0e-3,
                                  smooth_px=8.0, edge_drop=0.2, flying=0.6, hole_chance=0.4, hole_fraction=0.08),
}


def depth_edges(depth: np.ndarray, rel_jump: float = 0.02):
    """Pixels next to a depth jump (or a missing return), and per pixel the depth across the
    largest jump (NaN where none)."""
    h, w = depth.shape
    pad = np.pad(depth, 1, constant_values=np.nan)
    edge = np.zeros(depth.shape, dtype=bool)
    other = np.full(depth.shape, np.nan)
    biggest = np.zeros(depth.shape)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        jump = np.abs(nb - depth)
        is_jump = np.isfinite(depth) & (~np.isfinite(nb) | (jump > rel_jump * np.nan_to_num(depth, nan=1.0)))
        edge |= is_jump
        bigger = np.isfinite(jump) & (jump > biggest) & is_jump
        other = np.where(bigger, nb, other)
        biggest = np.where(bigger, jump, biggest)
    return edge, other


def _smooth_field(shape, px: float, rng) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed over ``px`` pixels."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=shape), px)
    return field / max(float(field.std()), 1e-9)


def apply_sensor(depth: np.ndarray, incidence: np.ndarray, sensor: SensorModel, rng) -> np.ndarray:
    """A noisy copy of a perfect depth image (NaN = no return), in the sensor's way."""
    z = np.array(depth, dtype=np.float64)
    z[z <= 0] = np.nan
    valid = np.isfinite(z)
    valid &= incidence > rng.uniform(*sensor.grazing)
    if sensor.hole_chance and rng.random() < sensor.hole_chance:
        field = _smooth_field(z.shape, rng.uniform(3, 10), rng)
        valid &= field < np.quantile(field, 1 - sensor.hole_fraction * rng.uniform(0.5, 1.5))
    z = np.where(valid, z, np.nan)
    edge, other = depth_edges(z)
    draw = rng.random(z.shape)
    fly = edge & np.isfinite(other) & (draw < sensor.flying)
    mix = rng.uniform(0.2, 0.8, z.shape)
    z = np.where(fly, mix * z + (1 - mix) * np.nan_to_num(other), z)
    drop = edge & ~fly & (draw < sensor.flying + sensor.edge_drop)
    z[drop] = np.nan
    z2 = z ** 2
    z = z + rng.normal(size=z.shape) * sensor.white_sigma * z2
    if sensor.smooth_sigma:
        z = z + _smooth_field(z.shape, sensor.smooth_px, rng) * sensor.smooth_sigma * z2
    if sensor.quantisation:
        step = sensor.quantisation * z2
        z = np.round(z / step) * step
    return z


def fit_kinect_quantisation(scans) -> dict:
    """Measure a Kinect-class sensor on organized scans with a labelled support surface
    (mOSD: label 1): the depth step near 0.7/1.0/1.3/1.6 m and the table plane's robust
    scatter per range band. Returns the numbers the ``kinect`` model is set from."""
    from ..pointcloud_io import read_pcd_fields

    steps, scatter = {}, {}
    for path in scans:
        xyz, _, _, label = read_pcd_fields(path)
        z = xyz[:, 2]
        for zc in (0.7, 1.0, 1.3, 1.6):
            levels = np.unique(z[np.isfinite(z) & (np.abs(z - zc) < 0.03)])
            gaps = np.diff(levels)
            gaps = gaps[gaps > 1e-5]
            if len(gaps):
                steps.setdefault(zc, []).append(float(np.median(gaps)))
        if label is None:
            continue
        table = xyz[(label == 1) & np.isfinite(xyz).all(axis=1)]
        for lo in np.arange(0.5, 1.75, 0.25):
            band = table[(table[:, 2] >= lo) & (table[:, 2] < lo + 0.25)]
            if len(band) < 2000:
                continue
            centred = band - band.mean(axis=0)
            normal = np.linalg.svd(centred, full_matrices=False)[2][2]
            res = centred @ normal
            scatter.setdefault(round(lo + 0.125, 3), []).append(float(1.4826 * np.median(np.abs(res - np.median(res)))))
    step_k = [float(np.median(v)) / zc ** 2 for zc, v in steps.items() if zc >= 1.0]
    return {"scans": len(scans),
            "depth_step_m": {str(k): float(np.median(v)) for k, v in sorted(steps.items())},
            "quantisation_k": float(np.median(step_k)) if step_k else None,
            "table_robust_sigma_m": {str(k): float(np.median(v)) for k, v in sorted(scatter.items())}}


def flying_share(depth: np.ndarray, jump: float = 0.03, margin: float = 0.01) -> tuple[int, float]:
    """(depth-edge pixels, share of them floating between the two sides): a pixel whose 4
    neighbours span more than ``jump`` while it lies over ``margin`` from both extremes."""
    h, w = depth.shape
    pad = np.pad(depth, 1, constant_values=np.nan)
    nbs = np.stack([pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))])
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanmin(np.where(np.isfinite(nbs), nbs, np.inf), axis=0), np.nanmax(np.where(np.isfinite(nbs), nbs, -np.inf), axis=0)
        edge = np.isfinite(depth) & np.isfinite(lo) & np.isfinite(hi) & (hi - lo > jump)
        floating = edge & (depth > lo + margin) & (depth < hi - margin)
    n = int(edge.sum())
    return n, float(floating.sum() / n) if n else 0.0


def fit_active_stereo(frames) -> dict:
    """Measure an active-stereo (RealSense-class) camera on single RGB-D frames of objects on a
    table (the ``realsense_6dof`` layout: ``depth`` in metres with NaN holes, ``intrinsics_matrix``
    and the object's own points): the table plane's robust scatter per 10 cm range band (robust
    refits away from the object), the depth step, the share of the object's silhouette without
    depth, and floating pixels at depth edges."""
    from scipy.ndimage import binary_dilation

    from ..depth_image import silhouette as project_silhouette

    scatter, steps, holes, edges, floating = {}, [], [], 0, 0.0
    for path in frames:
        data = np.load(path, allow_pickle=True, encoding="latin1").item()  # the dataset's own format
        z, k = np.asarray(data["depth"], dtype=np.float64), np.asarray(data["intrinsics_matrix"], dtype=np.float64)
        h, w = z.shape
        silhouette = project_silhouette(data["smoothed_object_pc"], k, z.shape)
        holes.append(float(np.mean(~np.isfinite(z[silhouette]))))
        uu, vv = np.meshgrid(np.arange(w), np.arange(h))
        xyz = np.stack([(uu - k[0, 2]) * z / k[0, 0], (vv - k[1, 2]) * z / k[1, 1], z], axis=-1)
        table = xyz[~binary_dilation(silhouette, iterations=15) & np.isfinite(z)]
        sample = table[::10]
        for _ in range(4):  # robust plane: refit on the closest 70 %
            centred = sample - np.median(sample, axis=0)
            normal = np.linalg.svd(centred, full_matrices=False)[2][2]
            dist = np.abs(centred @ normal)
            sample = sample[dist < max(np.quantile(dist, 0.7), 0.004)]
        centre = sample.mean(axis=0)
        normal = np.linalg.svd(sample - centre, full_matrices=False)[2][2]
        res = (table - centre) @ normal
        near = np.abs(res) < 0.01
        for lo in np.arange(0.3, 0.9, 0.1):
            band = near & (table[:, 2] >= lo) & (table[:, 2] < lo + 0.1)
            if band.sum() > 3000:
                r = res[band]
                scatter.setdefault(round(lo + 0.05, 2), []).append(float(1.4826 * np.median(np.abs(r - np.median(r)))))
        levels = np.unique(z[np.isfinite(z) & (np.abs(z - 0.45) < 0.02)])
        gaps = np.diff(levels)
        if (gaps > 1e-6).any():
            steps.append(float(np.median(gaps[gaps > 1e-6])))
        n, share = flying_share(z)
        edges, floating = edges + n, floating + share * n
    sigma = {str(b): float(np.median(v)) for b, v in sorted(scatter.items())}
    per_z2 = [float(np.median(v)) / b ** 2 for b, v in scatter.items() if b <= 0.65]
    return {"frames": len(frames), "table_robust_sigma_m": sigma,
            "white_sigma_k": float(np.median(per_z2)) if per_z2 else None,
            "depth_step_m": float(np.median(steps)) if steps else None,
            "object_hole_fraction": {"median": float(np.median(holes)), "max": float(np.max(holes))},
            "edge_pixels": edges, "floating_share": floating / edges if edges else 0.0}

