"""``backend: auto``: time the backends and precisions this machine can run, keep those that
match fp32, pick the fastest, remember the choice.

The fastest backend depends on the CPU (measured: ONNX Runtime fp32 on an AMD EPYC; torch bf16
on a Xeon with AVX-512 bf16 / AMX, where bf16 is 5x *slower* on the EPYC), so it is measured,
not assumed. Candidates on a CPU: torch fp32, ONNX Runtime fp32, ONNX Runtime int8 (dynamic
quantisation of the exported graph), torch bf16 where the CPU has bf16 instructions; on CUDA:
TensorRT fp16 / fp32, torch fp16 / bf16 / fp32, ONNX Runtime's CUDA provider. A candidate is
accepted only when, on the same grouped shapes, every patch feature has cosine >= 0.999 to the
fp32 reference network and >= 99 % of patches pick the same of 32 text directions; the rest are
listed with why. The choice is cached per model, device, CPU (name and instruction flags),
library versions and thread count, so the calibration (a few seconds) runs once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("patchalign_ros.calibration")
MIN_COSINE = 0.999
MIN_AGREEMENT = 0.99
CALIBRATION_VERSION = 1


def cpu_signature() -> dict:
    """The CPU's name and the instruction flags that decide the fast paths."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni", "fma")
    return {"name": name, "flags": [f for f in wanted if f in flags]}


