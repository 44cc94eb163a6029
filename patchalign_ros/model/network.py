"""The PatchAlign3D network: mini-PointNet patch embedding, transformer, text projection.

Module and parameter names follow the official release so its state dicts load without
renaming (see ``checkpoint.py``): ``encoder.first_conv``, ``reduce_dim``, ``pos_embed``,
``blocks.blocks.N``, ``norm``, and a separate ``proj`` head and ``temp`` scale.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .grouping import group_points


@dataclass
class ModelConfig:
    """Architecture and input conventions. Stored as JSON next to our safetensors weights."""

    trans_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    encoder_dims: int = 256
    # Hidden widths of the mini-PointNet (the release: 128, 256, 512; the last must be twice
    # the second because it takes [global, per-point]). Smaller models for CPU robots shrink them.
    embed_widths: list = field(default_factory=lambda: [128, 256, 512])
    mlp_ratio: float = 4.0
    text_dim: int = 384
    num_group: int = 128
    group_size: int = 32
    num_points: int = 2048
    # Model frame = caller frame (z up) with axes permuted by this. The official release was
    # trained Y-up, so it needs [0, 2, 1]; our own models are trained z-up (identity).
    axis_permutation: list = field(default_factory=lambda: [0, 1, 2])
    # Fixed inference temperature of the official scripts (cosine / tau).
    tau: float = 0.07
    # Calibration of the part probability: sigmoid(logit_scale * cos + logit_bias); the scale
    # comes from the checkpoint's learnt temperature.
    logit_bias: float = 0.0
    # Text side the projection was trained against (see patchalign_ros.text).
    text_encoder: str = "minilm"
    name: str = "patchalign3d"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)


class PatchEmbedding(nn.Module):
    """Mini-PointNet over each k-point group: (B, G, k, 3) -> (B, G, encoder_dims)."""

    def __init__(self, encoder_dims: int, widths=(128, 256, 512)):
        super().__init__()
        c1, c2, c3 = widths
        self.encoder_dims = encoder_dims
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, c1, 1), nn.BatchNorm1d(c1), nn.ReLU(inplace=True), nn.Conv1d(c1, c2, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * c2, c3, 1), nn.BatchNorm1d(c3), nn.ReLU(inplace=True),
            nn.Conv1d(c3, encoder_dims, 1),
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        batch, num_group, k, _ = groups.shape
        x = groups.reshape(batch * num_group, k, 3).transpose(2, 1)
        feature = self.first_conv(x)  # (BG, c2, k)
        global_feature = feature.max(dim=2, keepdim=True).values
        feature = torch.cat([global_feature.expand(-1, -1, k), feature], dim=1)  # [global, local]
        feature = self.second_conv(feature)
        return feature.max(dim=2).values.reshape(batch, num_group, self.encoder_dims)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)  # the release has no qkv bias
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)  # the positional embedding enters every block
        return x


class PointEncoder(nn.Module):
    """Patch tokens -> transformer features (B, G, trans_dim). Keys = the official `model`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.trans_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, cfg.trans_dim) * 0.02)
        self.encoder = PatchEmbedding(cfg.encoder_dims, cfg.embed_widths)
        self.reduce_dim = nn.Linear(cfg.encoder_dims, cfg.trans_dim)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, cfg.trans_dim))
        self.blocks = TransformerEncoder(cfg.trans_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio)
        self.norm = nn.LayerNorm(cfg.trans_dim)

    def forward(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        return self.transform(self.encoder(neighborhood), centers)

    def transform(self, patch_embeddings: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Patch embeddings (B, G, encoder_dims) -> transformer features (B, G, trans_dim)."""
        tokens = self.reduce_dim(patch_embeddings)
        pos = self.pos_embed(centers)
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), pos], dim=1)
        x = self.norm(self.blocks(x, pos))
        return x[:, 1:]


class ProjectionHead(nn.Module):
    """Linear map into the text-embedding space; keys `proj.weight`, `proj.bias`."""

    def __init__(self, in_dim: int, text_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), dim=-1)


class LogitScale(nn.Module):
    """Learnable inverse temperature; key `log_scale`, exp() clamped at 100."""

    def __init__(self, init_tau: float = 0.07):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1.0 / init_tau)))))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)


class PatchAlignNet(nn.Module):
    """Points (B, N, 3) in the model frame -> unit patch features (B, G, text_dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = PointEncoder(cfg)
        self.proj = ProjectionHead(cfg.trans_dim, cfg.text_dim)
        self.temp = LogitScale(cfg.tau)

    def group(self, points: torch.Tensor):
        return group_points(points, self.cfg.num_group, self.cfg.group_size)

    def forward_groups(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        return self.proj(self.model(neighborhood, centers))

    def forward(self, points: torch.Tensor):
        neighborhood, centers, patch_index = self.group(points)
        return self.forward_groups(neighborhood, centers), centers, patch_index
