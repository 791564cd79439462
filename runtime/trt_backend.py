"""Native TensorRT backend: a p2p engine run with TensorRT's named-tensor Python API and cuda-python.

TensorRT 8.5 and later (JetPack 6.0 ships 8.6, 6.1/6.2 ship 10.3; desktops 10 or 11). No
torch: device memory comes from cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart``
in cuda-python before 12.6.2). Device and pinned host buffers are allocated and bound to
the execution context once per frame size (again only if a larger size arrives), and
everything runs on one CUDA stream: copy in → ``execute_async_v3`` → copy out → synchronise.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from . import contract, install_hints
from .artifacts import ArtifactError, ShapeError, read_engine_meta
from .errors import BackendUnavailable, first_line
from .integrity import check_engine_bytes
from .spec import SpecError

INSTALL_HINT = f"{install_hints.GPU}; {install_hints.JETSON}"
MIN_TENSORRT = (8, 5)  # the named-tensor API (set_input_shape, execute_async_v3) starts there

# numpy types of TensorRT's data types, by name (trt.nptype before 8.5.3 breaks on numpy ≥ 1.24)
NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8,
               "BOOL": np.bool_, "INT64": np.int64}


def _import():
    try:
        import tensorrt as trt  # optional: only engines need it
    except ImportError as exc:
        raise BackendUnavailable(f"native TensorRT backend: the tensorrt package is missing ({exc}): "
                                 f"{INSTALL_HINT}") from None
    if version_tuple(trt.__version__) < MIN_TENSORRT:
        raise BackendUnavailable(f"TensorRT {trt.__version__} is too old for p2p's engines (8.5 or later; JetPack 6 "
                                 "ships 8.6 and 10.3): upgrade to JetPack 6, or run the .onnx file instead")
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6.2
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python (e.g. the 12.2 that matches JetPack 6.0)
        except ImportError as exc:
            raise BackendUnavailable(f"native TensorRT backend: cuda-python is missing ({exc}): "
                                     f"{INSTALL_HINT}") from None
    except (OSError, RuntimeError) as exc:  # a broken install whose libraries cannot load
        raise BackendUnavailable(f"native TensorRT backend: cuda-python cannot load ({first_line(exc)}): "
                                 f"{INSTALL_HINT}") from None
    return trt, cudart


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


NO_DRIVER = ("no NVIDIA driver is installed ({}): install the driver for your GPU (nvidia-smi must work; "
             "CUDA 12 packages need ≥ 525, CUDA 13 ones ≥ 580), or run the .onnx model on the CPU")


def cuda_problem(cudart) -> str | None:
    """Why no CUDA device can be used here, in one line; None when one can.

    Written for every cuda-python p2p meets: without libcuda.so.1 the 12.x runtime bindings
    (12.2, JetPack 6.0's) raise RuntimeError from their driver loader instead of returning an
    error, while newer ones return cudaErrorInsufficientDriver with driver version 0, which
    reads like an old driver but means none. Error codes are compared as integers, whatever
    enum type the bindings return.
    """
    try:
        err, count = cudart.cudaGetDeviceCount()
    except RuntimeError as exc:  # "Failed to dlopen libcuda.so.1"
        return NO_DRIVER.format(first_line(exc, 120))
    codes = cudart.cudaError_t
    err = int(err)
    if err == int(codes.cudaSuccess) and count:
        return None
    if err == int(getattr(codes, "cudaErrorNoDevice", -1)) or err == int(codes.cudaSuccess):
        return ("no CUDA device is visible (CUDA_VISIBLE_DEVICES empty, or no NVIDIA GPU): use the .onnx model on "
                "the CPU instead")
    driver = _version(cudart.cudaDriverGetVersion)
    if not driver:  # what the CUDA runtime reports when libcuda.so.1 is not there at all
        return NO_DRIVER.format("CUDA reports no driver version")
    too_old = {int(getattr(codes, n)) for n in ("cudaErrorInsufficientDriver", "cudaErrorCallRequiresNewerDriver")
               if hasattr(codes, n)}
    if err in too_old:
        return (f"the NVIDIA driver (CUDA {_cuda_version(driver)}) is older than this cuda-python needs (CUDA "
                f"{_cuda_version(_version(cudart.cudaRuntimeGetVersion))}): update the driver (CUDA 13 needs ≥ 580, "
                f"CUDA 12 ≥ 525), or install the packages for your driver's CUDA ({install_hints.GPU_CU12})")
    return f"CUDA cannot start ({_error_name(cudart, err)}): check the driver (nvidia-smi)"


def _version(call) -> int | None:
    """cudaDriverGetVersion / cudaRuntimeGetVersion's number, None where the call fails."""
    try:
        err, number = call()
    except RuntimeError:
        return None
    return int(number) if int(err) == 0 else None


def _error_name(cudart, err) -> str:
    try:
        _, name = cudart.cudaGetErrorName(cudart.cudaError_t(err))
    except Exception:  # an unknown code, or bindings that cannot name it
        return f"CUDA error {err}"
    return name.decode() if isinstance(name, bytes) else str(name)


def _cuda_version(number) -> str:
    """cudaDriverGetVersion's 12060 → "12.6" (None or 0: no driver)."""
    return f"{number // 1000}.{number % 1000 // 10}" if number else "none"


def available() -> bool:
    """tensorrt and cuda-python importable and a CUDA device usable."""
    try:
        _, cudart = _import()
        return cuda_problem(cudart) is None
    except Exception:  # a broken driver install is "not available", not a crash
        return False


class _Cuda:
    """Thin error-checking wrapper: cuda-python returns (error, *results) tuples."""

    def __init__(self, cudart):
        self.rt = cudart

    def __call__(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != int(self.rt.cudaError_t.cudaSuccess):
            raise RuntimeError(f"CUDA error {_error_name(self.rt, int(err))}")
        return rest[0] if len(rest) == 1 else tuple(rest) if rest else None


class _Buffer:
    """One tensor's device memory and pinned host staging memory, sized in bytes."""

    def __init__(self, cuda: _Cuda, nbytes: int):
        self.cuda, self.nbytes = cuda, nbytes
        self.device = cuda(cuda.rt.cudaMalloc(nbytes))
        self.host_ptr = cuda(cuda.rt.cudaMallocHost(nbytes))
        self.host = np.ctypeslib.as_array(ctypes.cast(self.host_ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))

    def view(self, dtype, shape) -> np.ndarray:
        count = int(np.prod(shape))
        return self.host[: count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def free(self) -> None:
        self.cuda(self.cuda.rt.cudaFree(self.device))
        self.cuda(self.cuda.rt.cudaFreeHost(self.host_ptr))


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: Path, device: int = 0):
        self.path = Path(path)
        meta = read_engine_meta(self.path)  # spec and shapes first: clear errors even without a GPU
        self.spec, self.limits, self.precision = meta.spec, meta.shapes, meta.precision
        data = self.path.read_bytes()
        check_engine_bytes(meta.sha256, data, str(self.path))  # a damaged engine is refused before TensorRT reads it
        trt, cudart = _import()
        self._cuda = _Cuda(cudart)
        problem = cuda_problem(cudart)
        if problem:
            raise BackendUnavailable(f"native TensorRT backend: {problem}")
        try:
            self._cuda(cudart.cudaSetDevice(device))
        except RuntimeError as exc:  # e.g. a device index that does not exist
            raise BackendUnavailable(f"native TensorRT backend: CUDA device {device}: {exc}") from None
        if meta.tensorrt_version and meta.tensorrt_version != trt.__version__:
            raise ArtifactError(f"{self.path} was built with TensorRT {meta.tensorrt_version}, this machine has "
                                f"{trt.__version__}: engines only load on the version that built them; rebuild "
                                "it here with p2p-export (or run the .onnx file)")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ArtifactError(f"{self.path}: TensorRT {trt.__version__} cannot load this engine (built with "
                                "another TensorRT version or for another GPU?): rebuild it on this machine with "
                                "p2p-export")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        try:  # an engine lists its tensors in its own order
            contract.check_io(self.spec, inputs, [n for n in names if n not in inputs], str(self.path),
                              ordered=False)
        except SpecError as exc:
            raise ArtifactError(str(exc)) from None
        self.input_names = contract.input_names(self.spec)
        self._dtypes = {n: np.dtype(NUMPY_TYPES[engine.get_tensor_dtype(n).name]) for n in names}
        self._buffers: dict[str, _Buffer] = {}
        self._shape: tuple | None = None
        self._stream = self._cuda(cudart.cudaStreamCreate())

    def check_shape(self, n: int, h: int, w: int) -> None:
        self.limits.check(n, h, w, f"TensorRT engine {self.path.name}")

    def _bind(self, shapes: dict[str, tuple]) -> None:
        """Set input shapes; (re)allocate and bind buffers only when a tensor outgrows its buffer."""
        for name in self.input_names:
            if not self.context.set_input_shape(name, shapes[name]):
                raise ShapeError(f"TensorRT rejected input {name} of shape {shapes[name]}")
        shapes[contract.OUTPUT] = tuple(self.context.get_tensor_shape(contract.OUTPUT))
        for name, shape in shapes.items():
            nbytes = int(np.prod(shape)) * self._dtypes[name].itemsize
            buf = self._buffers.get(name)
            if buf is None or buf.nbytes < nbytes:
                if buf is not None:
                    buf.free()
                buf = self._buffers[name] = _Buffer(self._cuda, nbytes)
                self.context.set_tensor_address(name, int(buf.device))
        self._shape = shapes

    def run(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        n, _, h, w = image.shape
        self.check_shape(n, h, w)
        feeds = dict(zip(self.input_names, [image, *masks]))
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        if self._shape is None or any(self._shape[k] != s for k, s in shapes.items()):
            self._bind(shapes)
        rt, cuda, stream = self._cuda.rt, self._cuda, self._stream
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in feeds.items():
            buf = self._buffers[name]
            staged = buf.view(self._dtypes[name], array.shape)
            np.copyto(staged, array, casting="same_kind")  # fp16 engines take fp16 inputs
            cuda(rt.cudaMemcpyAsync(buf.device, buf.host_ptr, staged.nbytes, h2d, stream))
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError(f"TensorRT failed to run {self.path.name} (see the TensorRT log above)")
        out = self._buffers[contract.OUTPUT]
        result = out.view(self._dtypes[contract.OUTPUT], self._shape[contract.OUTPUT])
        cuda(rt.cudaMemcpyAsync(out.host_ptr, out.device, result.nbytes, d2h, stream))
        cuda(rt.cudaStreamSynchronize(stream))
        return result if result.dtype == np.float32 else result.astype(np.float32)

    def close(self) -> None:
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cuda(self._cuda.rt.cudaStreamDestroy(self._stream))
            self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
