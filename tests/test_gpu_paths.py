"""The GPU and deployment paths, proven on a CPU machine with fakes.

What each fake stands for is read from the real API sources: ONNX Runtime's
``get_providers()`` after a provider could not start, cuda-python's error codes, TensorRT
8.x's implicit-batch default. benchmarks/gpu_check.py runs the same paths on a real GPU.
"""
from __future__ import annotations

import enum
import importlib.abc
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tomllib
import torch
from conftest import ROOT
from test_runtime import export_tiny

from p2p.runtime import Translator, contract, install_hints, ort_backend, ort_providers, trt_backend
from p2p.runtime.errors import BackendUnavailable
from p2p.training.checkpoint import load_checkpoint
from p2p.training.config import default_data_dir
from p2p.training.trainer import TrainConfig, Trainer, restore_rng

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_tiny("paired", tmp_path_factory.mktemp("gpu"))[0]


class FakeGpuOrt:
    """onnxruntime-gpu on a machine where some providers cannot start.

    ``starts``: the providers that really start. Like ORT, a provider that cannot start is
    skipped (a warning in its log) and the session runs on the next one; ``raises``: ones
    whose creation raises instead (e.g. a CUDA failure inside the provider's constructor).
    ``version``: the Python API of that onnxruntime (read from its onnxruntime_inference_collection.py):
    from 1.23 ``Session.__init__(self, enable_fallback=True)`` and InferenceSession passes
    ``kwargs.get("enable_fallback", 1)`` to it; 1.19–1.22 have ``Session.__init__(self)`` and the keyword
    vanishes into ``**kwargs``. Either way, with the fallback on, a provider that raises is reported
    on stdout ("EP Error ... when using [...]") and retried at once on [CUDA, CPU] (when TensorRT and
    CUDA were asked for) or [CPU], without provider options. ``preload_failures``: what
    ``onnxruntime.preload_dlls()`` (1.21+) prints about libraries it cannot load; None: a build
    without that function. Sessions really run, on the CPU.
    """

    def __init__(self, monkeypatch, starts=("CPUExecutionProvider",), raises=(), version="1.32.0",  # noqa: C901
                 preload_failures=()):
        self.requests: list[list] = []
        self.kwargs: list[dict] = []
        self.events: list[str] = []
        real = ort.InferenceSession
        fake = self
        new_api = tuple(int(p) for p in version.split(".")[:2]) >= (1, 23)

        class Session:
            if new_api:
                def __init__(self, enable_fallback: bool = True):
                    self._enable_fallback = enable_fallback
            else:
                def __init__(self):
                    self._enable_fallback = True

        class InferenceSession(Session):
            def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
                if new_api:
                    super().__init__(enable_fallback=int(kwargs.get("enable_fallback", 1)) == 1)
                else:
                    super().__init__()
                fake.requests.append(providers)
                fake.kwargs.append(kwargs)
                fake.events.append("session")
                names = [p if isinstance(p, str) else p[0] for p in providers]
                if any(n in raises for n in names[:1]):
                    error = RuntimeError(f"CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ({names[0]})")
                    if not self._enable_fallback:
                        raise error
                    retry = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                             if {"TensorrtExecutionProvider", "CUDAExecutionProvider"} <= set(names)
                             else ["CPUExecutionProvider"])
                    print("*************** EP Error ***************")
                    print(f"EP Error {error} when using {providers}")
                    print(f"Falling back to {retry} and retrying.")
                    names = [n for n in retry if n not in raises]
                self._providers = [n for n in names if n in starts]
                self._real = real(path_or_bytes, sess_options, providers=["CPUExecutionProvider"])

            def get_providers(self):
                return self._providers

            def __getattr__(self, name):
                return getattr(self._real, name)

        def preload_dlls(cuda=True, cudnn=True, msvc=True, directory=None):
            fake.events.append("preload")
            for library in preload_failures:
                print(f"Failed to load {library}: cannot open shared object file: No such file or directory")

        monkeypatch.setattr(ort_backend.ort, "get_available_providers", lambda: list(GPU_BUILD))
        monkeypatch.setattr(ort_backend.ort, "InferenceSession", InferenceSession)
        if preload_failures is None:
            monkeypatch.delattr(ort_backend.ort, "preload_dlls", raising=False)
        else:
            monkeypatch.setattr(ort_backend.ort, "preload_dlls", preload_dlls, raising=False)
        monkeypatch.setattr(ort_providers, "_LOADED", {})
        monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # its import loads libnvinfer


