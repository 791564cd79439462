"""The training run: one D step then one G step per batch, exactly resumable.

Everything that decides what happens next lives in the checkpoint: weights,
both optimisers and schedules, epoch and position within it, and the RNG that
draws dropout masks. Batch order and jitter are derived from (seed, epoch), so a
resumed run replays exactly what an uninterrupted one would have done.
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from p2p.runtime.errors import first_line
from p2p.runtime.spec import ModelSpec
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import (
    CHECKPOINT_NAME,
    save_checkpoint,
)
from .data import PairDataset, resolve_split
from .distributed import (
    World,
    any_rank,
    convert_sync_batchnorm,
    gather_objects,
    wrap_ddp,
)
from .models import Discriminator, Generator, draw_mask, init_weights, patch_norm_size
from .objective import Objective, gan_loss, l1_loss
from .report import plot_losses, write_sample_grid


@dataclass
class TrainConfig:
    data: str
    out: str
    task: str = "paired"
    direction: str = "AtoB"
    layout: str = "auto"
    size: int = 256
    batch_size: int = 1
    epochs: int = 100
    epochs_decay: int = 100
    iters: int | None = None
    ngf: int = 64
    ndf: int = 64
    generator: str = "unet"
    patch: int = 70
    objective: str = "l1+cgan"
    lambda_l1: float = 100.0
    unconditional: bool = False
    lr: float = 2e-4
    beta1: float = 0.5
    device: str = "auto"
    amp: bool = True
    channels_last: bool = False
    sync_bn: bool = False
    seed: int = 0
    workers: int = 0
    save_every: int = 500
    sample_every: int = 200
    log_every: int = 10
    val_images: int = 8
    progress: bool = True

    def validate(self) -> None:
        """Combinations that cannot train, as one clear ValueError each."""
        self.spec()
        self.objective_()
        side = patch_norm_size(self.size, self.patch)
        if self.objective != "l1" and side < 2:  # its last 4x4 convolution needs a 2x2 map at least
            raise ValueError(f"--patch {self.patch} at --size {self.size} leaves the discriminator a map too small "
                             f"for its last 4x4 convolution; use --size {2 * self.size} or more, or a smaller --patch")

    def spec(self) -> ModelSpec:
        return ModelSpec.for_task(self.task, self.size, ngf=self.ngf, generator=self.generator,
                                  direction=self.direction)

    def objective_(self) -> Objective:
        return Objective(self.objective, self.lambda_l1, self.unconditional)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TrainError(RuntimeError):
    """A run that cannot go on; the message says what to do."""


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


@dataclass
class RunState:
    epoch: int = 0
    epoch_step: int = 0      # batches of this epoch already done
    iteration: int = 0       # global G/D steps done
    seconds: float = 0.0
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: dict | None = None, world: World = World()):
        """``resume``: the run's checkpoint (from load_checkpoint) to continue from, exactly."""
        self.cfg = cfg
        self.rank, self.world = world.rank, world.size
        self.main = world.rank == 0
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and world.distributed:
            self.device = torch.device("cuda", world.local_rank)
        rank = world.rank
        self.spec = cfg.spec()
        self.objective = cfg.objective_()
        torch.manual_seed(cfg.seed + rank)

        train_dir = resolve_split(Path(cfg.data), "train")
        self.train_set = PairDataset(train_dir, self.spec, cfg.layout, jitter=True, seed=cfg.seed)
        self.val_set = self._validation_set(train_dir)

        self.G = Generator(self.spec)
        init_weights(self.G)
        self.D = None
        if self.objective.uses_gan:
            d_in = self.spec.out_channels + (self.spec.in_channels if self.objective.conditional else 0)
            self.D = Discriminator(d_in, cfg.ndf, cfg.patch)
            init_weights(self.D)
        betas = (cfg.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas) if self.D else None
        rule = lambda e: lr_factor(e, cfg.epochs, cfg.epochs_decay)  # noqa: E731
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, rule)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, rule) if self.D else None

        cuda = self.device.type == "cuda"
        self.amp_dtype = None
        if cfg.amp and cuda:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.state = RunState()
        if cfg.sync_bn:  # before loading: the converted layers keep BatchNorm2d's state-dict keys
            convert_sync_batchnorm(self.G, self.device)
            if self.D:
                convert_sync_batchnorm(self.D, self.device)
        if resume is not None:
            self._load(resume, self.out / CHECKPOINT_NAME)
        self.G.to(self.device)
        if self.D:
            self.D.to(self.device)
        if cfg.channels_last:
            self.G.to(memory_format=torch.channels_last)
            if self.D:
                self.D.to(memory_format=torch.channels_last)
        for opt in (self.opt_g, self.opt_d):
            if opt:  # optimiser state loaded on the CPU follows its parameters
                for s in opt.state.values():
                    for k, v in s.items():
                        if torch.is_tensor(v) and k != "step":
                            s[k] = v.to(self.device)
        # the models that take part in the step: DistributedDataParallel wraps them on several ranks
        self.G_step, self.D_step = self.G, self.D
        if world.distributed:
            self.G_step = wrap_ddp(self.G, self.device)
            self.D_step = wrap_ddp(self.D, self.device) if self.D else None
        self._stop = False
        self._last_report = None  # (iteration, val L1): a report is made once per iteration

    # --- data -----------------------------------------------------------------
    def _validation_set(self, train_dir: Path) -> PairDataset | None:
        root = Path(self.cfg.data)
        for name in ("val", "test"):
            if (root / name).is_dir() and root / name != train_dir:
                return PairDataset(root / name, self.spec, self.cfg.layout, jitter=False, seed=self.cfg.seed)
        return None

    def validation_batch(self):
        """A fixed batch for val L1 and sample grids: val images, else the first training images."""
        ds = self.val_set or PairDataset(self.train_set.folder, self.spec, self.cfg.layout, jitter=False)
        items = [ds[i] for i in range(min(self.cfg.val_images, len(ds)))]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def loader(self, epoch: int, start: int) -> DataLoader:
        self.train_set.epoch = epoch
        batches = epoch_batches(len(self.train_set), self.cfg.batch_size, self.cfg.seed, epoch, self.rank, self.world)
        # its own generator: creating an iterator must not consume the global RNG that
        # draws dropout masks, or a resumed run would diverge from an uninterrupted one
        return DataLoader(self.train_set, batch_sampler=batches[start:], num_workers=self.cfg.workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(epoch))

    def steps_per_epoch(self) -> int:
        return len(epoch_batches(len(self.train_set), self.cfg.batch_size, self.cfg.seed, 0, self.rank, self.world))

    # --- one iteration ----------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        obj, G, D = self.objective, self.G_step, self.D_step
        losses = {}
        with self.autocast():
            fake = G(x)
        if D is not None:
            # D step: real pairs → 1, generated pairs → 0; halved, as in the paper.
            D.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            with self.autocast():
                pred_fake = D(obj.d_input(x, fake.detach()))
                pred_real = D(obj.d_input(x, y))
            loss_d = 0.5 * (gan_loss(pred_fake, False) + gan_loss(pred_real, True))
            self.scaler.scale(loss_d).backward()
            self.scaler.step(self.opt_d)
            losses["d"] = loss_d.item()
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
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        if D is not None:
            D.requires_grad_(True)
        return losses

    # --- validation, samples, checkpoints ------------------------------------------
    @torch.no_grad()
    def validate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        """L1 on the fixed validation batch, with fixed masks so numbers compare across iterations."""
        g = torch.Generator().manual_seed(1234)
        n, _, h, w = x.shape
        masks = [draw_mask(s, self.spec.dropout_p, generator=g).to(self.device)
                 for s in self.spec.mask_shapes(n, h, w)]
        fake = self.G(x.to(self.device), masks).float().cpu()
        return float((fake - y).abs().mean()), fake

    def checkpoint_state(self) -> dict:
        st = self.state
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
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict() if self.sched_d else None,
            "scaler": self.scaler.state_dict(),
            "epoch": st.epoch, "epoch_step": st.epoch_step, "iteration": st.iteration,
            "seconds": st.seconds, "rng": rng,
        }

    def save(self) -> Path:
        path = self.out / CHECKPOINT_NAME
        state = self.checkpoint_state()  # on every rank: it gathers their RNG states
        if self.main:
            save_checkpoint(state, path)
        return path

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
        try:
            self.G.load_state_dict(state["generator"])
            if self.D:
                self.D.load_state_dict(state["discriminator"])
                self.opt_d.load_state_dict(state["opt_d"])
                self.sched_d.load_state_dict(state["sched_d"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.sched_g.load_state_dict(state["sched_g"])
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainError(f"cannot resume: {path} does not fit this architecture "
                             f"({first_line(exc, 160)}); pass the run's original flags or use a new --out") from None
        self.state = RunState(state["epoch"], state["epoch_step"], state["iteration"], state.get("seconds", 0.0),
                              self._read_history())
        rng = state["rng"]
        ranks = rng.get("ranks", [rng])
        if len(ranks) == self.world:
            rng = ranks[self.rank]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if len(ranks) != self.world:  # resumed on another number of ranks: give each its own stream
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, ())) + self.rank)

    def _read_history(self) -> list:
        log = self.out / "log.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def _log(self, record: dict) -> None:
        if not self.main:
            return
        self.state.history.append(record)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _report(self, vx, vy) -> float:
        if self._last_report and self._last_report[0] == self.state.iteration:
            return self._last_report[1]
        val_l1, fake = self.validate(vx, vy)
        self._last_report = (self.state.iteration, val_l1)
        it = self.state.iteration
        self._log({"iter": it, "epoch": self.state.epoch, "val_l1": round(val_l1, 6)})
        if self.main:
            write_sample_grid(self.out / "samples" / f"iter_{it:07d}.png", vx, fake, vy, self.spec)
            plot_losses(self.state.history, self.out / "loss.png")
        return val_l1

    # --- the loop -----------------------------------------------------------------
    def _on_sigint(self, signum, frame):
        if self._stop:  # a second Ctrl-C: stop now; the last checkpoint on disk is intact
            raise KeyboardInterrupt
        self._stop = True

    def total_iterations(self) -> int:
        by_epochs = (self.cfg.epochs + self.cfg.epochs_decay) * self.steps_per_epoch()
        return min(by_epochs, self.cfg.iters) if self.cfg.iters else by_epochs

    def run(self) -> dict:
        cfg, st = self.cfg, self.state
        self.out.mkdir(parents=True, exist_ok=True)
        if self.main:
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        total = self.total_iterations()
        vx, vy = self.validation_batch()
        if st.iteration == 0:
            self._report(vx, vy)
        old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        bar = tqdm(total=total, initial=min(st.iteration, total), disable=not (cfg.progress and self.main),
                   unit="it", dynamic_ncols=True)
        n_epochs = cfg.epochs + cfg.epochs_decay
        interrupted = False
        try:
            while st.iteration < total and st.epoch < n_epochs:
                t_start = time.perf_counter()
                for x, y in self.loader(st.epoch, st.epoch_step):
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    if cfg.channels_last:
                        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
                    losses = self.step(x, y)
                    if not all(math.isfinite(v) for v in losses.values()):
                        self.save()
                        raise TrainError(f"losses became non-finite at iteration {st.iteration + 1} ({losses}); "
                                         "lower --lr or turn off --amp; the last good checkpoint is kept")
                    st.iteration += 1
                    st.epoch_step += 1
                    now = time.perf_counter()
                    st.seconds += now - t_start
                    rate = x.shape[0] * self.world / max(now - t_start, 1e-9)
                    t_start = now
                    bar.update(1)
                    bar.set_postfix_str(f"ep {st.epoch + 1}/{n_epochs} " + " ".join(
                        f"{k} {v:.3f}" for k, v in losses.items()) + f" {rate:.1f} img/s")
                    if st.iteration % cfg.log_every == 0 or st.iteration == total:
                        self._log({"iter": st.iteration, "epoch": st.epoch,
                                   **{f"loss_{k}": round(v, 6) for k, v in losses.items()},
                                   "lr": self.opt_g.param_groups[0]["lr"], "img_per_s": round(rate, 3)})
                    if st.iteration % cfg.sample_every == 0:
                        self._report(vx, vy)
                    if st.iteration % cfg.save_every == 0:
                        self.save()
                    if any_rank(self._stop, self.device) if self.world > 1 else self._stop:
                        interrupted = True
                        break
                    if st.iteration >= total:
                        break
                if interrupted or st.iteration >= total and st.epoch_step < self.steps_per_epoch():
                    break
                st.epoch += 1
                st.epoch_step = 0
                self.sched_g.step()
                if self.sched_d:
                    self.sched_d.step()
        finally:
            bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        val_l1 = self._report(vx, vy) if not interrupted else None
        path = self.save()
        return {"checkpoint": path, "iteration": st.iteration, "epoch": st.epoch,
                "interrupted": interrupted, "val_l1": val_l1}
