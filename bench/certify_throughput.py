"""Certify throughput vs raw batched forward throughput, eager and torch.compile, in one run.

For each model: samples/s of a bare forward pass on a fixed batch (raw), samples/s of the certification
sampler (noise drawn on the device + forward + argmax + bincount) at the same batch size, and their ratio;
certkit's time against a plain per-input loop (Cohen et al.'s core.py: draw a batch, forward it, count, no noise
drawn ahead, one forward call per batch); then the same with torch.compile. Targets: certify >= 0.9 x
raw on CPU; compile >= 2x eager on a small CNN. Prints a table; numbers depend on the machine (record it with the
results in bench/README.md).

    python bench/certify_throughput.py [--device cpu|cuda] [--batch 1000] [--seconds 3] [--no-compile]
        [--malloc-default] [--model CHECKPOINT ...] [--only-given]

``--model`` adds a trained checkpoint (any --model source of ``certkit certify``, e.g. the Fashion-MNIST cnn_a of
docs/results.md); ``--only-given`` measures those alone.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from certkit.certify.sampling import NoiseSampler, input_generator
from certkit.common.memory import retain_freed_memory
from certkit.models import build_model, load_model
from certkit.models.zoo import NormalizeLayer


def _rate(fn, samples_per_call: int, seconds: float, device: torch.device) -> float:
    fn()  # warm-up (and compilation)
    fn()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        el = time.perf_counter() - t0
        if el >= seconds and calls >= 3:
            return calls * samples_per_call / el


def measure(name: str, module: torch.nn.Module, shape, batch: int, device: torch.device, seconds: float,
            compiled: bool) -> dict:
    module = module.to(device).eval()
    if compiled:
        module = torch.compile(module, dynamic=False)
    with torch.inference_mode():  # tensors of the kind the sampler makes: a compiled module compiles once
        x = torch.rand(shape, device=device)
        xb = torch.rand((batch,) + tuple(shape), device=device)

    @torch.inference_mode()
    def raw():
        module(xb).argmax(1)

    sampler = NoiseSampler(module, sigma=0.25, batch_size=batch, device=device,
                           forward_batch=None if compiled else "auto", check_input=False, one_shape=compiled)
    gen = input_generator(0, 0, device)
    per_call = batch * 10

    def cert():
        sampler.counts(x, per_call, gen)  # the first call also tunes the forward rows and draw_ahead

    loop_gen = torch.Generator(device=device).manual_seed(0)

    @torch.inference_mode()
    def plain_loop():  # Cohen et al.'s core.py on one input: draw a batch, forward it, count; no overlap, no tuning
        for _ in range(10):
            noisy = x + 0.25 * torch.randn((batch,) + tuple(shape), device=device, generator=loop_gen)
            torch.bincount(module(noisy).argmax(1), minlength=10)

    r = _rate(raw, batch, seconds, device)
    c = _rate(cert, per_call, seconds, device)
    p = _rate(plain_loop, per_call, seconds, device)
    return {"model": name, "mode": "compile" if compiled else "eager", "raw": r, "certify": c, "loop": p,
            "forward_batch": sampler.forward_batch, "draw_ahead": sampler.draw_ahead}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--resnet-batch", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--model", action="append", default=[], help="also measure this checkpoint (repeatable)")
    ap.add_argument("--only-given", action="store_true", help="measure only the --model checkpoints")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave glibc's malloc as it is (the certkit command keeps freed memory: common/memory.py)")
    args = ap.parse_args()
    if not args.malloc_default:
        retain_freed_memory()
    device = torch.device(args.device)
    bundled = load_model("bundled").module
    small_cnn = torch.nn.Sequential(NormalizeLayer([0.5] * 3, [0.25] * 3), build_model("cnn", (3, 32, 32), 10))
    resnet = torch.nn.Sequential(NormalizeLayer([0.5] * 3, [0.25] * 3), build_model("cifar_resnet20", (3, 32, 32), 10))
    digits_cnn = build_model("cnn", (1, 8, 8), 10)
    models = [("bundled digits mlp", bundled, (1, 8, 8), args.batch),
              ("digits cnn 1x8x8", digits_cnn, (1, 8, 8), args.batch),
              ("small cnn 3x32x32", small_cnn, (3, 32, 32), args.batch),
              ("cifar_resnet20", resnet, (3, 32, 32), args.resnet_batch)]
    if args.only_given:
        models = []
    for path in args.model:
        m = load_model(path)
        models.append((f"{m.arch or 'model'} {'x'.join(map(str, m.input_shape))}", m.module, tuple(m.input_shape),
                       args.batch))
    card = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({card}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = []
    for name, module, shape, batch in models:
        for compiled in ([False] if args.no_compile else [False, True]):
            rows.append(measure(name, module, shape, batch, device, args.seconds, compiled))
            r = rows[-1]
            print(f"{r['model']:<20} {r['mode']:<8} batch {batch:>5}  raw {r['raw']:>10.0f}/s  certify "
                  f"{r['certify']:>10.0f}/s  certify/raw {r['certify'] / r['raw']:.2f}  forward rows "
                  f"{r['forward_batch']}  noise drawn {'ahead' if r['draw_ahead'] is True else 'in line'}  "
                  f"certify time / plain loop time {r['loop'] / r['certify']:.2f}", flush=True)
    if not args.no_compile:
        for name, *_ in models:
            e = next(r for r in rows if r["model"] == name and r["mode"] == "eager")
            c = next(r for r in rows if r["model"] == name and r["mode"] == "compile")
            print(f"{name:<20} compile/eager certify throughput {c['certify'] / e['certify']:.2f}x")


if __name__ == "__main__":
    main()
