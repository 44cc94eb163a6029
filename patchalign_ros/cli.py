"""Command line: ``python -m patchalign_ros <command> ...``.

Expected failures (bad input, missing model, unknown query) print one ``error:`` line and
exit with status 2; nothing dumps a traceback unless PATCHALIGN_DEBUG=1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


class UsageError(ValueError):
    pass


def _parse_queries(text: str) -> list[str]:
    return [q.strip() for q in text.split(",")] if text is not None else []


BACKENDS = ["torch", "onnxruntime", "tensorrt", "auto", "torch-eager"]  # --backend of segment and process-bag
PRECISIONS = ["fp32", "fp16", "bf16", "int8"]


def load_inference_config(path):
    from .inference.pipeline import InferenceConfig

    if not path:
        return InferenceConfig()
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from None
    try:
        return InferenceConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad config {path}: {exc}") from None


def _parse_vector(text: str, name: str):
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise UsageError(f"{name} must be three comma-separated numbers, got {text!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or not any(values):
        raise UsageError(f"{name} must be three finite numbers, not all zero, got {text!r}")
    return values


def _up_from_args(args):
    """--up, or --gravity (its opposite), or None."""
    if getattr(args, "up", None) and getattr(args, "gravity", None):
        raise UsageError("give --up or --gravity, not both")
    if getattr(args, "up", None):
        return _parse_vector(args.up, "--up")
    if getattr(args, "gravity", None):
        return [-v for v in _parse_vector(args.gravity, "--gravity")]
    return None


def _read_input(args):
    """(points (N, 3), organized shape or None, colours (N, 3) uint8 or None) from a cloud file,
    or from --depth with --intrinsics (deprojected as depth_image_proc does)."""
    import numpy as np

    from .pointcloud_io import read_point_cloud_with_colors

    if bool(args.input) == bool(args.depth):
        raise UsageError("give a point cloud file or --depth (with --intrinsics), one of them")
    if args.input:
        if args.intrinsics or args.color:
            raise UsageError("--intrinsics and --color go with --depth")
        return read_point_cloud_with_colors(args.input)
    from .depth_image import deproject, load_depth, load_intrinsics

    if not args.intrinsics:
        raise UsageError("--depth needs --intrinsics (fx,fy,cx,cy or a camera-info YAML/JSON)")
    points = deproject(load_depth(args.depth), load_intrinsics(args.intrinsics), depth_scale=args.depth_scale)
    h, w = points.shape[:2]
    colors = None
    if args.color:
        from PIL import Image

        with Image.open(args.color) as img:
            rgb = np.asarray(img.convert("RGB"))
        if rgb.shape[:2] != (h, w):
            raise UsageError(f"--color is {rgb.shape[1]}x{rgb.shape[0]}, the depth image {w}x{h}: they must be "
                             "registered (same size and camera)")
        colors = rgb.reshape(-1, 3)
    return points.reshape(-1, 3), (h, w), colors


def cmd_segment(args) -> int:

    from .inference.pipeline import PartFinder
    from .inference.preprocess import checked_cloud
    from .text import validate_queries

    queries = validate_queries(_parse_queries(args.queries))  # fail fast, before loading models
    up = _up_from_args(args)
    points, shape, colors = _read_input(args)
    scene = args.scene if args.scene is not None else shape is not None
    config = load_inference_config(args.config)
    config.label_mode = args.label_mode or config.label_mode
    config.sampling = args.sampling or config.sampling
    checked_cloud(points, config.min_points)  # bad input fails before models load
    if args.threshold is not None:
        config.score_threshold = args.threshold
    finder = PartFinder.load(args.model or args.checkpoint, text_encoder=args.text_encoder, device=args.device,
                             config=config, registry=args.registry, backend=args.backend, precision=args.precision)
    reason = getattr(finder.model.backend, "auto_reason", "")
    if reason:
        print(f"backend auto: {reason}", file=sys.stderr)
    cloud = points.reshape(shape[0], shape[1], 3) if shape else points
    if args.name_all:
        result = finder.name_parts(cloud, queries, scene=scene, category=args.category, up=up, frame=args.frame)
    else:
        result = finder.find_parts(cloud, queries, scene=scene, keypoints=not args.no_keypoints,
                                   category=args.category, up=up, frame=args.frame)
    if result.scene_message:
        print(f"note: {result.scene_message}", file=sys.stderr)
    out = result.to_dict()
    out["input"] = str(args.input or args.depth)
    out["mode"] = "scene" if scene else "object"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out) + "\n")
    labels = result.point_label_array()
    if args.png:
        from .visualize import save_png

        kps = [(k.label, k.position) for o in result.objects for k in o.keypoints]
        save_png(args.png, points, labels, list(result.queries), title=f"{Path(args.input or args.depth).name}",
                 keypoints=kps, up=result.up, image_shape=shape, colors=colors,
                 parts=[(p.label, p.score, p.point_indices) for o in result.objects for p in o.parts])
    if args.ply:
        from .visualize import save_labeled_ply

        save_labeled_ply(args.ply, points, labels, len(result.queries))
    n_parts = sum(len(o.parts) for o in result.objects)
    summary = ", ".join(f"{p.label} {p.score:.2f} ({len(p.point_indices)} pts, obj {o.id})"
                        for o in result.objects for p in o.parts) or "no parts above threshold"
    print(f"{len(result.objects)} object(s), {n_parts} part(s): {summary}; "
          f"{result.timing_ms['total']:.0f} ms -> {args.out}")
    return 0


def cmd_train(args) -> int:
    from .training.config import TrainConfig

    overrides = {k: getattr(args, k) for k in ("stage", "steps", "batch_size", "out_dir", "data_dir", "device",
                                               "shapes_per_category", "init", "categories", "threads")}
    cfg = TrainConfig.load(args.config, overrides)
    if cfg.stage == 2:
        from .training.stage2 import train_stage2

        weights = train_stage2(cfg)
    elif cfg.stage == 1:
        from .training.stage1 import train_stage1

        weights = train_stage1(cfg)
    else:
        raise UsageError(f"stage must be 1 or 2, got {cfg.stage}")
    print(f"trained model -> {weights}")
    return 0


def cmd_process_bag(args) -> int:
    from .ros.bag import format_timing, process_bag

    if args.reuse_max_age < 0:
        raise UsageError(f"--reuse-max-age must be >= 0 (0: every cloud afresh), got {args.reuse_max_age}")
    stats = process_bag(args.input, args.output, _parse_queries(args.queries), checkpoint=args.checkpoint,
                        text_encoder=args.text_encoder, topic=args.topic, scene=not args.object,
                        keypoints=not args.no_keypoints, reuse_max_age_s=args.reuse_max_age,
                        backend=args.backend, precision=args.precision)
    print(f"{stats['processed']} of {stats['clouds']} clouds processed, {stats['rejected']} rejected -> {args.output}")
    for reason in sorted(set(stats["reasons"])):
        print(f"  rejected: {reason}")
    print(f"backend: {stats['backend']}")
    print(format_timing(stats["timing"]))
    if args.report:
        Path(args.report).write_text(json.dumps(stats, indent=1))
        print(f"report -> {args.report}")
    return 0


def cmd_evaluate(args) -> int:
    from .training.evaluate import SPLITS, format_table, run_evaluation

    splits = [s.strip() for s in args.splits.split(",")]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise UsageError(f"unknown split(s) {unknown}; choose from {list(SPLITS)}")
    if args.real_data and not Path(args.real_data).is_dir():
        raise UsageError(f"--real-data: no such directory {args.real_data}")
    report = run_evaluation(args.checkpoint, args.out_dir, splits,
                            args.shapes_per_category, args.text_encoder, real_data=args.real_data,
                            inference_config=load_inference_config(args.config), deployed=not args.model_only)
    print(format_table(report))
    print(f"report -> {Path(args.out_dir) / 'report.json'}")
    return 0


def cmd_evaluate_real(args) -> int:
    from .evaluation.real_scans import format_summary, run_real_evaluation
    from .inference.pipeline import PartFinder

    config = load_inference_config(args.config)
    finder = PartFinder.load(args.checkpoint, text_encoder=args.text_encoder, config=config,
                             backend=args.backend, precision=args.precision)
    from .text import validate_queries

    report = run_real_evaluation(finder, args.scans, validate_queries(_parse_queries(args.queries)), args.out_dir,
                                 frame=args.frame, pictures=not args.no_png)
    print(format_summary(report["scans"], report["summary"]))
    print(f"report -> {Path(args.out_dir) / 'report.json'}")
    if args.presence:  # object-level precision / recall on every labelled capture, tune and held-out apart
        from .evaluation.presence import format_summary as presence_summary
        from .evaluation.presence import run_presence_evaluation

        out = Path(args.out_dir) / "presence"
        presence = run_presence_evaluation(finder, args.presence, out, validate_queries(_parse_queries(args.queries)))
        print(presence_summary(presence["summary"]))
        print(f"presence report -> {out / 'presence_report.json'}, PR curves and reliability -> {out / 'presence_pr.png'}")
    return 0


def _presence_runs(args) -> list:
    """(label, finder) per model to evaluate: each of --models, then --legacy models as release 2
    shipped them (no competitors, no synonym ensemble, no presence model: the mean-score gate)."""
    from dataclasses import replace

    from .inference.pipeline import PartFinder

    config = load_inference_config(args.config)
    runs = []
    for spec in [m for m in _parse_queries(args.models) if m]:
        runs.append((spec, PartFinder.load(None if spec == "default" else spec, config=config)))
    for spec in [m for m in _parse_queries(args.legacy or "") if m]:
        finder = PartFinder.load(None if spec == "default" else spec,
                                 config=replace(config, background=[], synonym_ensemble=False))
        finder.presence = None
        runs.append((f"{spec} (legacy gate)", finder))
    return runs


def cmd_evaluate_presence(args) -> int:
    from .evaluation.presence import format_summary, run_presence_evaluation
    from .text import validate_queries

    if not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root: no such directory {args.data_root}")
    queries = validate_queries(_parse_queries(args.queries))
    splits = tuple(s.strip() for s in args.splits.split(","))
    if not set(splits) <= {"tune", "held-out"}:
        raise UsageError(f"--splits: choose from tune, held-out (got {args.splits})")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    table = {}
    for label, finder in _presence_runs(args):
        out = Path(args.out_dir) / label.replace(" ", "_").replace("(", "").replace(")", "").replace("/", "_")
        report = run_presence_evaluation(finder, args.data_root, out, queries, splits, seeds=args.seeds)
        print(f"== {label}: presence model {report['presence_model']}")
        if args.seeds > 1:
            print(f"   counts over (object, seed) pairs: sampling seeds 0-{args.seeds - 1}")
        print(format_summary(report["summary"]))
        print(f"report -> {out / 'presence_report.json'}, PR curves -> {out / 'presence_pr.png'}")
        table[label] = {"summary": report["summary"], "presence_model": report["presence_model"],
                        "seeds": args.seeds}
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.out_dir) / "comparison.json").write_text(json.dumps(table, indent=1) + "\n")
    return 0


def cmd_evaluate_parts(args) -> int:
    from .evaluation.real_parts import format_capture_parts, run_capture_parts

    if not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root: no such directory {args.data_root}")
    splits = tuple(s.strip() for s in args.splits.split(","))
    if not set(splits) <= {"tune", "held-out"}:
        raise UsageError(f"--splits: choose from tune, held-out (got {args.splits})")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    report = run_capture_parts(dict(_presence_runs(args)), args.data_root, args.out_dir, splits, words=args.words,
                               seeds=args.seeds)
    print(format_capture_parts(report))
    print(f"report -> {Path(args.out_dir) / 'parts_report.json'}, picture -> {Path(args.out_dir) / 'parts_iou.png'}")
    return 0


def cmd_calibrate_presence(args) -> int:
    from .evaluation.presence import calibrate
    from .inference.pipeline import PartFinder
    from .text import validate_queries

    if not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root: no such directory {args.data_root}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    finder = PartFinder.load(args.checkpoint, config=load_inference_config(args.config))
    out = calibrate(finder, args.data_root, args.out, validate_queries(_parse_queries(args.queries)),
                    args.target_precision, args.generated_per_category, seeds=args.seeds)
    import yaml

    print(yaml.safe_dump({"presence": out["presence"]}, sort_keys=False, width=200))
    print(f"calibration -> {args.out} (paste 'presence' into the model's registry entry); "
          f"reliability diagram -> {Path(args.out).with_suffix('.png')}")
    return 0


def cmd_ycb_masks(args) -> int:
    from .data.real_meshes import YCB_RULES, draw_masks, load_ycb

    shapes = load_ycb(args.meshes)
    if not shapes:
        raise UsageError(f"no YCB meshes with part rules in {args.meshes} (expects e.g. 025_mug.ply)")
    draw_masks(shapes, args.out)
    for stem, shape in shapes.items():
        areas = {n: m.get_surface_area() for n, m in shape.parts}
        total = sum(areas.values())
        print(f"{stem:24s} " + ", ".join(f"{n} {100 * a / total:.0f}%" for n, a in areas.items())
              + ("" if YCB_RULES[stem].train else "   (held out of training)"))
    print(f"picture -> {args.out}")
    return 0


def cmd_realsense_masks(args) -> int:
    from .evaluation.real_parts import save_capture_masks_png

    names = save_capture_masks_png(args.data_root, args.out)
    print(f"part masks of {', '.join(names)} -> {args.out}")
    return 0


def cmd_lid_masks(args) -> int:
    from .evaluation.real_parts import save_lid_masks_png

    if not Path(args.data_root).is_dir():
        raise UsageError(f"--data-root: no such directory {args.data_root}")
    out = save_lid_masks_png(args.data_root, args.out)
    print(f"lid masks: {len(out['kept'])} kept; {len(out['rejected'])} rejected (on a side or edge: "
          f"{', '.join(out['rejected'])}) -> {args.out}")
    return 0


def cmd_fit_sensor(args) -> int:
    from .data.sensors import SENSORS, fit_active_stereo, fit_kinect_quantisation
    from .evaluation.real_scans import find_scans

    if args.realsense:
        frames = sorted(Path(args.realsense).glob("*.npy"))
        if not frames:
            raise UsageError(f"no .npy RGB-D frames in {args.realsense}")
        fit = fit_active_stereo(frames)
        model = SENSORS["active_stereo"]
        fit["active_stereo_model"] = {"white_sigma": model.white_sigma, "flying": model.flying,
                                      "hole_chance": model.hole_chance, "hole_fraction": model.hole_fraction}
        text = json.dumps(fit, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return 0
    scans = find_scans(args.scans)
    if not scans:
        raise UsageError("no PCD scans found")
    fit = fit_kinect_quantisation(scans)
    fit["kinect_model"] = {"quantisation": SENSORS["kinect"].quantisation, "white_sigma": SENSORS["kinect"].white_sigma}
    text = json.dumps(fit, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def cmd_qos_matrix(args) -> int:
    from .ros.qos_matrix import format_matrix, run_qos_matrix

    report = run_qos_matrix(args.out, count=args.count, rate=args.rate, checkpoint=args.checkpoint)
    print(format_matrix(report))
    print(f"report -> {args.out}")
    return 0


def cmd_models(args) -> int:
    from .registry import is_local, load_registry, locate

    entries = load_registry(args.registry)
    if args.action == "list":
        print(f"{'name':24s} {'local':5s}  {'text encoder':42s} source")
        for name, entry in sorted(entries.items()):
            print(f"{name:24s} {'yes' if is_local(entry) else 'no':5s}  {entry.text_encoder or '-':42s} {entry.source}")
            if entry.description:
                print(f"{'':32s}{entry.description}")
        return 0
    if not args.name:
        raise UsageError("models pull needs a model name (see `models list`)")
    if args.name not in entries:
        raise UsageError(f"unknown model {args.name!r}; known: {', '.join(sorted(entries))}")
    entry = entries[args.name]
    path = locate(entry, download=True)
    print(f"{args.name}: {path}")
    queries = [q for q in _parse_queries(args.queries) if q] if args.queries else []
    if queries:
        from .inference.pipeline import PartFinder
        from .text import validate_queries

        finder = PartFinder.load(args.name, registry=args.registry, device=args.device)
        for category in [None] + ([args.category] if args.category else []):
            finder.embed_queries(validate_queries(queries), category)
        where = finder.embedder.cache_dir
        print(f"text embeddings of {len(queries)} quer{'y' if len(queries) == 1 else 'ies'} cached in {where} "
              f"({finder.embedder.encoder.name})")
    return 0


def cmd_export(args) -> int:
    import torch

    from .model import PatchAlignModel, load_network
    from .model.backends import OnnxRuntimeBackend, export_onnx

    if not args.onnx and not args.engine:
        raise UsageError("nothing to do: give --onnx OUT.onnx and/or --engine OUT.plan")
    net = load_network(args.checkpoint)
    onnx_path = Path(args.onnx or Path(args.engine).with_suffix(".onnx"))
    export_onnx(net, onnx_path)
    # parity against the torch path on random groups, batch 3
    cfg = net.cfg
    neighborhood = torch.randn(3, cfg.num_group, cfg.group_size, 3) * 0.1
    centers = torch.randn(3, cfg.num_group, 3) * 0.5
    with torch.inference_mode():
        reference = net.forward_groups(neighborhood, centers)
    diff = float((OnnxRuntimeBackend(onnx_path).run(neighborhood, centers) - reference).abs().max())
    print(f"ONNX -> {onnx_path} (onnx.checker ok; max |onnxruntime - torch| = {diff:.2e} at batch 3)")
    if diff > 1e-4:
        raise UsageError(f"ONNX parity check failed: {diff:.2e} > 1e-4")
    if args.engine:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise UsageError("--engine needs the tensorrt Python package (and a CUDA GPU); the ONNX file is written") from None
        from .model.tensorrt_engine import build_or_load_engine, export_fp16_onnx

        if args.fp16:
            export_fp16_onnx(net, onnx_path.with_name(onnx_path.stem + ".fp16.onnx"))
        model_id = PatchAlignModel(net, source=args.checkpoint).model_id
        engine, _ = build_or_load_engine(onnx_path, cfg, model_id, fp16=args.fp16, max_batch=args.max_batch,
                                         build_only=args.build_only)
        print(f"TensorRT engine built and cached beside {onnx_path}")
    return 0


def cmd_bench(args) -> int:
    if args.gpu:
        from .gpu_check import run_gpu_check

        return run_gpu_check(args.out, device=args.gpu_device, repeat=args.repeat * 2,
                             full_size=not args.skip_full_size)
    from .bench import format_report, run_bench

    report = run_bench(args.checkpoint, args.out, repeat=args.repeat, full_size=not args.skip_full_size,
                       real_scan=args.real_scan, sweep=args.sweep, sweep_png=args.sweep_png if args.sweep else None)
    print(format_report(report))
    print(f"report -> {args.out}")
    return 0


def cmd_soak(args) -> int:
    from .inference.pipeline import default_checkpoint
    from .ros.soak import run_soak

    report = run_soak(args.checkpoint or default_checkpoint(), frames=args.frames, rate_hz=args.rate,
                      out_dir=args.out_dir)
    for point in report["rss_curve"][:: max(1, len(report["rss_curve"]) // 20)]:
        print(f"frame {point['frame']:6d}  RSS {point['rss_MB']:7.1f} MB  processed {point['processed']:5d}  "
              f"dropped {point['dropped']:6d}")
    print(f"{report['frames']} frames at {report['rate_hz']:g} Hz in {report['seconds']} s: processed "
          f"{report['stats']['processed']}, dropped (newest wins) {report['stats']['dropped']}, RSS growth after "
          f"warm-up {report['rss_growth_pct']}% -> {Path(args.out_dir) / 'soak_report.json'}")
    return 0 if report["rss_growth_pct"] < 5 else 1


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out_dir=Path(args.out_dir), checkpoint=args.checkpoint, queries=_parse_queries(args.queries))


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.presence import QUERIES as PRESENCE_QUERIES

    parser = argparse.ArgumentParser(prog="python -m patchalign_ros",
                                     description="Find object parts by name in point clouds (PatchAlign3D).")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="label the parts named by --queries in a point cloud file")
    seg.add_argument("input", nargs="?", help=".pcd (incl. binary_compressed, organized), .ply, .npy or .npz")
    seg.add_argument("--depth", help="instead of a cloud: a depth image, 16-bit PNG (mm) or .npy (mm integers or "
                                     "float metres), rectified")
    seg.add_argument("--intrinsics", help="with --depth: fx,fy,cx,cy, or a camera-info file (ROS camera_calibration "
                                          "YAML, a CameraInfo dump with k, JSON fx/fy/cx/cy, or a 3x3 .npy)")
    seg.add_argument("--depth-scale", type=float, help="with --depth: metres per unit (default: mm for integer "
                                                        "images, m for float ones)")
    seg.add_argument("--color", help="with --depth: the registered colour image (PNG/JPG), for the picture")
    seg.add_argument("--queries", required=True, help='comma-separated part names, e.g. "handle,body"')
    seg.add_argument("--checkpoint", help="a registered model name (see `models list`) or a weights file "
                                          "(.safetensors + .json, or an official .pt); default: the bundled model")
    seg.add_argument("--model", help="a registered model name (same as --checkpoint NAME)")
    seg.add_argument("--registry", help="your own model registry YAML (adds to models/registry.yaml)")
    seg.add_argument("--text-encoder", help="minilm | sentence-transformers:DIR | openclip:MODEL@CKPT "
                                            "(default: the model's own)")
    mode = seg.add_mutually_exclusive_group()
    mode.add_argument("--scene", dest="scene", action="store_true", default=None,
                      help="split the scene into objects first (default for organized clouds)")
    mode.add_argument("--object", dest="scene", action="store_false", help="the whole cloud is one object")
    seg.add_argument("--name-all", action="store_true",
                     help="treat --queries as a vocabulary and label every point (or 'unknown')")
    seg.add_argument("--category", help='object category for the prompts ("a handle of a mug")')
    seg.add_argument("--up", help="up direction in the cloud's frame, x,y,z (e.g. 0,-1,0 for a level camera's "
                                  "optical frame); the support plane must agree with it")
    seg.add_argument("--gravity", help="gravity direction in the cloud's frame, x,y,z (the opposite of --up)")
    seg.add_argument("--frame", default="auto",
                     help="frame convention when --up is not given: optical (REP 105 camera frame, up ~ -y), "
                          "body (REP 103, up +z), a ROS frame id (*_optical_frame -> optical), none, or auto "
                          "(organized clouds and unorganized ones in a camera's view cone: optical; others: none). "
                          "Default: auto")
    seg.add_argument("--threshold", type=float, help="minimum part probability (default 0.5)")
    seg.add_argument("--config", help="inference settings YAML (see config/inference.yaml)")
    seg.add_argument("--label-mode", choices=["nearest", "membership"])
    seg.add_argument("--sampling", choices=["random", "fps"])
    seg.add_argument("--no-keypoints", action="store_true")
    seg.add_argument("--device", default="cpu")
    seg.add_argument("--backend", default="auto", choices=BACKENDS,
                     help="encoder backend; auto: measured on this machine once, then cached (see README)")
    seg.add_argument("--precision", default="fp32", choices=PRECISIONS)
    seg.add_argument("--out", required=True, help="result JSON")
    seg.add_argument("--png", help="picture of the labelled points with a legend (organized / depth input: the "
                                   "camera image with the parts painted on it, beside the 3D views)")
    seg.add_argument("--ply", help="labelled points coloured by part")
    seg.set_defaults(func=cmd_segment)

    train = sub.add_parser("train", help="train a model (Stage 1 distillation or Stage 2 alignment); resumable")
    train.add_argument("--config", help="training YAML (see config/train_default.yaml)")
    train.add_argument("--stage", type=int, choices=[1, 2])
    train.add_argument("--steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--out-dir", help="checkpoints, history, final model (resumes if last.pt exists)")
    train.add_argument("--data-dir", help="sample shards (generated there if missing)")
    train.add_argument("--shapes-per-category", type=int)
    train.add_argument("--categories", help="seen | all | comma-separated categories")
    train.add_argument("--init", help="start from this checkpoint")
    train.add_argument("--device", help="auto | cpu | cuda")
    train.add_argument("--threads", type=int)
    train.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", help="export the encoder to ONNX (parity-checked) and optionally a TensorRT engine")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--onnx", help="output .onnx")
    ex.add_argument("--engine", help="output TensorRT engine (needs tensorrt and a GPU)")
    ex.add_argument("--fp16", action="store_true")
    ex.add_argument("--max-batch", type=int, default=8)
    ex.add_argument("--build-only", action="store_true")
    ex.set_defaults(func=cmd_export)

    be = sub.add_parser("bench", help="speed of every backend, grouping, a 640x480 scene, text queries")
    be.add_argument("--checkpoint", help="default: the bundled model")
    be.add_argument("--out", default="bench_report.json")
    be.add_argument("--repeat", type=int, default=10)
    be.add_argument("--skip-full-size", action="store_true", help="skip the 22 M-parameter random model")
    be.add_argument("--sweep", action="store_true", help="also time generated tables with 1-32 objects and "
                                                         "100k-1M points, stage by stage (backend auto)")
    be.add_argument("--sweep-png", default="bench_sweep.png", help="the sweep's plot")
    be.add_argument("--gpu", action="store_true", help="the CUDA check instead (scripts/gpu_check.sh): encoder "
                                                       "fp32/fp16/bf16 at batch 1/8/32, onnxruntime-gpu, TensorRT, "
                                                       "frames end to end; exits 3 without CUDA")
    be.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)  # cpu: the same sections, for tests
    be.add_argument("--real-scan", help="an organized real PCD for the real-frame row (default: the development "
                                        "scan ../shared/data/real_scans/mosd/test34.pcd when present)")
    be.set_defaults(func=cmd_bench)

    so = sub.add_parser("soak", help="feed a live node clouds at a fixed rate; report the RSS curve")
    so.add_argument("--checkpoint")
    so.add_argument("--frames", type=int, default=10_000)
    so.add_argument("--rate", type=float, default=30.0)
    so.add_argument("--out-dir", default="soak_output")
    so.set_defaults(func=cmd_soak)

    ev = sub.add_parser("evaluate", help="mIoU/cIoU/boundary/keypoint IoU on held-out generated data")
    ev.add_argument("--checkpoint", help="default: the bundled model")
    ev.add_argument("--text-encoder")
    ev.add_argument("--splits", default="seen-full,seen-depth,unseen")
    ev.add_argument("--shapes-per-category", type=int, default=6)
    ev.add_argument("--out-dir", default="eval_output")
    ev.add_argument("--real-data", help="also score object-mode part IoU on real development data in this directory "
                                        "(the ../shared/data layout: real_scans/, meshes/ycb/, annotated_shapes/)")
    ev.add_argument("--config", help="inference settings YAML for the deployed path")
    ev.add_argument("--model-only", action="store_true", help="skip the deployed-path (PartFinder) scores")
    ev.set_defaults(func=cmd_evaluate)

    er = sub.add_parser("evaluate-real", help="the scene path on labelled real scans: object segmentation, part "
                                              "IoU, false positives, timings; report.json and PNGs")
    er.add_argument("scans", nargs="+", help="PCD files or directories (mOSD-style 'label' field scored)")
    er.add_argument("--queries", default="handle")
    er.add_argument("--checkpoint", help="default: the bundled model")
    er.add_argument("--text-encoder")
    er.add_argument("--config", help="inference settings YAML")
    er.add_argument("--backend", default="torch")
    er.add_argument("--precision", default="fp32")
    er.add_argument("--frame", default="auto", help="frame convention (see segment --frame)")
    er.add_argument("--out-dir", default="eval_real_output")
    er.add_argument("--no-png", action="store_true")
    er.add_argument("--presence", metavar="DATA_ROOT", help="also count object-level part presence (precision, "
                    "recall, PR curve, false part points) on the labelled captures under DATA_ROOT (../shared/data)")
    er.set_defaults(func=cmd_evaluate_real)

    ep = sub.add_parser("evaluate-presence", help="object-level part presence precision/recall, PR curves and false "
                        "part points on the labelled real captures (tune and held-out splits apart)")
    ep.add_argument("--data-root", required=True, help="the ../shared/data layout (real_scans/mosd, mosd_learn, "
                    "realsense_6dof)")
    ep.add_argument("--models", default="default", help="comma-separated registry names or weights paths")
    ep.add_argument("--legacy", help="also run these models as release 2 shipped them (before/after)")
    ep.add_argument("--queries", default=",".join(PRESENCE_QUERIES))
    ep.add_argument("--splits", default="tune,held-out")
    ep.add_argument("--seeds", type=int, default=1,
                    help="run every capture with sampling seeds 0..N-1; counts over (object, seed) pairs")
    ep.add_argument("--config", help="inference settings YAML")
    ep.add_argument("--out-dir", default="presence_output")
    ep.set_defaults(func=cmd_evaluate_presence)

    pa = sub.add_parser("evaluate-parts", help="object-mode part IoU on the labelled real captures (handles, caps "
                        "and lids), per part, sensor and split; --words asks every name users say")
    pa.add_argument("--data-root", required=True, help="the ../shared/data layout")
    pa.add_argument("--models", default="default", help="comma-separated registry names or weights paths")
    pa.add_argument("--legacy", help="also run these models as release 2 shipped them")
    pa.add_argument("--splits", default="held-out")
    pa.add_argument("--words", action="store_true", help="the vocabulary check: handle/grip, lid/cap on every case")
    pa.add_argument("--seeds", type=int, default=1,
                    help="score every case with sampling seeds 0..N-1 and report the means and range "
                         "(one random sample of an object's points can land far from the mean)")
    pa.add_argument("--config", help="inference settings YAML")
    pa.add_argument("--out-dir", default="parts_output")
    pa.set_defaults(func=cmd_evaluate_parts)

    cp = sub.add_parser("calibrate-presence", help="fit a model's presence calibration and operating point on the "
                        "tune split of the real captures (+ generated views)")
    cp.add_argument("--data-root", required=True)
    cp.add_argument("--checkpoint", help="registry name or weights path (default: the bundled model)")
    cp.add_argument("--queries", default=",".join(PRESENCE_QUERIES))
    cp.add_argument("--target-precision", type=float, default=0.9)
    cp.add_argument("--generated-per-category", type=int, default=2)
    cp.add_argument("--seeds", type=int, default=5,
                    help="choose the thresholds on the tune objects scored with sampling seeds 0..N-1, "
                         "(object, seed) pairs pooled (default 5, as the bundled model's; 1: one sample)")
    cp.add_argument("--config", help="inference settings YAML")
    cp.add_argument("--out", default="presence_calibration.json")
    cp.set_defaults(func=cmd_calibrate_presence)

    mo = sub.add_parser("models", help="registered models: list them (and which are available locally), or pull "
                                       "one ahead of time (weights, and text embeddings of --queries)")
    mo.add_argument("action", choices=["list", "pull"])
    mo.add_argument("name", nargs="?")
    mo.add_argument("--queries", help="comma-separated part names whose text embeddings to cache (pull)")
    mo.add_argument("--category", help="also cache the 'a {part} of a {category}' prompts")
    mo.add_argument("--registry", help="your own model registry YAML")
    mo.add_argument("--device", default="cpu")
    mo.set_defaults(func=cmd_models)

    ym = sub.add_parser("ycb-masks", help="label YCB meshes by the per-object part rules and draw every mask")
    ym.add_argument("--meshes", required=True, help="directory of YCB meshes (NNN_name.ply)")
    ym.add_argument("--out", default="ycb_masks.png")
    ym.set_defaults(func=cmd_ycb_masks)

    rm = sub.add_parser("realsense-masks", help="draw the RealSense frames' part masks (handles, caps, lids) over "
                        "their RGB images")
    rm.add_argument("--data-root", required=True, help="the ../shared/data layout")
    rm.add_argument("--out", default="realsense_masks.png")
    rm.set_defaults(func=cmd_realsense_masks)

    lm = sub.add_parser("lid-masks", help="draw every Kinect tin's lid mask (its top band) over its RGB crop, and "
                        "which bands are rejected (a tin on its side or edge)")
    lm.add_argument("--data-root", required=True, help="the ../shared/data layout")
    lm.add_argument("--out", default="lid_masks.png")
    lm.set_defaults(func=cmd_lid_masks)

    fs = sub.add_parser("fit-sensor", help="measure a Kinect-class sensor on organized scans (depth steps, table "
                                           "plane scatter), or with --realsense an active-stereo one on RGB-D "
                                           "frames (noise against range, object holes, floating edge pixels)")
    fs.add_argument("scans", nargs="*", help="PCD files or directories (mOSD-style: label 1 = table)")
    fs.add_argument("--realsense", help="a directory of realsense_6dof-style .npy RGB-D frames instead")
    fs.add_argument("--out", help="write the JSON here too")
    fs.set_defaults(func=cmd_fit_sensor)

    qm = sub.add_parser("qos-matrix", help="which input QoS combinations deliver 0.3/1.2/4.9 MB clouds to the "
                                           "node on this host")
    qm.add_argument("--count", type=int, default=20)
    qm.add_argument("--rate", type=float, default=5.0)
    qm.add_argument("--checkpoint")
    qm.add_argument("--out", default="qos_matrix.json")
    qm.set_defaults(func=cmd_qos_matrix)

    bag = sub.add_parser("process-bag", help="run on every PointCloud2 of a rosbag2, write the outputs to a new bag")
    bag.add_argument("input", help="rosbag2 directory")
    bag.add_argument("output", help="new rosbag2 directory")
    bag.add_argument("--queries", required=True)
    bag.add_argument("--topic", help="the PointCloud2 topic (default: all of them)")
    bag.add_argument("--checkpoint")
    bag.add_argument("--text-encoder")
    bag.add_argument("--object", action="store_true", help="each cloud is one object (no scene segmentation)")
    bag.add_argument("--no-keypoints", action="store_true")
    bag.add_argument("--reuse-max-age", type=float, default=1.0,
                     help="seconds a view that did not change keeps its scene split and encoder passes, as the "
                          "node's reuse_max_age_s (default 1); 0: every cloud afresh")
    bag.add_argument("--backend", default="auto", choices=BACKENDS)
    bag.add_argument("--precision", default="fp32", choices=PRECISIONS)
    bag.add_argument("--report", help="write the counts and per-cloud timing as JSON here")
    bag.set_defaults(func=cmd_process_bag)

    demo = sub.add_parser("demo", help="a generated tabletop scene, end to end")
    demo.add_argument("--out-dir", default="demo_output")
    demo.add_argument("--checkpoint")
    demo.add_argument("--queries", default="handle,body")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .inference.preprocess import InputError
    from .model import CheckpointError
    from .pointcloud_io import PointCloudReadError
    from .text import TextEncoderError

    expected = (InputError, PointCloudReadError, CheckpointError, TextEncoderError, UsageError, ValueError,
                OSError, KeyError)
    try:
        return args.func(args)
    except expected as exc:
        if os.environ.get("PATCHALIGN_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, with how to see more
        if os.environ.get("PATCHALIGN_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set PATCHALIGN_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1
