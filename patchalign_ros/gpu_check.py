"""`python -m patchalign_ros bench --gpu` (and scripts/gpu_check.sh): what a CUDA machine gives,
measured in one short run so that the first GPU lent is used for numbers, not debugging.

Sections, each written to the JSON report as soon as it is done (a run cut short keeps what it
measured): the device; the encoder (full-size random-weight model and the bundled model) with
torch eager fp32 and fused fp32 / fp16 / bf16 at batch 1, 8 and 32, each checked against eager
fp32 (patch cosine, label agreement); ONNX Runtime's CUDA provider and TensorRT where they are
installed (said when not); a frame end to end through the library path the node runs (a
simulated 640x480 tabletop and a 16-object one). Without CUDA it writes the reason and exits 3.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

NO_CUDA_EXIT = 3


def _time(fn, device: str, repeat: int, warmup: int = 3) -> float:
    from .model.calibration import median_ms

    return median_ms(fn, repeat, warmup, device)


def device_info(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_GB=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


def encoder_rows(net, label: str, device: str, batches, repeat: int) -> dict:
    from .model import PatchAlignModel
    from .model.calibration import accuracy

    out = {"model": label, "parameters_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 2), "rows": {}}
    net = net.to(device).eval()
    rng = np.random.default_rng(0)
    inputs = {}
    for b in batches:
        pts = torch.from_numpy(rng.normal(size=(b, net.cfg.num_points, 3)).astype(np.float32)).to(device)
        with torch.inference_mode():
            inputs[b] = net.group(pts)[:2]
    with torch.inference_mode():
        reference = net.forward_groups(*inputs[batches[0]])
    candidates = [("torch-eager", "fp32"), ("torch", "fp32"), ("torch", "fp16"), ("torch", "bf16"),
                  ("onnxruntime", "fp32"), ("tensorrt", "fp16"), ("tensorrt", "fp32")]
    for name, precision in candidates:
        key = f"{name}-{precision}"
        try:
            model = PatchAlignModel(net, device=device, backend=name, precision=precision)
            run = (lambda n, c: net.forward_groups(n, c)) if model.backend is None else model.backend.run
            row = {}
            with torch.inference_mode():
                for b in batches:
                    row[f"batch_{b}_ms_per_shape"] = round(_time(lambda: run(*inputs[b]), device, repeat) / b, 3)
                cos, agree = accuracy(reference, run(*inputs[batches[0]]))
            row.update(min_cosine=round(cos, 6), label_agreement=round(agree, 4))
        except Exception as exc:  # not available on this machine: recorded, not fatal
            row = {"unavailable": f"{type(exc).__name__}: {str(exc)[:300]}"}
        out["rows"][key] = row
    return out


def frame_rows(device: str, repeat: int) -> dict:
    from .bench import _cluttered, _stage_medians
    from .data.synthetic import tabletop_scene
    from .inference.pipeline import PartFinder

    out = {}
    for backend, precision in (("torch", "fp16"), ("torch", "fp32"), ("auto", "fp32")):
        key = f"{backend}-{precision}"
        try:
            finder = PartFinder.load(None, device=device, backend=backend, precision=precision, cache_dir=None)
        except Exception as exc:
            out[key] = {"unavailable": f"{type(exc).__name__}: {str(exc)[:300]}"}
            continue
        for name, capture in (("tabletop 3 objects", tabletop_scene(np.random.default_rng(0))),
                              ("table 16 objects", _cluttered(16))):
            results = []

            def frame():
                results.append(finder.find_parts(capture.points, ["handle"], scene=True))

            ms = _time(frame, device, repeat, warmup=2)
            stages = _stage_medians(results[2:], ("scene", "encoder", "postprocess", "total"))
            out[f"{key} {name}"] = {"ms": round(ms, 1), "hz": round(1000.0 / ms, 2),
                                    "objects": len(results[-1].objects), "stages_ms": stages,
                                    "backend": f"{finder.model.backend_name} "
                                               f"{getattr(finder.model.backend, 'precision', 'fp32')}"}
    return out


def run_gpu_check(out_path="gpu_report.json", device: str = "cuda", repeat: int = 20,
                  batches=(1, 8, 32), full_size: bool = True) -> int:
    """Writes the report; 0 when the GPU sections ran, NO_CUDA_EXIT without CUDA. ``device``
    "cpu" runs the same sections on the CPU (how the code is tested where no GPU is)."""
    from .bench import random_full_size_net
    from .inference.pipeline import default_checkpoint
    from .model import load_network

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "info": device_info(device)}

    def save():
        out_path.write_text(json.dumps(report, indent=1) + "\n")

    if device.startswith("cuda") and not torch.cuda.is_available():
        report["error"] = (f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) "
                           "sees none; nothing measured")
        save()
        print(report["error"])
        return NO_CUDA_EXIT
    t0 = time.perf_counter()
    report["encoders"] = []
    nets = ([("full size (22 M, random weights)", random_full_size_net)] if full_size else []) + \
        [("bundled default", lambda: load_network(default_checkpoint()))]
    for label, make in nets:
        report["encoders"].append(encoder_rows(make(), label, device, list(batches), repeat))
        save()
        print(f"encoder {label}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    report["frames"] = frame_rows(device, max(3, repeat // 4))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    save()
    for enc in report["encoders"]:
        print(f"\nencoder {enc['model']} ({enc['parameters_M']} M), ms per shape:")
        for key, row in enc["rows"].items():
            if "unavailable" in row:
                print(f"  {key:18s} {row['unavailable'][:110]}")
            else:
                times = "  ".join(f"{row[f'batch_{b}_ms_per_shape']:8.3f}" for b in batches)
                print(f"  {key:18s} {times}   cos {row['min_cosine']:.5f}  agree {row['label_agreement']:.3f}")
    for key, row in report["frames"].items():
        print(f"frame {key}: " + (row["unavailable"][:110] if "unavailable" in row else
                                  f"{row['ms']} ms = {row['hz']} Hz, {row['objects']} objects, {row['stages_ms']}"))
    print(f"report -> {out_path} ({report['seconds']} s)")
    return 0
