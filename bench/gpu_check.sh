#!/usr/bin/env bash
# GPU check of the certification engine and of certified training, to run where a GPU is lent: every command-line
# path once on the GPU (bench/gpu_smoke.sh), throughput and certify/raw-forward ratios, seconds per CIFAR ResNet-110
# image at n = 100,000 (eager, --amp, --compile, both), a 2-process torchrun run, and one CIFAR-shaped training
# epoch per method (ratios to a natural epoch). About 6 minutes on an H200. Record the output with the card's name
# in bench/README.md.
#   bash bench/gpu_check.sh                 # on a GPU machine, from the repository root, certkit installed
#   DEVICE=cpu N=300 bash bench/gpu_check.sh   # a quick dry run of the script itself on a CPU
set -euo pipefail
DEVICE=${DEVICE:-cuda}
N=${N:-100000}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 - <<PY
import torch
print("device:", torch.cuda.get_device_name() if "$DEVICE" == "cuda" else "cpu", "| torch", torch.__version__)
PY
echo "== every command-line path on $DEVICE (bench/gpu_smoke.sh)"
DEVICE=$DEVICE bash bench/gpu_smoke.sh
python3 bench/gpu_certify_setup.py "$WORK"
echo "== certify/raw forward throughput (sampler only)"
python3 bench/certify_throughput.py --device "$DEVICE" --seconds 3 --resnet-batch 1000 || true
for flags in "" "--amp" "--compile" "--amp --compile"; do
  if [ "$DEVICE" = cpu ] && [[ "$flags" == *amp* ]]; then continue; fi
  for model in bundled resnet110; do
    if [ "$model" = bundled ]; then args=(--max 50); else args=(--model "$WORK/resnet110.pt" --dataset npz "$WORK/cifar.npz" --sigma 0.25); fi
    certkit certify "${args[@]}" --n "$N" --batch 1000 --device "$DEVICE" $flags --quiet \
      --out "$WORK/${model}${flags// /}.tsv" > /dev/null
    python3 - "$WORK/${model}${flags// /}.summary.json" "$model" "$flags" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<10} {sys.argv[3] or 'eager':<18} {s['n_inputs']} inputs  "
      f"{s['seconds'] / s['n_inputs']:.3f} s per input at n={s['n']}  certified acc r=0 {s['certified_accuracy']['0']:.3f}")
PY
  done
done
echo "== torchrun, 2 processes (one GPU each when there are two, else sharing one)"
python3 -m torch.distributed.run --nproc_per_node 2 --master_port 29561 -m certkit.cli certify \
  --model "$WORK/resnet110.pt" --dataset npz "$WORK/cifar.npz" --sigma 0.25 --num-samples "$N" --batch 1000 \
  --device "$DEVICE" --quiet --out "$WORK/torchrun.tsv" | tail -3
python3 - "$WORK/torchrun.tsv" "$WORK/resnet110.tsv" <<'PY'
import sys
rows = lambda p: [l.split("\t")[:5] for l in open(p).read().splitlines()]
print("torchrun rows identical to the single-process run:", rows(sys.argv[1]) == rows(sys.argv[2]))
PY
echo "== training epochs of a CIFAR-shaped cnn_a, x a natural epoch"
python3 bench/train_epoch.py --device "$DEVICE" --models cifar --repeats 3
