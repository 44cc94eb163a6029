"""A straightforward float64 numpy forward pass of PatchAlign3D, written from the facts page
(../shared/notes/patchalign3d-reference.md) independently of patchalign_ros.model.

state: the official layout flattened, keys "model.*", "proj.*" (numpy arrays).
"""
import numpy as np
from scipy.special import erf


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def fps(points, g):
    chosen = [0]  # seeded at point index 0
    dist = np.full(len(points), np.inf)
    for _ in range(g - 1):
        dist = np.minimum(dist, ((points - points[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(dist)))
    return np.array(chosen)


def reference_forward(state, points, num_group, group_size, num_heads):
    s = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    m = lambda name: s["model." + name]  # noqa: E731
    points = np.asarray(points, dtype=np.float64)
    centers = points[fps(points, num_group)]
    d2 = ((points[None] - centers[:, None]) ** 2).sum(-1)
    knn = np.argsort(d2, axis=1, kind="stable")[:, :group_size]  # the centre itself included
    groups = points[knn] - centers[:, None]  # (G, k, 3)

    def conv(x, prefix):
        return x @ m(prefix + ".weight")[:, :, 0].T + m(prefix + ".bias")

    def bn(x, prefix):
        return (x - m(prefix + ".running_mean")) / np.sqrt(m(prefix + ".running_var") + 1e-5) \
            * m(prefix + ".weight") + m(prefix + ".bias")

    f = conv(np.maximum(bn(conv(groups, "encoder.first_conv.0"), "encoder.first_conv.1"), 0), "encoder.first_conv.3")
    glob = f.max(axis=1, keepdims=True)
    f = np.concatenate([np.broadcast_to(glob, f.shape), f], axis=-1)  # [global, per-point]
    f = conv(np.maximum(bn(conv(f, "encoder.second_conv.0"), "encoder.second_conv.1"), 0), "encoder.second_conv.3")
    tokens = f.max(axis=1) @ m("reduce_dim.weight").T + m("reduce_dim.bias")
    pos = gelu(centers @ m("pos_embed.0.weight").T + m("pos_embed.0.bias")) @ m("pos_embed.2.weight").T \
        + m("pos_embed.2.bias")
    x = np.concatenate([m("cls_token")[0], tokens])
    p = np.concatenate([m("cls_pos")[0], pos])
    dim = x.shape[-1]
    hd = dim // num_heads
    depth = len({k.split(".")[3] for k in s if k.startswith("model.blocks.blocks.")})
    for i in range(depth):
        b = lambda name: m(f"blocks.blocks.{i}.{name}")  # noqa: E731
        x = x + p  # the positional embedding enters every block
        h = layer_norm(x, b("norm1.weight"), b("norm1.bias"))
        qkv = (h @ b("attn.qkv.weight").T).reshape(len(x), 3, num_heads, hd)  # no qkv bias
        out = np.zeros((len(x), dim))
        for head in range(num_heads):
            q, k, v = qkv[:, 0, head], qkv[:, 1, head], qkv[:, 2, head]
            a = q @ k.T * hd ** -0.5
            a = np.exp(a - a.max(1, keepdims=True))
            out[:, head * hd:(head + 1) * hd] = (a / a.sum(1, keepdims=True)) @ v
        x = x + out @ b("attn.proj.weight").T + b("attn.proj.bias")
        h = layer_norm(x, b("norm2.weight"), b("norm2.bias"))
        x = x + gelu(h @ b("mlp.fc1.weight").T + b("mlp.fc1.bias")) @ b("mlp.fc2.weight").T + b("mlp.fc2.bias")
    x = layer_norm(x, m("norm.weight"), m("norm.bias"))[1:]  # drop the cls token
    feats = x @ s["proj.proj.weight"].T + s["proj.proj.bias"]
    return feats / np.linalg.norm(feats, axis=-1, keepdims=True), centers, knn
