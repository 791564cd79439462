"""INT8 ONNX for ONNX Runtime CPU: static QDQ quantisation calibrated on real frames.

Only convolutions are quantised (weights int8 per channel, activations uint8,
the layout ORT's x86 kernels prefer); batch statistics, masks and tanh stay
float. Calibration feeds frames from ``--calib DIR`` through the same input
adapter the runtime uses, with dropout masks drawn as at test time. This is
for ONNX Runtime: TensorRT wants symmetric int8 and is better served by --fp16.

Every ConvTranspose is first rewritten as an ordinary convolution plus DepthToSpace
(``subpixel``, exact in fp32): ONNX Runtime has integer kernels for Conv but not for
ConvTranspose, which it would run in float with its weights dequantised on every frame.
On x86 CPUs without VNNI the weights use 7 bits (``reduce_range``): the AVX2 integer
kernel adds pairs of products in 16 bits, which 8-bit weights can overflow.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from p2p.runtime import contract
from p2p.runtime.backends import Backend
from p2p.runtime.images import ImageError, input_tensor, list_images, read_image
from p2p.runtime.ort_backend import OrtBackend
from p2p.runtime.spec import ModelSpec

from .onnx_export import ExportError, read_onnx_spec, save_onnx, write_model
from .subpixel import convtranspose_as_conv
from .verify import FP32_TOLERANCE

QUANTISED_OPS = ["Conv"]  # after the ConvTranspose rewrite, every convolution


def has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX-512 VNNI or AVX-VNNI); False if unknown."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni"} & set(flags.split()))


Frame = tuple[np.ndarray, list]  # (image, masks): one input of the model, as Backend.run takes it


def calibration_frames(calib_dir, spec: ModelSpec, limit: int = 32, seed: int = 0) -> list[Frame]:
    """Up to ``limit`` frames from ``calib_dir`` at the spec's size, each with the masks drawn as at test time
    (raises ExportError if there are none)."""
    folder = Path(calib_dir)
    if not folder.is_dir():
        raise ExportError(f"--calib {folder}: not a folder of images")
    paths = list_images(folder)[:limit]
    if not paths:
        raise ExportError(f"--calib {folder}: no images (.jpg, .png, ...) in it")
    frames = []
    for i, path in enumerate(paths):
        try:
            bgr = read_image(path)
        except ImageError as exc:
            raise ExportError(str(exc)) from None
        h, w = bgr.shape[:2]
        if spec.task == "paired" and w == 2 * h:  # an aligned A|B training pair: keep the input side
            a, b = bgr[:, :h], bgr[:, h:]
            bgr = a if spec.direction == "AtoB" else b
        bgr = cv2.resize(bgr, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
        image = np.ascontiguousarray(input_tensor(bgr, spec)[None], np.float32)
        masks = contract.draw_masks(spec, np.random.default_rng(seed + i), 1, spec.height, spec.width)
        frames.append((image, masks))
    return frames


def quantize_int8(fp32_path, out_path, calib_dir, *, limit: int = 32, reduce_range: bool | None = None,
                  float_output: bool = False) -> tuple[Path, list[Frame]]:
    """Write the INT8 model to ``out_path``; returns it and the calibration frames (for comparisons).

    ``reduce_range``: 7-bit weights (default: on x86 CPUs without VNNI, see the module doc);
    ``float_output``: keep the output layer in float.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    spec = read_onnx_spec(fp32_path)
    frames = calibration_frames(calib_dir, spec, limit)
    if reduce_range is None:
        import platform
        reduce_range = platform.machine().lower() in ("x86_64", "amd64") and not has_vnni()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = (contract.feeds(spec, *frame) for frame in frames)

        def get_next(self):
            return next(self.it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" advice is for classifiers with fixed shapes
    try:
        with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
            convs_path, tmp_path = Path(tmp) / "convs.onnx", Path(tmp) / "int8.onnx"
            model, _ = convtranspose_as_conv(onnx.load(str(fp32_path)))
            save_onnx(model, convs_path)
            _check_same(fp32_path, convs_path, frames[0])
            output_conv = [n.name for n in model.graph.node if n.op_type == "Conv"][-1:] if float_output else []
            quantize_static(str(convs_path), str(tmp_path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=QUANTISED_OPS,
                            nodes_to_exclude=output_conv)
            model = onnx.load(str(tmp_path))
    finally:
        root.setLevel(level)
    return write_model(model, spec, contract.INT8, out_path), frames


def _check_same(a: Path, b: Path, frame: Frame) -> None:
    """The rewritten fp32 graph must compute what the exported one does (a bug otherwise, not a user error)."""
    with cpu_backend(a, 1) as reference, cpu_backend(b, 1) as rewritten:
        diff = compare(reference, rewritten, [frame], runs=0).max_diff
    if diff > FP32_TOLERANCE:
        raise RuntimeError(f"ConvTranspose→Conv rewrite changed the output by {diff:.2e}")


def kernel_counts(path, threads: int = 1) -> dict[str, int]:
    """Node types of ``path`` as ONNX Runtime's CPU provider runs it (after its graph optimisations): says
    which convolutions run as integer kernels (QLinearConv) and which in float (Conv, ConvTranspose)."""
    import collections

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # the "hardware specific" note on saving an optimised model
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return dict(collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node))


@contextlib.contextmanager
def cpu_backend(path, threads: int | None = None) -> Iterator[Backend]:
    """The runtime's ONNX Runtime CPU backend at fixed threads (default: one per core; no settings tuning,
    which is for the runtime, not a one-off check), closed afterwards."""
    backend = OrtBackend(Path(path), "ort-cpu", threads=threads or os.cpu_count() or 1)
    try:
        yield backend
    finally:
        backend.close()


@dataclass
class Comparison:
    max_diff: float      # max abs output difference of the candidate from the reference
    mean_diff: float
    ms_reference: float  # median ms per frame, timed interleaved
    ms_candidate: float


def compare(reference: Backend, candidate: Backend, frames: list[Frame], *, runs: int = 5) -> Comparison:
    """``candidate`` (e.g. the INT8 model) against ``reference`` (e.g. fp32) on up to 4 of ``frames``, on any two
    backends of one model; then ``runs`` timed frames of each, interleaved (background load hits both alike)."""
    diff = contract.compare_outputs([np.array(candidate.run(*f)) for f in frames[:4]],  # copies: buffers are reused
                                    [np.array(reference.run(*f)) for f in frames[:4]])
    times: dict[str, list[float]] = {"reference": [], "candidate": []}
    for _ in range(runs):
        for key, backend in (("reference", reference), ("candidate", candidate)):
            t = time.perf_counter()
            backend.run(*frames[0])
            times[key].append((time.perf_counter() - t) * 1e3)
    return Comparison(diff.max, diff.mean, float(np.median(times["reference"] or [0.0])),
                      float(np.median(times["candidate"] or [0.0])))