# --- issue 19 (1): RNG states are restored from CPU byte tensors, whatever the map location -----------
class CudaByteTensor(torch.Tensor):
    """A checkpoint tensor as torch.load(map_location="cuda") returns it: on the GPU; .cpu() copies it back."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


def strict_rng_setter(seen: dict, key: str):
    """torch.set_rng_state / torch.cuda.set_rng_state: both check for a CPU ByteTensor (at::detail::check_rng_state)
    and raise "RNG state must be a torch.ByteTensor" for anything else, a CUDA tensor included."""
    def set_rng_state(state, device="cuda"):
        if type(state) is not torch.Tensor or state.device.type != "cpu" or state.dtype != torch.uint8:
            raise TypeError("RNG state must be a torch.ByteTensor")
        seen[key] = state
    return set_rng_state


def test_resume_restores_rng_states_loaded_onto_the_gpu(tmp_path, monkeypatch):
    cfg = TrainConfig(data=str(default_data_dir()), out=str(tmp_path), task="edges", size=32, ngf=4, ndf=4,
                      batch_size=2, progress=False)
    trainer = Trainer(cfg)
    trainer.save()
    state = load_checkpoint(tmp_path)
    saved = state["rng"]["torch"].clone()
    state["rng"]["torch"] = state["rng"]["torch"].as_subclass(CudaByteTensor)  # as map_location="cuda" loads it
    seen: dict = {}
    monkeypatch.setattr(torch, "set_rng_state", strict_rng_setter(seen, "torch"))
    Trainer(cfg, resume=state)  # the old code handed the CUDA tensor to set_rng_state: TypeError
    assert torch.equal(seen["torch"], saved)
    # and the CUDA generator's state, on a CUDA device
    monkeypatch.setattr(torch.cuda, "set_rng_state", strict_rng_setter(seen, "cuda"))
    restore_rng({"torch": saved.as_subclass(CudaByteTensor), "cuda": saved.as_subclass(CudaByteTensor)},
                torch.device("cuda", 0))
    assert torch.equal(seen["cuda"], saved)


# --- defect 6: ONNX Runtime providers must not fall back silently ---------------------------------
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-tensorrt"])
def test_an_asked_for_gpu_provider_that_does_not_start_is_an_error(model, monkeypatch, backend):
    FakeGpuOrt(monkeypatch)  # onnxruntime-gpu, but no usable GPU: sessions come up on the CPU
    with pytest.raises(BackendUnavailable, match=f"{backend}.*{ort_providers.PROVIDERS[backend]}.*ort-cpu"):
        Translator(model, backend=backend)


def test_a_provider_that_raises_is_named_not_called_a_corrupt_file(model, monkeypatch):
    FakeGpuOrt(monkeypatch, raises=("CUDAExecutionProvider",))
    with pytest.raises(BackendUnavailable, match="ort-cuda could not start.*CUDA failure 100"):
        Translator(model, backend="ort-cuda")


def test_auto_reports_the_provider_that_really_runs(model, monkeypatch, capsys):
    fake = FakeGpuOrt(monkeypatch)
    tr = Translator(model, backend="auto", noise="off")
    assert tr.backend_name == "ort-cpu"
    assert [s.split(":")[0] for s in tr.backend.skipped] == ["ort-tensorrt", "ort-cuda"]
    assert all(k.get("enable_fallback") == 0 for k in fake.kwargs)  # no silent retry without our options
    assert tr(np.full((64, 64, 3), 100, np.uint8)).shape == (64, 64, 3)
    assert capsys.readouterr().out == ""  # no ORT fallback banner on stdout


def test_auto_on_cuda_without_tensorrt_libraries(model, monkeypatch):
    FakeGpuOrt(monkeypatch, starts=("CUDAExecutionProvider", "CPUExecutionProvider"))
    tr = Translator(model, backend="auto", noise="off")
    assert tr.backend_name == "ort-cuda" and tr.backend.skipped[0].startswith("ort-tensorrt")


def test_tensorrt_provider_gets_a_profile_for_every_input_and_cuda_as_fallback(model, monkeypatch, tmp_path):
    fake = FakeGpuOrt(monkeypatch, starts=tuple(GPU_BUILD))
    tr = Translator(model, backend="ort-tensorrt", fit="pad", size="200x120", trt_cache=tmp_path)
    assert tr.backend_name == "ort-tensorrt"
    providers = fake.requests[-1]
    assert [p if isinstance(p, str) else p[0] for p in providers] == GPU_BUILD  # CUDA, then CPU, behind TensorRT
    assert providers[1][1]["use_tf32"] == "0"
    options = providers[0][1]
    spec, m = tr.spec, tr.spec.multiple  # 64 for the tiny model
    ranges = {}
    for key in ("min", "opt", "max"):
        entries = dict(e.split(":") for e in options[f"trt_profile_{key}_shapes"].split(","))
        assert list(entries) == contract.input_names(spec)  # the image and every mask
        ranges[key] = entries
    # --fit pad into a 200x120 box: multiples of 64 from 64x64 up to 256x128 (the box rounded up)
    assert ranges["min"]["image"] == f"1x3x{m}x{m}" and ranges["max"]["image"] == "1x3x128x256"
    assert ranges["max"]["dropout_mask_0"] == "x".join(map(str, contract.mask_shapes(spec, 1, 128, 256)[0]))
    assert options["trt_fp16_enable"] is False and options["trt_engine_cache_path"] == str(tmp_path)
    for shape in ((45, 200, 3), (120, 120, 3)):  # frames of other sizes stay inside the profile
        frame = np.full(shape, 90, np.uint8)
        _, placement = tr.preprocess(frame)
        assert (1, placement.mh, placement.mw) <= (1, 128, 256) and placement.mh % m == placement.mw % m == 0


# --- issue 19 (5): the GPU providers' libraries are loaded before the session is made ---------------------
class RecordedImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A stand-in ``tensorrt`` package whose import is recorded (the real wheels load libnvinfer on import)."""

    def __init__(self, events: list):
        self.events = events

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "tensorrt" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        self.events.append("import tensorrt")


