"""The one training harness every certkit training loss runs in.

The harness owns the loop and everything around it; a :class:`TrainingMethod` (the plug-in) owns the model, the
data and the loss. Per epoch::

    for batch in method.batches(run, epoch):        # e.g. shuffled minibatches; the method draws its noise
        out = method.step(run, batch)               # StepOutput(loss, correct, count, share)
        zero_grad; (out.loss * out.share).backward(); sum gradients over ranks; clip; optimizer step
    scheduler step; sum the epoch statistics over ranks
    row = method.end_epoch(run, epoch, stats)       # validation metrics; None = nothing to record this epoch
    rank 0: append row to the CSV log, write the checkpoint (method.save), redraw the curves

Data parallelism (torchrun; gloo on CPU, nccl on GPU; common/distributed.py): every rank runs the same loop on its
share of each batch and gradients are summed, so one step equals the single-process step. Resume: the checkpoint
holds the model (the method's artifact), the optimizer, scheduler and RNG states, the method's own state and the
configuration; resuming with other settings (but ``method.resume_ignores``) is refused, and a resumed run continues
exactly (bit for bit on CPU). A checkpoint is never overwritten by a new run without ``resume``.
"""
from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from certkit.common import distributed as dist
from certkit.common import faults, threads
from certkit.common.device import resolve_device
from certkit.common.errors import CertkitError
from certkit.common.locks import FileLock


@dataclass
class StepOutput:
    """What a method's ``step`` returns for one batch on this rank.

    Attributes:
        loss: scalar loss to minimise; correct: correctly classified examples (for the train accuracy);
            count: examples of this rank; share: this rank's fraction of the global batch (the loss is scaled by it
            so that summed gradients equal the single-process gradient).
    """

    loss: torch.Tensor
    correct: float = 0.0
    count: int = 1
    share: float = 1.0


@dataclass
class TrainingRun:
    """State of one training run, shared by the harness and the method.

    The method's ``setup`` sets model, optimizer, scheduler (or None), generator (its RNG, saved and restored on
    resume) and may keep anything else it needs on itself.
    """

    device: torch.device
    rank: int = 0
    world: int = 1
    resume: bool = False
    quiet: bool = False
    # set by the method's setup before anything reads them (fit checks), hence not Optional
    model: torch.nn.Module = None  # type: ignore[assignment]
    optimizer: Any = None
    scheduler: Any = None
    generator: torch.Generator = None  # type: ignore[assignment]
    grad_clip: float = 0.0
    epoch_started: float = 0.0
    train_seconds: float = 0.0     # this epoch's optimisation loop (batches, steps), without the evaluation after it
    extra: dict = field(default_factory=dict)


