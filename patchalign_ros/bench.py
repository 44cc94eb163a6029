"""`python -m patchalign_ros bench`: encoder speed per backend and batch size, grouping, the
end-to-end scene time, text-query latency and peak memory, side by side in one run; printed
and written as JSON. Numbers come from this machine at run time, never from a file."""
from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

FULL_SIZE = dict(trans_dim=384, depth=12, num_heads=6, encoder_dims=256, embed_widths=[128, 256, 512],
                 text_dim=1280, num_group=128, group_size=32, num_points=2048)


def _time(fn, repeat: int, warmup: int = 2) -> float:
    from .model.calibration import median_ms

    return median_ms(fn, repeat, warmup, "cuda" if torch.cuda.is_available() else "cpu")


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def random_full_size_net(seed: int = 0):
    from .model import ModelConfig, PatchAlignNet

    torch.manual_seed(seed)
    net = PatchAlignNet(ModelConfig(**FULL_SIZE))
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
    return net.eval()


def encoder_flops(cfg, fused: bool = True) -> float:
    """Floating-point operations (2 per multiply-add) of one shape's encoder pass after
    grouping, counted from the architecture. ``fused``: the global half of the mini-PointNet's
    second convolution once per group (models/fused.py), else once per point as in eager."""
    g, k = cfg.num_group, cfg.group_size
    c1, c2, c3 = cfg.embed_widths
    d, tokens, hidden = cfg.trans_dim, cfg.num_group + 1, int(cfg.trans_dim * cfg.mlp_ratio)
    points = g * k
    embed = points * (3 * c1 + c1 * c2 + c2 * c3 + c3 * cfg.encoder_dims) + (g if fused else points) * c2 * c3
    tokens_in = g * (cfg.encoder_dims * d + 3 * 128 + 128 * d)  # reduce_dim and pos_embed
    block = tokens * (3 * d * d + d * d + 2 * d * hidden) + 2 * tokens * tokens * d  # qkv, proj, MLP, attention
    return 2.0 * (embed + tokens_in + cfg.depth * block + g * d * cfg.text_dim)


