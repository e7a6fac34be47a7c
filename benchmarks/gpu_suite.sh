#!/usr/bin/env bash
# The GPU measurements of benchmarks/results/, in the order they were made (one H100/H200).
#
#   bash benchmarks/gpu_suite.sh bench         # hand layer, renderer, paper-preset latency and training throughput
#   bash benchmarks/gpu_suite.sh train         # the synthetic benchmark (T, V, TI, TID x 2 seeds + A/B rows), the demo checkpoint
#   bash benchmarks/gpu_suite.sh classic       # the first benchmark, on the 'classic' world (its published numbers)
#   RUNS="T_s1 V_s0" bash benchmarks/gpu_suite.sh runs   # exactly these runs (PARALLEL at once, default 2) + exports
#   STEPS=8000 RUNS="TID_s0_refer+parse+state-dropout T_s0" bash benchmarks/gpu_suite.sh runs   # seed 0 at 8000 steps
#     (15 min on one H100; synthetic_cpu_eval_8000x256.md)
#   STEPS=8000 RUNS="TID_s0_refer+parse+state-dropout+task-text T_s0_task-text" bash benchmarks/gpu_suite.sh runs
#     # the same with the task named in every segment's text (--model.text-context task+segment): the demo recipe
#     # since 2026-12-07 (12 min on one H100 with 14 loader workers each, 15 with the 7 of this script;
#     # synthetic_cpu_eval_8000x256_task_text.md). Next: the second seeds, TID_s1_...+task-text T_s1_task-text, and
#     # the demo recipe with corrective chunks, TID_s0_refer+parse+state-dropout+task-text+state-noise (README,
#     # "Where the misses come from"; evaluate it on all 181 test episodes against the task-text run)
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
SYNTH_WORKERS=${SYNTH_WORKERS:-14}
# The recipes are named experiments (megohand.train.experiments); `megohand benchmark` draws the world, trains every
# run (resumable: re-running continues from the checkpoints, every 250 steps) and evaluates. TRAIN_ARGS: more
# `megohand train` overrides for every run, without their leading dashes (steps=3000 lr=1e-4).
# Two runs at a time: a compact-preset training step is bound by the CPU that launches its kernels and loads its
# batches (H100, 16 cores, batch 256: one run alone 14.5 steps/s with 15 loader workers; two at once with 7 each about
# 10 steps/s each, 1.4x the total; ten at once: about 2 steps/s each). Six at once with 4 loader workers each
# (H100, their first 2000 steps; benchmarks/results/train_speed_six_at_once_h100.json): 1250-1460 samples/s per image
# run, T (no frames read) 3200, about 10 100 in all (two at once: 5100), but the image runs waited for batches
# 50-68 % of the time.
BENCH_TRAIN_ARGS="num-workers=7 save-every=500 ${TRAIN_ARGS:-}"

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

