"""Which way of writing batch statistics runs faster in ONNX Runtime CPU?

    OMP_NUM_THREADS=2 python benchmarks/norm_forms.py [--size 256 --ngf 64 --threads 2 --runs 20]

Results: benchmarks/norm_forms.md (the instance form is the default: p2p-export --norm).

Exports the paper's generator once per variant (graph.NORMS), checks both
against PyTorch on the same masks, and prints ms/frame at batch 1 (runs
interleaved) and, from ORT's profiler, the kernel time of everything but the
convolutions: the part the variants change, and a steadier number than wall
time on a shared machine.
"""
from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np


@click.command()
@click.option("--size", default=256, show_default=True)
@click.option("--ngf", default=64, show_default=True)
@click.option("--threads", default=2, show_default=True, help="ORT intra-op threads")
@click.option("--runs", default=20, show_default=True)
def main(size, ngf, threads, runs):
    # torch and the exporter load after the options parse: --help answers at once
    import onnxruntime as ort
    import torch

    from p2p.export.graph import NORMS
    from p2p.export.onnx_export import export_onnx
    from p2p.runtime import contract
    from p2p.runtime.spec import ModelSpec
    from p2p.training.models import Generator, init_weights

    torch.manual_seed(0)
    spec = ModelSpec.for_task("paired", size, ngf=ngf)
    gen = Generator(spec)
    init_weights(gen)
    x = torch.rand(1, spec.in_channels, size, size) * 2 - 1
    masks = contract.draw_masks(spec, np.random.default_rng(0), 1, size, size)
    with torch.no_grad():
        ref = gen.train()(x, [torch.from_numpy(m) for m in masks]).numpy()
    feed = contract.feeds(spec, x.numpy(), masks)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    print(f"ONNX Runtime {ort.__version__} CPU, {threads} intra-op threads, {size}², ngf {ngf}, batch 1, {runs} runs")
    print("| variant | median ms/frame | min ms/frame | non-conv kernels ms/frame | max abs diff vs PyTorch |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        sessions, diffs = {}, {}
        for norm in NORMS:
            path = export_onnx(gen, spec, Path(tmp) / f"{norm}.onnx", norm=norm)
            sessions[norm] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            for _ in range(3):  # warm-up
                out = sessions[norm].run(None, feed)[0]
            diffs[norm] = contract.compare_outputs(out, ref).max
        # interleaved, so load from other processes on a shared machine hits both alike
        times = {norm: [] for norm in NORMS}
        for _ in range(runs):
            for norm, sess in sessions.items():
                t = time.perf_counter()
                sess.run(None, feed)
                times[norm].append((time.perf_counter() - t) * 1e3)
        other = {norm: non_conv_ms(Path(tmp) / f"{norm}.onnx", opts, feed, min(runs, 10), tmp) for norm in NORMS}
    for norm in NORMS:
        print(f"| {norm} | {np.median(times[norm]):.1f} | {min(times[norm]):.1f} | {other[norm]:.1f} "
              f"| {diffs[norm]:.2e} |")


def non_conv_ms(path, opts, feed, runs, tmp) -> float:
    """Kernel time per run of all ops but Conv/ConvTranspose, from ORT's profiler."""
    import onnxruntime as ort

    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tmp) / f"{Path(path).stem}_profile")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    opts.enable_profiling = False
    for _ in range(runs):
        sess.run(None, feed)
    by_op = collections.Counter()
    for event in json.loads(Path(sess.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    conv = sum(v for k, v in by_op.items() if "Conv" in k)
    return (sum(by_op.values()) - conv) / runs / 1e3


if __name__ == "__main__":
    main()
