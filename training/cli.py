"""p2p-train: train pix2pix as the paper describes it."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

import click

from p2p.runtime import cli_options as o
from p2p.runtime.cli_errors import user_errors
from p2p.runtime.pairs import LAYOUTS
from p2p.runtime.preprocess import PREPROCESS
from p2p.runtime.sizes import canonical_size
from p2p.runtime.spec import BLOCKS

from .config import OBJECTIVES, PATCH_SIZES, ConfigError, TrainConfig, world_from_env

EXAMPLE = """
\b
Examples:
  p2p-train --out runs/demo --size 128 --ngf 16 --ndf 16 --epochs 100 --epochs-decay 100   # embedded clips, edges→photo
  p2p-train --data ../shared/data/facades --direction BtoA --out runs/facades   # labels→photo, the paper's setup
  p2p-train --data photos/ --task colorize --out runs/color
  p2p-train --data photos/ --task edges --size 384x256 --out runs/edges-3x2   # 3:2 photos at their own aspect
  p2p-train --teacher runs/facades --block separable --ngf 32 --out runs/facades-fast   # a CPU student
  p2p-train --out runs/facades --resume                                  # continue exactly where it stopped

Ctrl-C or SIGTERM (docker stop, Kubernetes, Slurm) finishes the step, saves and says how to
resume; a second one stops at once. The last checkpoint is intact after any interruption.
Exit status: 0 done, 1 error, 2 bad flags, 130 stopped by SIGINT, 143 stopped by SIGTERM.
"""


def _config_defaults() -> dict:
    """TrainConfig's defaults: the one place p2p-train's defaults are written."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


D = _config_defaults()


@click.command(help="Train a pix2pix generator on paired images.\n" + EXAMPLE,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder (with train/ and val/, or the images themselves). Default: the embedded clips.")
@o.output_option("Run folder: checkpoint, log, samples, loss curve.", default=Path("runs/default"), file_okay=False)
@click.option("--task", type=click.Choice(["paired", "edges", "colorize"]), default=D["task"], show_default=True,
              help="paired: A|B images or A/ B/ folders; edges: Canny edges→photo; colorize: L→ab (from photos).")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default=D["direction"], show_default=True,
              help="Which half of each pair is the input (BtoA: labels→photo on facades, as in the paper).")
@click.option("--layout", type=click.Choice(LAYOUTS), default=D["layout"], show_default=True,
              help="aligned: one A|B image per pair; folders: A/ and B/ with matching names; photos: for --task "
                   "edges/colorize.")
@o.size_option("Training size, width first (384x256, 512x256, 1024x512). The U-Net's depth follows from the "
               "shorter side, every side a multiple of 2^depth (runtime/sizes.py; a size it cannot take is refused "
               "with the nearest ones it can):", default=D["size"])
@click.option("--preprocess", type=click.Choice(PREPROCESS), default=D["preprocess"], show_default=True,
              help="resize-crop: resize to 286/256 of --size then random crop (the paper's jitter); scale-width-crop: "
                   "scale the width keeping the aspect, then random crop; crop: random crops at native resolution.")
@click.option("--batch-size", type=click.IntRange(1, 64), default=D["batch_size"], show_default=True,
              help="The paper uses 1 to 10.")
@click.option("--epochs", type=click.IntRange(0), default=D["epochs"], show_default=True,
              help="Epochs at constant LR.")
@click.option("--epochs-decay", type=click.IntRange(0), default=D["epochs_decay"], show_default=True,
              help="Epochs of linear LR decay to zero.")
@click.option("--iters", type=click.IntRange(1), default=D["iters"], help="Stop after this many iterations in total.")
@click.option("--ngf", type=click.IntRange(1), default=D["ngf"], show_default=True,
              help="Generator width: filters in its first layer (the paper's 64; 16-32 for a fast student).")
@click.option("--ndf", type=click.IntRange(1), default=D["ndf"], show_default=True,
              help="Discriminator width: filters in its first layer.")
@click.option("--generator", type=click.Choice(["unet", "encdec"]), default=D["generator"], show_default=True,
              help="unet: skip connections (the paper's); encdec: the plain encoder-decoder of its ablation.")
@click.option("--block", type=click.Choice(BLOCKS), default=D["block"], show_default=True,
              help="Generator layers: conv (the paper's) or separable (depthwise-separable, resize-convolution "
                   "upsampling: several times faster on CPUs; meant for --teacher students).")
