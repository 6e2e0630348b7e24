"""Bounds on general computational graphs, certkit beside auto_LiRPA, in one run.

    PYTHONPATH=path/to/auto_LiRPA/source python bench/bounds_graphs.py [--device cpu|cuda] [--epochs 15]
        [--models NAME ...] [--methods IBP CROWN-IBP CROWN alpha-CROWN]

Five networks, trained naturally on the bundled digits data in the same run (Adam, --epochs), each beyond the
ReLU/Conv/Linear family:

  maxpool    CNN with two 2x2 max-pooling layers on the images resized to 16x16 (64 test inputs)
  concat     ResNet-style CNN whose skips are concatenated along the channels (DenseNet blocks), 16x16 (64 inputs)
  gelu       MLP 64-128-128-10 with GELU activations, 8x8 (256 inputs)
  vit        vision transformer on the images resized to 32x32: 8x8 patches (16 tokens of width 32), learned
             position embedding, 2 pre-norm blocks (LayerNorm, 4-head self-attention written out with Softmax and
             products of two computed tensors, ReLU MLP), mean over tokens, linear head (16 inputs)
  softmax    ReLU MLP 64-128-128-10 whose output is the Softmax probabilities, 8x8 (256 inputs)

For each net and method (alpha-CROWN on the first --alpha-inputs inputs, timed once after its warm-up): margin bounds
C f(x) (C = true class minus each other class) over the Linf ball of radius
--eps on [0, 1] pixels (per-net default below), the fastest of two timed calls after a warm-up, mean width
(ub - lb), mean lower bound and the fraction of inputs verified (every margin lb > 0); where auto_LiRPA imports,
the same quantities through it (its default options; alpha-CROWN: 20 iterations, lr 0.5 on both sides) and the
ratios certkit / auto_LiRPA of time and of mean width. Targets: time <= 1.0x and width <= 1.0x, for IBP, CROWN and
alpha-CROWN. Before timing, both tools' bounds are checked to contain the outputs of the centre and of 64 random
points of each ball (a failed check prints UNSOUND).
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from bounds import resized, timed, train
from torch import nn

from certkit.datasets import load_dataset
from certkit.models.zoo import NormalizeLayer
from certkit.verifiers import METHODS, BoundedModule, linf_ball, margin_spec
from certkit.verifiers.external import AutoLirpaBackend, auto_lirpa_available


class MaxPoolCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = NormalizeLayer([0.3], [0.4])
        self.c1, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(32 * 4 * 4, 64), nn.Linear(64, 10)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.c1(self.norm(x))), 2)
        h = F.max_pool2d(torch.relu(self.c2(h)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(h, 1))))


class ConcatResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = NormalizeLayer([0.3], [0.4])
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(16, 16, 4, stride=2, padding=1)
        self.b2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.stem(self.norm(x)))
        h = torch.cat([h, torch.relu(self.b1(h))], dim=1)
        h = torch.relu(self.down(h))
        h = torch.cat([h, torch.relu(self.b2(h))], dim=1)
        return self.fc(torch.flatten(h, 1))


class Attention(nn.Module):
    """Multi-head self-attention written out: softmax(q k^T / sqrt(d)) v per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        B, T, D = x.shape

        def split(t):
            return t.reshape(B, T, self.heads, self.d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.att = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.att(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, side: int = 32, patch: int = 8, dim: int = 32, heads: int = 4, depth: int = 2):
        super().__init__()
        self.norm = NormalizeLayer([0.3], [0.4])
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (side // patch) ** 2, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        h = self.embed(self.norm(x)).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.blocks(h).mean(dim=1))


def mlp(act) -> nn.Sequential:
    return nn.Sequential(NormalizeLayer([0.3], [0.4]), nn.Flatten(), nn.Linear(64, 128), act(), nn.Linear(128, 128),
                         act(), nn.Linear(128, 10))


def models():
    """name -> (net, input side, test inputs, default Linf eps, whether a Softmax follows the trained logits)."""
    torch.manual_seed(0)
    return {
        "maxpool": (MaxPoolCNN(), 16, 64, 0.01, False),
        "concat": (ConcatResNet(), 16, 64, 0.01, False),
        "gelu": (mlp(nn.GELU), 8, 256, 0.01, False),
        "vit": (ViT(), 32, 16, 0.002, False),
        "softmax": (mlp(nn.ReLU), 8, 256, 0.01, True),
    }


def lirpa_gelu(net: nn.Module) -> nn.Module:
    """``net`` with every nn.GELU replaced by auto_LiRPA's own GELU module (the same function, traced as its custom
    Gelu op with a dedicated bound rule; torch's GELU exports as Erf, for which auto_LiRPA has no rule)."""
    if not any(isinstance(m, nn.GELU) for m in net.modules()):
        return net
    import copy

    from auto_LiRPA.operators.gelu import GELU
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for key, child in parent.named_children():
            if isinstance(child, nn.GELU):
                setattr(parent, key, GELU())
    return net


def contains(lb, ub, net, pert, C, points=64, seed=0):
    """Whether lb <= C f(x) <= ub (up to 1e-5 relative) at the centre and ``points`` random points of the box."""
    lo, hi = pert.box()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for i in range(points + 1):
            u = torch.rand(lo.shape, generator=gen).to(lo.device) if i else torch.full_like(lo, 0.5)
            y = torch.einsum("bsk,bk->bs", C, net(lo + (hi - lo) * u))
            tol = 1e-5 * (1 + y.abs())
            if (y < lb - tol).any() or (ub is not None and (y > ub + tol).any()):
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--eps", type=float, default=None, help="Linf radius on [0,1] pixels for every net "
                    "(default: 0.01, 0.002 for the transformer)")
    ap.add_argument("--models", nargs="*", help="only these nets: maxpool, concat, gelu, vit, softmax")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), help="bound methods (default: all four)")
    ap.add_argument("--alpha-inputs", type=int, default=16, help="alpha-CROWN on the first K inputs only (auto_LiRPA's "
                    "alpha-CROWN on 64 inputs of the max-pool CNN outgrew 23 GB), timed once after the warm-up")
    args = ap.parse_args()
    device = torch.device(args.device)
    train_set, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    lirpa = auto_lirpa_available()
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; nets trained naturally on "
          f"digits for {args.epochs} epochs; auto_LiRPA {'importable' if lirpa else 'NOT importable: no comparison'}")
    print(f"{'model':<9}{'method':<13}{'certkit s':>10}{'width':>11}{'mean lb':>10}{'verified':>9}"
          f"{'auto_LiRPA s':>13}{'width':>11}{'mean lb':>10}{'verified':>9}{'time ratio':>11}{'width ratio':>12}")
    for name, (net, side, nb, eps, softmax_out) in models().items():
        if args.models and name not in args.models:
            continue
        eps = args.eps if args.eps is not None else eps
        x, y = resized(test.x[:nb], side).to(device), test.y[:nb].to(device)
        net = train(net, resized(train_set.x, side), train_set.y, args.epochs)
        if softmax_out:
            net = nn.Sequential(net, nn.Softmax(dim=1))
        net = net.to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        acc = (net(x).argmax(1) == y).float().mean().item()
        shape, C, pert = (1, side, side), margin_spec(y, 10), linf_ball(x, eps)
        tools = {"certkit": BoundedModule(net, shape)}
        note = ""
        if lirpa:
            try:
                tools["auto_LiRPA"] = AutoLirpaBackend(lirpa_gelu(net), shape)
            except Exception as e:  # noqa: BLE001 - e.g. an op auto_LiRPA has no rule for
                note = f"; auto_LiRPA cannot bound it ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
        print(f"{name:<9}clean accuracy {acc:.3f} on {nb} inputs ({side}x{side}), Linf eps {eps}{note}", flush=True)
        for method in args.methods:
            cells, res = [], {}
            alpha = method == "alpha-CROWN"
            p_m, C_m = (linf_ball(x[:args.alpha_inputs], eps), C[:args.alpha_inputs]) if alpha else (pert, C)
            for tool, bm in tools.items():
                def run(bm=bm, method=method, pert=p_m, C=C_m):
                    with torch.enable_grad() if method == "alpha-CROWN" else torch.no_grad():
                        lb, ub = bm.compute_bounds(pert, C, method)
                    return lb.detach(), ub.detach()
                try:
                    (lb, ub), sec = timed(run, device, 1 if alpha else 2)
                except Exception as e:  # noqa: BLE001 - a tool that cannot bound this net is reported, not fatal
                    cells.append(f"{'failed: ' + type(e).__name__:>41}")
                    continue
                sound = "" if contains(lb, ub, net, p_m, C_m) else " UNSOUND"
                width = (ub - lb).mean().item()
                res[tool] = (sec, width)
                cells.append(f"{sec:>10.4f}{width:>11.4g}{lb.mean().item():>10.4g}"
                             f"{(lb > 0).all(1).float().mean().item():>9.3f}{sound}")
            ratios = ""
            if len(res) == 2:
                (s1, w1), (s2, w2) = res["certkit"], res["auto_LiRPA"]
                ratios = f"{s1 / s2:>11.2f}{w1 / w2:>12.4f}"
            print(f"{name:<9}{method:<13}" + "".join(cells) + ratios, flush=True)


if __name__ == "__main__":
    main()