def test_gpu_providers_get_their_libraries_loaded_first(model, monkeypatch):
    fake = FakeGpuOrt(monkeypatch, starts=tuple(GPU_BUILD))
    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.setattr(sys, "meta_path", [RecordedImport(fake.events), *sys.meta_path])
    assert Translator(model, backend="ort-tensorrt").backend_name == "ort-tensorrt"
    assert fake.events == ["preload", "import tensorrt", "session"]  # preload_dlls() and TensorRT, then the session
    fake = FakeGpuOrt(monkeypatch, starts=tuple(GPU_BUILD))
    assert Translator(model, backend="ort-cuda").backend_name == "ort-cuda" and fake.events == ["preload", "session"]
    fake = FakeGpuOrt(monkeypatch, starts=tuple(GPU_BUILD), preload_failures=None)  # < 1.21 (Jetson's wheels)
    assert Translator(model, backend="ort-cuda").backend_name == "ort-cuda" and fake.events == ["session"]


def test_what_the_gpu_providers_could_not_load_is_said_with_how_to_install_it(model, monkeypatch, capsys):
    # no CUDA wheels: preload_dlls prints what it could not load (cuDNN it skips silently), the session runs on the CPU
    FakeGpuOrt(monkeypatch, preload_failures=("libcublasLt.so.12",))
    with pytest.raises(BackendUnavailable, match=r"Failed to load libcublasLt\.so\.12.*P2P_GPU=cu12 \./install\.sh") as err:
        Translator(model, backend="ort-cuda")
    assert "\n" not in str(err.value)
    FakeGpuOrt(monkeypatch, raises=("TensorrtExecutionProvider",))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed
    with pytest.raises(BackendUnavailable, match=r"tensorrt cannot be imported.*libnvinfer.*P2P_GPU=cu12 \./install"):
        Translator(model, backend="ort-tensorrt")
    assert capsys.readouterr().out == ""  # preload_dlls' own lines do not reach stdout