@click.option("--patch", type=click.Choice([str(p) for p in PATCH_SIZES]), default=str(D["patch"]),
              show_default=True, help="PatchGAN receptive field: 1 = PixelGAN, 286 = ImageGAN.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default=D["objective"], show_default=True,
              help="Loss terms: the paper's l1+cgan, or its ablations (gan: D does not see the input).")
@click.option("--lambda-l1", type=float, default=D["lambda_l1"], show_default=True,
              help="Weight of the L1 term (the paper's 100).")
@click.option("--unconditional", is_flag=True, help="D sees only the output, not the (input, output) pair.")
@click.option("--num-d", type=click.IntRange(1, 3), default=D["num_d"], show_default=True,
              help="Discriminators: the same PatchGAN at full, 1/2 and 1/4 resolution, losses summed (pix2pixHD); "
                   "1 is the paper's.")
@click.option("--lambda-fm", type=click.FloatRange(0), default=D["lambda_fm"], show_default=True,
              help="Weight of the discriminator feature-matching L1 loss (pix2pixHD uses 10); 0 is the paper's.")
@click.option("--lr", type=float, default=D["lr"], show_default=True, help="Adam learning rate (G and D).")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly (flags not given are taken from it).")
@click.option("--overwrite", is_flag=True,
              help="Start again in an --out that holds a run: deletes its checkpoint.pt, checkpoint.prev.pt, "
                   "log.jsonl, loss.png, config.json, samples/iter_*.png and tensorboard/ event files (other files, "
                   "e.g. an exported model.onnx, stay). Without it (or --resume) such a folder is refused.")
@o.device_option(default=D["device"])
@click.option("--amp/--no-amp", default=D["amp"], show_default=True, help="Mixed precision on CUDA (ignored on CPU).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format (helps on tensor-core GPUs).")
@click.option("--deterministic", is_flag=True,
              help="Deterministic algorithms, so that --resume is bit-exact on CUDA too (slower there; CPU runs "
                   "are deterministic already).")
@click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
              help="Processes (GPUs) on this machine: launches torchrun with DistributedDataParallel.")
@click.option("--sync-bn", is_flag=True, help="BatchNorm statistics over the global batch of all processes.")
@o.seed_option("Seeds weights, data order, crops and dropout.", default=D["seed"])
@click.option("--workers", type=click.IntRange(0), default=D["workers"], show_default=True,
              help="Data-loading processes.")
@click.option("--save-every", type=click.IntRange(1), default=D["save_every"], show_default=True,
              help="Checkpoint every N iterations.")
@click.option("--sample-every", type=click.IntRange(1), default=D["sample_every"], show_default=True,
              help="Sample grid and validation L1 every N iterations.")
@click.option("--log-every", type=click.IntRange(1), default=D["log_every"], show_default=True,
              help="A line in log.jsonl (and the progress bar) every N iterations.")
@click.option("--teacher", type=click.Path(path_type=Path), default=D["teacher"], metavar="RUN_OR_CHECKPOINT",
              help="Distil: train this (narrower, --ngf) generator from a trained teacher. Data, task, direction, "
                   "size and generator come from the teacher's run unless given.")
@click.option("--teacher-noise", type=click.Choice(["off", "per-frame"]), default=D["teacher_noise"],
              show_default=True,
              help="--teacher: the teacher's dropout while it teaches (off: its deterministic translation).")
@click.option("--lambda-teacher", type=float, default=D["lambda_teacher"], show_default=True,
              help="--teacher: weight of L1(student output, teacher output).")
@click.option("--lambda-feat", type=float, default=D["lambda_feat"], show_default=True,
              help="--teacher: weight of the decoder-feature distillation (learned 1x1 maps onto the teacher's).")
@click.option("--teacher-d/--no-teacher-d", default=D["teacher_d"], show_default=True,
              help="--teacher: start the discriminator from the teacher's (when --ndf and --patch match).")
@click.option("--extra-inputs", type=click.Path(file_okay=False, path_type=Path), default=D["extra_inputs"],
              metavar="DIR",
              help="--teacher: more training inputs without targets (photos for edges/colorize, label maps for "
                   "labels→photo); the teacher translates them on the fly.")
@click.option("--tensorboard", is_flag=True,
              help="Also write TensorBoard event files (losses, LR, images/s, validation L1, sample grids) to "
                   "OUT/tensorboard: tensorboard --logdir runs. Needs pip install tensorboard.")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
