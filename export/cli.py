"""p2p-export: checkpoint → model.onnx (masks as inputs, spec inside) [→ model.engine]."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from p2p.runtime.spec import SpecError

EXAMPLES = """
\b
Examples:
  p2p-export runs/facades -o model.onnx --verify
  p2p-export runs/facades/checkpoint.pt -o model.onnx --fp16
  p2p-export runs/facades -o model.onnx --trt --shapes 256x256,512x512 --batch 2
  p2p-export runs/facades -o model.engine --trt --fp16 --min 1x256x256 --opt 1x512x512 --max 4x768x1280
  p2p-export runs/facades -o model.int8.onnx --int8 --calib data/facades/val
\b
The ONNX file takes `image` (N,C,H,W in [-1,1]) and one `dropout_mask_k` input
per dropout layer (0 or 1/(1-p); all ones = no noise); H and W are multiples of
2^depth (256 for the paper's 256x256 U-Net). The model spec is in its metadata.
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_or_checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("model.onnx"), show_default=True,
              help="ONNX file to write; with --trt a name ending in .engine names the engine "
                   "(the ONNX goes beside it).")
@click.option("--verify", is_flag=True,
              help="Compare ONNX Runtime with PyTorch (same masks, batch 1 and 2); fail above the tolerance.")
@click.option("--fp16", is_flag=True,
              help="FP16 weights and compute (inputs/outputs stay fp32); FP16 engine with --trt.")
