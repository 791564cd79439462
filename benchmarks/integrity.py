"""What the checksums cost: every loader of a checkpoint, model.onnx or engine checks one (runtime.integrity,
training.checkpoint). Measured beside what loading costs anyway, interleaved, medians of --repeats.

    python benchmarks/integrity.py                  # the full ngf-64 256² checkpoint and ONNX, and the demo model
    python benchmarks/integrity.py --ngf 16 --size 128 --repeats 3      # quicker

- checkpoint: torch.load alone vs the digest it is checked against (load_checkpoint does both; the same
  digest is computed at save time, beside torch.save), on one thread and on --threads;
- model.onnx: hashing the file (check_onnx_file, memory-mapped; and reading it whole first, as a first
  version did) vs opening an ONNX Runtime CPU session;
- engine: the same hash over the same number of bytes (an engine of this model is about its ONNX's size).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from p2p.runtime.artifacts import demo_model
from p2p.runtime.integrity import check_onnx_bytes, check_onnx_file, seal_onnx, sha256
from p2p.runtime.spec import ModelSpec
from p2p.training.checkpoint import payload_digest, save_checkpoint
from p2p.training.models import Discriminator, Generator, init_weights


def full_state(size: int, ngf: int) -> dict:
    """A checkpoint's content at this size: G, D and both Adam states (one step taken, so the moments exist)."""
    spec = ModelSpec.for_task("paired", size, ngf=ngf)
    G, D = Generator(spec), Discriminator(6, ngf, 70)
    init_weights(G)
    init_weights(D)
    state = {"spec": spec.to_dict(), "generator": G.state_dict(), "discriminator": D.state_dict()}
    for name, net in (("opt_g", G), ("opt_d", D)):
        opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        state[name] = opt.state_dict()
    state.update(iteration=1, epoch=0, seconds=0.0, rng={"torch": torch.get_rng_state()}, config={})
    return state


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turn (A B A B ...) so a busy machine hurts both alike."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k] += timed(fn, 1)
    return {k: statistics.median(v) for k, v in times.items()}


def export(size: int, ngf: int, folder: Path) -> Path:
    from p2p.export.onnx_export import export_onnx

    spec = ModelSpec.for_task("paired", size, ngf=ngf)
    G = Generator(spec)
    init_weights(G)
    return Path(export_onnx(G, spec, folder / f"ngf{ngf}_{size}.onnx"))


def onnx_rows(path: Path, repeats: int, label: str) -> list[str]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    t = interleaved({"read": lambda: check_onnx_bytes(path.read_bytes(), str(path)),
                     "check": lambda: check_onnx_file(path),
                     "session": lambda: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])},
                    repeats)
    verified = "verified" if check_onnx_file(path) else "none"
    return [f"| {label} | {path.stat().st_size / 1e6:.1f} MB | {t['read'] * 1e3:.0f} ms | {t['check'] * 1e3:.0f} ms "
            f"| {t['session'] * 1e3:.0f} ms | {100 * t['check'] / t['session']:.0f} % | {verified} |"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} threads, torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        state = full_state(args.size, args.ngf)
        path = tmp / "checkpoint.pt"
        save_checkpoint(state, path)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        loaded.pop("sha256")
        t = interleaved({"load": lambda: torch.load(path, map_location="cpu", weights_only=True),
                         "digest 1": lambda: payload_digest(loaded, threads=1),
                         "digest": lambda: payload_digest(loaded, threads=args.threads),
                         "save": lambda: torch.save(state, tmp / "plain.pt")}, args.repeats)
        print("\n| checkpoint | size | torch.load | checksum, 1 thread | checksum, "
              f"{args.threads} threads (used) | share of torch.load | torch.save |")
        print("|---|---|---|---|---|---|---|")
        print(f"| ngf {args.ngf}, {args.size}² (G, D, both Adam states) | {path.stat().st_size / 1e6:.0f} MB "
              f"| {t['load'] * 1e3:.0f} ms | {t['digest 1'] * 1e3:.0f} ms | {t['digest'] * 1e3:.0f} ms "
              f"| {100 * t['digest'] / t['load']:.0f} % | {t['save'] * 1e3:.0f} ms |")

        onnx_path = export(args.size, args.ngf, tmp)
        print("\n| model.onnx | size | check, file read whole | check, memory-mapped (used) "
              "| ONNX Runtime CPU session | share | checksum |")
        print("|---|---|---|---|---|---|---|")
        for line in onnx_rows(onnx_path, args.repeats, f"ngf {args.ngf}, {args.size}², fp32"):
            print(line)
        demo = demo_model()
        if demo is not None:  # shipped before checksums: measured on a copy that carries one
            sealed = tmp / "demo.onnx"
            sealed.write_bytes(seal_onnx(demo.read_bytes()))
            for line in onnx_rows(sealed, args.repeats, "demo model (runtime/demo/demo.onnx, with a checksum)"):
                print(line)
        data = onnx_path.read_bytes()
        h = statistics.median(timed(lambda: sha256(data), args.repeats))
        print(f"\nengine: SHA-256 of {len(data) / 1e6:.0f} MB in memory (the bytes TensorRT deserialises anyway): "
              f"{h * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