@click.pass_context
def main(ctx: click.Context, **opts) -> None:
    nproc = opts.pop("nproc")
    resume, overwrite = opts.pop("resume"), opts.pop("overwrite")
    opts["progress"] = not opts.pop("no_progress")
    opts["patch"] = int(opts["patch"])
    opts["size"] = canonical_size(opts["size"])  # N or "WxH", as the run's config keeps it
    given = {k for k in opts if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    if resume and overwrite:
        raise click.UsageError("--resume continues the run in --out and --overwrite starts it again: give one")
    world = world_from_env()

    # torch loads here, after the options parsed: --help and usage errors answer at once
    from . import session
    from .stopping import StopSignals, die_with_parent

    log = lambda message: click.echo(message, err=True)  # noqa: E731
    if session.launched():
        die_with_parent()  # a rank of p2p-train --nproc: if torchrun dies, stop (and save) too
    if nproc > 1 and not world.distributed:
        with user_errors():
            try:  # the flags are checked before the launcher claims (and perhaps clears) the folder
                cfg, _ = session.configure(opts, given, resume, log=lambda message: None)
                status = session.launch_torchrun(nproc, sys.argv[1:], Path(cfg.out), resume=resume,
                                                 overwrite=overwrite, log=log)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from None
            except KeyboardInterrupt:  # before torchrun started: nothing was written
                log("\nStopped before training began")
                status = 130
        sys.exit(status)
    with StopSignals() as stop:  # from here on a signal asks the run to stop; it is not the end of the process
        status = _train(opts, given, resume, overwrite, world, stop, log)
    if session.launched():
        if world.rank == 0:
            session.report_status(status)
        # the status is in the file: torchrun must not report a failure of its own, and the interpreter's
        # teardown of torch's C++ threads (after the process group is gone) aborted now and then under load
        # ("terminate called without an active exception", after the run was saved and reported): leave at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(status)


def _train(opts: dict, given: set[str], resume: bool, overwrite: bool, world, stop, log) -> int:
    """Configure and run; prints the outcome (rank 0) and returns the exit status."""
    from . import session

    try:
        with user_errors():
            try:
                cfg, resume_state = session.configure(opts, given, resume, log=log)
            except ConfigError as exc:  # flags that cannot train together: click's usage error (exit 2)
                raise click.UsageError(str(exc)) from None
            try:
                result = session.train(cfg, resume_state, world, warn=log, overwrite=overwrite, stop=stop)
            except session.StoppedAtOnce as exc:
                if world.rank == 0:
                    log(f"\n{exc}")
                return exc.status
            except KeyboardInterrupt:  # a second signal before the run began
                there = Path(cfg.out, "checkpoint.pt")
                log("\nStopped before training began: "
                    + (f"{there} is intact" if there.exists() else "no checkpoint was written"))
                return stop.status
    except click.ClickException as exc:
        if not session.launched():
            raise
        if world.rank == 0:  # the other ranks met the same error: one line is enough
            exc.show()
        return exc.exit_code
    if world.rank != 0:
        return 0
    if result["interrupted"]:
        how = f"continue with: {o.runnable('p2p-train')} --out {shlex.quote(str(cfg.out))} --resume"
        log(f"\nStopped by {stop.name} at iteration {result['iteration']}: "
            + (f"checkpoint saved to {result['checkpoint']}; {how}" if result["checkpoint"] else
               "before the first iteration, nothing to save"))
        return stop.status
    log(f"\nDone: {result['iteration']} iterations, validation L1 {result['val_l1']:.3f}. What next:\n"
        + next_steps(cfg))
    click.echo(json.dumps({"checkpoint": str(result["checkpoint"]), "iteration": result["iteration"],
                           "val_l1": result["val_l1"]}))
    return 0


def next_steps(cfg) -> str:
    """The commands that follow a run, each runnable as printed (called the way p2p-train was)."""
    samples = sorted(Path(cfg.out, "samples").glob("iter_*.png"))
    out, data = shlex.quote(str(cfg.out)), shlex.quote(str(cfg.data))
    return ((f"  look at   {samples[-1]}  (rows: input | output | target)\n" if samples else "")
            + f"  export    {o.runnable('p2p-export')} {out} --verify   (writes {Path(cfg.out) / 'model.onnx'})\n"
            + f"  go live   {o.runnable('p2p-live')} --camera 0        (or --source a video; it picks the newest "
              "export)\n"
            + f"  score     {o.runnable('p2p-eval')} {out} --data {data}")


if __name__ == "__main__":
    main()
