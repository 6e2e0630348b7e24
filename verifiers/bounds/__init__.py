"""Bound propagation: the bound graph of a model (graph.py), one file per op with its IBP and CROWN rules (ops/),
the IBP / CROWN-IBP / CROWN drivers (ibp_crown.py), alpha-CROWN (alpha_crown.py), convolution windows (windows.py),
perturbation sets (perturbation.py) and the IBP tightness metric (tightness.py)."""
