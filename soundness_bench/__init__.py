"""Soundness benchmark with hidden counterexamples: see the project's issues."""
