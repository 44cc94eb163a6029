"""Part masks for real scanned objects (the YCB object set, CC BY 4.0, ycbbenchmarks.com).

Each mesh gets its parts by an explicit geometric rule written for that object, in the mesh's
own frame (z up, metres, standing or lying on z = 0 as scanned). Every rule was checked by eye
on the picture ``python -m patchalign_ros ycb-masks --meshes DIR`` draws
(``docs/results/ycb_masks.png``). The labelled meshes are
LabeledMesh objects, so the data engine renders them like the procedural shapes (depth views
with the sensor models, whole surfaces).

The meshes are not shipped with the package (users pass their own copy, e.g. the Google 16k
scans); ``load_ycb`` finds ``NNN_name.ply`` files in a directory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .synthetic import LabeledMesh


def _circle_fit(xy: np.ndarray) -> np.ndarray:
    """Algebraic least-squares circle centre of 2-D points."""
    a = np.c_[2 * xy, np.ones(len(xy))]
    b = (xy ** 2).sum(1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return sol[:2]


def _largest_component(mask: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Keep the largest set of masked triangles connected through shared vertices."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return mask
    tri = triangles[idx]
    n_vert = triangles.max() + 1
    # triangles sharing a vertex are connected: bipartite triangle-vertex graph
    rows = np.repeat(np.arange(len(idx)), 3)
    graph = coo_matrix((np.ones(len(rows)), (rows, len(idx) + tri.ravel())),
                       shape=(len(idx) + n_vert, len(idx) + n_vert))
    _, comp = connected_components(graph, directed=False)
    tri_comp = comp[:len(idx)]
    keep = np.bincount(tri_comp).argmax()
    out = np.zeros_like(mask)
    out[idx[tri_comp == keep]] = True
    return out


def handle_outside_cylinder(c: np.ndarray, triangles: np.ndarray, margin: float = 0.008) -> np.ndarray:
    """Mugs and jugs standing upright: the body is a surface of revolution whose axis is the
    circle fitted to the bottom band (no handle there); a handle is what stands more than
    ``margin`` outside the median radius of its height band, largest connected piece."""
    h = c[:, 2].max()
    centre = _circle_fit(c[c[:, 2] < 0.12 * h][:, :2])
    radial = np.linalg.norm(c[:, :2] - centre, axis=1)
    bands = np.minimum((c[:, 2] / 0.005).astype(int), int(h / 0.005))
    median = np.zeros(bands.max() + 1)
    for b in np.unique(bands):
        median[b] = np.median(radial[bands == b])
    outside = (radial > median[bands] + margin) & (c[:, 2] > 0.05 * h)
    return _largest_component(outside, triangles)


def pitcher_parts(c: np.ndarray, triangles: np.ndarray, top: float = 0.03, beyond: float = 0.006) -> dict:
    """A jug's handle (``handle_outside_cylinder``) and its spout: within ``top`` of the rim,
    opposite the handle (within 45 degrees), more than ``beyond`` outside the rim's median radius."""
    handle = handle_outside_cylinder(c, triangles)
    h = c[:, 2].max()
    centre = _circle_fit(c[c[:, 2] < 0.12 * h][:, :2])
    offset = c[:, :2] - centre
    radial = np.linalg.norm(offset, axis=1)
    facing = -(c[handle, :2].mean(axis=0) - centre)
    facing /= np.linalg.norm(facing)
    rim = (c[:, 2] > h - top) & ~handle
    toward = offset @ facing > np.cos(np.radians(45.0)) * radial
    spout = rim & toward & (radial > np.median(radial[rim]) + beyond)
    return _parts(handle=handle, spout=_largest_component(spout, triangles))


@dataclass(frozen=True)
class MeshRule:
    category: str           # the category its renders are filed under
    rule: Callable          # (triangle centroids (T, 3), triangles (T, 3)) -> {part name: (T,) bool}
    default_part: str       # the part every triangle no rule claims belongs to
    note: str               # what the rule is, for the pictures and the model card
    train: bool = True      # False: kept out of training (a real held-out check)


def _parts(**masks):
    return masks


