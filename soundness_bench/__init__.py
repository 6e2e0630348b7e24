"""Soundness benchmark for neural-network verifiers (Zhou et al. 2024, "Testing Neural Network Verifiers: A
Soundness Benchmark with Hidden Counterexamples").

generate.py trains small networks with planted counterexamples hidden from adversarial attacks (hide.py) and
exports them as VNN-COMP folders (export.py); run.py runs any VNN-COMP-style verifier on them (adapters.py holds the
built-in ones, unsound_verifiers.py the deliberately unsound ones in their own registry); score.py flags unsound
answers against the hidden ground truth.
CLI: ``certkit soundness generate | run | score``.
"""
from certkit.soundness_bench.generate import GenerateConfig, config_with_preset, generate
from certkit.soundness_bench.runner import run_verifier
from certkit.soundness_bench.score import format_audit_table, score

__all__ = ["GenerateConfig", "config_with_preset", "format_audit_table", "generate", "run_verifier", "score"]
