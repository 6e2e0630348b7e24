"""Sequential (anytime-valid) certification vs fixed-n CERTIFY on the bundled digits model.

    python bench/sequential.py [--radius 0.25] [--alpha 0.001] [--n 100000] [--max 450]

Both certify the same inputs at the same alpha: CERTIFY with n0 + n samples each, sequential until the target radius
is decided (at most n0 + n). Prints the mean samples per input and their ratio, the decisions of both at the radius
and how many differ (a difference is allowed at rate alpha in each direction; near the threshold the two procedures
use different amounts of data, so undecided inputs count as "not certified").
"""
import argparse
import time

import torch

from certkit.certify import NoiseSampler, input_generator
from certkit.certify.smoothing import smoothing_method
from certkit.datasets import load_dataset
from certkit.models import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--radius", type=float, default=0.25)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--max", type=int, default=450)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model("bundled").module
    data = load_dataset("digits")
    sampler = NoiseSampler(model, 0.25, args.batch, "cpu")
    fixed, seq = smoothing_method("gaussian")(sampler), smoothing_method("sequential")(sampler)
    seq.radii = [args.radius]
    idx = list(range(min(args.max, len(data))))
    t = {"fixed": 0.0, "sequential": 0.0}
    samples, agree, only_fixed, only_seq, cert_fixed = 0, 0, 0, 0, 0
    for i in idx:
        x, y = data.x[i], int(data.y[i])
        t0 = time.perf_counter()
        a = fixed.certify(x, args.n0, args.n, args.alpha, input_generator(0, i, torch.device("cpu")))
        t1 = time.perf_counter()
        b = seq.certify(x, args.n0, args.n, args.alpha, input_generator(0, i, torch.device("cpu")))
        t2 = time.perf_counter()
        t["fixed"] += t1 - t0
        t["sequential"] += t2 - t1
        fa = a.prediction == y and a.radius >= args.radius
        fb = b.prediction == y and b.radius >= args.radius
        samples += b.samples
        cert_fixed += fa
        agree += fa == fb
        only_fixed += fa and not fb
        only_seq += fb and not fa
    m = len(idx)
    print(f"{m} inputs, radius {args.radius}, alpha {args.alpha}, sigma 0.25, bundled digits MLP, "
          f"{torch.get_num_threads()} threads")
    print(f"mean samples per input: CERTIFY {args.n0 + args.n}, sequential {samples / m:.0f}  "
          f"(ratio {(args.n0 + args.n) * m / samples:.1f}x fewer)")
    print(f"certified accuracy at r={args.radius}: CERTIFY {cert_fixed / m:.3f}, sequential "
          f"{(cert_fixed - only_fixed + only_seq) / m:.3f}; same decision on {agree}/{m} "
          f"(only CERTIFY {only_fixed}, only sequential {only_seq})")
    print(f"time: CERTIFY {t['fixed']:.1f} s, sequential {t['sequential']:.1f} s "
          f"(ratio {t['fixed'] / max(t['sequential'], 1e-9):.1f}x)")


if __name__ == "__main__":
    main()