YCB_RULES: dict[str, MeshRule] = {
    "025_mug": MeshRule("mug", lambda c, t: _parts(handle=handle_outside_cylinder(c, t)), "body",
                        "handle: > 8 mm outside the body's per-height median radius (axis from the bottom band)"),
    # a held-out real check: "pitcher" is an unseen category of the generated splits
    "019_pitcher_base": MeshRule("pitcher", pitcher_parts, "body",
                                 "handle: as the mug's rule; spout: the rim's top 3 cm opposite the handle, "
                                 "> 6 mm outside the rim's median radius", train=False),
    "006_mustard_bottle": MeshRule("bottle", lambda c, t: _parts(cap=c[:, 2] > 0.148), "body",
                                   "cap: z > 148 mm (the flip-top cap above the shoulder)"),
    "021_bleach_cleanser": MeshRule("bottle", lambda c, t: _parts(cap=c[:, 2] > 0.233), "body",
                                    "cap: z > 233 mm (the narrow screw cap)"),
    "022_windex_bottle": MeshRule("spray bottle", lambda c, t: _parts(nozzle=c[:, 2] > 0.185), "body",
                                  "nozzle: z > 185 mm (the trigger sprayer head; the scan has no neck)"),
    "028_skillet_lid": MeshRule("lid", lambda c, t: _parts(handle=(c[:, 2] > 0.022) & (np.hypot(c[:, 0], c[:, 1]) < 0.09)),
                                "lid", "handle: the arch over the centre, z > 22 mm within 90 mm of the axis"),
    "031_spoon": MeshRule("spoon", lambda c, t: _parts(bowl=c[:, 0] < -0.062), "handle", "bowl: the wide end, x < -62 mm"),
    "032_knife": MeshRule("knife", lambda c, t: _parts(handle=c[:, 0] > -0.02), "blade", "handle: the rounded wider end, x > -20 mm"),
    "033_spatula": MeshRule("spatula", lambda c, t: _parts(head=c[:, 0] > 0.02), "handle", "head: x > 20 mm"),
    "035_power_drill": MeshRule(
        "power drill",
        lambda c, t: _parts(battery=c[:, 1] < -0.057, chuck=(c[:, 1] > 0.05) & (c[:, 0] < -0.10),
                            body=(c[:, 1] > 0.05) & (c[:, 0] >= -0.10)),
        "handle", "lying on its side: battery y < -57 mm, chuck y > 50 mm and x < -100 mm, "
                  "motor body y > 50 mm, the grip (handle) between"),
    "037_scissors": MeshRule("scissors", lambda c, t: _parts(handle=c[:, 1] < 0.015), "blade",
                             "handle: the finger loops, y < 15 mm"),
    "042_adjustable_wrench": MeshRule("wrench", lambda c, t: _parts(jaw=c[:, 1] > 0.025), "handle",
                                      "jaw: the adjustable head, y > 25 mm"),
    "048_hammer": MeshRule("hammer", lambda c, t: _parts(head=(c[:, 1] > 0.08) | ((c[:, 0] < -0.08) & (c[:, 1] > 0.04))),
                           "handle", "head: y > 80 mm, and the claw's tip (x < -80 mm, y > 40 mm)"),
    # Held out of training (issue #17: tools with handles the model has never seen): lying flat
    # as scanned, handle and working end along the long axis.
    "030_fork": MeshRule("fork", lambda c, t: _parts(tines=c[:, 0] < -0.055), "handle",
                         "tines: the flat wide end, x < -55 mm (the handle is thicker)", train=False),
    "043_phillips_screwdriver": MeshRule(
        "screwdriver", lambda c, t: _parts(handle=c[:, 0] > -0.060, tip=c[:, 0] < -0.128), "shaft",
        "handle: x > -60 mm (from its collar); tip: the last 12 mm of the shaft, x < -128 mm", train=False),
    "044_flat_screwdriver": MeshRule(
        "screwdriver", lambda c, t: _parts(handle=c[:, 0] > -0.027, tip=c[:, 0] < -0.081), "shaft",
        "handle: x > -27 mm (from its collar); tip: the last 12 mm of the blade, x < -81 mm", train=False),
    "050_medium_clamp": MeshRule("clamp", lambda c, t: _parts(handle=c[:, 0] > 0.027), "jaw",
                                 "handle: the two levers beyond the pivot, x > 27 mm", train=False),
    "051_large_clamp": MeshRule("clamp", lambda c, t: _parts(handle=c[:, 1] > 0.012), "jaw",
                                "handle: the two levers beyond the pivot, y > 12 mm", train=False),
    "052_extra_large_clamp": MeshRule("clamp", lambda c, t: _parts(handle=c[:, 0] > -0.012), "jaw",
                                      "handle: the two levers beyond the pivot, x > -12 mm", train=False),
}
# 024_bowl is one part: nothing to segment. 038_padlock (lying with its key in it) and
# 040_large_marker (a plain cylinder: its cap has no edge in the scan) have no rule.