def has_cpu_bf16() -> bool:
    flags = cpu_signature()["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def candidates(device: str, precision: str | None) -> list:
    """(backend, precision) pairs to try; ``precision`` given: only that precision."""
    if device.startswith("cuda"):
        pairs = [("tensorrt", "fp16"), ("torch", "fp16"), ("torch", "bf16"), ("tensorrt", "fp32"),
                 ("onnxruntime", "fp32"), ("torch", "fp32")]
    else:
        pairs = [("onnxruntime", "fp32"), ("torch", "fp32"), ("onnxruntime", "int8")]
        if has_cpu_bf16() or precision == "bf16":  # emulated bf16 is 5x slower: only when asked for
            pairs.append(("torch", "bf16"))
    return [p for p in pairs if precision is None or p[1] == precision]


def cache_key(model_id: str, device: str) -> str:
    versions = {"torch": torch.__version__, "threads": torch.get_num_threads(), "v": CALIBRATION_VERSION}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    text = json.dumps([model_id, device, cpu_signature(), versions], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path() -> Path:
    from ..text.encoders import default_cache_dir

    return default_cache_dir().parent / "auto_backend.json"


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(path: Path, key: str, entry: dict) -> None:
    data = _load_cache(path)
    data[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)  # atomic: two nodes starting together never read half a file
    except OSError as exc:
        log.warning("cannot cache the auto backend choice in %s: %s", path, exc)


def _inputs(net, device: str, batch: int, seed: int = 0):
    """Grouped shapes for the accuracy check and the timings: blobs with parts at several
    scales, unit-sphere normalised like real objects."""
    rng = np.random.default_rng(seed)
    n = net.cfg.num_points
    shapes = []
    for _ in range(batch):
        body = rng.normal(size=(n, 3)) * rng.uniform(0.2, 0.6, 3)
        arm = rng.normal(size=(n // 4, 3)) * 0.08 + rng.uniform(-0.6, 0.6, 3)
        pts = np.concatenate([body, arm])[rng.permutation(n + n // 4)[:n]]
        pts = (pts - pts.mean(0)) / np.linalg.norm(pts - pts.mean(0), axis=1).max()
        shapes.append(pts)
    pts = torch.from_numpy(np.stack(shapes).astype(np.float32)).to(device)
    with torch.inference_mode():
        neighborhood, centers, _ = net.group(pts)
    return neighborhood, centers


def accuracy(reference: torch.Tensor, features: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """(smallest patch cosine, share of patches choosing the same of 32 random text directions)."""
    ref = torch.nn.functional.normalize(reference.float().cpu(), dim=-1)
    got = torch.nn.functional.normalize(features.float().cpu(), dim=-1)
    cosine = float((ref * got).sum(-1).min())
    gen = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(32, ref.shape[-1], generator=gen), dim=-1)
    agree = float(((ref @ text.T).argmax(-1) == (got @ text.T).argmax(-1)).float().mean())
    return cosine, agree


def median_ms(fn, repeat: int, warmup: int = 2, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in ms after ``warmup`` calls; on CUDA each run waits for the
    GPU (kernels are asynchronous). The one timer of calibration, bench and the GPU check."""
    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def _ms_per_shape(backend, neighborhood, centers, repeat: int) -> float:
    return median_ms(lambda: backend.run(neighborhood, centers), repeat, device=str(neighborhood.device)) \
        / neighborhood.shape[0]


def calibrate(net, device: str, weights_path, model_id: str, precision: str | None = None,
              batches=(1, 8), repeat: int = 5) -> dict:
    """Measure every candidate; returns {"choice": [backend, precision], "reason", "table"}."""
    from .backends import make_backend

    checks = _inputs(net, device, 4, seed=1)
    with torch.inference_mode():
        reference = net.forward_groups(*checks)
    timing_inputs = {b: _inputs(net, device, b) for b in batches}
    table = []
    for name, prec in candidates(device, precision):
        row = {"backend": name, "precision": prec}
        try:
            backend = make_backend(name, net, device, weights_path, model_id, prec)
            with torch.inference_mode():
                cosine, agree = accuracy(reference, backend.run(*checks))
            row.update(min_cosine=round(cosine, 6), label_agreement=round(agree, 4))
            if cosine < MIN_COSINE or agree < MIN_AGREEMENT:
                row["refused"] = (f"not accurate enough: cosine {cosine:.4f} (>= {MIN_COSINE}), labels "
                                  f"{agree:.1%} (>= {MIN_AGREEMENT:.0%})")
            else:
                with torch.inference_mode():
                    row["ms_per_shape"] = {str(b): round(_ms_per_shape(backend, *timing_inputs[b], repeat), 3)
                                           for b in batches}
                row["score_ms"] = round(float(np.mean(list(row["ms_per_shape"].values()))), 3)
        except Exception as exc:  # unavailable here: listed, not fatal
            row["refused"] = f"unavailable: {type(exc).__name__}: {str(exc)[:160]}"
        table.append(row)
    usable = [r for r in table if "score_ms" in r]
    if not usable:
        raise RuntimeError("no backend passed: " + "; ".join(f"{r['backend']} {r['precision']}: {r['refused']}"
                                                            for r in table))
    best = min(usable, key=lambda r: r["score_ms"])
    others = ", ".join(f"{r['backend']} {r['precision']} {r['score_ms']:.2f}" for r in usable if r is not best)
    refused = ", ".join(f"{r['backend']} {r['precision']} ({r['refused']})" for r in table if "refused" in r)
    reason = (f"fastest of those matching fp32 (cosine >= {MIN_COSINE}, labels >= {MIN_AGREEMENT:.0%}): "
              f"{best['backend']} {best['precision']} {best['score_ms']:.2f} ms/shape (mean of batch "
              f"{', '.join(map(str, batches))})" + (f"; others {others}" if others else "") +
              (f"; refused {refused}" if refused else ""))
    return {"choice": [best["backend"], best["precision"]], "reason": reason, "table": table,
            "cpu": cpu_signature(), "device": device}


def choose(net, device: str, weights_path, model_id: str, precision: str | None = None,
           recalibrate: bool = False) -> dict:
    """The cached choice for this model and machine, calibrating on first use."""
    path = cache_path()
    key = cache_key(model_id, device) + (f"-{precision}" if precision else "")
    entry = None if recalibrate else _load_cache(path).get(key)
    if entry is None:
        log.info("calibrating backend auto for model %s on %s (once; cached in %s)", model_id, device, path)
        entry = calibrate(net, device, weights_path, model_id, precision)
        entry["calibrated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _store(path, key, entry)
        entry = dict(entry, cached=False)
    else:
        entry = dict(entry, cached=True)
    return entry
