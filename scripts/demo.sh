#!/usr/bin/env bash
# The main job: train DC-VAE on the real MNIST on the CPU (about 10 minutes on 2 cores), then write
# reconstruction, sample and interpolation grids, an interpolation GIF, an attribute-edit grid and a short summary
# into a new run folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DCVAE=.venv/bin/dcvae
mkdir -p runs
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
extra=()
[ -n "${DEMO_ITERATIONS:-}" ] && extra=(--set "train.iterations=$DEMO_ITERATIONS")
"$DCVAE" train --preset mnist --out "$run" "${extra[@]}" --no-progress > "$run.train.log" 2>&1 &
pid=$!
# Show progress from the metrics log while training runs.
while kill -0 "$pid" 2>/dev/null; do
  sleep 30
  [ -f "$run/metrics.jsonl" ] && tail -n 1 "$run/metrics.jsonl"
done
if ! wait "$pid"; then
  cat "$run.train.log" >&2
  exit 1
fi
mv "$run.train.log" "$run/train.log"
"$DCVAE" reconstruct "$run" --out "$run/demo-reconstructions.png"
"$DCVAE" sample "$run" --out "$run/demo-samples.png"
"$DCVAE" interpolate "$run" --out "$run/demo-interpolation.png" --gif "$run/demo-interpolation.gif"
# An attribute edit as in the paper's A.2, with a class of MNIST as the attribute: the mean latent of 7s minus
# the mean latent of other digits, added to test digits at increasing strength.
"$DCVAE" edit "$run" --class 7 --save-direction "$run/direction-class7.safetensors" --out "$run/demo-edit.png"
.venv/bin/python - "$run" <<'PY'
import json, sys
run = sys.argv[1]
s = json.load(open(f"{run}/summary.json"))
f = s["final"]
lines = [f"DC-VAE on {s['data']}",
         f"{s['iterations']} generator iterations, {s['wall_seconds']} s, {s['images_per_s']} images/s",
         "final losses: " + ", ".join(f"{k}={v:.4g}" for k, v in f.items() if k.startswith("loss/")),
         "contrastive top-1 accuracy: " + ", ".join(f"{k[4:]}={v:.3f}" for k, v in f.items() if k.startswith("acc/"))]
open(f"{run}/demo-summary.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "run folder: $run"
