"""The one command for a GPU machine: do p2p's CUDA paths work here? PASS/FAIL/SKIP lines, under 5 minutes.

    python benchmarks/gpu_check.py [--out benchmarks/gpu_check.md]
    python benchmarks/gpu_check.py --cpu-dry-run        # the same checks on the CPU (the test suite runs this)

It runs with whatever is installed: nothing optional is imported before a check that needs
it, and a check whose packages or hardware are missing says SKIP and why (a GPU image with
torch alone still runs every torch check). Each check on a tiny model unless said otherwise;
the issue-19 item it proves on real hardware in brackets:

- amp-bf16, amp-fp16: training steps under autocast (fp16 with a GradScaler) give finite
  losses and keep fp32 weights; channels-last: a training step in channels_last memory format;
- resume-across-amp: a checkpoint loaded with map_location=<the GPU> resumes under the other
  precision, both ways [1];
- resume-exact: with --deterministic, 2 steps + save + load onto the GPU + 2 steps equal 4
  steps bit for bit, weights and RNG [1];
- ddp-1-rank: a 1-rank NCCL process group (gloo on the CPU), DistributedDataParallel-wrapped
  nets with SyncBatchNorm, their collectives and save();
- parity: the paper's generator on CUDA vs the CPU, TF32 off, same masks;
- export-from-gpu: p2p-export's pipeline on a checkpoint trained on the GPU, its ONNX output on
  ONNX Runtime CPU against the generator on the CPU;
- opset17: the opset-17 graph holds nothing TensorRT 8.6 rejects and computes what opset 18
  does [3]; tensorrt-opset17: TensorRT here builds it and matches ONNX Runtime CPU [3];
- fp16-norm-onnx: the FP16 ONNX keeps every normalisation node fp32 and stays within the FP16
  tolerance [4]; tensorrt-fp16-norm: an FP16 engine of the reduce form, pre-norm activations
  in the hundreds, stays within the FP16 tolerance [4];
- tensorrt-backend: an fp32 engine built by p2p-export's builder, run by the native backend at
  two frame sizes (its buffers grow), against ONNX Runtime on the CPU;
- ort-cuda, ort-tensorrt: ONNX Runtime's CUDA / TensorRT provider, asserted to be the one that
  ran, against ONNX Runtime CPU [5]; ort-fallback: the installed onnxruntime is driven without
  a silent fallback (enable_fallback from 1.23, the caught retry before) [6];
- cuda-driver: cuda-python sees the driver, or says in one line what is missing [7];
- install-name: p2p is installed as p2p-pix2pix, and PyPI's unrelated p2p is not here [2].

Exit 1 if any FAILs. --out also writes the results as Markdown, with the date, GPU and versions.
The checks are in gpu_check_training.py and gpu_check_runtime.py, their harness in gpu_check_harness.py.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the check modules beside this file (also under runpy)
import gpu_check_runtime  # noqa: E402
import gpu_check_training  # noqa: E402
from gpu_check_harness import Context, Skip, installed  # noqa: E402

CHECKS = gpu_check_training.CHECKS + gpu_check_runtime.CHECKS  # in this order

VERSIONS = ("torch", "onnx", "onnxscript", "onnxconverter_common", "onnxruntime", "tensorrt", "cuda")


def bootstrap_p2p() -> None:
    """Import p2p from this checkout even where the package is not pip-installed (a bare GPU box).

    Each subpackage's __init__ imports nothing optional (p2p.export's names load lazily), so
    nothing optional is imported before a check asks for it.
    """
    try:
        import p2p.runtime.spec  # noqa: F401  (torch-free: p2p is installed)
        return
    except ImportError:  # not installed (or PyPI's unrelated p2p is): this checkout's folders
        for name in [n for n in sys.modules if n == "p2p" or n.startswith("p2p.")]:
            del sys.modules[name]
    root = Path(__file__).resolve().parents[1]
    pkg = types.ModuleType("p2p")
    pkg.__path__ = []
    sys.modules["p2p"] = pkg
    for sub in ("runtime", "training", "export", "evaluation", "video"):
        spec = importlib.util.spec_from_file_location(
            f"p2p.{sub}", root / sub / "__init__.py", submodule_search_locations=[str(root / sub)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"p2p.{sub}"] = module
        spec.loader.exec_module(module)
        setattr(pkg, sub, module)


def versions() -> str:
    """What is installed, for the header: the package versions and onnxruntime's providers."""
    found = []
    for name in VERSIONS:
        if not installed(name):
            continue
        for module_name in (("cuda.bindings", "cuda") if name == "cuda" else (name,)):
            try:
                module = __import__(module_name, fromlist=["__version__"])
            except Exception as exc:  # missing part, or installed but broken: the checks will say more
                error = type(exc).__name__
                continue
            found.append(f"{'cuda-python' if name == 'cuda' else name} {getattr(module, '__version__', '?')}")
            break
        else:
            found.append(f"{name} (cannot import: {error})")
    if installed("onnxruntime"):
        try:
            import onnxruntime as ort
            found.append("ORT providers " + "/".join(p.removesuffix("ExecutionProvider")
                                                     for p in ort.get_available_providers()))
        except Exception:
            pass
    return ", ".join(found)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="run the checks on the CPU (no GPU needed)")
    ap.add_argument("--only", help="comma-separated check names")
    ap.add_argument("--out", help="also write the results as Markdown here")
    args = ap.parse_args(argv)

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: resume-exact's --deterministic
    bootstrap_p2p()
    if not installed("torch"):
        print("FAIL torch: not installed (install PyTorch for your CUDA first: see README, GPU machines)")
        return 1
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("FAIL cuda: torch.cuda.is_available() is False (use --cpu-dry-run on a machine without a GPU)")
        return 1
    device = "cpu" if args.cpu_dry_run else "cuda"
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()}), dry run"
    header = (f"p2p gpu_check on {where}, {datetime.date.today().isoformat()}: python {platform.python_version()}, "
              f"{versions()}")
    print(header, flush=True)
    wanted = set(args.only.split(",")) if args.only else None
    rows, failed, start = [], 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device, Path(tmp))
        for name, run in CHECKS:
            if wanted and name not in wanted:
                continue
            t = time.perf_counter()
            try:
                verdict, detail = "PASS", run(ctx)
            except Skip as exc:
                verdict, detail = "SKIP", str(exc)
            except Exception as exc:  # a failed check must not hide the others
                verdict, detail = "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                failed += 1
                traceback.print_exc(limit=3)
            rows.append((verdict, name, detail, time.perf_counter() - t))
            print(f"{verdict} {name}: {detail} ({rows[-1][3]:.1f} s)", flush=True)
    total = time.perf_counter() - start
    print(f"{'FAILED' if failed else 'OK'}: {failed} failed, {sum(r[0] == 'PASS' for r in rows)} passed, "
          f"{sum(r[0] == 'SKIP' for r in rows)} skipped in {total:.0f} s")
    if args.out:
        lines = [f"## {header}", "", "| check | result | detail | seconds |", "|---|---|---|---|"]
        lines += [f"| {name} | {verdict} | {detail} | {sec:.1f} |" for verdict, name, detail, sec in rows]
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