for phase in "$@"; do
  case $phase in
    bench)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
      step hand_layer $PY benchmarks/hand_layer.py --device cuda
      step render $PY benchmarks/render.py --device-name gpu
      step latency $PY benchmarks/latency.py
      step train_throughput $PY benchmarks/train_throughput.py --variants baseline optimized compile --max-batch 128 \
        --profile optimized --budget-s 200 --deadline-s 225
      # --frozen-bf16 against the defaults, alternated, each run in a process of its own (in one process the batch-16
      # runs slowed down run after run: train_throughput_frozen_bf16_h100.json was measured so; GPU: h100 or h200)
      step train_throughput_frozen_bf16 $PY benchmarks/train_throughput.py --variants optimized frozen-bf16 optimized \
        frozen-bf16 --max-batch 64 --steps 8 --profile frozen-bf16 --fresh-process --budget-s 400 --deadline-s 450 \
        --out "benchmarks/results/train_throughput_frozen_bf16_fresh_${GPU:-h100}.json"
      # --compile alone, with the time its warm-up needs (in the step above it comes last and is skipped: after 232 s
      # on an H100 it had not finished warming up)
      step train_throughput_compile $PY benchmarks/train_throughput.py --variants optimized compile --steps 8 \
        --profile compile --fresh-process --budget-s 540 --deadline-s 570 \
        --out "benchmarks/results/train_throughput_compile_${GPU:-h100}.json"
      # CUDA graphs per compiled block (--compile-mode reduce-overhead) against the defaults, batch 16 to 64
      step train_throughput_compile_graphs $PY benchmarks/train_throughput.py --variants optimized compile-graphs \
        --max-batch 64 --steps 8 --profile compile-graphs --fresh-process --budget-s 420 --deadline-s 450 \
        --out "benchmarks/results/train_throughput_compile_graphs_${GPU:-h100}.json"
      # instructions of 8 lengths (as a store's): graphs recorded again per new prompt length, against prompts
      # padded to a multiple of 32 tokens (--model.backbone.text-pad-multiple 32)
      step train_throughput_text_lengths $PY benchmarks/train_throughput.py --variants compile-graphs \
        compile-graphs-bucket32 --text-lengths 8 --steps 24 --profile compile-graphs-bucket32 --fresh-process \
        --budget-s 560 --deadline-s 590 --out "benchmarks/results/train_throughput_text_lengths_${GPU:-h100}.json"
      ;;
    train)  # TRAIN_ONLY=1: stop after training (a command-length limit: run again to resume, then once without it)
      step benchmark megohand benchmark --config synthetic --work runs/benchmark --seeds 0 1 --parallel 2 \
        --ablations no-grounding no-dropout grounding-tokens refer refer+parse refer+parse+grounding-tokens \
        refer+parse+state-dropout \
        --workers "$SYNTH_WORKERS" ${TRAIN_ONLY:+--train-only} \
        --train-args $BENCH_TRAIN_ARGS
      # the demo checkpoint: the `demo` recipe (the benchmark's TID_s0_refer+parse+state-dropout at 8000 steps)
      [ -n "${TRAIN_ONLY:-}" ] || step demo $PY scripts/train_demo.py --work runs/demo --workers "$SYNTH_WORKERS" \
        --train-args num-workers=15 --no-check
      ;;
    runs)  # their float16 slim exports go to runs/exports/<run>: evaluate them anywhere with `megohand benchmark --runs`
      # (a run folder holding model/ is evaluated, not trained) and join earlier reports with merge_benchmark.py
      # STEPS=10000: another number of training steps than the recipe's, in runs/benchmark_10000 and runs/exports_10000
      W="runs/benchmark${STEPS:+_$STEPS}"
      step runs megohand benchmark --config synthetic --work "$W" --runs ${RUNS:?set RUNS} ${STEPS:+--steps $STEPS} \
        --parallel "${PARALLEL:-2}" --workers "$SYNTH_WORKERS" ${TRAIN_ONLY:+--train-only} --train-args $BENCH_TRAIN_ARGS
      for r in $RUNS; do step "export_$r" $PY scripts/train_demo.py --config synthetic --run "$W/$r" \
        --dest "runs/exports${STEPS:+_$STEPS}/$r" --no-check; done
      ;;
    classic)
      step benchmark_classic megohand benchmark --config synthetic-classic --work runs/benchmark_classic --parallel 2 \
        --workers "$SYNTH_WORKERS" ${TRAIN_ONLY:+--train-only} --train-args $BENCH_TRAIN_ARGS
      ;;
    dist)  # 1 GPU, paper preset (random init): train 8 steps, stop at 4, resume, compare with an uninterrupted run
      step dist $PY benchmarks/dist_check.py --store runs/dist_check/store --make-store --preset paper --device cuda \
        --processes 1 --steps 8 --stop-after 4 --keep-last 1 --batch-size 16
      ;;
    convert)
      step convert $PY benchmarks/convert.py --device cuda
      step retarget $PY benchmarks/retarget.py --device cuda
      ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
done
