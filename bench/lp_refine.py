"""LP refinement of intermediate bounds against CROWN and alpha-CROWN, on VNN-COMP instances: one table, one run.

    python bench/lp_refine.py NET.onnx PROP.vnnlib [NET.onnx PROP.vnnlib ...] [--seconds 60]

For the first disjunct's input box of each instance: CROWN's intermediate bounds, alpha-CROWN's layer-by-layer
optimised ones (what the complete verifier's activation branch and bound starts from), and the LP refinement
(verifiers/complete/lp_refine.py, every bound checked by duality) started from alpha-CROWN's. Prints, per ReLU layer,
the mean interval width and the number of unstable neurons after each, and the time each took. ReLU networks only.
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", nargs="+", help="NET.onnx PROP.vnnlib pairs")
    ap.add_argument("--seconds", type=float, default=60.0, help="time limit of the LP refinement per instance")
    args = ap.parse_args(argv)
    if len(args.pairs) % 2:
        ap.error("give NET.onnx PROP.vnnlib pairs")

    import torch

    from certkit.models.onnx_import import load_onnx
    from certkit.verifiers.bounds.alpha_crown import optimize_intermediate
    from certkit.verifiers.bounds.ibp_crown import BoundedModule
    from certkit.verifiers.bounds.perturbation import Box
    from certkit.verifiers.complete.lp_refine import refine_bounds
    from certkit.verifiers.complete.milp_attack import relu_nodes
    from certkit.verifiers.complete.vnnlib import parse_vnnlib

    print("| instance | ReLU layer | mean width: CROWN / alpha-CROWN / LP | unstable: CROWN / alpha-CROWN / LP |")
    print("| --- | --- | --- | --- |")
    notes = []
    for net_path, prop_path in zip(args.pairs[::2], args.pairs[1::2]):
        model = load_onnx(net_path)
        term = parse_vnnlib(prop_path).terms[0]
        shape = (1,) + tuple(model.sample_shape)
        bm = BoundedModule(model.module.double().eval(), model.sample_shape)
        if relu_nodes(bm.graph) is None:
            print(f"{net_path}: not a ReLU network, skipped", file=sys.stderr)
            continue
        pert = Box(torch.tensor(term.x_L).reshape(shape), torch.tensor(term.x_U).reshape(shape))
        t0 = time.perf_counter()
        with torch.no_grad():
            crown = [(lb.detach(), ub.detach()) for lb, ub in bm.crown_intermediate(pert)]
        t_crown = time.perf_counter() - t0
        t0 = time.perf_counter()
        alpha = optimize_intermediate(bm, pert, crown)
        t_alpha = time.perf_counter() - t0
        t0 = time.perf_counter()
        lp, stats = refine_bounds(bm.graph, alpha, term.x_L.reshape(-1), term.x_U.reshape(-1),
                                  time.perf_counter() + args.seconds)
        t_lp = time.perf_counter() - t0
        name = f"{net_path.split('/')[-1]} {prop_path.split('/')[-1]}"
        for k, r in enumerate(relu_nodes(bm.graph)):
            j = bm.graph.nodes[r].inputs[0]
            widths = " / ".join(f"{float((b[j][1] - b[j][0]).mean()):.3f}" for b in (crown, alpha, lp))
            unstable = " / ".join(str(int(((b[j][0] < 0) & (b[j][1] > 0)).sum())) for b in (crown, alpha, lp))
            print(f"| {name} | {k + 1} | {widths} | {unstable} |")
        notes.append(f"{name}: CROWN {t_crown:.2f} s, alpha-CROWN {t_alpha:.2f} s, LP {t_lp:.2f} s "
                     f"({stats.lps} LPs, {stats.tightened} tightened, {stats.layers} layers)")
    print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
