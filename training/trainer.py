"""The training run: one loop over iterations, one D step then one G step each, exactly resumable.

As in nanoGPT's train.py, everything follows from the iteration number: the epoch and
the position in it (``divmod``), the batch order (a function of seed and epoch), and the
learning rate (``lr_at``). A checkpoint therefore needs only the iteration, the weights,
both optimiser states and the RNG that draws dropout masks, and a resumed run replays
exactly what an uninterrupted one would have done.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from p2p.runtime.cli_options import runnable
from p2p.runtime.errors import OutputError, UserError, first_line
from p2p.runtime.files import append_line, output_error, read_jsonl, write_atomic
from p2p.runtime.masks import MaskSampler
from p2p.runtime.pairs import DataError, InputDataset, PairDataset, resolve_split
from p2p.runtime.spec import ModelSpec

from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .config import TrainConfig
from .data import TrainingSet
from .distill import Student, Teacher, check_pair, feature_loss, load_teacher
from .distributed import World, any_rank, any_ranks, convert_sync_batchnorm, flagged_ranks, gather_objects, wrap_ddp
from .models import Discriminator, Generator, init_weights
from .objective import Objective, gan_loss, l1_loss
from .report import plot_losses, write_sample_grid
from .run_folder import LOG_NAME
from .stopping import StopSignals
from .tensorboard import TensorBoardLog

VAL_SEED = 0  # the masks of validation (and p2p-eval's default --seed)
PACE_PROBE = 5  # iterations timed before the expected duration is said


class TrainError(UserError, RuntimeError):
    """A run that cannot go on; the message says what to do."""


class StoppedAtOnce(TrainError):
    """A second stop signal: the run left without saving; ``status`` is the exit status to use."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class NonFiniteLoss(Exception):
    """A loss became NaN or infinite on some rank; raised on every rank before any weight changes."""

    def __init__(self, name: str, ranks: list[int], world: int):
        self.name = name
        self.where = f" on rank {', '.join(map(str, ranks))}" if world > 1 else ""


# --- pure functions of the configuration and the iteration ------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but this PyTorch sees no CUDA GPU "
                         "(CPU build, or no driver): use --device cpu, or install a CUDA build of torch")
    return torch.device(name)


def lr_factor(epoch: int, epochs: int, epochs_decay: int) -> float:
    """Constant for `epochs`, then linear decay to zero over `epochs_decay` (the widely used port's rule)."""
    return 1.0 - max(0, epoch + 1 - epochs) / float(epochs_decay + 1)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, epoch): the key to exact resume.

    With several ranks each takes every world-th batch of the same global order, so a
    global step over world ranks sees world·batch_size images.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    steps = len(batches) // world  # every rank takes the same number of steps
    return [batches[s * world + rank] for s in range(steps)]


# --- builders ------------------------------------------------------------------------------
def build_datasets(cfg: TrainConfig, spec: ModelSpec) -> tuple[TrainingSet, PairDataset | None]:
    """The training set (with the paper's jitter, and --extra-inputs) and the validation split (val/ or test/)."""
    root = Path(cfg.data)
    train_dir = resolve_split(root, "train")
    pairs = PairDataset(train_dir, spec, cfg.layout, jitter=True, seed=cfg.seed)
    extras = InputDataset(Path(cfg.extra_inputs), spec, jitter=True, seed=cfg.seed) if cfg.extra_inputs else None
    train = TrainingSet(pairs, extras)
    for name in ("val", "test"):
        if (root / name).is_dir() and root / name != train_dir:
            return train, PairDataset(root / name, spec, cfg.layout, jitter=False, seed=cfg.seed)
    return train, None