def gemm_peak_gflops(dtype=torch.float32, size: int = 2048, repeat: int = 5) -> float:
    """This machine's matrix-multiply rate at the threads torch uses: the ceiling any backend's
    encoder can approach (the encoder is GEMMs plus small elementwise work)."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    ms = _time(lambda: a @ b, repeat)
    return 2.0 * size ** 3 / (ms / 1000) / 1e9


def roofline(report: dict, nets: dict) -> dict:
    """How close each encoder is to this CPU's arithmetic limit: the fewest ms a shape can take
    at the measured GEMM rate, so the largest speedup over eager any fp32 backend could give."""
    from .model.calibration import has_cpu_bf16

    peak = gemm_peak_gflops()
    out = {"gemm_fp32_gflops": round(peak, 1), "native_bf16": has_cpu_bf16(), "encoders": {}}
    if has_cpu_bf16():
        out["gemm_bf16_gflops"] = round(gemm_peak_gflops(torch.bfloat16), 1)
    for label, net in nets.items():
        flops = encoder_flops(net.cfg)
        floor_ms = flops / (peak * 1e9) * 1000
        row = {"gflop_per_shape": round(flops / 1e9, 3), "eager_gflop_per_shape": round(encoder_flops(net.cfg, False) / 1e9, 3),
               "floor_ms_fp32": round(floor_ms, 2)}
        enc = next((e for e in report["encoders"] if e["model"] == label), None)
        if enc:
            eager = enc["ms_per_shape"].get("torch-eager-fp32")
            if isinstance(eager, dict):
                eager_ms = sum(eager.values()) / len(eager)
                row["max_fp32_speedup_vs_eager"] = round(eager_ms / floor_ms, 2)
            row["achieved_gflops"] = {k: round(flops / 1e9 / (sum(v.values()) / len(v)) * 1000, 1)
                                      for k, v in enc["ms_per_shape"].items() if isinstance(v, dict)}
        out["encoders"][label] = row
    return out


def encoder_table(net, label: str, backends, batches=(1, 4, 8), repeat: int = 5, device: str = "cpu") -> dict:
    from .model import PatchAlignModel

    cfg = net.cfg
    out = {"model": label, "parameters_M": sum(p.numel() for p in net.parameters()) / 1e6, "ms_per_shape": {}}
    rng = np.random.default_rng(0)
    reference = PatchAlignModel(net, device=device, backend="torch-eager")
    for backend, precision in backends:
        try:
            model = PatchAlignModel(net, device=device, backend=backend, precision=precision)
        except Exception as exc:  # report what could not load, keep measuring the rest
            out["ms_per_shape"][f"{backend}-{precision}"] = f"unavailable: {exc}"
            continue
        row = {}
        for b in batches:
            pts = torch.from_numpy(rng.normal(size=(b, cfg.num_points, 3)).astype(np.float32))
            neighborhood, centers, _ = net.group(pts.to(device))
            run = (lambda n=neighborhood, c=centers: net.forward_groups(n, c)) if model.backend is None else \
                (lambda n=neighborhood, c=centers: model.backend.run(n, c))
            with torch.inference_mode():
                row[str(b)] = round(_time(run, repeat) / b, 2)
        key = f"{model.backend_name}-{precision}"
        out["ms_per_shape"][key] = row
        if model.backend is not None:  # accuracy against the eager fp32 forward
            pts = torch.from_numpy(rng.normal(size=(4, cfg.num_points, 3)).astype(np.float32))
            a = reference.encode(pts).patch_features.float()
            f = model.encode(pts).patch_features.float()
            cos = torch.nn.functional.cosine_similarity(a, f, dim=-1)
            text = torch.nn.functional.normalize(torch.randn(5, a.shape[-1]), dim=-1)
            agree = ((a @ text.T).argmax(-1) == (f @ text.T).argmax(-1)).float().mean()
            out.setdefault("accuracy_vs_eager", {})[key] = {"min_cosine": float(cos.min()),
                                                            "patch_label_agreement": float(agree)}
    # speedup over the mean ms/shape across batch sizes (single batch sizes are noisy here)
    mean = {k: sum(v.values()) / len(v) for k, v in out["ms_per_shape"].items() if isinstance(v, dict)}
    eager = mean.get("torch-eager-fp32")
    out["speedup_vs_eager"] = {k: round(eager / v, 2) for k, v in mean.items()} if eager else {}
    return out


DEVELOPMENT_SCAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_scans" / "mosd" / "test34.pcd"


SWEEP_STAGES = ("preprocess", "scene", "encoder", "postprocess", "total")


def _stage_medians(runs: list, stages=None) -> dict:
    """Median ms per stage over ``runs`` (SegmentationResults); ``stages``: these (0 where a run
    has none), else the stages the last run timed."""
    names = stages or list(runs[-1].timing_ms)
    return {k: round(statistics.median(r.timing_ms.get(k, 0.0) for r in runs), 1) for k in names}


def _reuse_counts(runs: list) -> dict:
    """How much of a stream's work came from the last frame."""
    return {"reused_objects_median": float(statistics.median(r.reused_objects for r in runs)),
            "scene_reused_share": round(float(np.mean([r.scene_reused for r in runs])), 2)}


def real_frame_row(finder, scan_path, queries=("handle",), repeat: int = 10, stream: bool = False) -> dict:
    """A real organized frame end to end as the node runs it: PointCloud2 -> numpy, the scene
    path, the result message, the labelled cloud, markers and keypoint poses (all but DDS).
    Without the ROS message packages only the library part is timed. ``stream``: as the node
    runs a stream of it (memory_key set; this frame replayed, so every object after the first
    frame reuses its encoder pass); otherwise every frame is encoded in full."""
    from .pointcloud_io import read_point_cloud

    points, shape = read_point_cloud(scan_path)
    cloud = points.reshape(shape[0], shape[1], 3) if shape else points
    try:
        from .ros.conversions import cloud_to_xyz, result_to_msg, xyz_to_cloud
        from .ros.visuals import keypoint_poses, labeled_cloud, markers

        msg = xyz_to_cloud(cloud.astype(np.float32))
        msg.header.frame_id = "camera_depth_optical_frame"
    except ImportError:
        msg = None
    results = []
    key = "camera_depth_optical_frame" if stream else None
    before = finder.config.reuse_max_age_s
    if stream:
        finder.set_reuse(1.0)

    def frame():
        if msg is None:
            results.append(finder.find_parts(cloud, list(queries), scene=True, memory_key=key))
            return
        xyz = cloud_to_xyz(msg)
        result = finder.find_parts(xyz, list(queries), scene=True, frame=msg.header.frame_id, memory_key=key)
        out = result_to_msg(result, msg.header)
        labeled_cloud(xyz, result, out.header), markers(out), keypoint_poses(out)
        results.append(result)

    try:
        ms = _time(frame, repeat)
    finally:
        finder.set_reuse(before)  # the caller's finder is left as it was
    return {"scan": Path(scan_path).name, "points": int(len(points)), "objects": len(results[-1].objects),
            "queries": list(queries), "end_to_end_ms": round(ms, 1), "hz": round(1000 / ms, 2),
            "includes_ros_conversion": msg is not None, "stream": stream, **_reuse_counts(results[2:]),
            "stages_ms": _stage_medians(results[2:])}