# --- issue 19 (6): onnxruntime 1.19-1.22 take no enable_fallback, and still retry nothing silently ----------
def test_onnxruntime_before_1_23_does_not_fall_back_silently(model, monkeypatch, capsys):
    fake = FakeGpuOrt(monkeypatch, raises=("CUDAExecutionProvider",), version="1.22.0")
    with pytest.raises(BackendUnavailable, match="ort-cuda could not start.*CUDA failure 100"):
        Translator(model, backend="ort-cuda")
    assert fake.kwargs == [{}]  # not a keyword that 1.22 would drop
    # auto: TensorRT raises; ONNX Runtime's own retry would run CUDA without use_tf32=0; p2p opens CUDA itself
    fake = FakeGpuOrt(monkeypatch, raises=("TensorrtExecutionProvider",), version="1.22.0",
                      starts=("CUDAExecutionProvider", "CPUExecutionProvider"))
    tr = Translator(model, backend="auto", noise="off")
    assert tr.backend_name == "ort-cuda" and "CUDA failure 100" in tr.backend.skipped[0]
    assert fake.requests[-1][0] == ("CUDAExecutionProvider", {"use_tf32": "0"})
    assert capsys.readouterr().out == ""  # the "EP Error ... Falling back" banner is not the user's output
    fake = FakeGpuOrt(monkeypatch, raises=("CUDAExecutionProvider",), version="1.23.0")
    with pytest.raises(BackendUnavailable, match="CUDA failure 100"):
        Translator(model, backend="ort-cuda")
    assert fake.kwargs == [{"enable_fallback": 0}]


# --- defect 8: a driver too old for the CUDA packages is named as such -----------------------------
class FakeCudart:
    """cuda-python's runtime module: calls return (error, value) tuples, errors are a cudaError_t IntEnum.

    ``no_libcuda``: cuda-python 12.x's runtime bindings (12.2, JetPack 6.0's) on a machine without the
    driver: every call raises RuntimeError from the driver loader. Newer bindings instead return
    cudaErrorInsufficientDriver with driver version 0 (``FakeCudart(35, driver=0)``).
    """

    def __init__(self, device_error: int, count: int = 0, driver: int = 12020, runtime: int = 13000,
                 no_libcuda: bool = False):
        self.cudaError_t = enum.IntEnum("cudaError_t", {
            "cudaSuccess": 0, "cudaErrorInsufficientDriver": 35, "cudaErrorCallRequiresNewerDriver": 36,
            "cudaErrorNoDevice": 100, "cudaErrorUnknown": 999})
        self.device_error, self.count, self.driver, self.runtime = device_error, count, driver, runtime
        self.no_libcuda = no_libcuda

    def _result(self, err, value):
        if self.no_libcuda:
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return self.cudaError_t(err), value

    def cudaGetDeviceCount(self):
        return self._result(self.device_error, self.count if self.device_error == 0 else 0)

    def cudaDriverGetVersion(self):
        return self._result(0, self.driver)

    def cudaRuntimeGetVersion(self):
        return self._result(0, self.runtime)

    def cudaGetErrorName(self, err):
        return self._result(0, self.cudaError_t(err).name.encode())


def test_cuda_problems_are_named():
    too_old = trt_backend.cuda_problem(FakeCudart(35, driver=12020, runtime=13000))
    assert "driver (CUDA 12.2) is older than" in too_old and "CUDA 13.0" in too_old and "P2P_GPU=cu12 ./install.sh" in too_old
    assert "no CUDA device" in trt_backend.cuda_problem(FakeCudart(100))
    assert "no CUDA device" in trt_backend.cuda_problem(FakeCudart(0, count=0))
    assert "cudaErrorUnknown" in trt_backend.cuda_problem(FakeCudart(999))
    assert trt_backend.cuda_problem(FakeCudart(0, count=2)) is None


# --- issue 19 (7): no driver, or cuda-python 12.2: one line that says what is missing ---------------------
@pytest.mark.parametrize("cudart", [FakeCudart(35, driver=0), FakeCudart(0, no_libcuda=True)],
                         ids=["cuda-python-12.6+/13", "cuda-python-12.2"])
def test_no_driver_is_named_as_such(cudart, tmp_path, model, monkeypatch):
    line = trt_backend.cuda_problem(cudart)  # 12.2 used to raise its RuntimeError from here
    assert line.startswith("no NVIDIA driver is installed") and "nvidia-smi" in line and "older" not in line
    engine = fake_engine(tmp_path, model)
    monkeypatch.setattr(trt_backend, "_import", lambda: (types.SimpleNamespace(__version__="10.3.0"), cudart))
    with pytest.raises(BackendUnavailable, match="no NVIDIA driver is installed") as err:
        Translator(engine)
    assert "\n" not in str(err.value)
    assert not trt_backend.available()  # where tensorrt and cuda-python import


def fake_engine(tmp_path, model):
    """An engine file with its .json (the bytes are never read: the checks before loading it are tested)."""
    spec = Translator(model).spec
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    (tmp_path / "model.engine.json").write_text(
        '{"spec": %s, "shapes": {"min": [1, 64, 64], "opt": [1, 64, 64], "max": [1, 64, 64]}}' % spec.to_json())
    return engine


