"""An inference-only form of the encoder, numerically the same network, built for speed:

* BatchNorm folded into the 1x1 convolutions (which become plain matmuls over points);
* the second conv sees [global, per-point] features; its global half W_g @ g is the same for
  all k points of a group, so it is computed once per group and broadcast (a third of the
  mini-PointNet's FLOPs at the released size);
* channels-last layout (B, G, k, C): every layer is one large GEMM.
Used by the torch backend and for ONNX export; parity with PatchAlignNet is tested to 1e-5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .network import PatchAlignNet


def _fold(conv: nn.Conv1d, bn: nn.BatchNorm1d | None):
    w = conv.weight.detach()[:, :, 0].clone()
    b = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(w.shape[0])
    if bn is not None:
        scale = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
        w = w * scale[:, None]
        b = (b - bn.running_mean.detach()) * scale + bn.bias.detach()
    return nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)


class FusedPatchEmbedding(nn.Module):
    def __init__(self, emb):
        super().__init__()
        fc, sc = emb.first_conv, emb.second_conv
        self.w1, self.b1 = _fold(fc[0], fc[1])
        self.w2, self.b2 = _fold(fc[3], None)
        w3, self.b3 = _fold(sc[0], sc[1])
        c2 = self.w2.shape[0]
        self.w3_global = nn.Parameter(w3[:, :c2].clone(), requires_grad=False)
        self.w3_local = nn.Parameter(w3[:, c2:].clone(), requires_grad=False)
        self.w4, self.b4 = _fold(sc[3], None)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:  # (B, G, k, 3) -> (B, G, out)
        x = F.relu(F.linear(groups, self.w1, self.b1))
        x = F.linear(x, self.w2, self.b2)  # (B, G, k, c2)
        g = x.amax(dim=2)  # (B, G, c2)
        y = F.linear(x, self.w3_local) + F.linear(g, self.w3_global, self.b3).unsqueeze(2)
        y = F.linear(F.relu(y), self.w4, self.b4)
        return y.amax(dim=2)


class FusedEncoder(nn.Module):
    """(neighborhood (B,G,k,3), centers (B,G,3)) -> unit patch features (B,G,text_dim)."""

    def __init__(self, net: PatchAlignNet):
        super().__init__()
        import copy

        self.embed = FusedPatchEmbedding(net.model.encoder)
        # Copies: moving, casting (fp16) or freezing this encoder must never change the network
        # the caller still holds (and may be training or exporting).
        self.point = copy.deepcopy(net.model)  # its transform(): reduce_dim, positions, blocks, norm
        self.point.encoder = None  # replaced by the fused embedding above
        self.proj = copy.deepcopy(net.proj)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        return self.proj(self.point.transform(self.embed(neighborhood), centers))
