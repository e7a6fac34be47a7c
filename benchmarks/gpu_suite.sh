#!/usr/bin/env bash
# The GPU measurements of benchmarks/results/, in the order they were made (one H100/H200).
#
#   bash benchmarks/gpu_suite.sh bench         # hand layer, renderer, paper-preset latency and training throughput
#   bash benchmarks/gpu_suite.sh train         # synthetic benchmark (4 variants at once), TID curve, the demo checkpoint
#   bash benchmarks/gpu_suite.sh scale         # the same world with 3x the episodes: TID vs T (window protocol)
#   bash benchmarks/gpu_suite.sh dist          # `accelerate launch` of the paper preset: train, checkpoint, stop, resume
#   bash benchmarks/gpu_suite.sh convert       # converter (virtual depth) and retargeting throughput
#
# Runs from a checkout with megohand importable (pip install -e ., or PYTHONPATH=src); each step logs to
# runs/gpu_logs/<step>.log and a failing step does not stop the others. Results land in benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
LOGS=runs/gpu_logs
mkdir -p "$LOGS"
STORE=runs/demo/store            # the demo's synthetic world: seed 0, 400 episodes, 128 px (scripts/train_demo.py)
SYNTH_WORKERS=${SYNTH_WORKERS:-8}
# Checkpoints every 250 steps, all kept: the TID curve, and a resume that loses little when a run is stopped. The
# scripts add the synthetic world's own options (megohand.data.synthetic.TRAIN_OPTIONS: episode windows, per-step
# action bounds), whose statistics synth_store computes once.
SYNTH_TRAIN_ARGS="--save-every=250 --keep-last=40"

step() {  # step NAME CMD...: run, log, report
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $*"
  "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc, $((SECONDS - t0)) s"
  tail -n 25 "$LOGS/$name.log"
  return 0
}

synth_store() {  # [STORE EPISODES WORKERS] + the statistics of the synthetic training options, once (not by each
                 # of the parallel trainings)
  local store=${1:-$STORE} episodes=${2:-400} workers=${3:-$SYNTH_WORKERS}
  $PY -m megohand.cli.main synth --out "$store" --episodes "$episodes" --seed 0 --image-size 128 --workers "$workers" &&
    $PY -m megohand.cli.main stats --root "$store" --window-scope episode --mode min_max_per_step
}

for phase in "$@"; do
  case $phase in
    bench)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
      (synth_store > "$LOGS/synth.log" 2>&1 &)   # CPU only: ready for `train`
      step hand_layer $PY benchmarks/hand_layer.py --device cuda
      step render $PY benchmarks/render.py --device-name gpu
      step latency $PY benchmarks/latency.py
      step train_throughput $PY benchmarks/train_throughput.py --preset paper --batch-size 16
      ;;
    train)  # TRAIN_STEPS (default 6000); TRAIN_ARGS: the `megohand train` options (default below). Re-running
            # resumes the four trainings from their last checkpoint (every 250 steps) and the curve from its JSON.
      extra=(); for a in ${TRAIN_ARGS:-$SYNTH_TRAIN_ARGS}; do extra+=("--train-arg=$a"); done
      step synth synth_store
      $PY scripts/checkpoint_curve.py --run runs/synthetic_benchmark/train_TID --store "$STORE" --watch --poll-s 10 \
        --device cuda --out benchmarks/results/curve_synthetic_TID.json > "$LOGS/curve.log" 2>&1 &
      step synthetic_benchmark $PY scripts/synthetic_benchmark.py --store "$STORE" --episodes 400 --parallel \
        --workers 3 --steps "${TRAIN_STEPS:-6000}" --work runs/synthetic_benchmark "${extra[@]}"
      step demo_export $PY scripts/train_demo.py --work runs/demo --run runs/synthetic_benchmark/train_TID \
        --steps "${TRAIN_STEPS:-6000}" --no-check "${extra[@]}"
      wait  # the curve of the TID run
      ;;
    scale)  # more data: TID vs T on a SCALE_EPISODES-episode world (default 1200; its first 400 are the demo store's),
            # SCALE_STEPS steps (default 4000), window protocol only
      n=${SCALE_EPISODES:-1200}
      step synth_scale synth_store "runs/synth$n/store" "$n" 14
      step synthetic_benchmark_scale $PY scripts/synthetic_benchmark.py --store "runs/synth$n/store" --episodes "$n" \
        --parallel --workers 6 --variants TID T --steps "${SCALE_STEPS:-4000}" --rollout-frames 0 \
        --work "runs/synth$n" --out "runs/synth$n/results" --train-arg=--save-every=500
      for f in json md; do cp "runs/synth$n/results/synthetic_benchmark.$f" "benchmarks/results/synthetic_benchmark_${n}ep.$f"; done
      ;;
    dist)  # 1 GPU, paper preset (random init): train 8 steps, stop at 4, resume, compare with an uninterrupted run
      DIST_STORE=$STORE; [ -f "$STORE/store.json" ] || DIST_STORE=runs/dist_check/store   # else a 40-episode one
      step dist $PY benchmarks/dist_check.py --store "$DIST_STORE" --make-store --preset paper --device cuda \
        --processes 1 --steps 8 --stop-after 4 --keep-last 1 --batch-size 16
      ;;
    convert)
      step convert $PY benchmarks/convert.py --device cuda
      step retarget $PY benchmarks/retarget.py --device cuda
      ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
done