class TrainingMethod:
    """A training loss plugged into :func:`fit` (see the module docstring for the order of the hooks).

    Class attributes:
        name: the method's name; verb: "trained" / "generated" (for messages);
        resume_ignores: configuration keys that may change on resume (e.g. the number of epochs).
    """

    name = ""
    verb = "trained"
    resume_ignores: tuple = ("epochs", "device")
    log_columns: tuple = ("epoch", "loss", "seconds")

    cfg: Any = None  # the method's settings: a dataclass with at least ``epochs``

    # -- set-up and persistence ---------------------------------------------------------------------
    def config(self) -> dict:
        """JSON-ready settings, stored in the checkpoint and compared on resume (default: ``self.cfg``)."""
        return json.loads(json.dumps(asdict(self.cfg)))

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    def checkpoint_path(self) -> Path:
        raise NotImplementedError

    def log_path(self) -> Path:
        raise NotImplementedError

    def curves_path(self) -> Path | None:
        """PNG redrawn from the log after every recorded epoch (None: no curves)."""
        return None

    def curves(self) -> tuple[dict, str | None]:
        """({log column: label} on the left axis, a log column for the right axis or None)."""
        return {}, None

    def setup(self, run: TrainingRun) -> None:
        """Load the data, build run.model / optimizer / scheduler / generator."""
        raise NotImplementedError

    def prepare(self, run: TrainingRun) -> None:
        """Called once after resuming and broadcasting the weights, before the first epoch."""

    def save(self, run: TrainingRun, train_state: dict, row: dict) -> None:
        """Write the checkpoint: the model plus ``train_state`` (the harness's resumable state)."""
        raise NotImplementedError

    def load(self) -> dict | None:
        """The checkpoint's content: a dict with the harness's ``train_state`` (None when it holds none)."""
        raise NotImplementedError

    def restore(self, run: TrainingRun, ckpt: dict) -> None:
        """Load the checkpoint's weights into run.model (called after the settings were compared)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The method's own resumable state (weights_only-safe)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -- the loop -----------------------------------------------------------------------------------
    def desc(self) -> str:
        return f"train {self.name}"

    def batches(self, run: TrainingRun, epoch: int) -> Iterable[Any]:
        raise NotImplementedError

    def step(self, run: TrainingRun, batch: Any) -> StepOutput:
        raise NotImplementedError

    def end_epoch(self, run: TrainingRun, epoch: int, stats: torch.Tensor) -> dict | None:
        """The log row of this epoch (with every ``log_columns`` key), or None when nothing is recorded.

        ``stats`` = (sum of loss x count, correct, count) over all ranks, float64."""
        raise NotImplementedError

    def postfix(self, row: dict) -> dict:
        """Values shown next to the progress bar after a recorded epoch."""
        return {}

    def finished(self, run: TrainingRun) -> bool:
        """True to stop before the last epoch (e.g. a goal reached)."""
        return False


def _format(v) -> str:
    return f"{v:.5g}" if isinstance(v, float) else str(v)


def plot_log(log_path: Path, png_path: Path, series: dict, twin: str | None = None,
             ylabel: str = "validation accuracy") -> None:
    """Curves of the CSV log: ``series`` {column: label} per epoch on [0, 1], ``twin`` on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    if not rows:
        return
    ep = [int(r["epoch"]) for r in rows]
    val = lambda k: [float(r[k]) if r.get(k) not in (None, "", "nan") else float("nan") for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = 0
    for key, label in series.items():
        ys = val(key)
        if any(v == v for v in ys):  # skip series that are all NaN (not computed for this method)
            ax.plot(ep, ys, label=label)
            drawn += 1
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    if twin:
        ax2 = ax.twinx()
        ax2.plot(ep, val(twin), "k--", alpha=0.4, label=twin)
        ax2.set_ylabel(twin)
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def _repair_log(log_path: Path, columns: tuple, last_epoch: int) -> None:
    """Keep the header and the complete rows of epochs <= last_epoch (the checkpoint's): a run killed between a log
    row and its checkpoint redoes that epoch, and its row must not appear twice."""
    text = ""
    if log_path.exists():
        with open(log_path, newline="") as f:
            text = f.read()
    lines = text.split("\n")[:-1]  # complete lines only (a torn last line has no newline); csv ends lines in \r\n
    keep = lines[:1] or [",".join(columns) + "\r"]
    header = keep[0].rstrip("\r").split(",")
    pad = ""
    if header != list(columns) and list(columns)[:len(header)] == header:   # a log of a version with fewer columns
        keep[0], pad = ",".join(columns) + "\r", "," * (len(columns) - len(header))
    for line in lines[1:]:
        try:
            if int(line.split(",", 1)[0]) <= last_epoch:
                keep.append(line.rstrip("\r") + pad + "\r" if pad else line)
        except ValueError:
            break
    new = "\n".join(keep) + "\n"
    if new != text:
        tmp = log_path.with_name(log_path.name + ".tmp")
        tmp.write_text(new, newline="")
        tmp.replace(log_path)


def _check_resume(method: TrainingMethod, saved: dict, path: Path) -> None:
    now = method.config()
    ignore = set(method.resume_ignores)
    diff = [k for k in now if k in saved and k not in ignore and saved[k] != now[k]]
    if diff:
        raise CertkitError(f"cannot resume {path}: it was {method.verb} with other settings ({', '.join(diff)})")


def fit(method: TrainingMethod, device: str = "auto", resume: bool = False, quiet: bool = False,
        grad_clip: float = 0.0) -> dict:
    """Train with ``method`` (module docstring). Returns the last recorded log row ({} when none).

    Raises:
        CertkitError: a checkpoint exists and ``resume`` is False; resuming with other settings; another process
            trains into the same checkpoint (lock file ``<checkpoint>.lock``); a file cannot be written; and
            whatever the method raises for bad options or data.
    """
    dev = resolve_device(device)
    rank, world = dist.init_from_env(dev)
    run = TrainingRun(dev, rank, world, resume, quiet, grad_clip=grad_clip)
    method.setup(run)
    if run.model is None or run.generator is None or run.optimizer is None:
        raise TypeError(f"{type(method).__name__}.setup must set run.model, run.optimizer and run.generator")
    path = method.checkpoint_path()
    lock = FileLock(path) if rank == 0 else None
    try:
        if lock is not None:
            lock.acquire()
        return _loop(method, run, path, resume, quiet)
    except OSError as e:  # a checkpoint, log or plot that cannot be written
        raise CertkitError(f"cannot write {e.filename or path}: {e.strerror or e} (the last checkpoint is intact; "
                           f"rerun with --resume once the problem is fixed)") from None
    finally:
        if lock is not None:
            lock.release()


def _loop(method: TrainingMethod, run: TrainingRun, path: Path, resume: bool, quiet: bool) -> dict:
    rank = run.rank
    start = 1
    if path.exists():
        if not resume:
            raise CertkitError(f"{path} exists: pass --resume to continue it or choose another --out")
        ckpt = method.load()
        state = None if ckpt is None else ckpt.get("train_state")
        if state is None:
            raise CertkitError(f"{path} has no training state to resume from")
        _check_resume(method, state["config"], path)
        assert ckpt is not None  # state was read from it
        try:
            method.restore(run, ckpt)
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).splitlines()[0][:160]
            raise CertkitError(f"cannot resume {path}: its weights do not fit ({first})") from None
        run.optimizer.load_state_dict(state["optimizer"])
        if run.scheduler is not None and state.get("scheduler"):
            run.scheduler.load_state_dict(state["scheduler"])
        run.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        method.load_state_dict(state.get("method") or {})
        start = int(state["epoch"]) + 1
    dist.broadcast_parameters(run.model)
    method.prepare(run)
    log_path = method.log_path()
    if rank == 0:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if start == 1:
            with open(log_path, "w", newline="") as f:
                csv.writer(f).writerow(method.log_columns)
        else:
            _repair_log(log_path, method.log_columns, start - 1)
    last: dict = {}
    bar = tqdm(total=method.epochs, initial=start - 1, desc=method.desc(), unit="epoch", disable=quiet or rank != 0,
               dynamic_ncols=True)
    for epoch in range(start, method.epochs + 1):
        if method.finished(run):
            break
        run.epoch_started = time.perf_counter()
        stats = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (this rank)
        for batch in method.batches(run, epoch):
            threads.tick()
            out = method.step(run, batch)
            run.optimizer.zero_grad(set_to_none=True)
            (out.loss * out.share).backward()
            dist.sync_gradients(run.model)
            if run.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.grad_clip)
            run.optimizer.step()
            stats += torch.tensor([float(out.loss.detach()) * out.count, out.correct, out.count], dtype=torch.float64)
        run.train_seconds = time.perf_counter() - run.epoch_started
        if run.scheduler is not None:
            run.scheduler.step()
        dist.all_reduce_sum(stats)
        bar.update(1)
        row = method.end_epoch(run, epoch, stats)
        if row is None:
            continue
        last = row
        bar.set_postfix(method.postfix(row))
        if rank == 0:
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([_format(row[c]) for c in method.log_columns])
            faults.fault_point("epoch-log")
            state = {"epoch": epoch, "config": method.config(), "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
                     "generator": run.generator.get_state(), "torch_rng": torch.get_rng_state(),
                     "method": method.state_dict()}
            method.save(run, state, row)
            faults.fault_point("epoch")
            png = method.curves_path()
            if png is not None:
                series, twin = method.curves()
                plot_log(log_path, png, series, twin)
        dist.barrier()
    bar.close()
    return last
