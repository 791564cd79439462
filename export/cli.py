"""p2p-export: checkpoint → model.onnx (masks as inputs, spec inside) [→ model.engine]."""
from __future__ import annotations

import shlex
from pathlib import Path

import click

from p2p.runtime import cli_options as o
from p2p.runtime import contract
from p2p.runtime.cli_errors import user_errors
from p2p.runtime.errors import UserError
from p2p.runtime.files import output_error
from p2p.runtime.spec import SpecError
from p2p.runtime.web.bundle import build_web_folder, check_web_target

from .onnx_export import ExportError
from .tensorrt_build import Shapes, TensorRTUnavailable, parse_nhw

EXAMPLES = """
\b
Examples:
  p2p-export runs/facades --verify                       # writes runs/facades/model.onnx
  p2p-export runs/facades/checkpoint.pt -o runs/facades/model.fp16.onnx --fp16
  p2p-export runs/facades --trt --shapes 256x256,640x384 --batch 2       # width x height, as --size
  p2p-export runs/facades -o runs/facades/model.engine --trt --fp16 --min 1x256x256 --opt 1x512x512 --max 4x768x1280
  p2p-export runs/facades -o runs/facades/model.int8.onnx --int8 --calib ../shared/data/facades/val
  p2p-export runs/facades --opset 17       # for TensorRT 8.6 (JetPack 6.0) / its trtexec
  p2p-export runs/edges --web runs/edges/web             # + a static web page that runs it (p2p-web serves it)
\b
The ONNX file takes `image` (N,C,H,W in [-1,1]) and one `dropout_mask_k` input
per dropout layer (0 or 1/(1-p); all ones = no noise); H and W are multiples of
2^depth (256 for the paper's 256x256 U-Net). The model spec is in its metadata.
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@o.resolve_aliases
@click.argument("run_or_checkpoint", type=click.Path(path_type=Path))
@o.output_option("ONNX file to write (default: model.onnx beside the checkpoint, where p2p-live looks); with "
                 "--trt a name ending in .engine names the engine (the ONNX goes beside it).",
                 old=("--output",))
@click.option("--verify", is_flag=True,
              help="Compare ONNX Runtime with PyTorch (same masks, batch 1 and 2); fail above the tolerance.")
@click.option("--fp16", is_flag=True,
              help="FP16 weights and compute (inputs/outputs stay fp32); FP16 engine with --trt.")
@click.option("--trt", is_flag=True, help="Also build a TensorRT engine (needs TensorRT and the GPU it will run on).")
@click.option("--shapes", type=o.SIZES, default=None,
              help="--trt: frame sizes the engine must accept, each WxH as --size (opt = the first). "
                   "Default: the training size.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="--trt with --shapes: largest batch.")
@click.option("--min", "min_shape", metavar="NxHxW", help="--trt: smallest input tensor, batch x height x width "
              "(the order of the tensor's shape, as trtexec writes it).")
@click.option("--opt", "opt_shape", metavar="NxHxW", help="--trt: the input tensor shape to tune for.")
@click.option("--max", "max_shape", metavar="NxHxW", help="--trt: largest input tensor, batch x height x width.")
@click.option("--timing-cache", type=click.Path(path_type=Path),
              help="--trt: timing cache file (default ~/.cache/p2p/tensorrt-VERSION.timing-cache).")
@click.option("--workspace", type=click.FloatRange(min=0.1), metavar="GB", help="--trt: builder workspace limit.")
@click.option("--int8", is_flag=True,
              help="INT8 (QDQ) model for ONNX Runtime CPU, calibrated on --calib images; reports its speed "
                   "and difference from fp32.")
@click.option("--calib", type=click.Path(path_type=Path), metavar="DIR",
              help="--int8: folder of frames like those the model will see (up to 32 are used).")
@click.option("--norm", type=click.Choice(["instance", "reduce"]), default=None,
              help="How batch statistics are written (default: instance, one normalisation node; reduce: mean and "
                   "variance spelt out; as fast on ORT CPU, benchmarks/norm_forms.md).")
@click.option("--opset", type=click.Choice(["17", "18"]), default=None,
              help="ONNX opset. 17: the graph TensorRT 8.6's parser reads (JetPack 6.0; export there, or for "
                   "trtexec on such a board). Default 18, or 17 when --trt finds a TensorRT older than 10.")
@click.option("--web", type=click.Path(path_type=Path), metavar="DIR",
              help="Also write DIR: a static web page that runs the model in the browser (onnxruntime-web), "
                   "for any static host; `p2p-web DIR` serves it on localhost.")
@click.option("--web-fp16", is_flag=True,
              help="--web: the page's model stores its weights as float16 (half the download; computed in "
                   "float32; outputs within ~2e-3 of the fp32 model's).")
def main(run_or_checkpoint, out, verify, fp16, trt, shapes, batch, min_shape, opt_shape, max_shape,
         timing_cache, workspace, int8, calib, norm, opset, web, web_fp16):
    """Export a p2p-train checkpoint to ONNX (and optionally a TensorRT engine), dropout preserved.

    RUN_OR_CHECKPOINT is a p2p-train --out folder or its checkpoint.pt.
    """
    if out is None:  # beside the checkpoint: runs/NAME/model.onnx is what p2p-live finds under ./runs
        out = (run_or_checkpoint if run_or_checkpoint.is_dir() else run_or_checkpoint.parent) / "model.onnx"
    onnx_path, engine_path = _paths(out, trt)
    profile = _profile(trt, shapes, batch, min_shape, opt_shape, max_shape)
    if int8 and (fp16 or trt):
        raise click.UsageError("--int8 is for ONNX Runtime CPU; for TensorRT or GPUs use --fp16")
    if int8 != (calib is not None):
        raise click.UsageError("--int8 and --calib DIR go together")
    if web_fp16 and web is None:
        raise click.UsageError("--web-fp16 goes with --web DIR")
    if web is not None:
        with user_errors():  # what the page needs is checked before the export starts, not after it
            check_web_target(web)

    # torch loads here, after the options parsed: --help and usage errors answer at once
    from .exporter import export_checkpoint

    with user_errors():
        try:
            precision = contract.INT8 if int8 else contract.FP16 if fp16 else contract.FP32
            export_checkpoint(run_or_checkpoint, onnx_path, precision=precision,
                              verify=verify, calib=calib, norm=norm, engine=engine_path if trt else None,
                              shapes=profile, timing_cache=timing_cache, workspace_gb=workspace,
                              opset=int(opset) if opset else None, log=_log)
        except TensorRTUnavailable as exc:
            raise ExportError(f"{onnx_path} was written, but no engine: {exc}") from exc
        except OSError as exc:
            if isinstance(exc, UserError):
                raise
            # a file that cannot be written (disk full, read-only, permissions changed mid-way): a full
            # disk's error often names no file, so the output being made is named
            raise output_error(exc, exc.filename or onnx_path) from exc
        if web is not None:
            build_web_folder(onnx_path, web, fp16=web_fp16)
            _log(f"wrote {web}/ (the page, {onnx_path.name}, onnxruntime-web): serve it with {o.runnable('p2p-web')} "
                 f"{shlex.quote(str(web))}")


def _profile(trt: bool, shapes, batch: int, min_shape, opt_shape, max_shape) -> Shapes | None:
    """The engine's shape profile from --shapes or --min/--opt/--max (None: the training size)."""
    profile_given = [s is not None for s in (min_shape, opt_shape, max_shape)]
    if any(profile_given) and not all(profile_given):
        raise click.UsageError("give all three of --min, --opt and --max (or --shapes)")
    if shapes and any(profile_given):
        raise click.UsageError("--shapes and --min/--opt/--max are alternatives; give one")
    if (shapes or any(profile_given)) and not trt:
        raise click.UsageError("--shapes/--min/--opt/--max describe the TensorRT engine: add --trt")
    try:
        if shapes:
            return Shapes.from_sizes([(h, w) for w, h in shapes], batch)
        if min_shape:
            return Shapes(parse_nhw(min_shape), parse_nhw(opt_shape), parse_nhw(max_shape))
    except SpecError as exc:
        raise click.UsageError(str(exc)) from None
    return None


def _log(line: str) -> None:
    """What was written is the result (stdout); the rest is progress (stderr)."""
    click.echo(line, err=not line.startswith("wrote "))


def _paths(output: Path, trt: bool) -> tuple[Path, Path]:
    if output.suffix == ".engine":
        if not trt:
            raise click.UsageError(f"{output} is an engine name: add --trt (or write a .onnx file)")
        return output.with_suffix(".onnx"), output
    return output, output.with_suffix(".engine")


if __name__ == "__main__":
    main()
