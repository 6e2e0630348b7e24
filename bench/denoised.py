"""Denoised smoothing and adaptive smoothing on the bundled digits data: one table, measured in one run.

    python bench/denoised.py [--n 10000] [--max-inputs 0] [--sigma 0.25] [--workdir bench-denoised]

Trains, in this run: a naturally trained MLP F (the bundled model's architecture, 64-128-128-10, clean
cross-entropy); for it an MSE DnCNN denoiser, a stability denoiser fine-tuned from the MSE one (Salman et al.'s
"Stab+MSE"), a consistency denoiser fine-tuned from it, and the ZO-AE-DS pair: an ae_dncnn pre-trained with MSE,
then fine-tuned with the stability objective through F as a black box (RGE, q = 20; zeroth-order) and, for the
first-order/zeroth-order gap, with autograd through F (FO-AE-DS), and with the coordinate-wise estimator (CGE); and
two adaptive-smoothing mixing networks (floor 0.6: certified at the floor; floor 0: empirical only), trained with L2
attacks of radius 0.5 on the mixture. Then certifies on the digits test split
(Gaussian CERTIFY, n0 = 100, alpha = 0.001): the bundled noise-trained model, F alone, F behind each denoiser, and
adaptive smoothing (g = F, robust part = the bundled model) at two fixed weights and with the two mixing networks.
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--max-inputs", type=int, default=0, help="0: the whole test split (450)")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--workdir", default="bench-denoised")
    ap.add_argument("--weights", default="0.9,0.7", help="adaptive-smoothing mixing weights")
    args = ap.parse_args(argv)

    import torch

    from certkit.runs.certify import CertifyConfig, run_certify
    from certkit.train import TrainConfig, train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    s = args.sigma
    timings, queries = {}, {}

    shared = {f.name for f in dataclasses.fields(TrainConfig)}

    def fit(name, **kw):
        out = wd / f"{name}.pt"
        if out.exists():
            out.unlink()
        t0 = time.perf_counter()
        options = {k: v for k, v in kw.items() if k not in shared}
        row = train(TrainConfig(out=str(out), **{k: v for k, v in kw.items() if k in shared}, options=options),
                    quiet=True)
        timings[name] = time.perf_counter() - t0
        if kw.get("zeroth_order"):
            from certkit.models.checkpoint import load_checkpoint_file
            queries[name] = load_checkpoint_file(out)["metadata"]["zeroth_order"]
        print(f"trained {name} in {timings[name]:.0f} s: {row}", file=sys.stderr)
        return str(out)

    nat = fit("natural", method="natural", arch="mlp", arch_config={"hidden": [128, 128]}, epochs=30)
    den = dict(method="denoiser", sigma=s, classifier=nat)
    mse = fit("mse", **den, epochs=30)
    stab = fit("stab_mse", **den, objective="stability", init_from=mse, epochs=20)
    cons = fit("consistency", **den, objective="consistency", init_from=mse, epochs=20)
    ae = fit("ae_mse", **den, arch="ae_dncnn", epochs=30)
    fo_ae = fit("fo_ae_ds", **den, objective="stability", init_from=ae, epochs=20)
    zo_ae = fit("zo_ae_ds", **den, objective="stability", init_from=ae, epochs=20, zeroth_order=True,
                zo_estimator="rge", zo_queries=20)
    zo_cge = fit("zo_ae_ds_cge", **den, objective="stability", init_from=ae, epochs=20, zeroth_order=True,
                 zo_estimator="cge")
    bundled = str(Path(__file__).resolve().parent.parent / "models" / "pretrained" / "digits_mlp_sigma025.pt")
    mixers = {floor: fit(f"mixing_{floor:g}", method="mixing", standard_model=nat, classifier=bundled, sigma=s,
                         eps_l2=0.5, attack_steps=4, mixing_floor=floor, epochs=10) for floor in (0.6, 0.0)}

    rows = []

    def certify(label, model=None, denoiser=None, method="gaussian", **options):
        out = wd / f"cert_{len(rows)}.tsv"
        cfg = CertifyConfig(out=str(out), overwrite=True, quiet=True, model=model, denoiser=denoiser, sigma=s,
                            n=args.n, n0=100, alpha=0.001, max_inputs=args.max_inputs or None, method=method,
                            radii=RADII, options=options)
        t0 = time.perf_counter()
        _, summary = run_certify(cfg)
        rows.append((label, summary, time.perf_counter() - t0))
        print(f"certified {label}: {summary['certified_accuracy']}", file=sys.stderr)

    certify("bundled noise-trained MLP (sigma 0.25, 100 epochs)")
    certify("natural MLP alone", nat)
    certify("natural + MSE denoiser (dncnn)", nat, mse)
    certify("natural + Stab+MSE denoiser (dncnn)", nat, stab)
    certify("natural + consistency denoiser (dncnn)", nat, cons)
    certify("natural + AE-DS, MSE only (ae_dncnn)", nat, ae)
    certify("natural + FO-AE-DS (white-box stability)", nat, fo_ae)
    zo = queries["zo_ae_ds"]
    certify(f"natural + ZO-AE-DS (black box; RGE q={zo['q']}, {zo['queries_per_example_step']} queries/example/step, "
            f"{zo['total_queries']:,} in all)", nat, zo_ae)
    zo = queries["zo_ae_ds_cge"]
    certify(f"natural + ZO-AE-DS (black box; CGE, {zo['queries_per_example_step']} queries/example/step, "
            f"{zo['total_queries']:,} in all)", nat, zo_cge)
    for w in (float(v) for v in args.weights.split(",")):
        certify(f"adaptive, w={w:g}: g = natural MLP, robust = bundled", method="adaptive", standard_model=nat,
                mixing_weight=w)
    for floor, mix in mixers.items():
        kind = "certified at the floor" if floor > 0.5 else "EMPIRICAL only"
        certify(f"adaptive, mixing network (floor {floor:g}, {kind})", method="adaptive", standard_model=nat,
                mixing_network=mix)

    n_inputs = rows[0][1]["n_inputs"]
    print(f"\nDigits test split ({n_inputs} inputs), sigma={s:g}, n0=100, n={args.n}, alpha=0.001; "
          f"training times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print("\n| classifier | " + " | ".join(f"r={r:g}" for r in RADII) + " | ACR | certify s |")
    print("| --- |" + " --- |" * (len(RADII) + 2))
    for label, summ, secs in rows:
        acc = summ["certified_accuracy"]
        cells = [f"{acc[k]:.3f}" for k in acc]
        extra = (f" (mixed clean acc {summ['mixed_accuracy_empirical']:.3f}, empirical)"
                 if "mixed_accuracy_empirical" in summ else "")
        print(f"| {label}{extra} | " + " | ".join(cells) + f" | {summ['average_certified_radius']:.3f} | {secs:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