def build_models(cfg: TrainConfig, spec: ModelSpec, objective: Objective,
                 device: torch.device) -> tuple[Generator, Discriminator | None]:
    """G and (unless the objective is L1 alone) D, with the paper's initialisation.

    With --sync-bn their BatchNorms are converted here, before any optimiser sees the
    parameters: the CPU conversion makes new Parameters, which an optimiser built
    earlier would never update.
    """
    G = Generator(spec)
    init_weights(G)
    D = None
    if objective.uses_gan:
        D = Discriminator(spec.out_channels + (spec.in_channels if objective.conditional else 0), cfg.ndf, cfg.patch)
        init_weights(D)
    if cfg.sync_bn:  # the converted layers keep BatchNorm2d's state-dict keys: checkpoints load either way
        for net in (G, D):
            if net is not None:
                convert_sync_batchnorm(net, device)
    return G, D


def build_optimizer(net: nn.Module | None, cfg: TrainConfig) -> torch.optim.Adam | None:
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)) if net is not None else None


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); None (fp32) on the CPU or with --no-amp."""
    if not (cfg.amp and device.type == "cuda"):
        return None
    # emulated bf16 (pre-Ampere GPUs) is slow: those get fp16 with a grad scaler
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def restore_rng(rng: dict, device: torch.device) -> None:
    """Set the torch (and CUDA) RNG from a checkpoint's ``rng`` entry.

    Both setters take only CPU byte tensors ("RNG state must be a torch.ByteTensor"), and a
    checkpoint loaded with ``map_location="cuda"`` holds CUDA ones: copy them back first.
    """
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: dict | None = None, world: World = World(),
                 stop: StopSignals | None = None):
        """``resume``: the run's checkpoint (from load_checkpoint) to continue from, exactly.
        ``stop``: the signal handlers that ask the run to stop (installed by ``run`` if not yet)."""
        self.cfg, self.rank, self.world = cfg, world.rank, world.size
        self.stop = stop or StopSignals()
        self._failure: str | None = None  # a write that failed on this rank (disk full, ...): the run stops
        self.main = world.rank == 0
        if cfg.deterministic:  # before any CUDA work: cuBLAS reads its workspace setting once
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and world.distributed:
            self.device = torch.device("cuda", world.local_rank)
        self.spec, self.objective = cfg.spec(), Objective(cfg.objective, cfg.lambda_l1, cfg.unconditional)
        torch.manual_seed(cfg.seed + world.rank)

        self.train_set, self.val_set = build_datasets(cfg, self.spec)
        self.steps_per_epoch = len(epoch_batches(len(self.train_set), cfg.batch_size, cfg.seed, 0,
                                                 self.rank, self.world))
        self.G, self.D = build_models(cfg, self.spec, self.objective, self.device)
        self.teacher, self.student, self.teacher_info = None, None, None
        if cfg.teacher:  # distillation: G trains with feature adapters, beside a frozen teacher
            t_generator, t_spec, self.teacher_info, t_discriminator = load_teacher(Path(cfg.teacher), self.device)
            check_pair(t_spec, self.spec)
            self.teacher = Teacher(t_generator, cfg.teacher_noise)
            self.student = Student(self.G, t_spec)
            if cfg.teacher_d and resume is None:
                self._start_from_teachers_d(t_discriminator)
        self.opt_g, self.opt_d = build_optimizer(self.student or self.G, cfg), build_optimizer(self.D, cfg)
        self.amp_dtype = amp_dtype_for(cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.iteration, self.seconds, self.history = 0, 0.0, []
        self.saved_iteration: int | None = None  # what checkpoint.pt holds, once this run wrote or read it
        if resume is not None:
            self._load(resume, self.out / CHECKPOINT_NAME)
        self._to_device()
        # the models that take part in the step: DistributedDataParallel wraps them on several ranks
        self.G_step, self.D_step = self.student or self.G, self.D
        if world.distributed:
            self.G_step = wrap_ddp(self.G_step, self.device)
            self.D_step = wrap_ddp(self.D, self.device) if self.D else None
        self._last_report = None  # (iteration, val L1): a report is made once per iteration
        self.tb = TensorBoardLog(self.out / "tensorboard", self.iteration) if cfg.tensorboard and self.main else None

    def _start_from_teachers_d(self, state: dict | None) -> None:
        """The student's D starts as the teacher's (GAN Compression does): it already knows real from fake."""
        try:
            if self.D is None or state is None:
                raise ValueError("one of them has no discriminator")
            self.D.load_state_dict(state)
        except (RuntimeError, ValueError) as exc:
            warnings.warn(f"the student's discriminator starts fresh: the teacher's does not fit it "
                          f"({first_line(exc, 120)}; same --ndf, --patch and objective would)")

    def _to_device(self) -> None:
        memory = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        for net in (self.student or self.G, self.D):
            if net is not None:
                net.to(self.device, memory_format=memory)
        for opt in (self.opt_g, self.opt_d):
            if opt:  # optimiser state loaded on the CPU follows its parameters
                for s in opt.state.values():
                    for k, v in s.items():
                        if torch.is_tensor(v) and k != "step":
                            s[k] = v.to(self.device)

    # --- schedule and data: functions of the iteration ---------------------------------
    def total_iterations(self) -> int:
        by_epochs = (self.cfg.epochs + self.cfg.epochs_decay) * self.steps_per_epoch
        return min(by_epochs, self.cfg.iters) if self.cfg.iters else by_epochs

    def epoch_of(self, iteration: int) -> int:
        return iteration // self.steps_per_epoch

    def lr_at(self, iteration: int) -> float:
        """The learning rate of an iteration: constant, then a linear decay over the last epochs."""
        return self.cfg.lr * lr_factor(self.epoch_of(iteration), self.cfg.epochs, self.cfg.epochs_decay)

    def loader(self, epoch: int, start: int = 0) -> DataLoader:
        """The batches of ``epoch`` from position ``start`` on."""
        self.train_set.epoch = epoch
        batches = epoch_batches(len(self.train_set), self.cfg.batch_size, self.cfg.seed, epoch, self.rank, self.world)
        # its own generator: creating an iterator must not consume the global RNG that
        # draws dropout masks, or a resumed run would diverge from an uninterrupted one
        return DataLoader(self.train_set, batch_sampler=batches[start:], num_workers=self.cfg.workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(epoch))

    def batches(self, start: int):
        """(input, target, has_target) batches for every iteration from ``start`` on, epoch after epoch."""
        epoch, position = divmod(start, self.steps_per_epoch)
        while True:
            yield from self.loader(epoch, position)
            epoch, position = epoch + 1, 0

    def validation_batch(self):
        """A fixed batch for val L1 and sample grids: val images, else the first training images."""
        ds = self.val_set or PairDataset(self.train_set.folder, self.spec, self.cfg.layout, jitter=False)
        items = [ds[i] for i in range(min(self.cfg.val_images, len(ds)))]
        return torch.from_numpy(np.stack([x for x, _ in items])), torch.from_numpy(np.stack([y for _, y in items]))

    # --- one iteration ----------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def step(self, x: torch.Tensor, y: torch.Tensor, has_target: torch.Tensor | None = None) -> dict:
        obj, G, D = self.objective, self.G_step, self.D_step
        losses = {}
        if self.teacher is not None:
            with self.autocast():
                t_out, t_features = self.teacher(x)
            if has_target is not None:  # images without a target: the teacher's translation is their target
                y = torch.where(has_target.view(-1, 1, 1, 1) > 0, y, t_out.to(y.dtype))
        with self.autocast():
            fake = G(x)
            if self.teacher is not None:
                fake, s_features = fake
        if D is not None:
            # D step: real pairs → 1, generated pairs → 0; halved, as in the paper.
            D.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            with self.autocast():
                pred_fake = D(obj.d_input(x, fake.detach()))
                pred_real = D(obj.d_input(x, y))
            loss_d = 0.5 * (gan_loss(pred_fake, False) + gan_loss(pred_real, True))
            losses["d"] = self._finite("D", loss_d)
            self.scaler.scale(loss_d).backward()
            self.scaler.step(self.opt_d)
            D.requires_grad_(False)
        # G step: non-saturating (maximise log D(x, G(x))) plus λ·L1.
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = torch.zeros((), device=x.device)
        if D is not None:
            with self.autocast():
                # the bare D (not its DDP wrapper): its weights are frozen here, so this
                # backward gives D no gradients for DDP to wait for
                pred = self.D(obj.d_input(x, fake))
            loss_gan = gan_loss(pred, True)
            loss_g = loss_g + loss_gan
            losses["g_gan"] = loss_gan.item()
        if obj.uses_l1:
            loss_l1 = l1_loss(fake, y)
            loss_g = loss_g + obj.lambda_l1 * loss_l1
            losses["g_l1"] = loss_l1.item()
        if self.teacher is not None:
            loss_teacher, loss_feat = l1_loss(fake, t_out), feature_loss(s_features, t_features)
            loss_g = loss_g + self.cfg.lambda_teacher * loss_teacher + self.cfg.lambda_feat * loss_feat
            losses["g_teacher"], losses["g_feat"] = loss_teacher.item(), loss_feat.item()
        self._finite("G", loss_g)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        if D is not None:
            D.requires_grad_(True)
        return losses

    def _finite(self, name: str, loss: torch.Tensor) -> float:
        """The loss's value; NonFiniteLoss on every rank (before any backward or step) if it is not finite on any."""
        value = loss.item()
        bad = not math.isfinite(value)
        ranks = flagged_ranks(bad, self.device) if self.world > 1 else [self.rank] * bad
        if ranks:
            raise NonFiniteLoss(name, ranks, self.world)
        return value

    # --- validation, samples, checkpoints -----------------------------------------------
    @torch.no_grad()
    def validate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Mean L1 over the validation images, translated the way the runtime and p2p-eval translate them.

        Each image is its own batch (BatchNorm with one image's statistics: the paper's instance
        norm at test time; a batch would mix the statistics of unrelated images) and its masks
        come from the runtime's MaskSampler, per-frame, seed VAL_SEED, in order: the number
        equals ``p2p-eval RUN --data DATA --seed 0 -k 1`` on the same images.
        """
        sampler = MaskSampler(self.spec, "per-frame", VAL_SEED)
        _, _, h, w = x.shape
        fakes = [self.G(x[i:i + 1].to(self.device),
                        [torch.from_numpy(m).to(self.device) for m in sampler(1, h, w)]).float().cpu()
                 for i in range(len(x))]
        fake = torch.cat(fakes)
        return float((fake - y).abs().mean(dim=(1, 2, 3)).double().mean()), fake

    def checkpoint_state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world > 1:  # each rank draws its own dropout masks: keep every rank's RNG
            rng["ranks"] = gather_objects(rng)
        return {
            "spec": self.spec.to_dict(),
            "config": self.cfg.to_dict(),
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict() if self.D else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "scaler": self.scaler.state_dict(),
            "adapters": self.student.adapters.state_dict() if self.student else None,
            "teacher": self.teacher_info,  # which teacher (path, SHA-256, spec): a resume checks it is the same
            "iteration": self.iteration, "epoch": self.epoch_of(self.iteration),  # the epoch for readers
            "seconds": self.seconds, "rng": rng,
        }

    def save(self) -> Path:
        """Write checkpoint.pt atomically (the one before stays as checkpoint.prev.pt), then agree on the outcome.

        TrainError on every rank, and the last checkpoint intact, if a weight is no longer
        finite, if the write fails (disk full, read-only file system), or if an earlier
        write of this run failed (no save is tried on a disk that just refused one).
        """
        path = self.out / CHECKPOINT_NAME
        bad = not all(bool(torch.isfinite(p).all()) for net in (self.G, self.D) if net for p in net.parameters())
        if any_rank(bad, self.device) if self.world > 1 else bad:
            raise TrainError(f"the weights became non-finite at iteration {self.iteration} and were not saved: "
                             f"{self.kept()}; lower --lr (or try --no-amp)")
        state = self.checkpoint_state()  # on every rank: it gathers their RNG states
        if self.main and self._failure is None:
            try:
                save_checkpoint(state, path, keep_previous=True)
            except OutputError as exc:
                self._failure = str(exc)
        self._raise_failure()
        self.saved_iteration = self.iteration
        return path

    def kept(self) -> str:
        """What the run folder holds now, in words, for messages about a run that went wrong."""
        path = self.out / CHECKPOINT_NAME
        if self.saved_iteration is not None:
            return f"the checkpoint of iteration {self.saved_iteration} ({path}) is intact"
        if path.exists():
            return f"no checkpoint was written by this run ({path} from before it is intact)"
        return "no checkpoint was written"

    def how_to_continue(self) -> str:
        if self.saved_iteration is not None or (self.out / CHECKPOINT_NAME).exists():
            return f"continue with: {runnable('p2p-train')} --out {shlex.quote(str(self.out))} --resume"
        return "then start the run again"

    def _write(self, fn, *args):
        """One of rank 0's writes during the run; a failure is kept, and stops the run at the next step."""
        if not self.main or self._failure is not None:
            return None
        try:
            return fn(*args)
        except OutputError as exc:
            self._failure = str(exc)
            return None

    def _raise_failure(self) -> None:
        """If a write failed on any rank: TrainError on every rank, saying what is intact and how to go on."""
        failure = self._failure
        if self.world > 1:
            failure = next((f for f in gather_objects(failure) if f), None)
        if failure:
            raise TrainError(f"{failure}; {self.kept()}; make room (or make it writable), {self.how_to_continue()}")

    def _load(self, state: dict, path: Path) -> None:
        if state["spec"] != self.spec:
            diff = {k: (v, self.spec.to_dict()[k]) for k, v in state["spec"].to_dict().items()
                    if self.spec.to_dict()[k] != v}
            raise TrainError(
                f"cannot resume: {path} holds another generator ("
                + ", ".join(f"{k}={a!r} there, {k}={b!r} asked" for k, (a, b) in diff.items())
                + "); pass the run's original flags, or use a new --out")
        stored_obj = Objective(state["config"]["objective"], state["config"]["lambda_l1"],
                               state["config"]["unconditional"])
        if (state["discriminator"] is None) != (self.D is None) or stored_obj.conditional != self.objective.conditional:
            raise TrainError(f"cannot resume: {path} was trained with --objective {stored_obj.name}"
                             f"{' --unconditional' if stored_obj.unconditional else ''}; pass the same objective")
        if self.teacher_info and (state.get("teacher") or {}).get("sha256") != self.teacher_info["sha256"]:
            raise TrainError(f"cannot resume: the teacher {self.teacher_info['path']} is not the one this run "
                             "started from (its checkpoint changed); restore it, or distil again with a new --out")
        try:
            self.G.load_state_dict(state["generator"])
            if self.student:
                self.student.adapters.load_state_dict(state["adapters"])
            self.opt_g.load_state_dict(state["opt_g"])
            if self.D:
                self.D.load_state_dict(state["discriminator"])
                self.opt_d.load_state_dict(state["opt_d"])
            if state["scaler"] or not self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            # else: a run without a grad scaler (CPU, bf16, fp32) continues with fp16: a fresh scaler
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainError(f"cannot resume: {path} does not fit this architecture "
                             f"({first_line(exc, 160)}); pass the run's original flags or use a new --out") from None
        self.iteration, self.seconds = state["iteration"], state.get("seconds", 0.0)
        self.saved_iteration = self.iteration
        self.history = self._read_history()
        rng = state["rng"]
        ranks = rng.get("ranks", [rng])
        if len(ranks) == self.world:
            rng = ranks[self.rank]
        restore_rng(rng, self.device)
        if len(ranks) != self.world:  # resumed on another number of ranks: give each its own stream
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, ())) + self.rank)

    def _read_history(self) -> list:
        """log.jsonl's records; a torn last line (a crash or full disk mid-write) is dropped, and cut on rank 0."""
        records, note = read_jsonl(self.out / LOG_NAME, repair=self.main)
        if note and self.main:
            warnings.warn(note)
        return records

    def note(self, record: dict) -> None:
        """A line in log.jsonl about this iteration (e.g. flags changed on resume)."""
        self._log({"iter": self.iteration, **record})

    def _log(self, record: dict) -> None:
        if not self.main:
            return
        self.history.append(record)
        self._write(append_line, self.out / LOG_NAME, json.dumps(record))  # one write of a whole line
        if self.tb:
            self.tb.record(record)

    def _report(self, vx, vy) -> float:
        """Validation L1 into the log, a sample grid and the loss curve; once per iteration."""
        it = self.iteration
        if self._last_report and self._last_report[0] == it:
            return self._last_report[1]
        val_l1, fake = self.validate(vx, vy)
        self._last_report = (it, val_l1)
        self._log({"iter": it, "epoch": self.epoch_of(it), "val_l1": round(val_l1, 6)})
        if self.main:
            grid = self._write(write_sample_grid, self.out / "samples" / f"iter_{it:07d}.png", vx, fake, vy, self.spec)
            if self.tb and grid is not None:
                self.tb.grid(grid, it)
            self._write(plot_losses, self.history, self.out / "loss.png")
        return val_l1

    # --- the loop -----------------------------------------------------------------------
    def _say_expected_time(self, seconds: float, total: int) -> None:
        """Once the pace is known: how long the rest will take here (on stderr, above the progress bar)."""
        if not self.main:
            return
        pace = seconds / PACE_PROBE
        left = (total - self.iteration) * pace
        done = time.strftime("%H:%M", time.localtime(time.time() + left))
        tqdm.write(f"{total - self.iteration} iterations to go at {pace:.2f} s each: about "
                   + (f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s") + f" here (done around {done})",
                   file=sys.stderr)

    def _agree(self, data_failed: bool = False) -> tuple[bool, bool, bool]:
        """(a stop signal, a failed write, a failed batch) on any rank: ranks stop at the same step."""
        flags = (self.stop.requested, self._failure is not None, data_failed)
        return any_ranks(flags, self.device) if self.world > 1 else flags

    def run(self) -> dict:
        """Train to the end, or until a stop signal, a failed write or an unreadable batch (on any rank).

        Returns {"checkpoint", "iteration", "epoch", "interrupted", "signal", "val_l1"};
        ``checkpoint`` is None when a run stopped before its first iteration saved nothing.
        """
        owner = not self.stop.installed  # p2p-train installs them before setup; a Trainer used alone, here
        self.stop.install()
        try:
            return self._run()
        except KeyboardInterrupt as exc:  # a second signal: leave now; every save is atomic
            status = self.stop.status if self.stop.requested else 130
            raise StoppedAtOnce(f"Stopped at once at iteration {self.iteration} ({self.stop.name or 'SIGINT'} "
                                f"twice): {self.kept()}"
                                + (f"; {self.how_to_continue()}" if self.saved_iteration is not None else ""),
                                status) from exc
        finally:
            if owner:
                self.stop.restore()

    def _run(self) -> dict:  # noqa: C901
        cfg = self.cfg
        if self.main:  # p2p-train claimed it already; a Trainer used on its own makes it here
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._failure = str(output_error(exc, self.out))
        self._write(atomic_json, self.out / "config.json", cfg.to_dict())
        total = self.total_iterations()
        n_epochs = cfg.epochs + cfg.epochs_decay
        vx, vy = self.validation_batch()
        if self.iteration == 0:
            self._report(vx, vy)
        if self.main and total > self.iteration:
            tqdm.write(f"training {total - self.iteration} iterations into {self.out} ({self.steps_per_epoch} "
                       f"batches an epoch); the expected time follows after {PACE_PROBE}", file=sys.stderr)
        bar = tqdm(total=total, initial=min(self.iteration, total), disable=not (cfg.progress and self.main),
                   unit="it", dynamic_ncols=True)
        interrupted = failed = data_failed = False
        bad_batch = None
        start, t_begin = self.iteration, time.perf_counter()
        t_last = t_begin
        batches = self.batches(self.iteration)
        try:
            for it in range(self.iteration, total):
                try:
                    x, y, has_target = next(batches)
                except DataError as exc:  # an image that went bad since the start: save, then say which
                    bad_batch = str(exc)
                interrupted, failed, data_failed = self._agree(bad_batch is not None)
                if interrupted or failed or data_failed:
                    break
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                has_target = has_target.to(self.device) if self.teacher is not None else None
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                    y = y.contiguous(memory_format=torch.channels_last)
                lr = self.lr_at(it)
                for opt in (self.opt_g, self.opt_d):
                    if opt:
                        for group in opt.param_groups:
                            group["lr"] = lr
                try:
                    losses = self.step(x, y, has_target)
                except NonFiniteLoss as exc:
                    raise TrainError(f"the {exc.name} loss became non-finite at iteration {it + 1}{exc.where}; "
                                     f"nothing was saved after it: {self.kept()}; lower --lr (or try --no-amp)"
                                     ) from None
                self.iteration = it + 1
                now = time.perf_counter()
                self.seconds += now - t_last
                rate = x.shape[0] * self.world / max(now - t_last, 1e-9)
                t_last = now
                bar.update(1)
                if it + 1 - start == PACE_PROBE and total - self.iteration > PACE_PROBE:
                    self._say_expected_time(time.perf_counter() - t_begin, total)
                bar.set_postfix_str(f"ep {self.epoch_of(it) + 1}/{n_epochs} " + " ".join(
                    f"{k} {v:.3f}" for k, v in losses.items()) + f" {rate:.1f} img/s")
                if self.iteration % cfg.log_every == 0 or self.iteration == total:
                    self._log({"iter": self.iteration, "epoch": self.epoch_of(it),
                               **{f"loss_{k}": round(v, 6) for k, v in losses.items()},
                               "lr": lr, "img_per_s": round(rate, 3)})
                if self.iteration % cfg.sample_every == 0:
                    self._report(vx, vy)
                if self.iteration % cfg.save_every == 0:
                    self.save()
        finally:
            bar.close()
        if failed:
            self._raise_failure()
        if data_failed or (interrupted and self.iteration > 0 and self.iteration != self.saved_iteration):
            self.save()  # the steps since the last save are kept
        if data_failed:
            if self.world > 1:  # the rank that met the bad image says which
                bad_batch = next(b for b in gather_objects(bad_batch) if b)
            raise TrainError(f"{bad_batch}; fix or remove it: {self.kept()}; {self.how_to_continue()}")
        if interrupted:
            if self.tb:
                self.tb.close()
            path = self.out / CHECKPOINT_NAME if self.saved_iteration is not None else None
            return {"checkpoint": path, "iteration": self.iteration, "epoch": self.epoch_of(self.iteration),
                    "interrupted": True, "signal": self.stop.signum, "val_l1": None}
        val_l1 = self._report(vx, vy)
        if self.saved_iteration == self.iteration:  # saved at this very step: checkpoint.prev.pt stays the one before
            self._raise_failure()  # a failed write of the last report
            path = self.out / CHECKPOINT_NAME
        else:
            path = self.save()  # also raises a failed write of the last report
        if self.tb:
            self.tb.close()
        return {"checkpoint": path, "iteration": self.iteration, "epoch": self.epoch_of(self.iteration),
                "interrupted": False, "signal": None, "val_l1": val_l1}


def atomic_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2))
