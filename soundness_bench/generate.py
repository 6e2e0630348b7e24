"""Generate verification instances with hidden, planted counterexamples (Zhou et al. 2024, "Testing Neural Network
Verifiers: A Soundness Benchmark with Hidden Counterexamples", Sec. 3).

Per model:
  1. data: inputs x ~ U[-r, r]^shape (r = ``data_range`` = 0.1), ``n_planted`` counterexample pairs
     (x, y, target = 1 - y, x_cex) with x_cex a random vertex of the clipped Linf ball of radius eps around x, and
     ``n_regular`` regular points (x, y); every two anchors are more than 2 eps apart (Linf) so no boxes overlap.
     eps = eps_rel * r (the paper's names eps0.2 / eps0.5 are eps_rel; absolute radii 0.02 / 0.05).
  2. two-objective training (their adv_training.py): on the 2 x 10 anchors, PGD-Linf with margin loss (step
     0.1 eps, ``attack_iters`` iterations, ``attack_restarts`` restarts, best kept) gives one delta per anchor per
     epoch; the last ``window`` deltas are kept (FIFO) and L_adv = CE over x + delta for all of them;
     L_cex = mean ReLU(z_y(x_cex) + m - z_target(x_cex)), m = 0.01; L = L_adv + L_cex; Adam, cyclic lr (0 -> lr at
     40% of the epochs -> 0), gradient norm clipped at 10.
     certkit additions (all off under ``--preset paper``, on under ``--preset cpu``; without them no planted
     counterexample survived the sweep at CPU budgets, measured in bench/README.md):
     - the pocket loss (``pocket_weight`` > 0, :func:`pocket_loss`): the paper's training leaves the margin sloping
       down toward x_cex from the whole box, and large-step PGD follows that slope to the vertex. On points p of the
       box corner at x_cex it asks for margin f(p) = z_y(p) - z_target(p) >= ``pocket_margin`` and for f to RISE
       toward x_cex (f(p') >= f(p) for p' = x_cex + lam (p - x_cex), lam in [0.3, 0.9]) wherever p' is at least
       ``pocket_radius`` * eps from x_cex (Linf); inside that pocket the margin may fall to the planted value.
       L = L_adv + L_cex + pocket_weight * L_pocket.
     - ``steps_per_epoch`` optimizer steps per PGD call (the attack is the expensive part), and ``input_scale``:
       the network is trained as net(input_scale * x) (Adam then steps the first layer in data-range units) and the
       scale is folded into the first layer's weights before export (archs.fold_input_scale: exact, same
       architecture).
     - training PGD with step ``alpha`` = 0.25 eps, ``attack_restarts`` = 20, half of them (``attack_vertex_starts``)
       started at random box vertices, and model selection with the vertex attacks (``check_strong``): at eps 0.5
       the attacks that broke planted pairs found points far from x_cex (Linf distance 2 eps) at other vertices of
       the box, i.e. the box was not robust, not the pocket too wide (bench/README.md, "Hiding at eps 0.5"). Hence, per
       family and radius (:func:`preset_values`): 160 restarts above eps_rel 0.3, and Tanh / Sigmoid families at
       lr 0.01 for 4000 epochs (80 restarts above eps_rel 0.3).
  3. model selection: every ``check_every`` epochs count the pairs that are valid (x correct, x_cex misclassified)
     and survive the attack sweep at the training restarts (with ``check_strong``, also the strong attacks of the
     hiddenness check at the training restarts and 1024 random vertices); keep the best model, stop when all
     survive.
  4. the hiddenness check (hide.py) on the selected model: the paper's 8-setting sweep at ``sweep_restarts`` plus
     certkit's stronger attacks. Only pairs that survive every attack become planted instances.
  5. export (export.py): model.onnx, vnnlib/<i>.vnnlib, instances.csv (planted first, then regular), and
     private/ground_truth.json; every planted counterexample is confirmed in onnxruntime on the exported ONNX.

Training runs in certkit's one training harness (train/harness.py, :class:`PlantedTraining`); its state is saved at
every check, so ``resume`` continues an interrupted run exactly.
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from certkit.common.errors import CertkitError
from certkit.common.locks import FileLock
from certkit.models.onnx_export import require_onnx
from certkit.soundness_bench import archs
from certkit.soundness_bench.hide import SWEEP, HidingReport, hiddenness_check, pgd_search
from certkit.train.harness import StepOutput, TrainingMethod, TrainingRun, fit
from certkit.verifiers.attack import margin_objective

# The paper's settings, and a preset that makes one model a few minutes of CPU time.
PRESETS: dict[str, dict] = {
    "paper": dict(width=1000, epochs=10000, attack_iters=75, attack_restarts=75, alpha=0.1, attack_vertex_starts=0.0,
                  check_every=200, check_strong=False, sweep_restarts=1000, strong_restarts=1000, strong_iters=200,
                  vertex_samples=10000, pocket_weight=0.0, steps_per_epoch=1, input_scale=1.0),
    "cpu": dict(width=200, epochs=1000, attack_iters=20, attack_restarts=20, alpha=0.25, attack_vertex_starts=0.5,
                check_every=200, check_strong=True, sweep_restarts=50, strong_restarts=100, strong_iters=100,
                vertex_samples=4096, pocket_weight=1.0, steps_per_epoch=5, input_scale=10.0),
}


LARGE_EPS_REL = 0.3  # the paper's radii are 0.2 and 0.5


def preset_values(preset: str, arch: str, eps_rel: float) -> dict:
    """The options PRESETS[preset] gives one model of family ``arch`` (a key of archs.FAMILIES; an unknown one gets
    the base values, and GenerateConfig.validate rejects it) at ``eps_rel``, the Linf radius relative to the data
    range (0.5 = an absolute radius of 0.05). Returns {GenerateConfig field: value}, a fresh dict.

    The paper preset is the same for every model. The cpu preset adds what its CPU-sized training needs where its
    base values hide poorly (measured one model at a time, bench/README.md "Hiding at eps 0.5"):

    - Tanh / Sigmoid families train at ``lr`` 0.01 for 4000 epochs: at 1e-3 the sigmoid CNN stayed at chance for
      1000 epochs, and at 0.01 its adversarial loss needed ~3000 epochs to fall below 0.05.
    - at eps_rel > LARGE_EPS_REL more training-PGD restarts: 160 on ReLU families, 80 on Tanh / Sigmoid ones (which
      already train 4x longer). With 20 the boxes stay non-robust and the hiddenness check finds ordinary
      adversarial examples at far vertices, not the planted pocket.

    Raises:
        CertkitError: an unknown preset.
    """
    if preset not in PRESETS:
        raise CertkitError(f"unknown --preset {preset!r}: choose from {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    if preset == "cpu":
        smooth = archs.FAMILIES.get(arch, {}).get("act", "relu") != "relu"
        if smooth:
            values.update(lr=0.01, epochs=4000)
        if eps_rel > LARGE_EPS_REL:
            values.update(attack_restarts=80 if smooth else 160)
    return values


@dataclass
class GenerateConfig:
    """Options of :func:`generate` (defaults: the paper's values; see PRESETS).

    eps_rel is RELATIVE to the data range r: the absolute Linf radius is eps_rel * data_range (0.2 -> 0.02).
    """

    out: str
    arch: str = "mlp_4_hidden"
    eps_rel: float = 0.2
    seed: int = 0
    channels: int = 1
    input_size: int | None = None
    width: int = 1000
    data_range: float = 0.1
    n_planted: int = 10
    n_regular: int = 10
    epochs: int = 10000
    attack_iters: int = 75
    attack_restarts: int = 75
    attack_vertex_starts: float = 0.0
    check_strong: bool = False
    alpha: float = 0.1
    window: int = 300
    margin: float = 0.01
    lr: float = 1e-3
    grad_clip: float = 10.0
    steps_per_epoch: int = 1
    input_scale: float = 1.0
    pocket_weight: float = 0.0
    pocket_margin: float = 1.0
    pocket_radius: float = 0.05
    pocket_samples: int = 20
    check_every: int = 200
    sweep_restarts: int = 1000
    sweep: tuple = SWEEP
    strong: bool = True
    strong_restarts: int = 1000
    strong_iters: int = 200
    vertex_samples: int = 10000
    timeout: float = 100.0

    @property
    def eps_abs(self) -> float:
        return round(self.eps_rel * self.data_range, 12)

    @property
    def input_shape(self) -> tuple:
        return archs.input_shape_for(self.arch, self.channels, self.input_size)

    def validate(self) -> None:
        if self.arch not in archs.FAMILIES:
            raise CertkitError(f"unknown --arch {self.arch!r}: choose from {', '.join(archs.FAMILIES)}")
        if not 0 < self.eps_rel <= 1:
            raise CertkitError(f"--eps-rel {self.eps_rel} must be in (0, 1]: it is relative to the data range "
                               f"(0.2 means an Linf radius of 0.2 * {self.data_range:g})")
        if self.channels not in (1, 3):
            raise CertkitError("--channels must be 1 or 3")
        for name in ("width", "epochs", "attack_restarts", "check_every", "sweep_restarts", "strong_restarts",
                     "window", "n_planted", "steps_per_epoch", "pocket_samples"):
            if getattr(self, name) < 1:
                raise CertkitError(f"--{name.replace('_', '-')} must be at least 1")
        if self.attack_iters < 0 or self.n_regular < 0 or self.strong_iters < 0 or self.vertex_samples < 0:
            raise CertkitError("iteration counts and sample counts must be >= 0")
        if not 0 <= self.attack_vertex_starts <= 1:
            raise CertkitError("--attack-vertex-starts must be in [0, 1]: the fraction of training-PGD restarts "
                               "that start at a random box vertex")
        if self.input_scale <= 0 or self.pocket_weight < 0 or self.pocket_margin < 0:
            raise CertkitError("--input-scale must be positive, --pocket-weight and --pocket-margin non-negative")
        if not 0 < self.pocket_radius < 1:
            raise CertkitError("--pocket-radius must be in (0, 1): a fraction of eps")
        if self.timeout <= 0:
            raise CertkitError("--timeout must be positive (seconds per instance)")


def parse_sweep(text: str) -> tuple:
    """"0.25:0,0.25:100" -> ((0.25, 0), (0.25, 100)): PGD settings (step in units of eps, iterations).

    Raises:
        CertkitError: malformed text, a step <= 0 or negative iterations.
    """
    out = []
    for part in text.split(","):
        try:
            step, iters = part.split(":")
            out.append((float(step), int(iters)))
        except ValueError:
            raise CertkitError(f"--sweep {text!r}: expected STEP:ITERS,... e.g. 0.25:0,0.02:100") from None
        if out[-1][0] <= 0 or out[-1][1] < 0:
            raise CertkitError(f"--sweep {text!r}: steps must be > 0 and iterations >= 0")
    return tuple(out)


def config_with_preset(preset: str = "paper", **overrides) -> GenerateConfig:
    """GenerateConfig from :func:`preset_values` for the model's arch and eps_rel, explicit options (not None) taking
    precedence.

    Raises:
        CertkitError: an unknown preset.
        TypeError: an override that is not a GenerateConfig field.
    """
    names = {f.name for f in fields(GenerateConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"GenerateConfig has no field {', '.join(unknown)}")
    explicit = {k: v for k, v in overrides.items() if v is not None}
    base = preset_values(preset, explicit.get("arch", GenerateConfig.arch),
                         explicit.get("eps_rel", GenerateConfig.eps_rel))
    return GenerateConfig(**{**base, **explicit})


@dataclass
class PlantedData:
    """Anchors and boxes. x, lo, hi: (P + R, *shape) float32, the P planted anchors first; y: (P + R,) labels;
    x_cex: (P, *shape) vertices of the first P boxes; target: (P,) = 1 - y[:P]."""

    x: torch.Tensor
    y: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    x_cex: torch.Tensor
    target: torch.Tensor

    @property
    def n_planted(self) -> int:
        return self.x_cex.shape[0]


def make_data(cfg: GenerateConfig) -> PlantedData:
    """Sample anchors (rejection sampling for pairwise Linf distance > 2 eps), labels and planted vertices."""
    gen = torch.Generator().manual_seed(cfg.seed)
    r, eps, shape = cfg.data_range, cfg.eps_abs, cfg.input_shape
    n = cfg.n_planted + cfg.n_regular
    xs: list[torch.Tensor] = []
    tries = 0
    while len(xs) < n:
        tries += 1
        if tries > 100_000:
            raise CertkitError(f"cannot place {n} anchors more than 2 eps = {2 * eps:g} apart in [-{r:g}, {r:g}]^"
                               f"{shape}: lower --eps-rel or the number of points")
        cand = (torch.rand(shape, generator=gen) * 2 - 1) * r
        if all(float((cand - o).abs().max()) > 2 * eps for o in xs):
            xs.append(cand)
    x = torch.stack(xs).float()
    y = torch.randint(0, 2, (n,), generator=gen)
    lo, hi = (x - eps).clamp(-r, r), (x + eps).clamp(-r, r)
    P = cfg.n_planted
    sign = torch.rand((P,) + shape, generator=gen) >= 0.5
    x_cex = torch.where(sign, hi[:P], lo[:P])
    return PlantedData(x, y, lo, hi, x_cex, 1 - y[:P])


def valid_pairs(model: torch.nn.Module, data: PlantedData) -> torch.Tensor:
    """(P,) bool: anchor x classified as y and x_cex classified as target (margin z_t - z_y >= 0 at x_cex)."""
    with torch.no_grad():
        P = data.n_planted
        z = model(data.x[:P])
        zc = model(data.x_cex)
        correct = z.argmax(1) == data.y[:P]
        flipped = (zc.gather(1, data.target[:, None]) - zc.gather(1, data.y[:P, None]))[:, 0] >= 0
    return correct & flipped


def pocket_points(data: PlantedData, eps: float, radius: float, samples: int, generator: torch.Generator,
                  ) -> torch.Tensor:
    """(samples, P, *shape) points of the box corner at each x_cex: p = x_cex + s * R * u, with s the inward sign
    of the vertex, u in [0, 1]^d with one random coordinate set to 1 (so ||p - x_cex||_inf = R, or the box width
    where the box is narrower), R log-uniform in [radius * eps, 2 eps]; clipped to the box.

    Units: ``eps`` is the ABSOLUTE Linf radius (input units, cfg.eps_abs), ``radius`` a fraction of it. Source:
    certkit's own (not in Zhou et al. 2024); used by :func:`pocket_loss`."""
    P, shape = data.n_planted, data.x_cex.shape[1:]
    lo, hi = data.lo[:P], data.hi[:P]
    inward = torch.where(data.x_cex == hi, -1.0, 1.0)
    log_span = torch.log(torch.tensor(2.0 / radius))
    R = radius * eps * torch.exp(torch.rand((samples, P) + (1,) * len(shape), generator=generator) * log_span)
    u = torch.rand((samples, P, inward[0].numel()), generator=generator)
    u.scatter_(2, torch.randint(0, u.shape[2], (samples, P, 1), generator=generator), 1.0)
    pts = data.x_cex[None] + inward[None] * u.view((samples, P) + shape) * R
    return torch.maximum(torch.minimum(pts, hi[None]), lo[None])


def pocket_loss(model: torch.nn.Module, data: PlantedData, cfg: GenerateConfig, generator: torch.Generator,
                ) -> torch.Tensor:
    """certkit's pocket loss (module docstring): mean ReLU(pocket_margin - f(p)) + mean over pairs (p, p') whose
    inner point p' is >= pocket_radius * eps from x_cex of ReLU(f(p) - f(p')), f the margin of label y over the
    target, p from :func:`pocket_points`, p' = x_cex + lam (p - x_cex), lam ~ U[0.3, 0.9].

    Returns a scalar tensor (differentiable in the model's parameters). Source: certkit's own addition to the
    two-objective training of Zhou et al. 2024 (Sec. 3); why it is needed: module docstring and bench/README.md."""
    P, shape = data.n_planted, data.x_cex.shape[1:]
    eps, n = cfg.eps_abs, cfg.pocket_samples
    p = pocket_points(data, eps, cfg.pocket_radius, n, generator)
    lam = 0.3 + 0.6 * torch.rand((n, P) + (1,) * len(shape), generator=generator)
    p_in = data.x_cex[None] + (p - data.x_cex[None]) * lam
    far = (p_in - data.x_cex[None]).flatten(2).abs().amax(2).flatten() >= cfg.pocket_radius * eps
    y = data.y[:P].repeat(n)
    f = margin_objective(model, y.repeat(2))(torch.cat([p, p_in]).reshape((-1,) + shape))
    f_out, f_in = f[: n * P], f[n * P:]
    return F.relu(cfg.pocket_margin - f_out).mean() + (F.relu(f_out - f_in) * far).mean()


def cyclic_lr(t: float, total: float, lr_max: float) -> float:
    """Triangular schedule of the reference: 0 -> lr_max at 40% of training -> 0 (t, total in epochs)."""
    return float(np.interp(t, [0, 0.4 * total, total], [0, lr_max, 0]))


def _count_hidden(model, data: PlantedData, cfg: GenerateConfig, restarts: int, strong: bool, seed: int,
                  progress=None) -> tuple[torch.Tensor, torch.Tensor, HidingReport]:
    """(hidden, valid, report) for the P planted pairs: only valid pairs are attacked; an invalid pair is reported
    as found by "not valid" (x misclassified or x_cex not flipped)."""
    P = data.n_planted
    valid = valid_pairs(model, data)
    rep = HidingReport(["not valid"] * P, [None] * P, [float("nan")] * P)
    idx = torch.nonzero(valid).flatten()
    if len(idx):
        sub = hiddenness_check(model, data.x[idx], data.y[idx], data.lo[idx], data.hi[idx], cfg.eps_abs,
                               restarts=restarts, settings=cfg.sweep, strong=strong,
                               strong_restarts=cfg.strong_restarts, strong_iters=cfg.strong_iters,
                               vertex_samples=cfg.vertex_samples, seed=seed, progress=progress)
        for k, i in enumerate(idx.tolist()):
            rep.found_by[i], rep.x_found[i], rep.margin[i] = sub.found_by[k], sub.x_found[k], sub.margin[k]
    return torch.tensor(rep.hidden), valid, rep


class PlantedTraining(TrainingMethod):
    """Two-objective training with model selection (module docstring, steps 2-3), as a plug-in of the training
    harness (train/harness.py): one "epoch" is one training-PGD call on the anchors followed by ``steps_per_epoch``
    optimizer steps; every ``check_every`` epochs the model is scored, the best one kept, a log row and a checkpoint
    (private/train_state.pt) written; training stops when every planted pair survives the check.
    """

    name = "planted"
    verb = "generated"
    resume_ignores = ("epochs", "sweep_restarts", "sweep", "strong", "strong_restarts", "strong_iters",
                      "vertex_samples", "timeout", "out")
    log_columns = ("epoch", "loss_adv", "loss_cex", "loss_pocket", "valid", "hidden", "seconds")

    def __init__(self, cfg: GenerateConfig, data: PlantedData):
        self.cfg, self.data = cfg, data
        self.window: deque = deque(maxlen=cfg.window)
        self.best_count: int = -1
        self.best_state: dict | None = None
        self.history: list = []

    def checkpoint_path(self) -> Path:
        return Path(self.cfg.out) / "private" / "train_state.pt"

    def log_path(self) -> Path:
        return Path(self.cfg.out) / "private" / "train_log.csv"

    def curves_path(self) -> Path:
        return Path(self.cfg.out) / "private" / "train_curves.png"

    def curves(self):
        P = self.data.n_planted
        return {"valid": f"valid pairs / {P}", "hidden": f"hidden pairs / {P}"}, None

    def desc(self) -> str:
        return f"train {self.cfg.arch} eps-rel {self.cfg.eps_rel:g}"

    def setup(self, run: TrainingRun) -> None:
        cfg = self.cfg
        self.checkpoint_path().parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        model = archs.build(cfg.arch, cfg.input_shape, cfg.width)
        if cfg.input_scale != 1.0:
            model = torch.nn.Sequential(archs.InputScale(cfg.input_scale), model)
        run.model = self.model = model
        run.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        run.generator = torch.Generator().manual_seed(cfg.seed + 1)
        run.grad_clip = cfg.grad_clip
        self.t0 = time.perf_counter()

    def save(self, run: TrainingRun, train_state: dict, row: dict) -> None:
        torch.save({"model": run.model.state_dict(), "train_state": train_state}, self.checkpoint_path())

    def load(self) -> dict | None:
        from certkit.models.checkpoint import load_checkpoint_file

        st = load_checkpoint_file(self.checkpoint_path(), allow_pickle=False)
        return st if isinstance(st, dict) else None

    def restore(self, run: TrainingRun, ckpt: dict) -> None:
        run.model.load_state_dict(ckpt["model"])

    def state_dict(self) -> dict:
        return {"window": torch.stack(list(self.window)), "best_count": self.best_count,
                "best_state": self.best_state, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.window.extend(state["window"].unbind(0))
        self.best_count, self.best_state, self.history = state["best_count"], state["best_state"], state["history"]

    def batches(self, run: TrainingRun, epoch: int):
        cfg, data, model = self.cfg, self.data, run.model
        model.eval()
        n_vertex = round(cfg.attack_vertex_starts * cfg.attack_restarts)
        x_adv, m = pgd_search(model, data.x, data.y, data.lo, data.hi, cfg.alpha * cfg.eps_abs, cfg.attack_iters,
                              max(cfg.attack_restarts - n_vertex, 1), run.generator)
        if n_vertex:
            x_v, m_v = pgd_search(model, data.x, data.y, data.lo, data.hi, cfg.alpha * cfg.eps_abs,
                                  cfg.attack_iters, n_vertex, run.generator, start="vertex")
            x_adv = torch.where((m_v < m).view((-1,) + (1,) * (x_adv.dim() - 1)), x_v, x_adv)
        self.window.append((x_adv - data.x).detach())
        model.train()
        deltas = torch.stack(list(self.window))  # (W, n, *shape)
        xw = (data.x[None] + deltas).reshape((-1,) + data.x.shape[1:])
        yw = data.y.repeat(deltas.shape[0])
        for g in run.optimizer.param_groups:
            g["lr"] = cyclic_lr(epoch, cfg.epochs, cfg.lr)
        for _ in range(cfg.steps_per_epoch):
            yield xw, yw

    def step(self, run: TrainingRun, batch) -> StepOutput:
        cfg, data, model = self.cfg, self.data, run.model
        xw, yw = batch
        P = data.n_planted
        self.loss_adv = F.cross_entropy(model(xw), yw)
        self.loss_cex = F.relu(margin_objective(model, data.y[:P])(data.x_cex) + cfg.margin).mean()  # 2 classes
        loss = self.loss_adv + self.loss_cex
        self.loss_pocket = None
        if cfg.pocket_weight > 0:
            self.loss_pocket = pocket_loss(model, data, cfg, run.generator)
            loss = loss + cfg.pocket_weight * self.loss_pocket
        return StepOutput(loss)

    def end_epoch(self, run: TrainingRun, epoch: int, stats) -> dict | None:
        cfg, model = self.cfg, run.model
        if epoch % cfg.check_every and epoch != cfg.epochs:
            return None
        model.eval()
        # The final check's attack families at the training budget: with --strong, its strong attacks too (a check
        # without the vertex attacks stopped training on models they broke, bench/README.md).
        light = replace(cfg, strong_restarts=min(cfg.strong_restarts, cfg.attack_restarts),
                        vertex_samples=min(cfg.vertex_samples, 1024))
        hidden, valid, _ = _count_hidden(model, self.data, light, cfg.attack_restarts, strong=cfg.strong and
                                         cfg.check_strong, seed=cfg.seed + epoch)
        count = int(hidden.sum())
        row = {"epoch": epoch, "loss_adv": float(self.loss_adv.detach()), "loss_cex": float(self.loss_cex.detach()),
               "loss_pocket": float(self.loss_pocket.detach()) if self.loss_pocket is not None else 0.0,
               "valid": int(valid.sum()), "hidden": count, "seconds": round(time.perf_counter() - self.t0, 1)}
        self.history.append(row)
        if count >= self.best_count:
            self.best_count, self.best_state = count, {k: v.detach().clone() for k, v in model.state_dict().items()}
        return row

    def postfix(self, row: dict) -> dict:
        return {"valid": row["valid"], "hidden": row["hidden"], "best": self.best_count}

    def finished(self, run: TrainingRun) -> bool:
        return self.best_count >= self.data.n_planted


def train_model(cfg: GenerateConfig, data: PlantedData, resume: bool = False, quiet: bool = False):
    """Two-objective training with model selection in the training harness (:class:`PlantedTraining`).

    Returns (model in eval mode with ``input_scale`` folded into its first layer, history list of dict rows).
    Writes private/train_state.pt and a row of private/train_log.csv at every check.
    """
    method = PlantedTraining(cfg, data)
    fit(method, "cpu", resume, quiet)
    model = method.model
    if method.best_state is not None:
        model.load_state_dict(method.best_state)
    return archs.fold_input_scale(model).eval(), method.history


def generate(cfg: GenerateConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Generate one model's benchmark folder ``cfg.out`` (module docstring). Returns the summary that is also
    written to private/generation.json: counts of valid / sweep-surviving / hidden pairs, seconds, file paths.

    Raises:
        CertkitError: bad options; ``cfg.out`` already holds a benchmark (without ``resume``); onnx/onnxruntime
            missing; another process generates into the same folder; a planted counterexample that onnxruntime
            does not confirm is dropped, never exported.
    """
    cfg.validate()
    require_onnx("the soundness benchmark")
    out = Path(cfg.out)
    if (out / "instances.csv").exists() and not resume:
        raise CertkitError(f"{out} already holds a benchmark: choose another --out or pass --resume")
    with FileLock(out / "instances.csv"):  # one generator per folder
        return _generate(cfg, out, resume, quiet)


def _generate(cfg: GenerateConfig, out: Path, resume: bool, quiet: bool) -> dict:
    from tqdm import tqdm

    from certkit.soundness_bench import export

    t0 = time.perf_counter()
    data = make_data(cfg)
    model, history = train_model(cfg, data, resume=resume, quiet=quiet)
    t_train = time.perf_counter() - t0
    bar = tqdm(desc="hiddenness check", disable=quiet, dynamic_ncols=True, bar_format="{desc}")
    hidden, valid, rep = _count_hidden(model, data, cfg, cfg.sweep_restarts, strong=cfg.strong,
                                       seed=cfg.seed + 10**6,
                                       progress=lambda name: bar.set_description_str(f"hiddenness check: {name}"))
    bar.close()
    survive_sweep = sum(bool(v) and not (f or "").startswith("pgd(") for v, f in zip(valid, rep.found_by))
    t_hide = time.perf_counter() - t0 - t_train
    summary = export.export_benchmark(cfg, model, data, valid, hidden, rep)
    summary.update({
        "arch": cfg.arch, "eps_rel": cfg.eps_rel, "eps_abs": cfg.eps_abs, "seed": cfg.seed,
        "input_shape": list(cfg.input_shape), "width": cfg.width, "planted_pairs": data.n_planted,
        "valid_pairs": int(valid.sum()), "survive_sweep": int(survive_sweep),
        "hidden": int(hidden.sum()), "epochs_run": history[-1]["epoch"] if history else 0,
        "seconds_train": round(t_train, 1), "seconds_hiddenness": round(t_hide, 1),
        "seconds_total": round(time.perf_counter() - t0, 1), "config": json.loads(json.dumps(asdict(cfg))),
    })
    (out / "private" / "generation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
