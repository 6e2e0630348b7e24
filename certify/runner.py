"""The per-input loop shared by certification methods: selection of inputs, progress, TSV rows, resume."""
from __future__ import annotations

import time
from typing import Callable

import torch
from tqdm import tqdm

from certkit.common.results import ResultWriter
from certkit.datasets import Dataset


def run_inputs(certify_one: Callable[[torch.Tensor, int], tuple[int, float]], dataset: Dataset,
               indices: list[int], writer: ResultWriter, quiet: bool = False, desc: str = "certify") -> list[dict]:
    """Call ``certify_one(x, idx) -> (prediction, radius)`` for each index not yet in ``writer``.

    Writes one TSV row per input as soon as it is computed and returns all rows of the file (old and new)
    that belong to ``indices``.
    """
    todo = [i for i in indices if i not in writer.done]
    for i in tqdm(todo, desc=desc, unit="input", disable=quiet, dynamic_ncols=True):
        x, label = dataset.x[i], int(dataset.y[i])
        t0 = time.perf_counter()
        prediction, radius = certify_one(x, i)
        writer.write({"idx": i, "label": label, "predict": int(prediction), "radius": float(radius),
                      "correct": int(prediction == label), "time": time.perf_counter() - t0})
    wanted = set(indices)
    return [r for r in writer.rows if int(r["idx"]) in wanted]