def test_engine_on_a_machine_whose_driver_is_too_old(tmp_path, model, monkeypatch):
    engine = fake_engine(tmp_path, model)
    fake_trt = types.SimpleNamespace(__version__="10.3.0")
    monkeypatch.setattr(trt_backend, "_import", lambda: (fake_trt, FakeCudart(35)))
    with pytest.raises(BackendUnavailable, match="driver .* is older than"):
        Translator(engine)


def test_tensorrt_older_than_8_5_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.4.3.1"))
    with pytest.raises(BackendUnavailable, match="TensorRT 8.4.3.1 is too old.*JetPack 6"):
        trt_backend._import()


def test_gpu_extras_are_pinned_per_cuda_major():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not any(d.startswith("onnxruntime") for d in project["dependencies"])  # from an extra: never both
    assert extras["cpu"] == ["onnxruntime>=1.18"]
    for major, ort_pin, trt_pin in (("12", ">=1.23,<1.27", "tensorrt-cu12"), ("13", ">=1.27", "tensorrt-cu13")):
        deps = extras[f"gpu-cu{major}"]
        # the CUDA/cuDNN wheels with it (issue 19, item 5), and enable_fallback from 1.23 on (item 6)
        assert f"onnxruntime-gpu[cuda,cudnn]{ort_pin}" in deps, deps
        assert any(d.startswith(trt_pin) and "<11" in d for d in deps), deps
        cuda_python = next(d for d in deps if d.startswith("cuda-python"))
        assert f"<{int(major) + 1}" in cuda_python, cuda_python
        assert all(">=" in d for d in deps), deps  # nothing left to resolve to whatever is newest
    readme = (ROOT / "README.md").read_text()
    assert "P2P_GPU=cu12" in readme and "P2P_GPU=cu13" in readme and "JetPack 6" in readme


# --- defect 12: install.sh never leaves onnxruntime and onnxruntime-gpu side by side ------------------
def run_install(tmp_path: Path, installed: set[str], env: dict, cv2_loads: bool = True) -> list[str]:
    """install.sh against a stand-in venv python that logs every pip call and answers `pip show` (and
    `import cv2`: fails with ``cv2_loads=False``, as opencv-python does without libGL)."""
    work = tmp_path / "checkout"
    work.mkdir(parents=True)
    (work / "install.sh").write_text((ROOT / "install.sh").read_text())
    venv_bin = work / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    log = tmp_path / "pip.log"
    (venv_bin / "python").write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  "-m pip show -q "*) for p in {' '.join(sorted(installed)) or 'none'}; do [ "$p" = "$5" ] && exit 0; done; exit 1 ;;
  "-c import cv2") exit {0 if cv2_loads else 1} ;;
