"""Reading and writing PatchAlign3D weights.

Two formats:
* the official stage-2 release: a ``torch.save`` dict ``{"epoch", "model", "proj", "temp",
  "args"}`` (``.pt``/``.pth``), read with ``torch.load(weights_only=True)``;
* ours: ``<name>.safetensors`` with a ``<name>.json`` config beside it (or a directory holding
  ``model.safetensors`` + ``config.json``). Tensor keys are ``model.*``, ``proj.*``, ``temp.*``
  - the official sub-dicts flattened with their prefix.
Depth, width, encoder and text dims are read off the weights, so a config only has to say
what the weights cannot (heads, G, k, axis convention, text encoder).
"""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import torch

from .network import ModelConfig, PatchAlignNet

OFFICIAL_EXTENSIONS = {".pt", ".pth", ".ckpt"}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the architecture."""


def _strip_prefix(state: dict, prefix: str) -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def infer_config(state: dict, base: ModelConfig | None = None) -> ModelConfig:
    """Architecture numbers read off a flattened state dict (``model.*``, ``proj.*``)."""
    cfg = ModelConfig(**(base.to_dict() if base else {}))
    try:
        cfg.trans_dim = int(state["model.cls_token"].shape[-1])
        cfg.encoder_dims = int(state["model.reduce_dim.weight"].shape[1])
        cfg.embed_widths = [int(state["model.encoder.first_conv.0.weight"].shape[0]),
                            int(state["model.encoder.first_conv.3.weight"].shape[0]),
                            int(state["model.encoder.second_conv.0.weight"].shape[0])]
        cfg.text_dim = int(state["proj.proj.weight"].shape[0])
        hidden = int(state["model.blocks.blocks.0.mlp.fc1.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"checkpoint lacks the tensor {exc.args[0]!r}; is it a PatchAlign3D model?")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.blocks\.blocks\.(\d+)\.", k))}
    cfg.depth = max(blocks) + 1 if blocks else 0
    cfg.mlp_ratio = hidden / cfg.trans_dim
    if cfg.trans_dim % cfg.num_heads:
        raise CheckpointError(f"width {cfg.trans_dim} is not divisible by num_heads={cfg.num_heads}")
    return cfg


def _load_state(net: PatchAlignNet, state: dict, source: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{source}: {len(missing)} tensors missing: {shown}")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{source}: tensors of the wrong shape: {'; '.join(wrong[:5])}")
    net.load_state_dict({k: state[k] for k in expected}, strict=True)


def _read_official(path: Path) -> tuple[dict, dict]:
    # argparse.Namespace holds the training arguments; it is a plain attribute bag, so it is
    # safe to allow it in the weights-only unpickler.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or hostile files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, dict) or "model" not in raw:
        raise CheckpointError(f"{path}: not a PatchAlign3D checkpoint (expected a dict with 'model')")
    state = {}
    for part in ("model", "proj", "temp"):
        sub = raw.get(part) or {}
        if not isinstance(sub, dict):
            raise CheckpointError(f"{path}: '{part}' is not a state dict")
        sub = _strip_prefix(sub, "module.")
        state.update({f"{part}.{k}": v for k, v in sub.items() if torch.is_tensor(v)})
    args = raw.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return state, args if isinstance(args, dict) else {}


def _config_from_official_args(args: dict) -> ModelConfig:
    cfg = ModelConfig(axis_permutation=[0, 2, 1], text_encoder="openclip:ViT-bigG-14", name="patchalign3d-official")
    for ours, theirs in (("num_group", "num_group"), ("group_size", "group_size"),
                         ("num_heads", "num_heads"), ("num_points", "npoints")):
        if isinstance(args.get(theirs), int):
            setattr(cfg, ours, args[theirs])
    return cfg


def resolve_paths(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(weights file, config file or None) for a checkpoint path in any supported layout."""
    p = Path(path).expanduser()
    if p.is_dir():
        weights, config = p / "model.safetensors", p / "config.json"
    elif p.suffix == ".json":
        weights, config = p.with_suffix(".safetensors"), p
    else:
        weights, config = p, p.with_suffix(".json")
    if not weights.is_file():
        raise CheckpointError(f"checkpoint not found: {weights}")
    return weights, (config if config.is_file() else None)


def load_network(path: str | os.PathLike, device: str = "cpu") -> PatchAlignNet:
    """Build the network described by a checkpoint and load its weights (eval mode)."""
    weights, config_path = resolve_paths(path)
    if weights.suffix in OFFICIAL_EXTENSIONS:
        state, args = _read_official(weights)
        base = _config_from_official_args(args)
    elif weights.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights), device="cpu")
            with safe_open(str(weights), framework="pt") as fh:
                embedded = (fh.metadata() or {}).get("config")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read checkpoint {weights}: {exc}") from None
        # The JSON beside the weights wins (users edit it); else the copy saved inside them.
        source, text = (config_path, config_path.read_text()) if config_path else ("metadata", embedded)
        base = ModelConfig()
        if text:
            try:
                base = ModelConfig.from_dict(json.loads(text))
            except (ValueError, TypeError) as exc:
                raise CheckpointError(f"bad model config ({source}) of {weights}: {exc}") from None
    else:
        raise CheckpointError(f"unknown checkpoint format {weights.suffix!r} ({weights}); "
                              "expected .safetensors (+ .json) or an official .pt")
    cfg = infer_config(state, base)
    net = PatchAlignNet(cfg)
    _load_state(net, state, str(weights))
    return net.to(device).eval()


def save_network(net: PatchAlignNet, path: str | os.PathLike) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``; returns the weights path."""
    from safetensors.torch import save_file

    weights = Path(path)
    if weights.suffix != ".safetensors":
        weights = weights.with_suffix(".safetensors")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "patchalign_ros", "config": json.dumps(net.cfg.to_dict())})
    weights.with_suffix(".json").write_text(json.dumps(net.cfg.to_dict(), indent=2) + "\n")
    return weights


def save_official(net: PatchAlignNet, path: str | os.PathLike, args: dict | None = None) -> Path:
    """Write the official release layout (used to test loading it; also handy for export)."""
    state = net.state_dict()
    args = dict(args or {"num_group": net.cfg.num_group, "group_size": net.cfg.group_size,
                         "npoints": net.cfg.num_points})
    if net.cfg.num_heads != 6:  # the release's args omit heads (always 6); record others
        args["num_heads"] = net.cfg.num_heads
    out = {"epoch": 0, "args": argparse.Namespace(**args)}
    for part in ("model", "proj", "temp"):
        out[part] = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
    torch.save(out, str(path))
    return Path(path)
