"""The batched Monte-Carlo engine: draws Gaussian noise on the model's device, runs the base classifier,
and returns class counts (via ``torch.bincount``).

Noise contract: ``x`` is a raw input in the model's data range ([0,1] pixels), noise N(0, sigma^2 I) is added
to it BEFORE the model (whose first layer does any normalization), so sigma is in data-range units.
Float32 sampling: Voracek & Hein (ICLR 2023) show floating-point effects can be exploited against smoothed
classifiers; the default mode's certificates assume the float32 samples follow N(0, sigma^2 I). ``sound=True``
(``--sound``) removes that assumption (certify/sound_noise.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from typing import TYPE_CHECKING

import torch
from torch import nn

from certkit.common.errors import CertkitError

if TYPE_CHECKING:
    from certkit.certify.sound_noise import RoundedGaussian


def input_generator(seed: int, idx: int, device: torch.device) -> torch.Generator:
    """A generator seeded from (seed, input index) so results do not depend on skip, max, resume or order."""
    digest = hashlib.sha256(f"certkit:{int(seed)}:{int(idx)}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def content_generator(seed: int, x: torch.Tensor, device: torch.device | str) -> torch.Generator:
    """A generator seeded from (seed, the values of x): the same input always gets the same noise, different inputs
    different noise, whatever order or batch they come in (the Python API's default; runs use
    :func:`input_generator`)."""
    data = x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    digest = hashlib.sha256(f"certkit:{int(seed)}:{tuple(x.shape)}:".encode() + data).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def as_sampler(model: nn.Module | NoiseSampler, sigma: float | None = None) -> NoiseSampler:
    """``model`` itself if it is a NoiseSampler or has its ``counts`` and ``sigma`` (whose sigma must then equal
    ``sigma`` when given), else a
    NoiseSampler running the nn.Module ``model`` at ``sigma`` on the device of its parameters.

    Raises:
        CertkitError: neither an nn.Module nor a NoiseSampler; no sigma for a module; a sigma that contradicts the
            sampler's.
    """
    if isinstance(model, NoiseSampler) or (not isinstance(model, nn.Module) and hasattr(model, "counts")
                                           and hasattr(model, "sigma")):   # a sampler, or one written for a test
        if sigma is not None and float(sigma) != model.sigma:
            raise CertkitError(f"sigma={sigma} contradicts the sampler's sigma={model.sigma}")
        return model
    if not isinstance(model, nn.Module):
        raise CertkitError(f"expected a torch.nn.Module (the base classifier) or a NoiseSampler, got "
                           f"{type(model).__name__}")
    if sigma is None:
        raise CertkitError("sigma is required: the noise standard deviation in data-range units, e.g. sigma=0.25")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return NoiseSampler(model, sigma, device=device)


_POOL = None


def _in_inference_mode(fn):
    """fn run under torch.inference_mode() (a thread-local mode: the noise helper thread does not inherit it, and a
    compiled module compiles again for a tensor made outside it)."""
    def wrapped(*args):
        with torch.inference_mode():
            return fn(*args)
    return wrapped


def _noise_pool():
    """One helper thread for drawing noise ahead (module docstring of NoiseSampler.logits_stream)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certkit-noise")
    return _POOL


