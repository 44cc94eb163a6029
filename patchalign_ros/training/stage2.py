"""Stage 2: align patch features with part-name text embeddings.

Per (patch, part) the target is the fraction of the patch's k points inside that part
(multi-label). Loss: BCE with logits on ``scale * cos + bias``, positive weight max(1, K-1).
Negatives: the other parts of the same shape and, with ``negatives_per_shape``, parts the
object does not have at all (``training.negatives``: all-zero targets on every patch, weighted
by ``negative_weight``), so that a query learns absence as well as position. Part names are
drawn from their synonyms each time, through the prompt ensemble.
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

from ..data.engine import ShardDataset, generate_samples, write_shards
from ..data.shapes import CATEGORY_GENERATORS, PART_SYNONYMS, SEEN_CATEGORIES
from ..model import ModelConfig, PatchAlignNet, load_network, save_network
from ..text import PromptEmbedder, load_text_encoder
from .config import TrainConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def category_list(spec: str) -> list:
    if spec == "seen":
        return list(SEEN_CATEGORIES)
    if spec == "all":
        return list(CATEGORY_GENERATORS)
    return [c.strip() for c in spec.split(",") if c.strip()]


def ensure_dataset(cfg: TrainConfig, n_points: int) -> ShardDataset:
    root = Path(cfg.data_dir)
    if not (root / "index.json").exists():
        real = None
        if cfg.real_meshes and cfg.real_views:
            from ..data.real_meshes import load_ycb

            real = load_ycb(cfg.real_meshes, training_only=True)
            if not real:
                raise FileNotFoundError(f"real_meshes: no YCB meshes with part rules in {cfg.real_meshes} "
                                        "(expects e.g. 025_mug.ply; see data/real_meshes.py)")
        samples = generate_samples(category_list(cfg.categories), cfg.shapes_per_category, n_points,
                                   seed=cfg.data_seed, depth_fraction=cfg.depth_fraction,
                                   clutter_fraction=cfg.clutter_fraction, sensor_fraction=cfg.sensor_fraction,
                                   real_meshes=real, real_views=cfg.real_views)
        write_shards(samples, root)
    if cfg.real_clutter and not (root / "index_shard_clutter.json").exists():
        from ..data.real_clutter import clutter_samples, ycb_negative_samples

        real = clutter_samples(cfg.real_clutter, n_points, cfg.real_clutter_views, seed=cfg.data_seed)
        if not real:
            raise FileNotFoundError(f"real_clutter: no labelled tune-split captures under {cfg.real_clutter}")
        if cfg.real_meshes:  # handle-less scanned objects (fruit, cans, boxes, balls, cups)
            real += ycb_negative_samples(cfg.real_meshes, n_points, cfg.real_clutter_views, seed=cfg.data_seed)
        write_shards(real, root, prefix="shard_clutter")
    return ShardDataset(root)


class SynonymTable:
    """Prompt-ensembled embeddings of every synonym of every part name, computed once."""

    def __init__(self, embedder: PromptEmbedder, part_names: list):
        self.index = {}
        texts = []
        for part in part_names:
            names = PART_SYNONYMS.get(part, [part])
            self.index[part] = list(range(len(texts), len(texts) + len(names)))
            texts += names
        self.embeddings = torch.from_numpy(embedder.embed(texts))

    def draw(self, part: str, rng: np.random.Generator) -> int:
        return int(rng.choice(self.index[part]))


def normalize_batch(points: np.ndarray, rng: np.random.Generator, scale_jitter: float, jitter: float) -> np.ndarray:
    """Centre, scale to the unit sphere (as inference does), then augment."""
    pts = points - points.mean(axis=1, keepdims=True)
    pts /= np.linalg.norm(pts, axis=2).max(axis=1)[:, None, None]
    if scale_jitter:
        pts *= rng.uniform(1 - scale_jitter, 1 + scale_jitter, (len(pts), 1, 3))
    if jitter:
        pts += rng.normal(0, jitter, pts.shape)
    return pts.astype(np.float32)


def fractional_targets(labels: torch.Tensor, patch_index: torch.Tensor, num_parts: int) -> torch.Tensor:
    """(B, N) labels and (B, G, k) groups -> (B, G, P): share of each patch's points per part."""
    onehot = F.one_hot(labels.long(), num_parts).float()  # (B, N, P)
    b, g, k = patch_index.shape
    gathered = torch.gather(onehot, 1, patch_index.reshape(b, g * k, 1).expand(-1, -1, num_parts))
    return gathered.reshape(b, g, k, num_parts).mean(dim=2)


def alignment_loss(features, text, mask, targets, scale, bias, absent=None, negative_weight: float = 1.0):
    """features (B,G,D), text (B,P,D), mask (B,P) bool, targets (B,G,P); ``absent`` (B,P) bool
    marks query slots of parts the object lacks (targets 0 there; they do not count in K)."""
    logits = scale * torch.einsum("bgd,bpd->bgp", features, text) + bias
    present = mask if absent is None else mask & ~absent
    k = present.sum(dim=1).clamp(min=1).float()
    pos_weight = torch.clamp(k - 1, min=1.0)[:, None, None]
    loss = -(pos_weight * targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))
    if absent is not None and negative_weight != 1.0:
        loss = loss * torch.where(absent, negative_weight, 1.0)[:, None, :]
    valid = mask[:, None, :].expand_as(loss)
    return loss[valid].mean(), logits


def set_trainable(net: PatchAlignNet, freeze: str) -> None:
    if freeze == "none":
        return
    if freeze != "all_but_last":
        raise ValueError(f"unknown freeze setting {freeze!r} (none | all_but_last)")
    last = len(net.model.blocks.blocks) - 1
    for name, p in net.named_parameters():
        p.requires_grad = (name.startswith(("model.norm.", "model.reduce_dim.", "model.cls_", "proj.", "temp."))
                           or name.startswith(f"model.blocks.blocks.{last}."))


