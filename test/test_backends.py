"""Backends: fused torch, bf16, ONNX export + onnxruntime, auto selection and fallback,
TensorRT refusal where it is absent, the export CLI and the benchmark report."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_factory import FULL, random_net
from patchalign_ros.model import PatchAlignModel, save_network
from patchalign_ros.model import backends as backends_module
from patchalign_ros.model.backends import BackendError, export_onnx, make_backend

ROOT = Path(__file__).resolve().parents[1]


def points(batch, n=512, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(batch, n, 3)).astype(np.float32))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return save_network(random_net(seed=7), tmp_path_factory.mktemp("b") / "tiny.safetensors")


def test_fused_torch_matches_eager_full_size():
    net = random_net(seed=3, **FULL)
    pts = points(2, 2048)
    eager = PatchAlignModel(net, backend="torch-eager").encode(pts).patch_features
    fused = PatchAlignModel(net, backend="torch").encode(pts).patch_features
    assert float((eager - fused).abs().max()) <= 1e-5


def test_bf16_keeps_features_close(tiny_ckpt):
    ref = PatchAlignModel.from_checkpoint(tiny_ckpt, backend="torch-eager").encode(points(3)).patch_features
    bf = PatchAlignModel.from_checkpoint(tiny_ckpt, backend="torch", precision="bf16").encode(points(3)).patch_features
    assert float(torch.nn.functional.cosine_similarity(ref, bf, dim=-1).min()) >= 0.999


def test_onnx_export_dynamic_batch_and_parity(tiny_ckpt, tmp_path):
    onnx = pytest.importorskip("onnx")
    net = random_net(seed=7)
    path = export_onnx(net, tmp_path / "enc.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["neighborhood", "centers"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ort_model = PatchAlignModel.from_checkpoint(tiny_ckpt, backend="onnxruntime")
    eager = PatchAlignModel.from_checkpoint(tiny_ckpt, backend="torch-eager")
    for batch in (1, 5):
        diff = (ort_model.encode(points(batch)).patch_features - eager.encode(points(batch)).patch_features).abs().max()
        assert float(diff) <= 1e-4
    cached = list(Path(tiny_ckpt).parent.glob("tiny.*.onnx"))
    assert len(cached) == 1  # cached beside the weights, keyed by the model hash
    mtime = cached[0].stat().st_mtime
    PatchAlignModel.from_checkpoint(tiny_ckpt, backend="onnxruntime")
    assert cached[0].stat().st_mtime == mtime  # reused, not re-exported


def test_auto_calibrates_once_picks_the_fastest_accurate_backend_and_recovers(tiny_ckpt, monkeypatch, caplog,
                                                                              tmp_path):
    from patchalign_ros.model import calibration

    monkeypatch.setenv("PATCHALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first = PatchAlignModel.from_checkpoint(tiny_ckpt, backend="auto")
    assert first.backend.auto_reason.startswith("calibrated: fastest")
    [entry] = json.loads(calibration.cache_path().read_text()).values()
    timed = [r for r in entry["table"] if "score_ms" in r]
    assert {(r["backend"], r["precision"]) for r in entry["table"]} >= {("torch", "fp32"), ("onnxruntime", "fp32")}
    assert all(r["min_cosine"] >= 0.999 and r["label_agreement"] >= 0.99 for r in timed)
    best = min(timed, key=lambda r: r["score_ms"])
    assert [first.backend_name, first.backend.precision] == [best["backend"], best["precision"]] == entry["choice"]
    again = PatchAlignModel.from_checkpoint(tiny_ckpt, backend="auto")
    assert again.backend.auto_reason.startswith("cached: ") and again.backend_name == first.backend_name
    # the cached choice no longer loads (a library removed): measured again, the other one taken
    chosen_class = {"onnxruntime": "OnnxRuntimeBackend", "torch": "TorchBackend"}[first.backend_name]

    def broken(*args, **kwargs):
        raise BackendError("simulated load failure")

    monkeypatch.setattr(backends_module, chosen_class, broken)
    with caplog.at_level(logging.WARNING, logger="patchalign_ros.backends"):
        model = PatchAlignModel.from_checkpoint(tiny_ckpt, backend="auto")
    assert model.backend_name != first.backend_name and "simulated load failure" in caplog.text
    assert "unavailable: BackendError: simulated load failure" in model.backend.auto_reason


def test_auto_refuses_a_fast_backend_that_does_not_match_fp32(tiny_ckpt, monkeypatch, tmp_path):
    from patchalign_ros.model import calibration

    monkeypatch.setenv("PATCHALIGN_CACHE_DIR", str(tmp_path / "cache"))
    real = backends_module.make_backend

    class Sloppy:  # instant, and wrong
        name, precision = "torch", "bf16"

        def __init__(self, inner):
            self.inner = inner

        def run(self, neighborhood, centers):
            out = self.inner.run(neighborhood, centers)
            return out + 0.2 * torch.randn_like(out)

    def make(name, net, device, weights, model_id, precision):
        if (name, precision) == ("torch", "bf16"):
            return Sloppy(real("torch", net, device, weights, model_id, "fp32"))
        return real(name, net, device, weights, model_id, precision)

    monkeypatch.setattr(backends_module, "make_backend", make)
    monkeypatch.setattr(calibration, "candidates", lambda device, precision: [("torch", "bf16"), ("torch", "fp32")])
    net = random_net(seed=4)
    entry = calibration.calibrate(net, "cpu", None, "sloppy-test")
    sloppy = entry["table"][0]
    assert "not accurate enough" in sloppy["refused"] and sloppy["min_cosine"] < 0.999
    assert entry["choice"] == ["torch", "fp32"] and "refused torch bf16" in entry["reason"]
    cos, agree = calibration.accuracy(torch.ones(2, 3, 8), torch.ones(2, 3, 8))
    assert cos == pytest.approx(1.0) and agree == 1.0


def test_tensorrt_absent_is_a_clear_error(tiny_ckpt):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendError, match="tensorrt is not installed"):
        make_backend("tensorrt", random_net(), "cpu")
    with pytest.raises(BackendError, match="unknown backend"):
        make_backend("openvino", random_net(), "cpu")
    with pytest.raises(BackendError, match="fp16 needs a CUDA"):
        make_backend("torch", random_net(), "cpu", precision="fp16")


def test_export_cli(tiny_ckpt, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "patchalign_ros", "export", "--checkpoint", str(tiny_ckpt),
                           "--onnx", str(tmp_path / "m.onnx")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "onnx.checker ok" in proc.stdout and (tmp_path / "m.onnx").exists()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = subprocess.run([sys.executable, "-m", "patchalign_ros", "export", "--checkpoint", str(tiny_ckpt),
                               "--engine", str(tmp_path / "m.plan")], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and "needs the tensorrt" in proc.stderr


def test_bench_report(tiny_ckpt, tmp_path, monkeypatch):
    """Also: `bench --checkpoint NAME` takes a registry name, as every command does (it took
    paths only, so `--checkpoint default-large` failed)."""
    from patchalign_ros.bench import format_report, run_bench

    registry = tmp_path / "registry.yaml"
    registry.write_text(f"tiny-bench:\n  weights: {{bundled: {tiny_ckpt}}}\n  text_encoder: minilm\n")
    monkeypatch.setenv("PATCHALIGN_MODEL_REGISTRY", str(registry))
    report = run_bench("tiny-bench", tmp_path / "bench.json", repeat=1, full_size=False)
    assert report["encoders"][0]["model"] == "tiny-bench"
    enc = report["encoders"][0]["ms_per_shape"]
    assert {"torch-eager-fp32", "torch-fp32", "torch-bf16", "onnxruntime-fp32", "onnxruntime-int8"} <= set(enc)
    # int8 is timed and its accuracy against eager fp32 reported (whether it passes is the CPU's)
    int8 = report["encoders"][0]["accuracy_vs_eager"]["onnxruntime-int8"]
    assert -1.0 <= int8["min_cosine"] <= 1.0 and 0.0 <= int8["patch_label_agreement"] <= 1.0
    assert all(v["1"] > 0 for v in enc.values() if isinstance(v, dict))
    assert report["scene_640x480"]["torch-fp32"]["objects"] == 3
    assert report["text_query_ms"]["cached_query"] < report["text_query_ms"]["new_query"]
    assert json.loads((tmp_path / "bench.json").read_text())["peak_rss_MB"] > 0
    roof = report["roofline"]
    assert roof["gemm_fp32_gflops"] > 1 and isinstance(roof["native_bf16"], bool)
    (row,) = roof["encoders"].values()
    assert 0 < row["gflop_per_shape"] < row["eager_gflop_per_shape"] and row["floor_ms_fp32"] > 0
    assert row["max_fp32_speedup_vs_eager"] > 0 and row["achieved_gflops"]["onnxruntime-fp32"] > 0
    text = format_report(report)
    assert "scene 640x480" in text and "arithmetic limit: matrix multiply" in text


def test_encoder_flops_match_what_torch_counts():
    from torch.utils.flop_counter import FlopCounterMode

    from patchalign_ros.bench import encoder_flops
    from patchalign_ros.model.fused import FusedEncoder

    net = random_net(seed=3)
    cfg = net.cfg
    neighborhood, centers, _ = net.group(torch.randn(2, cfg.num_points, 3))
    tokens = cfg.num_group + 1
    attention = cfg.depth * 2 * (2 * tokens * tokens * cfg.trans_dim)  # q.k and attn.v per block
    for module, fused in ((FusedEncoder(net), True), (net.forward_groups, False)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(neighborhood, centers)
        counted = counter.get_total_flops() / 2  # per shape
        # torch's counter may or may not see inside scaled_dot_product_attention on the CPU
        assert min(abs(counted - encoder_flops(cfg, fused)), abs(counted + attention - encoder_flops(cfg, fused))) \
            <= 0.01 * counted


def test_a_static_stream_reuses_encoder_passes(tiny_ckpt):
    from patchalign_ros.bench import static_stream
    from patchalign_ros.data.synthetic import tabletop_scene
    from patchalign_ros.inference.pipeline import PartFinder

    finder = PartFinder.load(tiny_ckpt, cache_dir=None)
    scene = tabletop_scene(np.random.default_rng(2), width=320, height=240)
    row = static_stream(finder, scene.points, frames=4)
    assert row["objects_found"] == 3 and row["reused_objects_median"] >= 2 and row["scene_reused_share"] > 0.5
    assert finder.memory is None and finder.scene_memory is None  # the finder is left as it was


def test_fp16_onnx_export_leaves_the_network_in_fp32(tmp_path):
    from patchalign_ros.model.tensorrt_engine import export_fp16_onnx

    net = random_net(seed=9)
    path = export_fp16_onnx(net, tmp_path / "half.onnx")
    assert all(p.dtype == torch.float32 for p in net.parameters())
    import onnxruntime as ort

    cfg = net.cfg
    n = torch.randn(2, cfg.num_group, cfg.group_size, 3) * 0.1
    c = torch.randn(2, cfg.num_group, 3) * 0.5
    out = ort.InferenceSession(str(path)).run(None, {"neighborhood": n.numpy(), "centers": c.numpy()})[0]
    with torch.inference_mode():
        ref = net.forward_groups(n, c).numpy()
    assert out.dtype == np.float32 and float((out * ref).sum(-1).min()) > 0.99  # fp16 inside, fp32 I/O


def test_backends_never_change_the_network_they_are_built_from(tmp_path):
    from patchalign_ros.model.backends import TorchBackend, export_onnx

    net = random_net(seed=4)
    before = {k: (v.clone(), v.dtype, v.device) for k, v in net.state_dict().items()}
    grads = {k: p.requires_grad for k, p in net.named_parameters()}
    TorchBackend(net, "cpu", "bf16")
    export_onnx(net, tmp_path / "e.onnx")
    for k, v in net.state_dict().items():
        ref, dtype, device = before[k]
        assert v.dtype == dtype and v.device == device and torch.equal(v, ref), k
    assert {k: p.requires_grad for k, p in net.named_parameters()} == grads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx"]  # written atomically, no temp left


def test_precision_is_honoured_or_refused(tmp_path):
    from patchalign_ros.model.backends import BackendError, make_backend

    net = random_net(seed=4)
    weights = save_network(net, tmp_path / "m.safetensors")
    with pytest.raises(BackendError, match="fp32 or int8 graph"):
        make_backend("onnxruntime", net, "cpu", weights, "id", "bf16")
    with pytest.raises(BackendError, match="needs a CUDA device"):
        make_backend("torch", net, "cpu", weights, "id", "fp16")
    with pytest.raises(BackendError, match="torch-eager runs the reference network in fp32"):
        PatchAlignModel.from_checkpoint(weights, backend="torch-eager", precision="bf16")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider"):
        make_backend("onnxruntime", net, "cuda", weights, "id", "fp32")
    asked = make_backend("auto", net, "cpu", weights, "id", "bf16")  # a precision asked for is kept
    assert (asked.name, asked.precision) == ("torch", "bf16")
    auto = make_backend("auto", net, "cpu", weights, "id", "fp32")
    assert auto.name in ("onnxruntime", "torch") and auto.precision in ("fp32", "int8", "bf16")