def label_mesh(mesh, rule: MeshRule, category: str | None = None) -> LabeledMesh:
    """Split an open3d TriangleMesh into the rule's parts (one sub-mesh per part)."""
    import open3d as o3d

    v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    centroids = v[t].mean(axis=1)
    labels = np.full(len(t), rule.default_part, dtype=object)
    for name, mask in rule.rule(centroids, t).items():
        labels[np.asarray(mask, dtype=bool)] = name
    parts = []
    for name in dict.fromkeys(labels.tolist()):
        sub = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v),
                                        o3d.utility.Vector3iVector(t[labels == name]))
        sub.remove_unreferenced_vertices()
        parts.append((name, sub))
    return LabeledMesh(category or rule.category, parts)


def load_ycb(directory, training_only: bool = False) -> dict[str, LabeledMesh]:
    """{stem: LabeledMesh} for every YCB mesh with a rule found in ``directory``."""
    import open3d as o3d

    out = {}
    for stem, rule in YCB_RULES.items():
        path = Path(directory) / f"{stem}.ply"
        if not path.is_file() or (training_only and not rule.train):
            continue
        mesh = o3d.io.read_triangle_mesh(str(path))
        if len(mesh.triangles) == 0:
            raise ValueError(f"{path}: no triangles")
        out[stem] = label_mesh(mesh, rule)
    return out


def jitter_shape(shape: LabeledMesh, rng, scale=(0.85, 1.15), stretch: float = 0.08) -> LabeledMesh:
    """A copy scaled overall and a little anisotropically (real objects of a kind differ in size
    and proportion); still standing on z = 0."""
    import copy

    s = rng.uniform(*scale) * (1 + rng.uniform(-stretch, stretch, 3))
    parts = []
    for name, mesh in shape.parts:
        m = copy.deepcopy(mesh)
        m.vertices = type(m.vertices)(np.asarray(m.vertices) * s)
        parts.append((name, m))
    return LabeledMesh(shape.category, parts)


def draw_masks(shapes: dict, out_png, points: int = 6000, seed: int = 0):
    """One row per object, three orthographic views, points coloured by part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..visualize import save_figure_small
    from .synthetic import sample_surface

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(shapes), 3, figsize=(12, 3.6 * len(shapes)), squeeze=False)
    for row, (stem, shape) in zip(axes, shapes.items()):
        pts, lab = sample_surface(shape, points, rng)
        for ax, (i, j) in zip(row, [(0, 1), (0, 2), (1, 2)]):
            for k, name in enumerate(shape.part_names):
                sel = lab == k
                ax.scatter(pts[sel, i], pts[sel, j], s=0.6, color=f"C{k}", label=name)
            ax.set_aspect("equal")
            ax.set_title(f"{stem} ({'xyz'[i]}{'xyz'[j]})", fontsize=8)
        row[0].legend(markerscale=8, fontsize=7, loc="best")
        row[2].text(0, -0.25, YCB_RULES[stem].note if stem in YCB_RULES else "", fontsize=6,
                    transform=row[2].transAxes, wrap=True)
    fig.tight_layout()
    save_figure_small(fig, out_png, dpi=45)
    plt.close(fig)