SWEEP_CATEGORIES = ("mug", "bottle", "box", "bowl", "cup", "jar", "canister", "pitcher")


def _cluttered(n_objects: int, width: int = 640, height: int = 480):
    """A generated table with ``n_objects`` on a grid, seen from above and in front."""
    from .data.synthetic import tabletop_scene

    side = int(np.ceil(np.sqrt(n_objects)))
    spacing = 0.2
    reach = side * spacing
    eye = (0.0, -0.45 - 0.6 * reach, 0.45 + 0.75 * reach)
    cats = [SWEEP_CATEGORIES[i % len(SWEEP_CATEGORIES)] for i in range(n_objects)]
    return tabletop_scene(np.random.default_rng(n_objects), categories=cats, width=width, height=height,
                          grid_spacing=spacing, eye=eye)


def clutter_sweep(finder, objects=(1, 4, 8, 16, 32), resolutions=((320, 240), (640, 480), (1280, 800)),
                  resolution_objects: int = 16, repeat: int = 3, png=None) -> dict:
    """Stage times against the number of objects (640x480) and against the number of points
    (``resolution_objects`` objects at each resolution): each stage must grow at most linearly."""
    def timed(capture):
        results = []
        for _ in range(repeat + 1):  # the first one warms caches up
            results.append(finder.find_parts(capture.points, ["handle"], scene=True))
        runs = results[1:]
        return {"objects_found": len(runs[-1].objects), "points": int(capture.points.shape[0] * capture.points.shape[1]),
                "stages_ms": _stage_medians(runs, SWEEP_STAGES)}

    rows = {"by_objects": [], "by_points": []}
    for n in objects:
        row = timed(_cluttered(n))
        row["objects_placed"] = n
        rows["by_objects"].append(row)
    for w, h in resolutions:
        row = timed(_cluttered(resolution_objects, w, h))
        row["resolution"] = f"{w}x{h}"
        rows["by_points"].append(row)
    rows["static_stream"] = static_stream(finder, _cluttered(resolution_objects).points, frames=6 + 3 * repeat)
    if png:
        _plot_sweep(rows, png)
        rows["png"] = str(png)
    return rows


def static_stream(finder, cloud: np.ndarray, frames: int = 15, reuse_s: float = 1.0, seed: int = 0) -> dict:
    """A camera on a table that does not change: the same organized scene, each frame through
    the fitted Kinect model afresh (depth noise, quantisation, edge pixels dropped or flying: they
    come and go every frame; no random holes, a training augmentation), as the node runs a stream
    (memory_key set: the scene split and the encoder passes of what did not change are reused;
    ``reuse_s`` 0: nothing is). Stage medians over the frames after the first."""
    import dataclasses

    from .data.sensors import SENSORS, apply_sensor

    rng = np.random.default_rng(seed)
    depth = cloud[..., 2]
    sensor = dataclasses.replace(SENSORS["kinect"], hole_chance=0.0)
    before = finder.config.reuse_max_age_s
    finder.set_reuse(reuse_s)
    try:
        results = []
        for _ in range(frames):
            seen = apply_sensor(np.nan_to_num(depth, nan=0.0), np.ones_like(depth), sensor, rng)
            noisy = cloud * (seen / depth)[..., None]
            results.append(finder.find_parts(noisy, ["handle"], scene=True, memory_key="camera"))
    finally:
        finder.set_reuse(before)
    runs = results[1:]
    return {"frames": frames, "objects_found": len(runs[-1].objects), "reuse_max_age_s": reuse_s,
            **_reuse_counts(runs), "stages_ms": _stage_medians(runs, SWEEP_STAGES)}


