"""Encoder backends behind one interface: ``run(neighborhood, centers) -> patch features``.

Grouping (FPS + kNN) stays outside, in torch, on the backend's device; the backends run the
patch embedding, transformer and projection.

* ``torch``        - the fused encoder (fp32; fp16 on CUDA; optional bf16 on CPUs with it);
* ``onnxruntime``  - an exported ONNX graph (CPU; CUDA and TensorRT execution providers when
                     present);
* ``tensorrt``     - a native TensorRT engine (built from the ONNX graph, cached per model hash,
                     TensorRT version, GPU and precision);
* ``auto``         - measured on this machine (``calibration.py``): every backend and
                     precision that runs here and matches fp32 (patch cosine >= 0.999, labels
                     >= 99 %) is timed once, the fastest is used and the choice cached. With
                     precision fp32 (the default) auto may pick bf16 or int8 when they pass that
                     check; with another precision it keeps to it. The reason is kept on the
                     backend (``auto_reason``) for bench and the node's diagnostics.

Precision is honoured or refused: torch runs fp32, bf16 (CPU or CUDA) and fp16 (CUDA);
onnxruntime runs the fp32 graph and an int8 one (dynamic quantisation of its weights, made
once beside the fp32 export); tensorrt fp32 or fp16. No backend changes the network it was
built from (the fused encoder works on copies; exports use copies).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .fused import FusedEncoder

log = logging.getLogger("patchalign_ros.backends")


class BackendError(RuntimeError):
    pass


class TorchBackend:
    name = "torch"

    def __init__(self, net, device: str = "cpu", precision: str = "fp32"):
        self.device = torch.device(device)
        self.precision = precision
        self.encoder = FusedEncoder(net).to(self.device)
        if precision == "fp16":
            if self.device.type != "cuda":
                raise BackendError("fp16 needs a CUDA device; use bf16 on CPU")
            self.encoder = self.encoder.half()

    @torch.inference_mode()
    def run(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        n, c = neighborhood.to(self.device), centers.to(self.device)
        if self.precision == "fp16":
            return torch.nn.functional.normalize(self.encoder(n.half(), c.half()).float(), dim=-1)
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self.encoder(n, c)
            return torch.nn.functional.normalize(out.float(), dim=-1)
        return self.encoder(n, c)


def export_onnx(net, path, opset: int = 17, batch: int = 2, module=None) -> Path:
    """Export the fused encoder (or ``module``) with a dynamic batch dimension; checked by
    onnx.checker."""
    import onnx

    cfg = net.cfg
    encoder = module if module is not None else FusedEncoder(net).cpu().eval()  # a copy: net stays put
    neighborhood = torch.randn(batch, cfg.num_group, cfg.group_size, 3) * 0.1
    centers = torch.randn(batch, cfg.num_group, 3) * 0.5
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed when complete and checked: a crash or a second
    # process never leaves a torn file where the cache looks.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():  # the tracer's shape warnings are about the exporter, not the model
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(encoder, (neighborhood, centers), str(tmp), input_names=["neighborhood", "centers"],
                              output_names=["patch_features"], opset_version=opset, dynamo=False,
                              dynamic_axes={"neighborhood": {0: "batch"}, "centers": {0: "batch"},
                                            "patch_features": {0: "batch"}})
        onnx.checker.check_model(onnx.load(str(tmp)))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path, device: str = "cpu", threads: int = 0, precision: str = "fp32"):
        import onnxruntime as ort

        self.precision = precision

        available = ort.get_available_providers()
        if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
            raise BackendError(f"device {device} asked, but this onnxruntime has no CUDAExecutionProvider "
                               f"(providers: {', '.join(available)}); install onnxruntime-gpu or use device cpu")
        wanted = (["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.startswith("cuda") else []) + \
            ["CPUExecutionProvider"]
        providers = [p for p in wanted if p in available]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as exc:
            raise BackendError(f"onnxruntime cannot load {onnx_path}: {exc}") from None
        self.providers = self.session.get_providers()

    def run(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        out = self.session.run(["patch_features"], {"neighborhood": neighborhood.cpu().numpy().astype(np.float32),
                                                    "centers": centers.cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def quantized_onnx(fp32_path: Path) -> Path:
    """The int8 graph of an fp32 export (weights quantised per channel, activations
    dynamically), cached beside it."""
    path = Path(fp32_path).with_name(Path(fp32_path).stem + ".int8.onnx")
    if not path.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
        quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, path)
    return path


def cached_onnx(net, weights_path: Path | None, model_id: str) -> Path:
    """The ONNX export of a model, cached beside its weights (or in the user cache)."""
    from ..text.encoders import default_cache_dir

    base = Path(weights_path).parent if weights_path else default_cache_dir().parent / "onnx"
    path = base / f"{Path(weights_path).stem if weights_path else 'model'}.{model_id}.onnx"
    if not path.exists():
        try:
            export_onnx(net, path)
        except OSError:  # read-only model directory: use the user cache
            path = default_cache_dir().parent / "onnx" / path.name
            if not path.exists():
                export_onnx(net, path)
    return path


class TensorRTBackend:
    """A native TensorRT engine (TensorRT 10/11 Python API). Not installable on any machine of
    this project: this code is written against the API documentation and has not run here."""

    name = "tensorrt"

    def __init__(self, net, weights_path, model_id: str, fp16: bool = True, max_batch: int = 8):
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendError("tensorrt is not installed") from None
        if not torch.cuda.is_available():
            raise BackendError("TensorRT needs a CUDA GPU")
        from .tensorrt_engine import build_or_load_engine, export_fp16_onnx

        onnx_path = cached_onnx(net, weights_path, model_id)
        fp16_path = onnx_path.with_name(onnx_path.stem + ".fp16.onnx")
        if fp16 and not fp16_path.exists():
            export_fp16_onnx(net, fp16_path)
        self.engine, self.context = build_or_load_engine(onnx_path, net.cfg, model_id, fp16=fp16, max_batch=max_batch)
        self.trt = trt

    def run(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        from .tensorrt_engine import execute

        return execute(self.engine, self.context, neighborhood.cuda().float().contiguous(),
                       centers.cuda().float().contiguous())


def make_backend(name: str, net, device: str = "cpu", weights_path=None, model_id: str = "in-memory",
                 precision: str = "fp32"):
    """Build a backend by name; ``auto``: the calibrated choice for this machine (see above)."""
    if name == "auto":
        from .calibration import choose

        wanted = None if precision == "fp32" else precision
        for attempt in range(2):
            try:
                entry = choose(net, device, weights_path, model_id, wanted, recalibrate=attempt > 0)
            except RuntimeError as exc:
                raise BackendError(f"backend auto: {exc}") from None
            try:
                name, chosen = entry["choice"]
                backend = make_backend(name, net, device, weights_path, model_id, chosen)
            except (BackendError, ImportError, OSError) as exc:  # a stale cache entry: measure again
                log.warning("backend auto: the cached choice %s fails here (%s); calibrating again",
                            entry["choice"], exc)
                continue
            backend.auto_reason = ("cached: " if entry.get("cached") else "calibrated: ") + entry["reason"]
            log.info("backend auto -> %s %s (%s)", *entry["choice"], backend.auto_reason)
            return backend
        raise BackendError("backend auto: the calibrated choice cannot be built here")
    if precision not in ("fp32", "fp16", "bf16", "int8"):
        raise BackendError(f"unknown precision {precision!r} (fp32 | fp16 | bf16 | int8)")
    if precision == "int8" and name != "onnxruntime":
        raise BackendError("int8 runs on backend onnxruntime (a dynamically quantised graph)")
    if name == "torch":
        return TorchBackend(net, device, precision)
    if name == "onnxruntime":
        if precision not in ("fp32", "int8"):
            raise BackendError(f"onnxruntime runs the fp32 or int8 graph; precision {precision} is not available "
                               "there (use backend torch for bf16, or tensorrt for fp16)")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BackendError("onnxruntime is not installed") from None
        graph = cached_onnx(net, weights_path, model_id)
        if precision == "int8":
            graph = quantized_onnx(graph)
        return OnnxRuntimeBackend(graph, device, precision=precision)
    if name == "tensorrt":
        if precision == "bf16":
            raise BackendError("the TensorRT backend builds fp32 or fp16 engines, not bf16")
        return TensorRTBackend(net, weights_path, model_id, fp16=precision == "fp16")
    raise BackendError(f"unknown backend {name!r} (torch | onnxruntime | tensorrt | auto)")