class NoiseSampler:
    """Runs a base classifier f on Gaussian-noised copies of one input.

    Args:
        model: maps (B, *input_shape) raw inputs to logits (B, K); moved to ``device`` and put in eval mode.
        sigma: noise standard deviation, in data-range units (> 0).
        batch_size: noisy copies per forward pass.
        device: where noise is drawn and the model runs.
        amp: run the forward pass under CUDA autocast (bfloat16). GPU only. Counts use the argmax of the
            bfloat16 logits, so the certificate is for the model as evaluated in bfloat16.
        forward_batch: rows per forward call within a noise chunk: an int, None (= batch_size) or ``"auto"``
            (default): on the CPU, the fastest of batch_size / 1, 2, 4, 8, 16 (at least 32 rows), timed once on
            the first chunk's shape with private noise, among the sizes whose logits equal the whole chunk's bit
            for bit. Noise is still drawn in chunks of batch_size, so the noise stream, the counts and the
            certificates do not depend on this choice; only the speed does (a small CNN on 8x8 images runs 2x
            faster in rows of 500 than of 1000 on a 2-core CPU: its activations then fit the cache).
        draw_ahead: on the CPU, draw the next chunk's noise on a helper thread while the model runs on the current
            one (True), in line before each chunk (False), or ``"auto"`` (default): whichever was faster, timed once
            on private noise at the first call of two chunks or more (models whose chunk takes over 50 ms keep the
            helper: their noise is a few percent of the time). The noise stream and the counts are the same either
            way. Which is faster depends on the CPU (bench/README.md: the helper made the digits MLP 1.3x faster on
            a 2-core AMD EPYC; on a 2-core Intel Xeon drawing in line made it 1.24x faster, the digits CNN 1.03-1.07x,
            and a 3x32x32 CNN equal).
        check_input: on the first input of each shape, check that the model takes it as ONE input (one forward
            pass; runs whose data was checked against the model pass False, as must a compiled module, which a
            batch of one would recompile).
        sound: round each input to a dyadic grid and add exactly sampled, exactly added rounded Gaussian noise
            (certify/sound_noise.py): the smoothed classifier is then the one the certificate describes, whatever
            float32 rounding would have done (GaussianSmoothing pays the grid and the sampling error in its radius).
        one_shape: every forward call gets exactly ``forward_batch`` rows: a shorter chunk (the n0 selection draw,
            the last chunk of n) is padded with copies of its last row whose logits are dropped. For a module
            compiled for one batch shape (``torch.compile(dynamic=False)``), which would otherwise compile again
            for each chunk size. The noise stream and the counts are unchanged; needs an int or None
            ``forward_batch``.

    Raises:
        CertkitError: sigma <= 0, batch_size < 1, forward_batch not an int >= 1 / None / "auto", draw_ahead not
            True / False / "auto", amp on a non-CUDA device, one_shape with ``forward_batch="auto"``, NaN/inf
            logits while sampling.
    """

    def __init__(self, model: nn.Module, sigma: float, batch_size: int = 1000,
                 device: torch.device | str = "cpu", amp: bool = False, forward_batch: int | str | None = "auto",
                 draw_ahead: bool | str = "auto", check_input: bool = True, sound: bool = False,
                 one_shape: bool = False):
        if not (sigma > 0):
            raise CertkitError(f"sigma must be > 0, got {sigma}")
        if batch_size < 1:
            raise CertkitError(f"batch size must be >= 1, got {batch_size}")
        if not (forward_batch is None or forward_batch == "auto"
                or (isinstance(forward_batch, int) and forward_batch >= 1)):
            raise CertkitError(f"forward batch must be an integer >= 1, None or 'auto', got {forward_batch!r}")
        if draw_ahead not in (True, False, "auto"):
            raise CertkitError(f"draw_ahead must be True, False or 'auto', got {draw_ahead!r}")
        self.device = torch.device(device)
        if amp and self.device.type != "cuda":
            raise CertkitError("--amp needs a CUDA device (it runs the model in bfloat16 under autocast)")
        self.model = model.to(self.device).eval()
        self.sigma = float(sigma)
        self.batch_size = int(batch_size)
        self.amp = amp
        if forward_batch == "auto":
            forward_batch = "auto" if self.device.type == "cpu" and self.batch_size >= 64 else None
        self.forward_batch = self.batch_size if forward_batch is None else forward_batch
        if one_shape and self.forward_batch == "auto":
            raise CertkitError("one_shape needs a fixed forward batch (an int or None), not 'auto'")
        self.one_shape = one_shape
        self.draw_ahead = draw_ahead
        self._checked: set | None = set() if check_input else None
        self.grid: RoundedGaussian | None = None
        if sound:
            self.make_sound()

    def make_sound(self, max_abs: float = 1.0) -> None:
        """Switch to the sound sampler (the ``sound`` argument) for inputs up to ``max_abs`` in magnitude."""
        from certkit.certify.sound_noise import RoundedGaussian

        self.grid = RoundedGaussian(self.sigma, max_abs)

    @property
    def sound(self) -> bool:
        return self.grid is not None

    @torch.inference_mode()
    def logits_stream(self, x: torch.Tensor, num: int, generator: torch.Generator):
        """Yield logits (b, K) for ``num`` noisy copies of x (shape (*input_shape)), b <= batch_size.

        On the CPU the next chunk's noise may be drawn on a helper thread while the model runs on the current one
        (torch releases the GIL in both; ``draw_ahead``), so a small model is not held back by the seeded normal
        generator. The chunks, their sizes and their order are those of a plain loop: the noise stream is
        unchanged.
        """
        x = x.to(self.device, torch.float32)
        self._check_input(x)
        sizes = []
        remaining = int(num)
        while remaining > 0:
            sizes.append(min(self.batch_size, remaining))
            remaining -= sizes[-1]
        draw = lambda b: torch.randn((b,) + tuple(x.shape), generator=generator, device=self.device)
        if self.grid is not None:
            grid = self.grid
            x = grid.quantize(x)
            draw = lambda b: grid.draw((b,) + tuple(x.shape), generator, self.device)  # noqa: E731
        if self.device.type != "cpu" or len(sizes) < 2 or not self._draws_ahead(x):
            for b in sizes:
                yield self._forward(x, draw(b))
            return
        pool = _noise_pool()
        draw = _in_inference_mode(draw)   # the helper thread's tensors are then of the same kind as in-line draws
        pending = pool.submit(draw, sizes[0])
        for k in range(len(sizes)):
            noisy = pending.result()
            pending = pool.submit(draw, sizes[k + 1]) if k + 1 < len(sizes) else None
            yield self._forward(x, noisy)

    def _check_input(self, x: torch.Tensor) -> None:
        """Once per input shape: the model must take x with a batch dimension added and return (1, K) or (1, H, K)
        logits, so that a batch passed as one input stops with a one-line error instead of a layer's message.

        Raises:
            CertkitError: the model refuses x[None] or returns another shape.
        """
        shape = tuple(x.shape)
        checked = self._checked
        if checked is None or shape in checked:
            return
        try:
            out = self.model(x.unsqueeze(0))
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise CertkitError(f"the model does not take one input of shape {' x '.join(map(str, shape))} "
                               f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}): a smoothing method "
                               f"certifies ONE input (C x H x W, no batch dimension); for a batch use certkit.Smooth"
                               ) from None
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3) or out.shape[0] != 1:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CertkitError(f"the model returns {got} for one input of shape {' x '.join(map(str, shape))} with "
                               f"a batch dimension added; expected logits (1, classes): pass ONE input, no batch")
        checked.add(shape)

    def _draws_ahead(self, x: torch.Tensor) -> bool:
        """``draw_ahead``, timed once when "auto": three rounds of four chunks each way on private noise (the
        seeded stream is not touched), alternating, the best round of each deciding."""
        if self.draw_ahead == "auto":
            gen = torch.Generator(device=self.device).manual_seed(0)
            draw = lambda: torch.randn((self.batch_size,) + tuple(x.shape), generator=gen, device=self.device)
            self._forward(x, draw())  # tunes the forward rows first; also the warm-up
            t0 = time.perf_counter()
            self._forward(x, draw())
            if time.perf_counter() - t0 > 0.05:
                self.draw_ahead = True
                return True
            pool = _noise_pool()

            def in_line():
                for _ in range(4):
                    self._forward(x, draw())

            def ahead():
                draw_there = _in_inference_mode(draw)
                pending = pool.submit(draw_there)
                for k in range(4):
                    noisy = pending.result()
                    pending = pool.submit(draw_there) if k < 3 else None
                    self._forward(x, noisy)

            best = {False: float("inf"), True: float("inf")}
            for _ in range(3):
                for mode, run in ((False, in_line), (True, ahead)):
                    t0 = time.perf_counter()
                    run()
                    best[mode] = min(best[mode], time.perf_counter() - t0)
            self.draw_ahead = best[True] < best[False]
        return bool(self.draw_ahead)

    def _forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # sound mode: the noise is already h k, and x + h k is exact
        noisy = torch.add(x, noise, alpha=1.0 if self.grid is not None else self.sigma, out=noise)
        if self.forward_batch == "auto":
            self.forward_batch = self._tune_forward_batch(x)
        return self._rows(noisy, int(self.forward_batch))

    def _rows(self, noisy: torch.Tensor, rows: int) -> torch.Tensor:
        """Logits of ``noisy`` (B, *shape), ``rows`` at a time."""
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext():
            parts = [self._call(part, rows).float() for part in noisy.split(rows)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _call(self, part: torch.Tensor, rows: int) -> torch.Tensor:
        b = part.shape[0]
        if not self.one_shape or b == rows:
            return self.model(part)
        padded = torch.cat([part, part[-1:].expand((rows - b,) + tuple(part.shape[1:]))])
        return self.model(padded)[:b]

    def warm_up(self, x: torch.Tensor) -> None:
        """One forward call of ``forward_batch`` copies of x (shape (*input_shape)) as the sampler makes them
        (inference mode, autocast under ``amp``): a compiled module compiles here, for the shape it will see."""
        with torch.inference_mode():
            rows = self.batch_size if self.forward_batch == "auto" else int(self.forward_batch)
            self._rows(x.to(self.device, torch.float32).expand((rows,) + tuple(x.shape)).clone(), rows)

    def _tune_forward_batch(self, x: torch.Tensor) -> int:
        """The fastest rows-per-call among batch_size / (1, 2, 4, 8, 16) (>= 32 rows) whose logits equal the
        whole batch's exactly, timed on a private noise draw (the seeded stream is not touched); halving stops once
        a size is clearly slower than the best so far."""
        noisy = x + self.sigma * torch.randn((self.batch_size,) + tuple(x.shape), device=self.device,
                                             generator=torch.Generator(device=self.device).manual_seed(0))
        t0 = time.perf_counter()
        whole = self._rows(noisy, self.batch_size)
        reps = 3 if time.perf_counter() - t0 < 0.5 else 1  # a large model: tuning stays a few chunks' time
        best, best_t = self.batch_size, float("inf")
        for k in (1, 2, 4, 8, 16):
            rows = -(-self.batch_size // k)
            if rows < 32:
                break
            if k > 1 and not torch.equal(self._rows(noisy, rows), whole):  # also the warm-up call
                continue
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                self._rows(noisy, rows)
                times.append(time.perf_counter() - t0)
            t = sorted(times)[len(times) // 2]  # the median: one lucky or disturbed call does not decide
            if t < best_t * 0.95:  # a smaller size must win clearly
                best, best_t = rows, t
            elif t > best_t * 1.05:  # slower again: smaller rows will not help
                break
        return best

    def counts(self, x: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        """Counts of f(x + e) over ``num`` draws: int64 tensor (K,) on the CPU; for a model with H heads
        (logits (B, H, K), e.g. the two branches of Dual RS) counts per head, (H, K).

        Raises:
            CertkitError: the model produced NaN or inf logits (checked once per call, no per-batch sync).
        """
        counts, total = None, None
        for logits in self.logits_stream(x, num, generator):
            if logits.dim() == 3:
                K = logits.shape[2]
                heads = torch.arange(logits.shape[1], device=logits.device) * K
                c = torch.bincount((logits.argmax(dim=2) + heads).flatten(), minlength=logits.shape[1] * K)
                c = c.view(logits.shape[1], K)
            else:
                c = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
            # The sum is NaN/inf iff some logit is (or |logits| ~ 1e38 overflow, which also refuses): one
            # cheap reduction instead of an isfinite pass, and no device sync per batch.
            s = logits.sum(dtype=torch.float64)
            counts, total = (c, s) if counts is None else (counts + c, total + s)
        if counts is None or total is None:
            raise CertkitError("the number of samples must be >= 1")
        if not bool(torch.isfinite(total)):
            raise CertkitError("the model produced NaN or inf logits on noisy inputs; no certificate is issued")
        return counts.cpu()
