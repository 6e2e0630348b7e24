#!/usr/bin/env bash
# Every command-line path once on $DEVICE, at toy sizes: each training method for one epoch, each smoothing method,
# conformal prediction and the bound methods, so that a device mismatch anywhere shows up as a FAILED line. Prints
# one line per command (ok / FAILED with its exit status and last error line) and the certified accuracies of the
# same Gaussian certification on the CPU and on $DEVICE (they agree up to Monte-Carlo error, different noise).
# The commands run in three waves of parallel processes (a wave needs the checkpoints of the one before); the
# seconds per command are therefore wall times under load, not timings.
#   bash bench/gpu_smoke.sh                 # on a GPU machine, from the repository root, certkit installed
#   DEVICE=cpu bash bench/gpu_smoke.sh      # a dry run of the script itself
set -uo pipefail
DEVICE=${DEVICE:-cuda}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
run() {  # run NAME ARGS...: one certkit command on $DEVICE, in the background
  local name=$1; shift
  (
    t0=$SECONDS
    if certkit "$@" --device "$DEVICE" --quiet > "$W/$name.log" 2>&1; then
      printf '%-22s ok      %3d s\n' "$name" $((SECONDS - t0))
    else
      printf '%-22s FAILED  rc %s: %s\n' "$name" "$?" "$(grep -v '^\s*$' "$W/$name.log" | tail -1)"
    fi >> "$W/status"
  ) &
}
tr=(train --epochs 1 --quiet)
run train-natural "${tr[@]}" --method natural --out "$W/nat.pt"
run train-gaussian "${tr[@]}" --method gaussian --sigma 0.25 --out "$W/g.pt"
for m in ibp crown-ibp sabr mtl-ibp cc-ibp exp-ibp; do
  run "train-$m" "${tr[@]}" --method "$m" --eps 0.1 --out "$W/$m.pt"
done
run train-crown-ibp-cnn "${tr[@]}" --method crown-ibp --eps 0.1 --arch cnn_a --out "$W/cnn.pt"
c=(certify --max 20 --n 2000 --n0 100)
run certify-gaussian "${c[@]}" --out "$W/c1.tsv"
if [ "$DEVICE" != cpu ]; then run certify-gaussian-amp "${c[@]}" --amp --out "$W/c2.tsv"; fi
run certify-sound "${c[@]}" --sound --out "$W/c3.tsv"
run certify-lvm "${c[@]}" --method lvm --out "$W/c4.tsv"
run certify-sequential "${c[@]}" --method sequential --radii 0.25 --out "$W/c6.tsv"
run predict predict --max 20 --n 1000 --out "$W/p.tsv"
run conformal conformal --sigma 0.25 --eps-l2 0.125 --n-mc 64 --splits 5 --attack-steps 5 --out "$W/cf.tsv"
run verify-bounds verify --eps 0.01 --max 64 --method IBP,CROWN-IBP,CROWN,alpha-CROWN --out "$W/v1.tsv"
wait
run train-dual "${tr[@]}" --method dual --init-from "$W/g.pt" --sigma 0.25 --out "$W/dual.pt"
run train-rct "${tr[@]}" --method rct --init-from "$W/g.pt" --sigma 0.25 --eps-l2 0.125 --out "$W/rct.pt"
run train-denoiser "${tr[@]}" --method denoiser --sigma 0.25 --classifier "$W/nat.pt" --out "$W/den.pt"
run train-mixing "${tr[@]}" --method mixing --standard-model "$W/nat.pt" --classifier bundled --sigma 0.25 \
  --out "$W/mix.pt"
run verify-cnn verify --model "$W/cnn.pt" --eps 0.01 --max 32 --method IBP,CROWN-IBP,CROWN,alpha-CROWN \
  --out "$W/v2.tsv"
run verify-complete verify --model "$W/ibp.pt" --eps 0.05 --max 8 --complete-timeout 5 --out "$W/v3.tsv"
wait
run certify-dual "${c[@]}" --method dual --model "$W/dual.pt" --out "$W/c5.tsv"
run certify-adaptive "${c[@]}" --method adaptive --standard-model "$W/nat.pt" --mixing-network "$W/mix.pt" \
  --out "$W/c7.tsv"
run certify-denoised "${c[@]}" --model "$W/nat.pt" --denoiser "$W/den.pt" --sigma 0.25 --out "$W/c8.tsv"
wait
sort "$W/status"
certkit certify --max 100 --n 10000 --device cpu --quiet --out "$W/cpu.tsv" > /dev/null 2>&1
certkit certify --max 100 --n 10000 --device "$DEVICE" --quiet --out "$W/dev.tsv" > /dev/null 2>&1
python3 - "$W/cpu.summary.json" "$W/dev.summary.json" "$DEVICE" <<'PY'
import json, sys
a, b = (json.load(open(p))["certified_accuracy"] for p in sys.argv[1:3])
print("certified accuracy, 100 inputs, n=10000:  cpu", " ".join(f"{a[r]:.2f}" for r in a))
print(f"{'':41}{sys.argv[3]:<4}", " ".join(f"{b[r]:.2f}" for r in b))
PY
echo "$(grep -c FAILED "$W/status") failed of $(wc -l < "$W/status") commands"
