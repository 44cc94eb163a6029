"""Training configuration (YAML files in config/, overridable from the command line)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    # model (a new model is built from these unless `init` names a checkpoint to start from)
    model: dict = field(default_factory=lambda: dict(
        trans_dim=192, depth=4, num_heads=3, encoder_dims=192, embed_widths=[64, 128, 256],
        num_group=64, group_size=24, num_points=1024, text_dim=384, text_encoder="minilm"))
    init: str | None = None             # checkpoint to start from (e.g. Stage 1 output)
    # input settings of `init` to change (num_points, num_group, group_size: the weights do not
    # depend on them), e.g. default-large: the default at the paper's 2048 points, 128 patches of 32
    init_input: dict = field(default_factory=dict)
    # data
    data_dir: str = "data/train"        # shards; generated if missing
    categories: str = "seen"            # seen | all | comma-separated list
    shapes_per_category: int = 80
    depth_fraction: float = 0.5
    clutter_fraction: float = 0.0      # share of depth captures with a table and occluding objects
    sensor_fraction: float = 0.0       # share of depth captures as robot-camera views with a sensor model
    real_meshes: str | None = None     # a directory of YCB meshes (data.real_meshes rules) to render
    real_views: int = 0                # robot-camera views per real mesh
    data_seed: int = 1
    real_clutter: str | None = None    # a data root (../shared/data layout): tune-split real objects as samples
    real_clutter_views: int = 10       # random-yaw copies per real object
    # absent parts: queries per sample for parts the object lacks, all-negative targets (0: in-shape only)
    negatives_per_shape: int = 0
    negative_weight: float = 1.0       # loss weight of those terms
    # optimisation
    stage: int = 2
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    head_lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    freeze: str = "none"                # none | all_but_last (the paper's Stage 2 setting)
    # augmentation
    scale_jitter: float = 0.1
    point_jitter: float = 0.004
    # bookkeeping
    out_dir: str = "runs/stage2"
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    threads: int = 0                    # 0: torch's default
    # stage 1 only
    teacher: str = "random-cnn"         # random-cnn | dinov2:DIR (a local transformers model)
    views: int = 4

    @classmethod
    def load(cls, path: str | None, overrides: dict | None = None) -> "TrainConfig":
        data = {}
        if path:
            import yaml

            data = yaml.safe_load(Path(path).read_text()) or {}
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)
