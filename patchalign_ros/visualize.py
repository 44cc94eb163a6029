"""Pictures and labelled clouds of results (matplotlib Agg, no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

BACKGROUND = (0.72, 0.72, 0.72)


def label_colors(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N)[:3] for i in range(n)])


def point_colors(labels: np.ndarray, n_labels: int) -> np.ndarray:
    colors = np.tile(BACKGROUND, (len(labels), 1))
    palette = label_colors(max(n_labels, 1))
    mask = labels >= 0
    colors[mask] = palette[labels[mask]]
    return colors


def camera_image(points: np.ndarray, shape, colors: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) float image of an organized capture: its colours, else its depth shaded (near
    bright), black where there is no reading."""
    h, w = shape
    if colors is not None:
        return np.asarray(colors, dtype=np.float64).reshape(h, w, 3) / 255.0
    z = np.linalg.norm(np.asarray(points, dtype=np.float64).reshape(h, w, 3), axis=-1)
    ok = np.isfinite(z)
    out = np.zeros((h, w, 3))
    if ok.any():
        lo, hi = np.percentile(z[ok], [2, 98])
        out[ok] = (0.9 - 0.7 * np.clip((z[ok] - lo) / max(hi - lo, 1e-6), 0, 1))[:, None]
    return out


def paint_parts(ax, image: np.ndarray, labels: np.ndarray, names: list, parts: list | None = None) -> None:
    """The camera image with each labelled pixel painted its part's colour and each part named
    (``parts``: (label, score, pixel indices)) where it lies."""
    h, w = image.shape[:2]
    palette = label_colors(max(len(names), 1))
    shown = image.reshape(-1, 3) * 0.6  # dimmed, so the parts stand out
    mask = labels >= 0
    shown[mask] = 0.15 * shown[mask] + 0.85 * palette[labels[mask]]
    ax.imshow(shown.reshape(h, w, 3))
    for label, score, idx in parts or []:
        idx = np.asarray(idx)
        if len(idx) == 0:
            continue
        v, u = np.median(idx // w), np.median(idx % w)
        top = max(0.0, float((idx // w).min()) - 0.08 * h)  # the name above the part, not over it
        color = palette[names.index(label)] if label in names else (0.0, 0.0, 0.0)
        ax.annotate(f"{label} {score:.2f}", xy=(u, v), xytext=(u, top), color="white", fontsize=9, ha="center",
                    va="bottom", arrowprops={"arrowstyle": "-", "color": "white", "lw": 0.8},
                    bbox={"facecolor": color, "alpha": 0.85, "pad": 1.5, "edgecolor": "none"})
    ax.set_axis_off()
    ax.set_title("camera")


def save_figure_small(fig, path, dpi: int) -> None:
    """Save a matplotlib figure as a 256-colour PNG: a third of the size for pictures of many
    points or photos, as readable."""
    from PIL import Image

    fig.savefig(path, dpi=dpi)
    with Image.open(path) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)


def save_png(path, points: np.ndarray, labels: np.ndarray, names: list, title: str = "",
             keypoints: list | None = None, max_points: int = 60000, up: np.ndarray | None = None,
             image_shape=None, colors: np.ndarray | None = None, parts: list | None = None,
             image: np.ndarray | None = None) -> Path:
    """Two views (oblique and top-down) of the labelled points with a legend; for organized
    input (``image_shape`` (H, W), points row-major) the camera image with the parts painted on
    it first (``image``, else ``colors`` (the camera's), else the depth shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if image is None and image_shape is not None:
        image = camera_image(points, image_shape, colors)
    all_labels = labels
    finite = np.isfinite(points).all(axis=1)
    pts, labs = points[finite], labels[finite]
    if len(pts) > max_points:  # keep every labelled point, thin the background
        rng = np.random.default_rng(0)
        keep = np.flatnonzero(labs >= 0)
        rest = np.flatnonzero(labs < 0)
        take = rng.choice(rest, max(0, max_points - len(keep)), replace=False) if len(rest) else rest
        sel = np.concatenate([keep, take])
        pts, labs = pts[sel], labs[sel]
    if up is not None:  # show the scene upright
        from .inference.preprocess import rotation_to_z

        rot = rotation_to_z(up)
        pts = pts @ rot.T
        keypoints = [(n, np.asarray(p) @ rot.T) for n, p in (keypoints or [])]
    colors = point_colors(labs, len(names))
    order = np.argsort(labs >= 0, kind="stable")  # labelled points drawn last, on top
    panels = 3 if image is not None else 2
    fig = plt.figure(figsize=(6 * panels, 6), dpi=100)
    if image is not None:
        paint_parts(fig.add_subplot(1, panels, 1), image, all_labels, names, parts)
    for i, (elev, azim, sub) in enumerate(((25, -60, "oblique"), (90, -90, "top"))):
        ax = fig.add_subplot(1, panels, panels - 1 + i, projection="3d")
        if len(pts):
            ax.scatter(pts[order, 0], pts[order, 1], pts[order, 2], c=colors[order], s=1.5, linewidths=0)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            mid, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3)
            ax.set_xlim(mid[0] - half, mid[0] + half)
            ax.set_ylim(mid[1] - half, mid[1] + half)
            ax.set_zlim(mid[2] - half, mid[2] + half)
        for name, pos in keypoints or []:
            ax.scatter([pos[0]], [pos[1]], [pos[2]], c="k", s=60, marker="*")
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(sub)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
    handles = [Patch(color=c, label=n) for n, c in zip(names, label_colors(max(len(names), 1)))]
    handles.append(Patch(color=BACKGROUND, label="none"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6))
    if title:
        fig.suptitle(title, y=0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_labeled_ply(path, points: np.ndarray, labels: np.ndarray, n_labels: int) -> Path:
    """Valid points coloured by label (background grey), as a PLY point cloud."""
    import open3d as o3d

    finite = np.isfinite(points).all(axis=1)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[finite]))
    cloud.colors = o3d.utility.Vector3dVector(point_colors(labels[finite], n_labels))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"could not write {path}")
    return path
