"""Runs: what the commands do around the maths (load the model and the data, pick the inputs, loop with a progress
bar, write results row by row, resume, summarise). The engine (certify/, verifiers/) knows nothing of files or
options; every run here starts from one :class:`RunConfig` and one :func:`prepare`.

    certify.py    certkit certify / predict   (certify.smoothing methods)
    verify.py     certkit verify --model      (verifiers bound methods, PGD)
    conformal.py  certkit conformal           (certify.conformal, RSCP+)
    vnncomp.py    certkit verify --mode benchmark  (verifiers.registry verifiers on a VNN-COMP benchmark)
"""
from certkit.runs.config import DatasetRunConfig, Prepared, RunConfig, open_results, prepare, write_summary

__all__ = ["DatasetRunConfig", "Prepared", "RunConfig", "open_results", "prepare", "write_summary"]
