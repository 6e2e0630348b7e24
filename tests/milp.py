"""Exact optimum of a linear function of a small ReLU MLP over a box, as a big-M MILP solved by scipy's HiGHS
(Tjeng, Xiao, Tedrake, ICLR 2019, "Evaluating robustness of neural networks with mixed integer programming", Eq. 5,
with interval-arithmetic pre-activation bounds as the big-M constants). Test helper: the ground truth that complete
verifiers (tests/test_bab.py) and bounds (tests/test_bounds.py) are checked against.
"""
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


def ibp_np(layers, lo, hi):
    """Interval bounds (l, u) of every hidden pre-activation of the MLP ``layers`` [(W, b), ...] over [lo, hi]."""
    out = []
    for W, b in layers[:-1]:
        c, r = (hi + lo) / 2, (hi - lo) / 2
        zc, zr = W @ c + b, np.abs(W) @ r
        out.append((zc - zr, zc + zr))
        lo, hi = np.maximum(zc - zr, 0), np.maximum(zc + zr, 0)
    return out


def _relu_milp(layers, lo, hi, z_bounds=None, extra: int = 0):
    """Big-M constraints of the ReLU MLP ``layers`` over [lo, hi]: (rows, lbs, ubs, var_lo, var_hi, integrality,
    indices of the last hidden layer's activations, number of variables); ``extra`` free variables come last."""
    pre = ibp_np(layers, lo, hi)
    n0 = lo.size
    sizes = [W.shape[0] for W, _ in layers[:-1]]
    nvar = n0 + 2 * sum(sizes) + extra
    A, lbs, ubs = [], [], []
    var_lo, var_hi = list(lo), list(hi)
    integrality = [0] * n0
    prev = list(range(n0))
    off = n0
    for k, ((W, b), (l, u), h) in enumerate(zip(layers[:-1], pre, sizes)):
        a_idx, d_idx = list(range(off, off + h)), list(range(off + h, off + 2 * h))
        var_lo += [0.0] * h + [0.0] * h
        var_hi += [max(float(v), 0.0) for v in u] + [1.0] * h
        integrality += [0] * h + [1] * h
        for i in range(h):
            z = np.zeros(nvar)
            z[prev] = W[i]
            # a >= z  ->  a - z >= b_i
            row = -z.copy(); row[a_idx[i]] += 1
            A.append(row); lbs.append(b[i]); ubs.append(np.inf)
            # a <= z - l (1 - d)  ->  a - z - l d <= b_i - l
            row = -z.copy(); row[a_idx[i]] += 1; row[d_idx[i]] -= l[i]
            A.append(row); lbs.append(-np.inf); ubs.append(b[i] - l[i])
            # a <= u d
            row = np.zeros(nvar); row[a_idx[i]] = 1; row[d_idx[i]] = -max(u[i], 0)
            A.append(row); lbs.append(-np.inf); ubs.append(0.0)
            if z_bounds is not None:  # z_lo - b <= W x <= z_hi - b
                zl, zh = z_bounds[k][0][i], z_bounds[k][1][i]
                if np.isfinite(zl) or np.isfinite(zh):
                    A.append(z.copy()); lbs.append(zl - b[i]); ubs.append(zh - b[i])
        prev, off = a_idx, off + 2 * h
    var_lo += [-np.inf] * extra
    var_hi += [np.inf] * extra
    integrality += [0] * extra
    return A, lbs, ubs, var_lo, var_hi, integrality, prev, nvar


def _solve(obj, A, lbs, ubs, var_lo, var_hi, integrality):
    res = milp(obj, constraints=LinearConstraint(np.array(A), lbs, ubs), integrality=integrality,
               bounds=Bounds(var_lo, var_hi), options={"mip_rel_gap": 0, "presolve": True})
    if res.status == 2:
        return None
    assert res.status == 0, res.message
    return res.fun


def exact_min(layers, c, lo, hi, z_bounds=None):
    """min over x in [lo, hi] of c . f(x) for the ReLU MLP ``layers`` (float64 numpy (W, b) per Linear layer).

    ``z_bounds``: per hidden layer, (z_lo, z_hi) constraints on its pre-activations (a branch-and-bound subdomain;
    +-inf where free). Returns +inf when the constraints are infeasible.
    """
    A, lbs, ubs, var_lo, var_hi, integrality, prev, nvar = _relu_milp(layers, lo, hi, z_bounds)
    W, b = layers[-1]
    obj = np.zeros(nvar)
    obj[prev] = c @ W
    fun = _solve(obj, A, lbs, ubs, var_lo, var_hi, integrality)
    return float("inf") if fun is None else fun + float(c @ b)


def exact_min_max(layers, C, d, lo, hi):
    """min over x in [lo, hi] of max_r (C_r f(x) - d_r) (rows C (S, K), d (S,)): <= 0 exactly when the conjunction
    C f(x) <= d has a solution in the box (a VNN-LIB disjunct is violated). An epigraph variable t >= every row."""
    A, lbs, ubs, var_lo, var_hi, integrality, prev, nvar = _relu_milp(layers, lo, hi, extra=1)
    W, b = layers[-1]
    for c, dr in zip(C, d):          # t - c W a >= c b - d_r
        row = np.zeros(nvar)
        row[prev] = -(c @ W)
        row[-1] = 1.0
        A.append(row); lbs.append(float(c @ b) - dr); ubs.append(np.inf)
    obj = np.zeros(nvar)
    obj[-1] = 1.0
    return _solve(obj, A, lbs, ubs, var_lo, var_hi, integrality)
