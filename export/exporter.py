"""p2p-export's pipeline: checkpoint → ONNX (fp32, fp16 or int8) → [--verify] → [TensorRT engine].

One function, ``export_checkpoint``, that the CLI calls after parsing its options.
Every input that can be wrong (checkpoint, output folders, engine shapes, calibration
folder) is checked before the minutes-long work starts.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from p2p.runtime import contract
from p2p.runtime.spec import ModelSpec
from p2p.training.checkpoint import load_generator

from .fp16 import to_fp16
from .int8 import calibration_frames, compare, cpu_backend, kernel_counts, quantize_int8
from .onnx_export import OPSET, build_onnx, check_writable, write_model
from .tensorrt_build import Shapes, build_engine, installed_tensorrt, version_tuple
from .verify import verify_onnx


def export_checkpoint(source: Path, onnx_path: Path, *, precision: str = contract.FP32, verify: bool = False,
                      calib: Path | None = None, norm: str | None = None, engine: Path | None = None,
                      shapes: Shapes | None = None, timing_cache: Path | None = None,
                      workspace_gb: float | None = None, opset: int | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """Export ``source`` (a run folder or checkpoint) to ``onnx_path``; returns the ONNX path.

    precision: "fp32", "fp16" or "int8" (calibrated on the frames in ``calib``); ``verify``: ONNX
    Runtime vs PyTorch on identical masks; ``norm``: how batch statistics are written (graph.NORMS);
    ``engine``: also build this TensorRT engine, for the profile ``shapes`` (default: the training
    size, batch 1), with ``timing_cache`` and ``workspace_gb``; ``opset``: 17 or 18, by default 18, or 17 when
    an engine is to be built by a TensorRT older than 10 (whose parser reads opset 17).
    """
    generator, spec, _ = load_generator(source)
    check_writable(onnx_path)
    if engine is not None:
        check_writable(engine)
        shapes = (shapes or Shapes.single(spec)).validated(spec)
    if precision == contract.INT8:
        calibration_frames(calib, spec, limit=1)  # a wrong folder fails now, not after the export

    if opset is None:
        opset = OPSET
        trt_version = installed_tensorrt() if engine is not None else None
        if trt_version and version_tuple(trt_version) < (10,):
            opset = 17
            log(f"TensorRT {trt_version} parses opset 17: writing an opset-17 graph (as --opset 17 does)")
    log(f"exporting {spec.generator} generator (depth {spec.depth}, ngf {spec.ngf}, "
        f"{spec.dropout_blocks} dropout masks) to {onnx_path} ...")
    model32 = build_onnx(generator, spec, norm=norm, opset=opset)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = onnx_path if precision == contract.FP32 else Path(tmp) / "model.fp32.onnx"
        if precision == contract.FP32 or precision == contract.INT8 or engine is not None:
            # int8 quantises an fp32 file, and TensorRT 10 builds FP16 from one (with a builder flag)
            write_model(model32, spec, contract.FP32, fp32_path)
        if precision == contract.INT8:
            if verify:
                _verify(fp32_path, generator, log)
            _, frames = quantize_int8(fp32_path, onnx_path, calib)
            _wrote(onnx_path, spec, contract.INT8, log)
            with cpu_backend(fp32_path) as fp32, cpu_backend(onnx_path) as int8:
                r = compare(fp32, int8, frames)
            kernels = kernel_counts(onnx_path)
            log(f"  int8 vs fp32 on {min(len(frames), 4)} calibration frames: max abs diff {r.max_diff:.3f}, "
                f"mean {r.mean_diff:.4f}; ONNX Runtime CPU {r.ms_reference:.1f} → {r.ms_candidate:.1f} ms/frame; "
                f"{kernels.get('QLinearConv', 0)} convolutions run as integer kernels, "
                f"{kernels.get('Conv', 0) + kernels.get('ConvTranspose', 0)} in float")
            return onnx_path
        if precision == contract.FP16:
            write_model(to_fp16(model32), spec, contract.FP16, onnx_path)
        _wrote(onnx_path, spec, precision, log)
        if verify:
            _verify(onnx_path, generator, log)
        if engine is not None:
            # TensorRT 10 takes FP16 as a builder flag on the fp32 file; 11 is strongly typed and needs the FP16 file
            fp16 = precision == contract.FP16
            build_engine(fp32_path, engine, shapes=shapes, fp16=fp16, fp16_onnx_path=onnx_path if fp16 else None,
                         timing_cache=timing_cache, workspace_gb=workspace_gb, log=log)
            log(f"wrote {engine} and {engine.name}.json")
    return onnx_path


def _wrote(path: Path, spec: ModelSpec, precision: str, log) -> None:
    log(f"wrote {path} ({precision}, {path.stat().st_size / 1e6:.1f} MB); inputs: "
        + ", ".join(contract.signature(spec)))


def _verify(path: Path, generator, log) -> None:
    result = verify_onnx(path, generator)
    for line in result.lines():
        log("  " + line)
    result.check()
