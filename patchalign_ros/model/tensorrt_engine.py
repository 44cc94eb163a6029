"""Building, caching and running TensorRT engines of the encoder (TensorRT 10.x and 11.x).

NOT RUN ANYWHERE YET: TensorRT is not installable on any machine of this project (no GPU in CI;
the lent GPU has no TensorRT). Written against the TensorRT 10/11 Python API documentation:
* name-based I/O (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``);
* fp16: TensorRT 11 removed ``BuilderFlag.FP16`` (strong typing only), 10.12+ supports the
  ``STRONGLY_TYPED`` network flag, older 10.x only the flag. So fp16 = an ONNX graph cast to fp16
  inside (fp32 I/O) built strongly typed where possible, else the FP16 flag on the fp32 graph;
  either way the built engine's layer precisions are read back with the engine inspector and a
  build that asked for fp16 but has no half-precision layers is refused.
Engines are cached next to the ONNX file, keyed by model hash, TensorRT version, GPU name and
precision, so a stale or foreign engine is never loaded; a long build is announced loudly.
"""
from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

import torch

log = logging.getLogger("patchalign_ros.tensorrt")


def engine_path(onnx_path: Path, model_id: str, fp16: bool) -> Path:
    import tensorrt as trt

    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-")
    return Path(onnx_path).with_name(f"{Path(onnx_path).stem}.{model_id}.trt{trt.__version__}.{gpu}."
                                     f"{'fp16' if fp16 else 'fp32'}.plan")


def export_fp16_onnx(net, path) -> Path:
    """The fused encoder computing in fp16 between fp32 inputs and outputs (for strong typing)."""
    from .backends import export_onnx
    from .fused import FusedEncoder

    class Half(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # a copy: FusedEncoder shares the net's modules, and .half() would convert them in place
            self.encoder = FusedEncoder(copy.deepcopy(net)).half()

        def forward(self, neighborhood, centers):
            return self.encoder(neighborhood.half(), centers.half()).float()

    return export_onnx(net, path, module=Half())


def _layer_precisions(engine) -> set:
    import tensorrt as trt

    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    found = set()
    for layer in info.get("Layers", []):
        text = json.dumps(layer)
        found |= set(re.findall(r"\b(Half|Float|FP16|FP32|BF16|Int8)\b", text))
    return found


def build_or_load_engine(onnx_path, cfg, model_id: str, fp16: bool = True, max_batch: int = 8, build_only=False):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    plan = engine_path(Path(onnx_path), model_id, fp16)
    if plan.exists():
        engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is not None:
            return engine, (None if build_only else engine.create_execution_context())
        log.warning("cached engine %s does not load with this TensorRT/GPU; rebuilding", plan)
    log.warning("BUILDING TensorRT engine %s - this can take minutes; it is cached for next time", plan.name)
    builder = trt.Builder(logger)
    strongly_typed = fp16 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    if fp16 and not strongly_typed and not has_fp16_flag:
        raise RuntimeError("this TensorRT offers neither strong typing nor the FP16 flag")
    source = Path(onnx_path)
    flags = 0
    if strongly_typed:
        source = Path(onnx_path).with_name(Path(onnx_path).stem + ".fp16.onnx")
        if not source.exists():
            raise RuntimeError(f"fp16 ONNX graph missing: {source} (export it with export_fp16_onnx)")
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {source}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # so the inspector can report precisions
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    g, k = cfg.num_group, cfg.group_size
    profile.set_shape("neighborhood", (1, g, k, 3), (min(4, max_batch), g, k, 3), (max_batch, g, k, 3))
    profile.set_shape("centers", (1, g, 3), (min(4, max_batch), g, 3), (max_batch, g, 3))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    engine = runtime.deserialize_cuda_engine(serialized)
    if fp16:
        precisions = _layer_precisions(engine)
        if not precisions & {"Half", "FP16"}:
            raise RuntimeError(f"fp16 was requested but the engine has no half-precision layers ({precisions})")
    plan.write_bytes(bytes(serialized))
    return engine, (None if build_only else engine.create_execution_context())


def execute(engine, context, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Run one batch on the current CUDA stream; inputs are CUDA fp32 contiguous tensors."""
    context.set_input_shape("neighborhood", tuple(neighborhood.shape))
    context.set_input_shape("centers", tuple(centers.shape))
    out = torch.empty(tuple(context.get_tensor_shape("patch_features")), device="cuda", dtype=torch.float32)
    context.set_tensor_address("neighborhood", neighborhood.data_ptr())
    context.set_tensor_address("centers", centers.data_ptr())
    context.set_tensor_address("patch_features", out.data_ptr())
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    stream.synchronize()
    return out