esac
exit 0
""")
    (venv_bin / "python").chmod(0o755)
    result = subprocess.run(["bash", str(work / "install.sh")], cwd=work, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.removeprefix("-m pip ") for line in log.read_text().splitlines()]


def test_install_sh_swaps_onnxruntime_builds_cleanly(tmp_path):
    calls = run_install(tmp_path / "gpu", {"onnxruntime"}, {"P2P_GPU": "cu12", "P2P_TORCH": "keep"})
    assert "uninstall -q -y onnxruntime" in calls
    assert "install -q -e .[gpu-cu12,gui,test]" in calls
    restore = "install -q --force-reinstall --no-deps onnxruntime-gpu"  # its shared files restored
    assert restore in calls and calls.index(restore) > calls.index("install -q -e .[gpu-cu12,gui,test]")
    assert not any("torch" in c for c in calls)  # P2P_TORCH=keep: the CUDA torch stays
    calls = run_install(tmp_path / "cpu", set(), {"P2P_TORCH": "cpu"})
    assert "install -q -e .[cpu,gui,test]" in calls and "install -q torch==2.13.0" in calls
    assert not any("uninstall" in c or "force-reinstall" in c for c in calls)
    bad = subprocess.run(["bash", str(ROOT / "install.sh")], env={**os.environ, "P2P_GPU": "cu11"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "cu12 or cu13" in bad.stderr


# --- issue 19 (2): every install hint runs as printed from a checkout; the distribution is not "p2p" -------
OLD_HINT = re.compile(r"p2p\[|pip install (-U |--upgrade )?['\"]?p2p(?![-\w])")


def test_install_hints_install_this_checkout_never_the_pypi_project_named_p2p(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == install_hints.DISTRIBUTION != "p2p"  # "p2p" on PyPI is someone else's code
    assert {"p2p-train", "p2p-export", "p2p-live"} <= set(project["scripts"])  # the commands keep their names
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    stale = [f"{name}:{n}: {line.strip()}" for name in tracked if name.endswith((".py", ".md", ".sh", ".toml"))
             and name != "runtime/install_hints.py" and (ROOT / name).is_file()
             for n, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
             if OLD_HINT.search(line)]
    assert not stale, "hints that install PyPI's unrelated p2p:\n" + "\n".join(stale)
    # what the hints name exists: install.sh takes P2P_GPU=cu12/cu13, the extras are in pyproject
    extras = project["optional-dependencies"]
    hints = " ".join((install_hints.GPU, install_hints.GPU_CU12, install_hints.ORT))
    majors = set(re.findall(r"P2P_GPU=(cu\d+) \./install\.sh", hints))
    assert majors == {"cu12", "cu13"}
    for major in majors:
        assert f"gpu-{major}" in extras
        assert f"install -q -e .[gpu-{major},gui,test]" in run_install(tmp_path / major, set(),
                                                                     {"P2P_GPU": major, "P2P_TORCH": "keep"})
    assert all(extra in extras for extra in re.findall(r'pip install -e "\.\[([\w-]+)\]"', hints))
    # a stale install under the old name (or PyPI's p2p) is removed before this one goes in
    calls = run_install(tmp_path / "stale", {"p2p"}, {"P2P_TORCH": "keep"})
    assert calls.index("uninstall -q -y p2p") < calls.index("install -q -e .[cpu,gui,test]")


# --- defect 7: the GPU check is one command, and its CPU dry run keeps it from rotting -----------------
@pytest.mark.slow
def test_gpu_check_cpu_dry_run():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-dry-run"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    for name in ("amp-bf16", "amp-fp16", "channels-last", "resume-across-amp", "resume-exact", "ddp-1-rank", "parity",
                 "export-from-gpu", "opset17", "fp16-norm-onnx", "ort-fallback", "install-name"):
        assert f"PASS {name}:" in result.stdout, result.stdout
    for name in ("tensorrt-backend", "tensorrt-opset17", "tensorrt-fp16-norm", "ort-cuda", "ort-tensorrt"):
        assert f"SKIP {name}: no CUDA GPU" in result.stdout, result.stdout
    assert "FAIL" not in result.stdout
    header = result.stdout.splitlines()[0]  # what gpu_check.md records: date and versions
    assert "dry run, 20" in header and "torch 2." in header and "onnxruntime 1." in header


# --- issue 19 (8): the check runs with whatever is installed ------------------------------------------
BLOCKING_RUN = """
import importlib.abc, importlib.util, runpy, sys
BLOCKED = {blocked!r}
def blocked(name):
    return name in BLOCKED or (name.split(".")[0] in BLOCKED and name.split(".")[0] != "p2p")
class Block(importlib.abc.MetaPathFinder):  # import X fails as for a package that is not installed
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
real_find_spec = importlib.util.find_spec  # and find_spec answers None, as it does then
importlib.util.find_spec = lambda name, package=None: None if blocked(name) else real_find_spec(name, package)
sys.argv = ["gpu_check.py", *{argv!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_gpu_check_runs_without_the_export_extras_on_a_bare_checkout():
    """A GPU image with torch but without onnxconverter-common, TensorRT or cuda-python, and p2p not
    pip-installed: the torch checks run, each check that cannot run says SKIP and why (the old check
    imported p2p.export, and with it onnxconverter_common, before any check)."""
    checks = "amp-fp16,resume-exact,export-from-gpu,fp16-norm-onnx,tensorrt-backend,cuda-driver,ort-fallback"
    code = BLOCKING_RUN.format(blocked={"p2p", "onnxconverter_common", "tensorrt", "cuda"},
                               argv=["--cpu-dry-run", "--only", checks],
                               script=str(ROOT / "benchmarks" / "gpu_check.py"))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    out = result.stdout
    assert "PASS amp-fp16:" in out and "PASS resume-exact:" in out and "PASS ort-fallback:" in out
    assert "SKIP export-from-gpu: onnxconverter_common not installed" in out
    assert "SKIP fp16-norm-onnx: onnxconverter_common not installed" in out
    assert "SKIP tensorrt-backend: no CUDA GPU" in out and "SKIP cuda-driver: cuda-python not installed" in out
    assert "FAIL" not in out