@click.option("--trt", is_flag=True, help="Also build a TensorRT engine (needs TensorRT and the GPU it will run on).")
@click.option("--shapes", metavar="HxW[,HxW...]",
              help="--trt: frame sizes the engine must accept (opt = the first). Default: the training size.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="--trt with --shapes: largest batch.")
@click.option("--min", "min_shape", metavar="NxHxW", help="--trt: smallest batch x height x width.")
@click.option("--opt", "opt_shape", metavar="NxHxW", help="--trt: the shape to tune for.")
@click.option("--max", "max_shape", metavar="NxHxW", help="--trt: largest batch x height x width.")
@click.option("--timing-cache", type=click.Path(path_type=Path),
              help="--trt: timing cache file (default ~/.cache/p2p/tensorrt-VERSION.timing-cache).")
@click.option("--workspace", type=click.FloatRange(min=0.1), metavar="GB", help="--trt: builder workspace limit.")
@click.option("--int8", is_flag=True,
              help="INT8 (QDQ) model for ONNX Runtime CPU, calibrated on --calib images; reports its speed "
                   "and difference from fp32.")
@click.option("--calib", type=click.Path(path_type=Path), metavar="DIR",
              help="--int8: folder of frames like those the model will see (up to 32 are used).")
@click.option("--norm", type=click.Choice(["instance", "reduce"]), default=None,
              help="How batch statistics are written (default: instance, the faster in ORT).")
def main(run_or_checkpoint, output, verify, fp16, trt, shapes, batch, min_shape, opt_shape, max_shape,
         timing_cache, workspace, int8, calib, norm):
    """Export a p2p-train checkpoint to ONNX (and optionally a TensorRT engine), dropout preserved.

    RUN_OR_CHECKPOINT is a p2p-train --out folder or its checkpoint.pt.
    """
    from p2p.training.checkpoint import CheckpointError, load_generator

    from .onnx_export import ExportError, build_onnx, check_graph, check_writable, save_onnx, set_metadata
    from .tensorrt_build import Shapes, TensorRTUnavailable, build_engine, parse_nhw, parse_sizes

    onnx_path, engine_path = _paths(output, trt)
    profile_given = [s is not None for s in (min_shape, opt_shape, max_shape)]
    if any(profile_given) and not all(profile_given):
        raise click.UsageError("give all three of --min, --opt and --max (or --shapes)")
    if shapes and any(profile_given):
        raise click.UsageError("--shapes and --min/--opt/--max are alternatives; give one")
    if (shapes or any(profile_given)) and not trt:
        raise click.UsageError("--shapes/--min/--opt/--max describe the TensorRT engine: add --trt")
    if int8 and (fp16 or trt):
        raise click.UsageError("--int8 is for ONNX Runtime CPU; for TensorRT or GPUs use --fp16")
    if int8 != (calib is not None):
        raise click.UsageError("--int8 and --calib DIR go together")

    try:
        generator, spec, _ = load_generator(run_or_checkpoint)
        check_writable(onnx_path)
        if trt:
            check_writable(engine_path)
            if shapes:
                profile = Shapes.from_sizes(spec, parse_sizes(shapes), batch).check(spec)
            elif min_shape:
                profile = Shapes(parse_nhw(min_shape), parse_nhw(opt_shape), parse_nhw(max_shape)).check(spec)
            else:
                profile = Shapes.single(spec).check(spec)
        if int8:
            from .int8 import calibration_inputs
            calibration_inputs(calib, spec, limit=1)  # a wrong folder fails now, not after the export

        click.echo(f"exporting {spec.generator} generator (depth {spec.depth}, ngf {spec.ngf}, "
                   f"{spec.dropout_blocks} dropout masks) to {onnx_path} ...")
        model32 = build_onnx(generator, spec, norm=norm)
        if int8:
            _int8(generator, spec, model32, onnx_path, calib, verify)
            return
        model = model32
        if fp16:
            from .fp16 import to_fp16
            model = to_fp16(model32)
        set_metadata(model, spec, "fp16" if fp16 else "fp32")
        check_graph(model, spec)
        save_onnx(model, onnx_path)
        _wrote(onnx_path, spec, "fp16" if fp16 else "fp32")
        if verify:
            _verify(onnx_path, generator)

        if trt:
            _build(onnx_path, engine_path, model32, spec, profile, fp16, timing_cache, workspace, build_engine)
            click.echo(f"wrote {engine_path} and {engine_path.name}.json")
    except TensorRTUnavailable as exc:
        raise click.ClickException(f"{onnx_path} was written, but no engine: {exc}") from None
    except (CheckpointError, SpecError, ExportError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # disk full, permissions changed mid-way
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}") from None


def _wrote(path: Path, spec, precision: str) -> None:
    click.echo(f"wrote {path} ({precision}, {path.stat().st_size / 1e6:.1f} MB); "
               f"inputs: image {_dims(spec.in_channels)}"
               + "".join(f", {n} {_mask_dims(spec, k)}" for k, n in enumerate(spec.mask_names())))


def _verify(path: Path, generator) -> None:
    from .verify import verify_onnx

    result = verify_onnx(path, generator)
    for line in result.lines():
        click.echo("  " + line)
    result.check()


def _int8(generator, spec, model32, onnx_path, calib, verify) -> None:
    """Quantise from an fp32 file (verified against PyTorch if asked), then report what INT8 costs."""
    from .int8 import compare, quantize_int8
    from .onnx_export import save_onnx, set_metadata

    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "model.fp32.onnx"
        set_metadata(model32, spec, "fp32")
        save_onnx(model32, fp32_path)
        if verify:
            _verify(fp32_path, generator)
        _, feeds = quantize_int8(fp32_path, onnx_path, calib)
        _wrote(onnx_path, spec, "int8")
        r = compare(fp32_path, onnx_path, feeds)
    click.echo(f"  int8 vs fp32 on {min(len(feeds), 4)} calibration frames: max abs diff {r['max_diff']:.3f}, "
               f"mean {r['mean_diff']:.4f}; ONNX Runtime CPU {r['ms_fp32']:.1f} → {r['ms_int8']:.1f} ms/frame")


def _build(onnx_path, engine_path, model32, spec, profile, fp16, timing_cache, workspace, build_engine):
    """TensorRT 10 builds FP16 from an fp32 ONNX + flag; 11 needs the FP16 ONNX. Give it both."""
    from .onnx_export import save_onnx, set_metadata

    kwargs = dict(shapes=profile, fp16=fp16, timing_cache=timing_cache, workspace_gb=workspace,
                  log=lambda m: click.echo(m))
    if not fp16:
        return build_engine(onnx_path, engine_path, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "model.fp32.onnx"
        set_metadata(model32, spec, "fp32")
        save_onnx(model32, fp32_path)
        return build_engine(fp32_path, engine_path, fp16_onnx_path=onnx_path, **kwargs)


def _paths(output: Path, trt: bool) -> tuple[Path, Path]:
    if output.suffix == ".engine":
        if not trt:
            raise click.UsageError(f"{output} is an engine name: add --trt (or write a .onnx file)")
        return output.with_suffix(".onnx"), output
    return output, output.with_suffix(".engine")


def _dims(channels: int) -> str:
    return f"(N,{channels},H,W)"


def _mask_dims(spec, k: int) -> str:
    scale = 2 ** (spec.depth - 1 - k)
    return f"(N,{spec.encoder_channels()[spec.depth - 2 - k]},H/{scale},W/{scale})"


if __name__ == "__main__":
    main()
