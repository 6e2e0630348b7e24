"""The one run configuration and the one :func:`prepare` shared by certify, predict, verify, conformal and the
VNN-COMP benchmark runner."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from certkit.common.device import resolve_device
from certkit.common.errors import CertkitError
from certkit.common.results import ResultWriter, default_results_path, json_text
from certkit.datasets import Dataset, load_dataset, select_indices
from certkit.models import LoadedModel, load_model
from certkit.models.checks import fit_data_to_model


@dataclass
class RunConfig:
    """What every run has: where results go, whether to resume, the seed, the device, progress output.

    Attributes:
        out: per-row results file (TSV); None = a new file in ./certkit-results/ named after the run.
        resume: continue ``out``, skipping rows already in it (refused when it was computed with other settings).
        overwrite: replace ``out`` if it exists (without resume or overwrite an existing file is an error).
        summary_json: summary file; None = ``<out without suffix>.summary.json``.
        seed: the run's random seed; device: ``auto``, ``cpu`` or ``cuda[:N]``; quiet: no progress bar.
    """

    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    summary_json: str | None = None
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def results_path(self, *name_parts: str) -> str:
        """``out``, or a fresh default path from ``name_parts`` (resume needs an explicit ``out``).

        Raises:
            CertkitError: resume without out.
        """
        if self.out is not None:
            return str(self.out)
        if self.resume:
            raise CertkitError("--resume needs --out FILE (the file to continue)")
        self.out = default_results_path(*name_parts)
        return self.out


@dataclass
class DatasetRunConfig(RunConfig):
    """A run over inputs of a dataset split with a model: certify, predict, verify, conformal.

    Attributes:
        model: certkit / reference checkpoint, ``.onnx`` file, ``package.module:factory``, None / ``bundled``, or
            (from Python) an in-memory nn.Module or LoadedModel.
        weights: state_dict for a factory model; allow_pickle: full pickle loading (executes code in the file);
        random_init: accept a factory model without weights (the network as the factory returns it).
        denoiser: a denoiser D put in front of the model (denoised smoothing: the run certifies F o D as ONE fixed
            classifier; models/denoisers.py): certkit denoiser checkpoint, ``.onnx`` or ``package.module:factory``;
            denoiser_weights: state_dict for a factory denoiser.
        dataset, data_path, split: what :func:`certkit.datasets.load_dataset` reads.
        skip, max_inputs: every skip-th input of the split, at most max_inputs of them.
    """

    model: str | nn.Module | LoadedModel | None = None
    weights: str | None = None
    allow_pickle: bool = False
    random_init: bool = False
    denoiser: str | None = None
    denoiser_weights: str | None = None
    dataset: str = "digits"
    data_path: str | None = None
    split: str = "test"
    skip: int = 1
    max_inputs: int | None = None


@dataclass
class Prepared:
    """Model, data and inputs of a run, after every pre-flight check passed.

    Attributes:
        model: the loaded model; module: its network on ``device`` in eval mode; data: the split (x reshaped to the
        model's input shape when only the layout differs); indices: the selected inputs; device: where it runs.
    """

    model: LoadedModel
    module: nn.Module
    data: Dataset
    indices: list
    device: torch.device

    def settings(self, cfg: DatasetRunConfig) -> dict:
        """The settings every resumable dataset run must share with the file it continues."""
        return {"model": str(self.model.source), "dataset": self.data.name, "split": self.data.split,
                "data_source": self.data.source, "seed": cfg.seed}

    def inputs_summary(self, cfg: DatasetRunConfig, done: int) -> dict:
        """Which inputs a summary covers, so that a subset is never mistaken for the whole split."""
        return {**self.data.describe(), "skip": cfg.skip, "max": cfg.max_inputs, "selected": len(self.indices),
                "certified": done, "full_split": cfg.skip == 1 and done == len(self.data)}


def prepare(cfg: DatasetRunConfig) -> Prepared:
    """Resolve the device, load the model and the data, check that they fit, select the inputs.

    Raises:
        CertkitError: any bad input (files, options, model/data mismatch).
    """
    device = resolve_device(cfg.device)
    model = load_model(cfg.model, cfg.weights, cfg.allow_pickle, cfg.random_init)
    data = fit_data_to_model(model, load_dataset(cfg.dataset, cfg.data_path, cfg.split))
    if cfg.denoiser is not None:
        from certkit.models.denoisers import compose, load_denoiser

        model = compose(load_denoiser(cfg.denoiser, cfg.denoiser_weights), model, data.input_shape)
    elif cfg.denoiser_weights is not None:
        raise CertkitError("--denoiser-weights needs --denoiser package.module:factory")
    indices = select_indices(len(data), cfg.skip, cfg.max_inputs)
    return Prepared(model, model.module.to(device).eval(), data, indices, device)


def resolve_sigma(sigma: float | None, model: LoadedModel) -> float:
    """The noise level of a smoothing run: ``sigma``, else the one the model was trained with.

    Warns when it differs from the training sigma. Raises:
        CertkitError: no sigma given nor recorded, or sigma <= 0.
    """
    sigma = sigma if sigma is not None else model.train_sigma
    if sigma is None:
        raise CertkitError("--sigma is required: the model does not record the noise level it was trained with")
    if not sigma > 0:
        raise CertkitError(f"sigma must be > 0, got {sigma}")
    if model.train_sigma is not None and abs(model.train_sigma - sigma) > 1e-12:
        warnings.warn(f"certifying at sigma={sigma:g} but the model was trained with sigma={model.train_sigma:g}; "
                      f"certificates stay valid, but accuracy is usually lower away from the training sigma",
                      stacklevel=3)
    return float(sigma)


def open_results(cfg: RunConfig, settings: dict, columns: Sequence[str], key: str = "idx") -> ResultWriter:
    """The run's append-only results file (``cfg.out``), checked against ``settings`` on resume."""
    if cfg.out is None:
        raise CertkitError("the run has no results file: set out (or call results_path) first")
    return ResultWriter(cfg.out, settings, columns, cfg.resume, cfg.overwrite, key)


def write_summary(summary: dict, cfg: RunConfig) -> str:
    """Write the summary JSON (``cfg.summary_json`` or ``<out>.summary.json``); returns its path."""
    if cfg.summary_json is None and cfg.out is None:
        raise CertkitError("the run has no results file to put the summary beside: set out or summary_json")
    path = cfg.summary_json or str(Path(str(cfg.out)).with_suffix("")) + ".summary.json"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json_text(summary))
    return path