def _plot_sweep(rows: dict, png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, xkey, label in ((axes[0], "by_objects", "objects_found", "objects found (640x480)"),
                                 (axes[1], "by_points", "points", "points in the frame (16 objects)")):
        data = rows[key]
        x = [r[xkey] for r in data]
        for stage in ("scene", "encoder", "postprocess", "total"):
            ax.plot(x, [r["stages_ms"][stage] for r in data], marker="o", label=stage,
                    lw=2.5 if stage == "total" else 1.5)
        stream = rows.get("static_stream")
        if key == "by_objects" and stream:
            ax.plot([stream["objects_found"]], [stream["stages_ms"]["total"]], marker="*", ms=14, ls="none",
                    color="tab:purple", label=f"total, static table (median {stream['reused_objects_median']:.0f} "
                                              f"objects reused)")
        ax.axhline(100.0, color="k", ls=":", lw=1, label="10 Hz")
        ax.set_xlabel(label)
        ax.set_ylabel("ms (median)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("patchalign_ros bench: stage cost against clutter and resolution")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def run_bench(checkpoint=None, out_path="bench_report.json", repeat: int = 10, full_size: bool = True,
              real_scan=None, sweep: bool = False, sweep_png=None) -> dict:
    from .data.synthetic import tabletop_scene
    from .inference.pipeline import PartFinder, default_checkpoint
    from .model import load_network

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # int8 is in the table with its accuracy: whether it keeps fp32's labels depends on the CPU
    # (measured: the full-size encoder's patch cosine 0.9999 with AVX-512 VNNI, the default
    # model's 0.885 on an AVX2-only EPYC), so it is measured on every machine, as in `auto`
    backends = [("torch-eager", "fp32"), ("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"),
                ("onnxruntime", "int8")]
    if device == "cuda":
        backends += [("torch", "fp16"), ("tensorrt", "fp16")]
    report = {"machine": machine_info(), "encoders": []}
    t0 = time.perf_counter()
    nets = {}
    if full_size:
        nets["full size (22 M, random weights)"] = random_full_size_net()
    # a registry name (default-large, ...) or a path, as everywhere else; PartFinder.load is
    # given the name so that the entry's presence calibration and thresholds come with it
    from .registry import resolve

    checkpoint = checkpoint or default_checkpoint()
    weights = resolve(checkpoint)[0]
    label = str(checkpoint) if weights != Path(checkpoint) else weights.name
    net = nets[label] = load_network(weights)
    for label, encoder_net in nets.items():
        report["encoders"].append(encoder_table(encoder_net, label, backends, repeat=repeat, device=device))
    if device == "cpu":
        report["roofline"] = roofline(report, nets)

    pts = torch.from_numpy(np.random.default_rng(1).normal(size=(1, net.cfg.num_points, 3)).astype(np.float32))
    report["grouping_ms"] = round(_time(lambda: net.group(pts), repeat), 2)

    from .model import PatchAlignModel
    from .model.calibration import choose

    model_id = PatchAlignModel(net, source=str(weights)).model_id
    report["auto"] = choose(net, device, weights, model_id, recalibrate=True)  # what `auto` picks here, and why

    scene = {}
    capture = tabletop_scene(np.random.default_rng(0))
    for backend, precision in (("torch", "fp32"), ("onnxruntime", "fp32"), ("torch", "bf16")):
        try:
            finder = PartFinder.load(checkpoint, backend=backend, precision=precision, cache_dir=None)
        except Exception as exc:
            scene[f"{backend}-{precision}"] = f"unavailable: {exc}"
            continue
        results = []

        def frame():
            results.append(finder.find_parts(capture.points, ["handle", "body"], scene=True))

        ms = _time(frame, repeat)
        scene[f"{backend}-{precision}"] = {"total_ms": round(ms, 1), "hz": round(1000 / ms, 2),
                                          "objects": len(results[-1].objects),
                                          "stages_ms": _stage_medians(results[2:])}
        last_finder = finder
    report["scene_640x480"] = scene
    real_scan = real_scan or (DEVELOPMENT_SCAN if DEVELOPMENT_SCAN.is_file() else None)
    if real_scan:
        real = {}
        for backend, precision, stream in (("auto", "fp32", False), ("auto", "fp32", True), ("torch", "fp32", False),
                                           ("torch", "bf16", False)):
            finder = PartFinder.load(checkpoint, backend=backend, precision=precision, cache_dir=None)
            label = f"{backend} -> {finder.model.backend_name} {precision}" if backend == "auto" else f"{backend}-{precision}"
            real[label + (", stream" if stream else "")] = real_frame_row(finder, real_scan, repeat=repeat, stream=stream)
        report["real_frame"] = real

    if sweep:
        finder = PartFinder.load(checkpoint, backend="auto", cache_dir=None)
        report["clutter_sweep"] = dict(clutter_sweep(finder, repeat=max(2, repeat // 3), png=sweep_png),
                                       backend=f"auto -> {finder.model.backend_name} {finder.model.backend.precision}")

    words = iter(f"part number {i}" for i in range(1000))
    report["text_query_ms"] = {
        "new_query": round(_time(lambda: last_finder.embed_queries([next(words)]), repeat, warmup=1), 2),
        "cached_query": round(_time(lambda: last_finder.embed_queries(["handle"]), repeat), 3),
    }
    report["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    Path(out_path).write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [f"machine: {m['cpu']} | torch {m['torch']} ({m['torch_threads']} threads) | "
             f"onnxruntime {m.get('onnxruntime')} | cuda {m['cuda']}"]
    for enc in report["encoders"]:
        lines.append(f"\nencoder {enc['model']}, {enc['parameters_M']:.1f} M params: ms/shape at batch 1 / 4 / 8, "
                     f"speedup over eager (mean of the three)")
        for key, row in enc["ms_per_shape"].items():
            if isinstance(row, dict):
                acc = enc.get("accuracy_vs_eager", {}).get(key)
                extra = f"  (min cos {acc['min_cosine']:.5f}, agree {acc['patch_label_agreement'] * 100:.1f}%)" if acc else ""
                lines.append(f"  {key:22s} {row['1']:8.2f} {row['4']:8.2f} {row['8']:8.2f}   "
                             f"x{enc['speedup_vs_eager'].get(key, float('nan')):.2f}{extra}")
            else:
                lines.append(f"  {key:22s} {row}")
    roof = report.get("roofline")
    if roof:
        bf16 = f", bf16 {roof['gemm_bf16_gflops']:.0f}" if "gemm_bf16_gflops" in roof else " (no native bf16)"
        lines.append(f"\narithmetic limit: matrix multiply {roof['gemm_fp32_gflops']:.0f} GFLOP/s fp32{bf16} on "
                     f"{m['torch_threads']} threads")
        for label, row in roof["encoders"].items():
            best = max(row.get("achieved_gflops", {0: 0}).items(), key=lambda kv: kv[1])
            lines.append(f"  {label}: {row['gflop_per_shape']:.2f} GFLOP/shape (eager {row['eager_gflop_per_shape']:.2f}) "
                         f"-> at least {row['floor_ms_fp32']:.1f} ms/shape in fp32, so at most "
                         f"x{row.get('max_fp32_speedup_vs_eager', float('nan')):.2f} over eager; "
                         f"fastest here {best[0]} at {best[1]:.0f} GFLOP/s")
    lines.append(f"\ngrouping (FPS + kNN, 1 shape): {report['grouping_ms']:.2f} ms")
    auto = report.get("auto")
    if auto:
        lines.append(f"backend auto on this machine -> {' '.join(auto['choice'])}: {auto['reason']}")
    for key, s in report["scene_640x480"].items():
        if isinstance(s, dict):
            lines.append(f"scene 640x480, {s['objects']} objects, {key}: {s['total_ms']:.1f} ms = {s['hz']:.1f} Hz  "
                         f"{s['stages_ms']}")
        else:
            lines.append(f"scene {key}: {s}")
    for key, r in report.get("real_frame", {}).items():
        reused = (f", median {r['reused_objects_median']:.0f} reused, scene split reused in "
                  f"{r.get('scene_reused_share', 0):.0%} of frames") if r.get("stream") else ""
        lines.append(f"real frame {r['scan']} ({r['points']} points, {r['objects']} objects{reused}, {r['queries']}), "
                     f"{key}: {r['end_to_end_ms']:.1f} ms = {r['hz']:.1f} Hz end to end  {r['stages_ms']}")
    sweep = report.get("clutter_sweep")
    if sweep:
        lines.append(f"clutter sweep ({sweep['backend']}), median ms per stage:")
        for r in sweep["by_objects"]:
            lines.append(f"  {r['objects_found']:3d} objects (of {r['objects_placed']}), {r['points']} points: "
                         f"{r['stages_ms']}")
        for r in sweep["by_points"]:
            lines.append(f"  {r['resolution']:>9s} ({r['points']} points, {r['objects_found']} objects): "
                         f"{r['stages_ms']}")
        st = sweep.get("static_stream")
        if st:
            lines.append(f"  static table, Kinect model afresh each frame, reuse {st['reuse_max_age_s']} s "
                         f"({st['objects_found']} objects, median {st['reused_objects_median']:.0f} reused, scene "
                         f"split reused in {st.get('scene_reused_share', 0):.0%} of frames): "
                         f"{st['stages_ms']}")
    t = report["text_query_ms"]
    lines.append(f"text query: new {t['new_query']:.2f} ms, cached {t['cached_query']:.3f} ms")
    lines.append(f"peak RSS {report['peak_rss_MB']:.0f} MB; {report['seconds']:.0f} s")
    return "\n".join(lines)
