#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared command, for a session that is lent a GPU machine (see docs/results.md,
# "GPU checks"). Runs from the repository root under the machine's own python3 and torch (no set-up, no data set:
# the tests and benchmarks use random images), writes every result under $OUT (default gpu-checks/) as it goes, so
# a run cut short still returns what it finished.
#
#   scripts/gpu_checks.sh [STAGE ...]     stages, in this order by default:
#     tests        tests/test_gpu.py: CUDA path = reference path, bf16, compile and CUDA graphs = eager, no host sync
#     eager        dcvae bench: paper32, released D step, compact at batch 64 and 256, fp32 and bf16, + inference
#     graphs       dcvae bench: paper32 at batch 64 and 256 in bf16 with CUDA graphs (compile, reduce-overhead)
#     compiled     dcvae bench: paper32 at batch 64 and 256 in bf16 with torch.compile (default mode)
#     progressive  dcvae bench: the progressive backbone at 128 px (celeba128, batch 16), fp32 and bf16
# Each stage has its own time limit (STAGE_SECONDS, default 240) and a stage that fails does not stop the next.
# All five take more than one device call; with a session's 15 device minutes, e.g. `tests eager graphs` in a first
# call (timeout_s 600) and `compiled progressive` in a second.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-checks}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
limit=${STAGE_SECONDS:-240}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tests eager graphs compiled progressive)

bench() {   # bench NAME ARGS...: one dcvae bench run, its JSON and markdown under $out
  local name=$1
  shift
  timeout "$limit" "$py" -m dcvae.cli.main bench --device cuda --overwrite --json "$out/bench-$name.json" \
    --markdown "$out/bench-$name.md" "$@"
}

source scripts/gpu_machine.sh
describe_machine "$py" >"$out/machine.txt" 2>&1
for stage in "${stages[@]}"; do
  echo "== $stage ($(date -u +%T))"
  started=$SECONDS
  case $stage in
    tests) timeout "$limit" "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs ;;
    eager) bench eager --cases paper32,paper32-released,compact --batch-size 64,256 --precision fp32,bf16 \
             --iterations 5 ;;
    graphs) bench graphs --cases paper32 --batch-size 64,256 --precision bf16 --cuda-graphs --iterations 10 \
              --no-inference ;;
    compiled) bench compiled --cases paper32 --batch-size 64,256 --precision bf16 --compile --iterations 10 \
                --no-inference ;;
    progressive) bench progressive --cases progressive --progressive-preset celeba128 --progressive-batch 16 \
                   --precision fp32,bf16 --iterations 3 --no-inference ;;
    *) echo "unknown stage $stage (tests, eager, graphs, compiled, progressive)"; false ;;
  esac 2>&1 | tee "$out/$stage.txt"
  echo "== $stage: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
done
