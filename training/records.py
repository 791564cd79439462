"""What a run keeps: its checkpoint (saved and loaded), log.jsonl, sample grids and the loss curve.

A mixin of Trainer: these methods use its models, optimisers, iteration and run folder. Every write
is rank 0's; a failed one is kept and stops the run at the next step, on every rank.
"""
from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import torch

from p2p.runtime.cli_options import runnable
from p2p.runtime.errors import OutputError, first_line
from p2p.runtime.files import append_line, read_jsonl

from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .distributed import any_rank, gather_objects
from .multiscale import num_scales
from .objective import Objective
from .report import plot_losses, write_sample_grid
from .run_folder import LOG_NAME
from .setup import TrainError, restore_rng


class RunRecords:
    """Checkpoint, log and reports of a Trainer (see the module's docstring)."""

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
        if any_rank(bad, self.device):  # one rank alone: its own flag (the helpers need no process group)
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
        failure = next((f for f in gather_objects(self._failure) if f), None)
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
        stored_scales = num_scales(state["discriminator"])
        if self.D is not None and stored_scales != self.cfg.num_d:
            raise TrainError(f"cannot resume: {path} was trained with --num-d {stored_scales}, not {self.cfg.num_d}; "
                             f"resume with --num-d {stored_scales}, or start a new run with another --out")
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