INPUT_SETTINGS = ("num_points", "num_group", "group_size")  # not in the weights


def start_run(cfg: TrainConfig):
    """What both stages set up: threads, device, seeds, the run directory (with the config
    written into it) and the network (new, or from ``cfg.init``)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    net = load_network(cfg.init, device="cpu") if cfg.init else PatchAlignNet(ModelConfig(**cfg.model))
    if cfg.init_input:
        unknown = sorted(set(cfg.init_input) - set(INPUT_SETTINGS))
        if unknown or not cfg.init:
            raise ValueError(f"init_input changes {', '.join(INPUT_SETTINGS)} of an `init` checkpoint; "
                             f"got {sorted(cfg.init_input)}" + ("" if cfg.init else " without init"))
        for name, value in cfg.init_input.items():
            setattr(net.cfg, name, int(value))
    return resolve_device(cfg.device), np.random.default_rng(cfg.seed), out, net


def train_stage2(cfg: TrainConfig, progress: bool = True) -> Path:
    from tqdm import tqdm

    device, rng, out, net = start_run(cfg)
    net.train().to(device)
    mcfg = net.cfg
    dataset = ensure_dataset(cfg, mcfg.num_points)
    embedder = PromptEmbedder(load_text_encoder(mcfg.text_encoder))
    if embedder.dim != mcfg.text_dim:
        raise ValueError(f"text encoder gives {embedder.dim}-d, model projects to {mcfg.text_dim}-d")
    parts = sorted({p for names in dataset.part_names for p in names}
                   | {a for names in dataset.absent if names for a in names})
    table = SynonymTable(embedder, parts)
    from .negatives import AbsentPartSampler

    negatives = AbsentPartSampler(parts, cfg.negatives_per_shape)
    text_table = table.embeddings.to(device)

    bias = torch.nn.Parameter(torch.tensor(float(mcfg.logit_bias), device=device))
    set_trainable(net, cfg.freeze)
    head = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith(("proj.", "temp."))]
    body = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith(("proj.", "temp."))]
    opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head + [bias], "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]

    state_path = out / "last.pt"
    step, history = 0, []
    if state_path.exists():  # resume
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        bias.data.fill_(float(state["bias"]))
        step = int(state["step"])
        history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
        rng = np.random.default_rng(cfg.seed + step)
        print(f"resuming from step {step}")

    def save_state():
        tmp = state_path.with_suffix(".tmp")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "bias": float(bias), "step": step}, tmp)
        os.replace(tmp, state_path)
        (out / "history.json").write_text(json.dumps(history))

    bar = tqdm(total=cfg.steps, initial=step, desc="stage 2", disable=not progress, unit="step")
    t0 = time.time()
    while step < cfg.steps:
        idx = rng.choice(len(dataset), cfg.batch_size, replace=len(dataset) < cfg.batch_size)
        pts = normalize_batch(dataset.points[idx].astype(np.float64), rng, cfg.scale_jitter, cfg.point_jitter)
        labels = torch.from_numpy(dataset.labels[idx].astype(np.int64))
        max_parts = max(len(dataset.part_names[i]) for i in idx)
        drawn = [negatives.draw(dataset.part_names[i], rng, dataset.absent[i]) for i in idx]
        slots = max_parts + max((len(d) for d in drawn), default=0)
        text_idx = torch.zeros(len(idx), slots, dtype=torch.long)
        mask = torch.zeros(len(idx), slots, dtype=torch.bool)
        absent = torch.zeros(len(idx), slots, dtype=torch.bool)
        for row, i in enumerate(idx):
            for j, part in enumerate(dataset.part_names[i]):
                text_idx[row, j] = table.draw(part, rng)
                mask[row, j] = True
            for j, part in enumerate(drawn[row]):  # absent parts after the shape's own slots
                text_idx[row, max_parts + j] = table.draw(part, rng)
                mask[row, max_parts + j] = absent[row, max_parts + j] = True
        for group, lr in zip(opt.param_groups, base_lrs):  # warmup then cosine decay
            warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))

        points = torch.from_numpy(pts).to(device)
        features, _, patch_index = net(points)
        targets = fractional_targets(labels.to(device), patch_index, max_parts)
        targets = F.pad(targets, (0, slots - max_parts))  # absent parts: 0 on every patch
        loss, logits = alignment_loss(features, text_table[text_idx.to(device)], mask.to(device), targets,
                                      net.temp(), bias, absent.to(device), cfg.negative_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        with torch.no_grad():  # patch accuracy: argmax over the shape's parts vs majority part
            own = (mask & ~absent).to(device)
            pred = logits.masked_fill(~own[:, None, :], -1e9).argmax(-1)
            acc = float((pred == targets.argmax(-1)).float().mean())
            absent_fp = float((logits > 0)[absent.to(device)[:, None, :].expand_as(logits)].float().mean()) \
                if absent.any() else 0.0
        history.append({"step": step, "loss": float(loss), "patch_acc": acc, "absent_patch_fp": absent_fp,
                        "scale": float(net.temp().detach()),
                        "bias": float(bias.detach()), "time_s": time.time() - t0})
        bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{acc:.2f}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_state()
    bar.close()
    net.cfg.logit_bias = float(bias)
    net.eval()
    weights = save_network(net.cpu(), out / "model.safetensors")
    plot_history(history, out / "training_curve.png")
    return weights


def plot_history(history: list, path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(steps, [h["loss"] for h in history])
    ax[0].set_title("loss")
    ax[1].plot(steps, [h["patch_acc"] for h in history])
    ax[1].set_title("patch accuracy (within-shape argmax)")
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
