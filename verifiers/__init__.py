"""Bound propagation (IBP, CROWN-IBP, CROWN, alpha-CROWN), attacks and verification.

    from certkit.verifiers import BoundedModule, linf_ball, margin_spec
    bm = BoundedModule(model, input_shape=(1, 8, 8))
    lb, ub = bm.compute_bounds(linf_ball(x, eps=0.1), C=margin_spec(y, 10), method="CROWN")
"""
from certkit.verifiers.bounds.graph import BoundGraph, build_graph, check_model
from certkit.verifiers.bounds.ibp_crown import METHODS, BoundedModule, canonical_method, margin_spec
from certkit.verifiers.bounds.perturbation import Box, L2Ball, Perturbation, linf_ball

__all__ = ["METHODS", "BoundGraph", "BoundedModule", "Box", "L2Ball", "Perturbation", "build_graph",
           "canonical_method", "check_model", "linf_ball", "margin_spec"]
