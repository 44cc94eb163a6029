"""PatchAlign3D encoder: ``PatchAlignModel.from_checkpoint(path).encode(points)``."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import CheckpointError, load_network, resolve_paths, save_network, save_official
from .grouping import farthest_point_sample, group_points, knn_group
from .network import ModelConfig, PatchAlignNet

__all__ = [
    "CheckpointError", "EncoderOutput", "ModelConfig", "PatchAlignModel", "PatchAlignNet",
    "farthest_point_sample", "group_points", "knn_group", "load_network", "save_network",
    "save_official",
]


@dataclass
class EncoderOutput:
    patch_features: torch.Tensor  # (B, G, text_dim), unit length
    centers: torch.Tensor         # (B, G, 3), model frame
    patch_index: torch.Tensor     # (B, G, k), indices into the encoded points


class PatchAlignModel:
    """A loaded PatchAlign3D encoder with its config; inference only.

    ``backend``: ``torch`` (the fused encoder, fp32 / fp16 on CUDA / bf16), ``torch-eager``
    (the reference network as trained), ``onnxruntime``, ``tensorrt`` or ``auto``.
    Grouping (FPS + kNN) always runs in torch on ``device``.
    """

    def __init__(self, net: PatchAlignNet, device: str = "cpu", source: str | None = None,
                 backend: str = "torch-eager", precision: str = "fp32"):
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.source = source
        self.precision = precision
        self._model_id = None
        if backend == "torch-eager":
            if precision != "fp32":
                from .backends import BackendError

                raise BackendError(f"torch-eager runs the reference network in fp32; precision {precision} is "
                                   "available with backend torch")
            self.backend = None
            self.backend_name = "torch-eager"
        else:
            from .backends import make_backend

            weights = resolve_paths(source)[0] if source else None
            self.backend = make_backend(backend, self.net, str(device), weights, self.model_id, precision)
            self.backend_name = self.backend.name

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu", backend: str = "torch", precision: str = "fp32",
                        config_overrides: dict | None = None) -> "PatchAlignModel":
        """``config_overrides``: ModelConfig fields the weights cannot tell (points, patches,
        axis convention, tau, logit_bias, text encoder), e.g. from a registry entry."""
        net = load_network(path, device=device)
        if config_overrides:
            from .network import ModelConfig

            unknown = sorted(set(config_overrides) - set(ModelConfig.__dataclass_fields__))
            if unknown:
                raise CheckpointError(f"unknown model config keys {unknown} for {path}")
            for key, value in config_overrides.items():
                setattr(net.cfg, key, value)
        return cls(net, device=device, source=str(path), backend=backend, precision=precision)

    @property
    def config(self) -> ModelConfig:
        return self.net.cfg

    @property
    def logit_scale(self) -> float:
        with torch.no_grad():
            return float(self.net.temp())

    @property
    def model_id(self) -> str:
        """Short content hash of the weights (for caches keyed by model)."""
        if self._model_id is None:
            digest = hashlib.sha1()
            if self.source is None:
                for k, v in sorted(self.net.state_dict().items()):
                    digest.update(k.encode())
                    digest.update(v.detach().cpu().numpy().tobytes())
            else:
                with open(resolve_paths(self.source)[0], "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            self._model_id = digest.hexdigest()[:16]
        return self._model_id

    @torch.inference_mode()
    def encode(self, points) -> EncoderOutput:
        """Encode ``points`` (B, N, 3) float32, already in the model frame (no normalisation or
        axis change here)."""
        pts = torch.as_tensor(np.asarray(points, dtype=np.float32) if not torch.is_tensor(points) else points)
        if pts.dim() == 2:
            pts = pts.unsqueeze(0)
        if pts.dim() != 3 or pts.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got {tuple(pts.shape)}")
        cfg = self.config
        if pts.shape[1] < max(cfg.num_group, cfg.group_size):
            raise ValueError(f"need at least {max(cfg.num_group, cfg.group_size)} points to form "
                             f"{cfg.num_group} patches of {cfg.group_size}, got {pts.shape[1]}")
        if not torch.isfinite(pts).all():
            raise ValueError("points contain NaN or Inf; clean them first (inference.preprocess)")
        pts = pts.to(self.device, torch.float32)
        neighborhood, centers, patch_index = self.net.group(pts)
        if self.backend is None:
            features = self.net.forward_groups(neighborhood, centers)
        else:
            features = self.backend.run(neighborhood, centers)
        return EncoderOutput(features, centers, patch_index)