def shard_of(shard: tuple | None) -> tuple[int, int, bool]:
    """(K, N, under torchrun) of this process for a sharded run (certify, predict, a VNN-COMP benchmark): ``shard``
    (``--shard K/N``: the K-th of N interleaved shares, 0-based), else the torchrun rank and world size, else
    (0, 1, False).

    Raises:
        CertkitError: a malformed shard, or --shard under torchrun.
    """
    import os

    from certkit.common import distributed

    if shard is not None:
        k, n = shard
        if not (n >= 1 and 0 <= k < n):
            raise CertkitError(f"--shard K/N needs 0 <= K < N, got {k}/{n}")
        if distributed.world()[1] > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise CertkitError("--shard is for separate jobs; under torchrun every rank takes its share itself")
        return k, n, False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank, world = distributed.init_from_env(torch.device("cpu"))  # gloo: the ranks only meet at a barrier
        return rank, world, True
    return 0, 1, False


def shard_path(out: str, k: int, n: int) -> str:
    """The file of shard k of n under torchrun: ``<out without .tsv>.shard-k-of-n.tsv``."""
    return str(Path(out).with_suffix("")) + f".shard-{k}-of-{n}.tsv"


def check_shard_configs(paths: list, configs: list) -> tuple[int, dict]:
    """The shards' settings (their ``.config.json``, in the order of ``paths``) checked for one merge: every shard
    computed as a shard, each of the N once, all with the same settings but the shard. Returns (N, the settings
    without the shard: a single-process run's).

    Raises:
        CertkitError: naming the file that was not a shard or has other settings, or the shards given.
    """
    shards = [c.get("shard") for c in configs]
    if any(s is None for s in shards):
        raise CertkitError(f"{paths[shards.index(None)]} was not computed as a shard (--shard K/N)")
    n = shards[0][1]
    if sorted(tuple(s) for s in shards) != [(i, n) for i in range(n)]:
        raise CertkitError(f"need each of the {n} shards exactly once, got {sorted(tuple(s) for s in shards)}")
    common = {key: v for key, v in configs[0].items() if key != "shard"}
    for path, c in zip(paths, configs):
        diff = sorted(key for key in set(c) | set(common) if key != "shard" and c.get(key) != common.get(key))
        if diff:
            raise CertkitError(f"refusing to merge {path}: it was computed with other settings ({', '.join(diff)})")
    return n, common
