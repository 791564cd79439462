"""The training run: one loop over iterations, one D step then one G step each, exactly resumable.

As in nanoGPT's train.py, everything follows from the iteration number: the epoch and
the position in it (``divmod``), the batch order (a function of seed and epoch), and the
learning rate (``lr_at``). A checkpoint therefore needs only the iteration, the weights,
both optimiser states and the RNG that draws dropout masks, and a resumed run replays
exactly what an uninterrupted one would have done.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from p2p.runtime.errors import first_line
from p2p.runtime.files import output_error, write_atomic
from p2p.runtime.masks import MaskSampler
from p2p.runtime.pairs import DataError, PairDataset

from .checkpoint import CHECKPOINT_NAME
from .config import TrainConfig
from .distill import Student, Teacher, check_pair, load_teacher
from .distributed import World, any_ranks, gather_objects, wrap_ddp
from .objective import Objective
from .progress import Pace
from .records import RunRecords
from .setup import (
    TrainError,
    amp_dtype_for,
    build_datasets,
    build_models,
    build_optimizer,
    epoch_batches,
    lr_factor,
    resolve_device,
    restore_rng,
)
from .steps import DistillStep, NonFiniteLoss, PaperStep
from .stopping import StopSignals
from .tensorboard import TensorBoardLog

__all__ = ["Trainer", "TrainConfig", "TrainError", "StoppedAtOnce", "amp_dtype_for", "epoch_batches", "lr_factor",
           "resolve_device", "restore_rng"]

VAL_SEED = 0  # the masks of validation (and p2p-eval's default --seed)


class StoppedAtOnce(TrainError):
    """A second stop signal: the run left without saving; ``status`` is the exit status to use."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Trainer(RunRecords):
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
        self.objective_step = self._objective_step(cfg)
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
        ds = self.val_set or PairDataset(self.train_set.folder, self.spec, self.cfg.layout, jitter=False,
                                         preprocess=self.cfg.preprocess)
        items = [ds[i] for i in range(min(self.cfg.val_images, len(ds)))]
        return torch.from_numpy(np.stack([x for x, _ in items])), torch.from_numpy(np.stack([y for _, y in items]))

    def _objective_step(self, cfg: TrainConfig) -> PaperStep:
        """The objective the loop calls each iteration: the paper's, or distillation from the teacher."""
        parts = dict(objective=self.objective, G=self.G_step, D=self.D_step, D_bare=self.D, opt_g=self.opt_g,
                     opt_d=self.opt_d, scaler=self.scaler, autocast=self.autocast, device=self.device,
                     world=self.world, lambda_fm=cfg.lambda_fm)
        if self.teacher is None:
            return PaperStep(**parts)
        return DistillStep(**parts, teacher=self.teacher, lambda_teacher=cfg.lambda_teacher,
                           lambda_feat=cfg.lambda_feat)

    def step(self, x: torch.Tensor, y: torch.Tensor, has_target: torch.Tensor | None = None) -> dict:
        """One iteration of the objective on a batch already on the device; its losses by name."""
        return self.objective_step(x, y, has_target)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

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

    def _run(self) -> dict:
        """The loop: until the schedule's end, or a stop signal, a failed write or an unreadable batch."""
        self._claim_folder()
        total, vx, vy = self.total_iterations(), *self.validation_batch()
        if self.iteration == 0:
            self._report(vx, vy)
        batches, clock = self.batches(self.iteration), Pace(self, total)
        stop = bad_batch = None
        with clock:
            while self.iteration < total:
                batch, bad_batch = self._next(batches)
                stop = self._stop_reason(bad_batch is not None)
                if stop:
                    break
                lr = self.lr_at(self.iteration)
                losses = self._iterate(*batch, lr)
                self.iteration += 1
                rate = clock.tick(losses, images=batch[0].shape[0] * self.world)
                self._record(losses, lr, rate, total, vx, vy)
        return self._finish(stop, bad_batch, vx, vy)

    def _claim_folder(self) -> None:
        if self.main:  # p2p-train claimed it already; a Trainer used on its own makes it here
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._failure = str(output_error(exc, self.out))
        self._write(atomic_json, self.out / "config.json", self.cfg.to_dict())

    def _next(self, batches) -> tuple[tuple | None, str | None]:
        """The next (input, target, has_target) batch, or the message of an image that went bad since the start."""
        try:
            return next(batches), None
        except DataError as exc:
            return None, str(exc)

    def _stop_reason(self, data_failed: bool) -> str | None:
        """"write", "data" or "signal" (in that order) when any rank has one: ranks stop at the same step."""
        flags = (self.stop.requested, self._failure is not None, data_failed)
        signal, write, data = any_ranks(flags, self.device)
        return "write" if write else "data" if data else "signal" if signal else None

    def _iterate(self, x, y, has_target, lr: float) -> dict:
        """One step of the objective at learning rate ``lr``, on the batch moved to the device."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x, y = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
        has_target = has_target.to(self.device) if self.objective_step.uses_unpaired else None
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups if opt else ():
                group["lr"] = lr
        try:
            return self.step(x, y, has_target)
        except NonFiniteLoss as exc:
            raise TrainError(f"the {exc.name} loss became non-finite at iteration {self.iteration + 1}{exc.where}; "
                             f"nothing was saved after it: {self.kept()}; lower --lr (or try --no-amp)") from None

    def _record(self, losses: dict, lr: float, rate: float, total: int, vx, vy) -> None:
        """The log line, the report and the checkpoint that fall on this iteration."""
        it, cfg = self.iteration, self.cfg
        if it % cfg.log_every == 0 or it == total:
            named = {f"loss_{k}": round(v, 6) for k, v in losses.items()}
            self._log({"iter": it, "epoch": self.epoch_of(it - 1), **named, "lr": lr, "img_per_s": round(rate, 3)})
        if it % cfg.sample_every == 0:
            self._report(vx, vy)
        if it % cfg.save_every == 0:
            self.save()

    def _finish(self, stop: str | None, bad_batch: str | None, vx, vy) -> dict:
        """The run's one way out: raise what stopped it, or save and say where it ended."""
        if stop == "write":
            self._raise_failure()
        if stop == "data" or (stop == "signal" and self.iteration > 0 and self.iteration != self.saved_iteration):
            self.save()  # the steps since the last save are kept
        if stop == "data":
            bad_batch = next(b for b in gather_objects(bad_batch) if b)  # the rank that met the bad image says which
            raise TrainError(f"{bad_batch}; fix or remove it: {self.kept()}; {self.how_to_continue()}")
        val_l1 = None
        if stop is None:
            val_l1 = self._report(vx, vy)
            if self.saved_iteration == self.iteration:  # saved at this step: checkpoint.prev.pt stays the one before
                self._raise_failure()  # a failed write of the last report
            else:
                self.save()  # also raises a failed write of the last report
        if self.tb:
            self.tb.close()
        path = self.out / CHECKPOINT_NAME if self.saved_iteration is not None else None
        return {"checkpoint": path, "iteration": self.iteration, "epoch": self.epoch_of(self.iteration),
                "interrupted": stop == "signal", "signal": self.stop.signum if stop == "signal" else None,
                "val_l1": val_l1}


def atomic_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2))
