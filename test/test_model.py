"""Encoder: official checkpoint layout, our safetensors format, exactness, grouping."""
import argparse

import numpy as np
import pytest
import torch

from model_factory import FULL, random_net
from patchalign_ros.model import (CheckpointError, PatchAlignModel, farthest_point_sample, knn_group,
                                  save_network, save_official)
from reference_patchalign import reference_forward


def sphere_points(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True) * rng.uniform(0.5, 1.0, (n, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def full_official(tmp_path_factory):
    """The released size (384-d, 12 blocks, 1280-d text) with random weights, official layout."""
    net = random_net(seed=3, **FULL)
    path = tmp_path_factory.mktemp("official") / "patchalign3d.pt"
    save_official(net, path, args={"num_group": 128, "group_size": 32, "npoints": 2048, "lr": 1e-4})
    return net, path


def test_official_checkpoint_matches_reference_forward(full_official):
    net, path = full_official
    model = PatchAlignModel.from_checkpoint(path, device="cpu")
    cfg = model.config
    assert (cfg.depth, cfg.trans_dim, cfg.text_dim, cfg.encoder_dims) == (12, 384, 1280, 256)
    assert (cfg.num_group, cfg.group_size) == (128, 32)
    assert cfg.axis_permutation == [0, 2, 1]  # the release is Y-up
    points = sphere_points(2048, seed=1)
    out = model.encode(points[None])
    assert tuple(out.patch_features.shape) == (1, 128, 1280)
    assert tuple(out.centers.shape) == (1, 128, 3)
    assert tuple(out.patch_index.shape) == (1, 128, 32)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    ref_feats, ref_centers, ref_knn = reference_forward(state, points, 128, 32, 6)
    np.testing.assert_allclose(out.centers[0].numpy(), ref_centers, atol=1e-6)
    assert (np.sort(out.patch_index[0].numpy(), 1) == np.sort(ref_knn, 1)).all()
    diff = np.abs(out.patch_features[0].numpy() - ref_feats).max()
    assert diff <= 1e-4, diff
    norms = np.linalg.norm(out.patch_features[0].numpy(), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_official_checkpoint_with_namespace_args_and_module_prefix(tmp_path):
    net = random_net(seed=5)
    raw = {"epoch": 7, "args": argparse.Namespace(num_group=32, group_size=16, seed=1),
           "model": {"module." + k[len("model."):]: v for k, v in net.state_dict().items() if k.startswith("model.")},
           "proj": {k[len("proj."):]: v for k, v in net.state_dict().items() if k.startswith("proj.")},
           "temp": {"log_scale": torch.tensor(2.0)},
           "cls_head": {"extra.weight": torch.zeros(3)}}
    torch.save(raw, tmp_path / "ckpt.pth")
    model = PatchAlignModel.from_checkpoint(tmp_path / "ckpt.pth")
    assert model.config.depth == 2 and model.config.num_group == 32
    assert abs(model.logit_scale - np.exp(2.0)) < 1e-5


def test_batch_and_determinism(tmp_path):
    net = random_net(seed=11)
    path = save_network(net, tmp_path / "tiny.safetensors")
    model = PatchAlignModel.from_checkpoint(path)
    a, b = sphere_points(512, 1), sphere_points(512, 2)
    batch = model.encode(np.stack([a, b]))
    single = model.encode(b[None])
    np.testing.assert_allclose(batch.patch_features[1].numpy(), single.patch_features[0].numpy(), atol=1e-5)
    again = PatchAlignModel.from_checkpoint(path).encode(np.stack([a, b]))
    # oneDNN may pick other GEMM kernels for other allocations: equal up to float rounding
    np.testing.assert_allclose(batch.patch_features.numpy(), again.patch_features.numpy(), atol=1e-6)
    assert torch.equal(batch.patch_index, again.patch_index)


def test_safetensors_round_trip_reads_shapes_from_weights(tmp_path):
    net = random_net(seed=2, depth=3, trans_dim=64, num_heads=2, text_dim=48)
    path = save_network(net, tmp_path / "m.safetensors")
    (tmp_path / "m.json").unlink()  # sizes from the tensors, the rest from the embedded config
    model = PatchAlignModel.from_checkpoint(path)
    assert (model.config.depth, model.config.trans_dim, model.config.text_dim) == (3, 64, 48)
    for k, v in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v), k


def test_official_and_ours_give_identical_features(tmp_path):
    net = random_net(seed=4)
    ours = PatchAlignModel.from_checkpoint(save_network(net, tmp_path / "a.safetensors"))
    theirs = PatchAlignModel.from_checkpoint(save_official(net, tmp_path / "a.pt"))
    pts = sphere_points(512)[None]
    np.testing.assert_allclose(ours.encode(pts).patch_features.numpy(), theirs.encode(pts).patch_features.numpy(),
                               atol=1e-6)


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    (b"", "cannot read"),
    (b"garbage" * 100, "cannot read"),
])
def test_missing_or_corrupt_checkpoint(tmp_path, content, match):
    path = tmp_path / "bad.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        PatchAlignModel.from_checkpoint(path)


def test_truncated_and_wrong_shape_checkpoints(tmp_path):
    net = random_net(seed=1)
    good = save_official(net, tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        PatchAlignModel.from_checkpoint(tmp_path / "trunc.pt")
    state = torch.load(good, weights_only=False)
    state["model"]["reduce_dim.weight"] = torch.zeros(96, 7)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="wrong shape"):
        PatchAlignModel.from_checkpoint(tmp_path / "shape.pt")
    del state["model"]["norm.weight"]
    state["model"]["reduce_dim.weight"] = net.state_dict()["model.reduce_dim.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing"):
        PatchAlignModel.from_checkpoint(tmp_path / "missing.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        PatchAlignModel.from_checkpoint(tmp_path / "evil.pt")


def test_fps_starts_at_zero_and_spreads():
    pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.1, 0, 0], [-2, 0, 0], [0, 3, 0]]])
    idx = farthest_point_sample(pts, 3)[0].tolist()
    assert idx == [0, 4, 3]
    knn = knn_group(pts, pts[:, [0]], 2)[0, 0].tolist()
    assert knn == [0, 2]  # the centre itself first


def test_encode_rejects_bad_points(tmp_path):
    model = PatchAlignModel.from_checkpoint(save_network(random_net(), tmp_path / "t.safetensors"))
    with pytest.raises(ValueError, match="at least"):
        model.encode(np.zeros((1, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        model.encode(np.zeros((1, 600, 2), np.float32))
    bad = sphere_points(512)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.encode(bad[None])


def test_patch_embedding_widths_are_read_from_weights(tmp_path):
    net = random_net(seed=6, embed_widths=[16, 24, 40])
    path = save_network(net, tmp_path / "w.safetensors")
    (tmp_path / "w.json").write_text('{"num_heads": 4, "num_group": 32, "group_size": 16}')  # widths: tensors
    model = PatchAlignModel.from_checkpoint(path)
    assert model.config.embed_widths == [16, 24, 40]
    pts = sphere_points(512)[None]
    np.testing.assert_allclose(model.encode(pts).patch_features.numpy(), PatchAlignModel(net).encode(pts).patch_features.numpy(),
                               atol=1e-6)
