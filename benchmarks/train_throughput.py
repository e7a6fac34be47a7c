"""Training throughput of a policy preset, A/B over the speed settings in one run: samples/s, share of bf16 peak, memory.

Builds the preset once (``paper`` at full size with random weights: SigLIP-2 so400m/14-224, SmolLM2-1.7B
truncated to 12 layers, ResNet-50 depth encoder, DiT 16 x 1536, horizon 16) and trains it inside the real
``Trainer`` (``Trainer.train_step``: accelerate, bf16 autocast on a GPU, AdamW, gradient clipping, cosine schedule)
under each variant of the speed settings of ``TrainConfig``:

    baseline    the settings before the speed work: torch's default AdamW (foreach), NCHW depth encoder, no cuDNN
                autotuning, the compact preset's frozen MiniLM run every step, eager
    optimized   the defaults of ``megohand train``: fused AdamW, channels-last depth encoder, cuDNN autotuning, the
                frozen MiniLM's outputs cached per string (``--cache-text``)
    frozen-bf16 optimized + the frozen weights (pretrained encoders) stored in bf16 (``--frozen-bf16``): no autocast
                re-cast of them at every use
    compile     optimized + regional torch.compile of the repeated blocks (``--compile``)
    compile-graphs  compile in mode reduce-overhead: each compiled block replayed as a CUDA graph (``--compile-mode``)
    compile-graphs-bf16  compile-graphs with the frozen weights in bf16
    compile-graphs-bucket32  compile-graphs with the prompts padded to a multiple of 32 tokens
                (``--model.backbone.text-pad-multiple 32``): fewer input shapes to record graphs for

``--text-lengths K`` makes the instructions of the timed steps vary as a store's do: step i reads the i-th of K
instruction sets (i mod K) whose longest prompts differ by about 3 tokens each; the warm-up sees only the first. A
compiled block meets each new length once and records (and may recompile) for it: the JSON keeps the mean step
time on a length's first step and on the steps after (``first_length_step_ms``, ``seen_length_step_ms``).

SDPA attention and the sync-free step are code, not settings: every variant has them. Each variant runs at the
paper's batch per GPU (16, GR00T-N1's fine-tuning batch) and, with ``--max-batch``, ``optimized`` also at doubling
batches up to the largest that fits (then ``baseline`` and ``compile`` at that batch too). A run times ``--steps``
optimiser steps after ``--warmup`` untimed ones (which include compilation) on one random batch kept on the device
(model throughput: data loading is excluded; benchmarks/data_loading.py measures that side). FLOPs per step are
counted once per batch size in eager mode with torch.utils.flop_counter (forward + backward: matmuls, convolutions,
attention), so the share of peak is achieved FLOP/s over the dense bf16 peak of the GPU (H100/H200 SXM 989 TFLOP/s).

A run that fails (out of memory, a compile error) is recorded with its error and the others go on; the JSON is
rewritten after every run, so a run cut short keeps what it measured. Runs expected to end after ``--budget-s``
are recorded as skipped; ``--deadline-s`` (or SIGTERM, e.g. from ``timeout``) stops the run in progress, records
it as stopped, and still prints the table. ``--profile VARIANT`` adds a torch.profiler view of two steps of that
variant at the paper batch: GPU busy share of the wall time, kernel launches and host syncs per step, the CPU time
of forward, backward and optimiser (a step whose CPU time fills its wall time is launch-bound), top kernels.

``--fresh-process`` runs every (variant, batch) in a process of its own (this script again, with one variant at one
batch), the policy built anew each time: in one process the launch-bound batch-16 runs of the paper preset slowed
down run after run on an H100 (94, 80, 68, 54 samples/s alternating two variants;
results/train_throughput_frozen_bf16_h100.json), which an A/B in one process cannot tell from the variants.

    python benchmarks/train_throughput.py --variants baseline optimized compile --max-batch 128 \\
        --profile optimized --budget-s 200 --deadline-s 225                     # one GPU, at most 4 min
    python benchmarks/train_throughput.py --variants optimized frozen-bf16 optimized frozen-bf16 \\
        --fresh-process --budget-s 300                                          # an A/B free of run-order drift
    python benchmarks/train_throughput.py --tiny                                # CPU smoke run

Prints a table and writes benchmarks/results/train_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without install

from megohand.models import MEgoHandPolicy, PolicyConfig  # noqa: E402
from megohand.train.config import TrainConfig  # noqa: E402
from megohand.train.trainer import Trainer, collate, set_frozen_dtype  # noqa: E402
from results_io import write_json  # benchmarks/results_io.py

# dense bf16 tensor-core peaks [FLOP/s] (no sparsity)
PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
         "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12}
TEXTS = ["pick up the red cylinder and put it left of the blue box", "open the drawer", "pour the cup into the bowl",
         "push the green box to the right"]
PAPER_BATCH = 16  # per GPU: GR00T-N1's fine-tuning default, which the paper's training follows (docs/model.md)
VARIANTS = {  # TrainConfig speed settings per variant
    "baseline": dict(fused_optimizer=False, channels_last=False, cudnn_benchmark=False, cache_text=False, compile=False),
    "optimized": dict(fused_optimizer=True, channels_last=True, cudnn_benchmark=True, cache_text=True, compile=False),
    "frozen-bf16": dict(fused_optimizer=True, channels_last=True, cudnn_benchmark=True, cache_text=True,
                        frozen_bf16=True, compile=False),
    "compile": dict(fused_optimizer=True, channels_last=True, cudnn_benchmark=True, cache_text=True, compile=True),
}
VARIANTS["compile-graphs"] = dict(VARIANTS["compile"], compile_mode="reduce-overhead")
VARIANTS["compile-graphs-bf16"] = dict(VARIANTS["compile-graphs"], frozen_bf16=True)
VARIANTS["compile-graphs-bucket32"] = dict(VARIANTS["compile-graphs"], text_pad_multiple=32)
MODEL_SETTINGS = ("text_pad_multiple",)  # variant keys that set the backbone, not TrainConfig


def instruction_sets(k: int, batch: int) -> list[list[str]]:
    """k instruction lists for a batch; list j's longest prompt is about 3 j tokens longer than list 0's."""
    return [[TEXTS[i % len(TEXTS)] + " slowly then" * j for i in range(batch)] for j in range(k)]


def peak_flops(name: str) -> float | None:
    for key, value in PEAKS.items():  # ordered: specific names first
        if key in name:
            return value
    return None


def random_samples(n: int, size: int, horizon: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{
        "image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g),
        "depth": torch.rand(1, size, size, generator=g) * 2,
        "has_depth": True,
        "instruction": TEXTS[i % len(TEXTS)],
        "state": torch.randn(109, generator=g),
        "action": torch.randn(horizon, 99, generator=g) * 0.1,
        "action_mask": torch.ones(horizon),
        "meta": {"dataset": "random", "episode": "0", "k": i},
    } for i in range(n)]


def tiny_model() -> PolicyConfig:
    c = PolicyConfig.compact()
    return dataclasses.replace(c, horizon=8, backbone=c.backbone.replace(image_size=64, width=64),
                               dit=dataclasses.replace(c.dit, width=64, num_layers=2, num_heads=4, output_dim=64,
                                                       head_hidden=64))


def build_policy(model: PolicyConfig, device: torch.device) -> tuple[MEgoHandPolicy, str]:
    """Random-initialised policy, built directly on the GPU (seconds instead of half a minute) when that works."""
    torch.manual_seed(0)
    if device.type == "cuda":
        try:
            with torch.device(device):
                return MEgoHandPolicy(model), "cuda"
        except Exception as e:  # noqa: BLE001 - fall back to the Trainer's way (CPU, then moved)
            print(f"building on the GPU failed ({type(e).__name__}: {e}); building on the CPU")
    return MEgoHandPolicy(model), "cpu"


def attention_used(policy) -> dict[str, str]:
    """The attention implementation each transformers part of the backbone runs (sdpa, eager, ...)."""
    parts = {k: getattr(policy.backbone, k, None) for k in ("vision", "llm", "text")}
    return {k: m.config._attn_implementation for k, m in parts.items() if hasattr(m, "config")}


def count_flops(policy, batch: dict, device: torch.device, cache_text: bool) -> float:
    """FLOPs of one forward + backward of the eager ``policy`` on ``batch`` (bf16 autocast on a GPU), counted by
    torch.utils.flop_counter (not the optimiser; with ``cache_text`` the frozen text encoder's outputs come from the
    cache, filled by one forward first). An eager variant counts after its warm-up; a compiled one, whose process has
    no eager run at this batch, before its compilation (a compiled model cannot be counted). The gradients are
    dropped again."""
    from torch.utils.flop_counter import FlopCounterMode

    use_cache = getattr(policy.backbone, "use_text_cache", None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if use_cache and use_cache(cache_text):
        with torch.no_grad(), autocast:
            policy(batch)
    with FlopCounterMode(display=False) as fc:
        with autocast:
            loss, _ = policy(batch)
        loss.backward()
    policy.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def profile_steps(step, sync, n: int = 2) -> dict:
    """torch.profiler over n steps: GPU busy share, kernel launches and host syncs per step, top kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        wall = time.perf_counter() - t0
    avg = prof.key_averages()
    phases = [e for e in avg if e.key.startswith("train_step.")]  # Trainer.train_step's named ranges
    kernels = [e for e in avg if e.device_type == torch.autograd.DeviceType.CUDA and e not in phases]
    busy_us = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in avg if "LaunchKernel" in e.key)
    syncs = {e.key: e.count / n for e in avg if "Synchronize" in e.key or e.key == "aten::_local_scalar_dense"}
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:15]
    return {
        "steps": n, "note": "host syncs: synchronize calls (one closes the profiled steps) and aten::_local_scalar_dense (a "
                "value read on the host: a sync when the tensor is on the GPU)",
        "wall_ms_per_step_profiled": 1e3 * wall / n, "gpu_busy_ms_per_step": busy_us / 1e3 / n,
        "gpu_busy_share": busy_us / 1e6 / wall, "kernel_launches_per_step": launches / n, "host_syncs_per_step": syncs,
        "cpu_ms_per_step_by_phase": {e.key.split(".", 1)[1]: e.cpu_time_total / 1e3 / n
                                     for e in phases if e.device_type == torch.autograd.DeviceType.CPU},
        "top_kernels": [{"name": e.key[:120], "ms_per_step": e.self_device_time_total / 1e3 / n,
                         "calls_per_step": e.count / n} for e in top],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["paper", "compact"], default=None, help="default: paper on GPU, compact on CPU")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                    help="default: baseline optimized (compile when asked: its first steps take minutes)")
    ap.add_argument("--batch-size", type=int, default=None, help=f"per device; default {PAPER_BATCH} on GPU, 4 on CPU")
    ap.add_argument("--max-batch", type=int, default=0,
                    help="also run 'optimized' at 2x, 4x, ... the batch up to this one or the first out-of-memory")
    ap.add_argument("--steps", type=int, default=None, help="timed optimiser steps per run (default 6 on GPU, 2 on CPU)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--budget-s", type=float, default=0, help="skip runs that would end after this many seconds "
                                                               "(0 = no limit)")
    ap.add_argument("--deadline-s", type=float, default=0, help="stop the run in progress after this many seconds "
                    "(recorded as its error), print and write what was measured (0 = never; SIGTERM does the same)")
    ap.add_argument("--profile", choices=list(VARIANTS), default=None, help="profile two steps of this variant")
    ap.add_argument("--tiny", action="store_true", help="toy-size compact model (CPU smoke run)")
    ap.add_argument("--modalities", default="TID")
    ap.add_argument("--fresh-process", action="store_true",
                    help="every (variant, batch) in a new process that builds the policy again (no run-order drift)")
    ap.add_argument("--text-lengths", type=int, default=1,
                    help="timed steps cycle through this many instruction lengths (1: the same texts every step)")
    ap.add_argument("--flops-per-step", type=float, default=0.0,
                    help="FLOPs of one step at --batch-size, counted before (a compiled run cannot count them)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()

    stopped = {}

    def stop(signum, frame):  # a time limit ends the run in progress; the others are skipped, the results kept
        args.budget_s = 1e-9
        stopped["why"] = f"stopped by {signal.Signals(signum).name} after {time.perf_counter() - t_start:.0f} s"
        raise TimeoutError(stopped["why"])

    signal.signal(signal.SIGTERM, stop)
    if args.deadline_s:
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, args.deadline_s)

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # shared CPU machines: one thread gives stable numbers
    device = torch.device("cuda" if cuda else "cpu")
    preset = args.preset or ("paper" if cuda else "compact")
    batch0 = args.batch_size or (PAPER_BATCH if cuda else 4)
    steps = args.steps or (6 if cuda else 2)
    variants = args.variants or ["baseline", "optimized"]
    model = tiny_model() if args.tiny else PolicyConfig.paper() if preset == "paper" else PolicyConfig.compact()
    if preset == "paper" and not args.tiny:
        model = dataclasses.replace(model, backbone=model.backbone.replace(random_init=True))
    model = dataclasses.replace(model, modalities=args.modalities)
    image_size = 224 if preset == "paper" else model.backbone.image_size
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    peak = peak_flops(name) if cuda else None
    dev = "cpu" if not cuda else name.lower().replace("nvidia ", "").replace(" ", "-")
    out = args.out or Path(__file__).resolve().parent / "results" / f"train_throughput_{dev}{'_tiny' if args.tiny else ''}.json"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    t0 = time.perf_counter()
    policy, built_on = (None, None) if args.fresh_process else build_policy(model, device)
    build_s = time.perf_counter() - t0
    samples = [] if args.fresh_process else random_samples(max(batch0, args.max_batch), image_size, model.horizon)
    import transformers

    res = {
        "benchmark": "train_throughput",
        "preset": preset + (" (tiny)" if args.tiny else "") + (" random weights" if preset == "paper" else ""),
        "modalities": args.modalities, "device": name, "processes": 1, "horizon": model.horizon,
        "parameters": policy and policy.num_parameters(),
        "trainable_parameters": policy and policy.num_parameters(trainable_only=True),
        "attention": policy and attention_used(policy), "fresh_process": args.fresh_process, "pid": os.getpid(),
        "build_seconds": None if args.fresh_process else build_s, "built_on": built_on, "paper_batch_per_gpu": PAPER_BATCH,
        "steps_timed": steps, "warmup_steps": args.warmup, "text_lengths": args.text_lengths,
        "peak_bf16_tflops": None if peak is None else peak / 1e12,
        "variants": {k: VARIANTS[k] for k in variants}, "runs": [], "profile": None,
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "note": "model throughput on one device-resident random batch; data loading excluded; share = achieved "
                "FLOP/s (forward + backward, optimiser not counted) over the dense bf16 peak",
    }
    flops_at: dict[int, float] = {batch0: args.flops_per_step} if args.flops_per_step else {}
    tmp = tempfile.TemporaryDirectory()

    def save():
        res["total_seconds"] = time.perf_counter() - t_start
        write_json(res, out, indent=1)

    def run(variant: str, batch_size: int, profile: bool = False, expected_s: float = 0.0) -> dict:
        """Time one variant at one batch size; ``expected_s``: its expected duration (for the time budget)."""
        rec = {"variant": variant, "batch": batch_size, "status": "running", "pid": os.getpid()}  # a run cut short
        res["runs"].append(rec)
        elapsed = time.perf_counter() - t_start
        if args.budget_s and elapsed + expected_s > args.budget_s:
            rec.update(status="skipped", error=f"time budget: {elapsed:.0f} s in + about {expected_s:.0f} s "
                                               f"> --budget-s {args.budget_s:.0f}")
            save()
            return rec
        save()
        print(f"-- {variant} at batch {batch_size} ({elapsed:.0f} s in)", flush=True)
        settings = {k: v for k, v in VARIANTS[variant].items() if k not in MODEL_SETTINGS}
        cfg = TrainConfig(out=Path(tmp.name), model=model, steps=10_000, batch_size=batch_size, num_workers=0,
                          progress=False, resume=False, **settings)
        tr = None
        try:
            if args.fresh_process:
                run_in_fresh_process(rec, variant, batch_size, profile)
                return rec
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                rec["memory_before_gib"] = torch.cuda.memory_allocated() / 2**30
            if hasattr(policy.backbone.cfg, "text_pad_multiple"):  # the eagle backbone's bucketing (one policy: reset)
                pad = VARIANTS[variant].get("text_pad_multiple", 0)
                policy.backbone.cfg = dataclasses.replace(policy.backbone.cfg, text_pad_multiple=pad)
            batch = collate(samples[:batch_size])
            batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            texts = instruction_sets(args.text_lengths, batch_size)
            if cfg.compile and batch_size not in flops_at:  # counted on the eager policy, before compilation
                batch["instruction"] = texts[0]
                flops_at[batch_size] = count_flops(policy, batch, device, cfg.cache_text)
            tr = Trainer(cfg, train_dataset=samples[:batch_size], policy=policy)
            rec["applied"] = {**tr.speed, "optimizer": "fused" if tr.opt.optimizer.defaults.get("fused") else "default"}
            holder = {}

            def step(i: int = 0):
                batch["instruction"] = texts[i % len(texts)]
                holder["info"] = tr.train_step(batch)

            tw = time.perf_counter()
            for _ in range(args.warmup):
                step()
            sync()
            rec["warmup_seconds"] = time.perf_counter() - tw
            if batch_size not in flops_at:  # an eager variant: counted after its warm-up, with its settings
                flops_at[batch_size] = count_flops(policy, batch, device, cfg.cache_text)
            sync()
            tt = time.perf_counter()
            step_s = []
            for i in range(steps):
                step(i)
                if len(texts) > 1:  # per-step times; one text length keeps the steps overlapping (one sync at the end)
                    sync()
                    step_s.append(time.perf_counter() - tt - sum(step_s))
            sync()
            dt = (time.perf_counter() - tt) / steps
            if len(texts) > 1:
                first = [t for i, t in enumerate(step_s) if 0 < i < len(texts)]  # length 0 met in the warm-up
                seen = [t for i, t in enumerate(step_s) if i == 0 or i >= len(texts)]
                rec.update(text_lengths=len(texts), first_length_step_ms=1e3 * sum(first) / max(len(first), 1),
                           seen_length_step_ms=1e3 * sum(seen) / max(len(seen), 1) if seen else None)
            flops = flops_at[batch_size]
            rec.update(status="ok", step_ms=dt * 1e3, samples_per_s=batch_size / dt, flops_per_step=flops,
                       achieved_tflops=flops / dt / 1e12, share_of_bf16_peak=None if peak is None else flops / dt / peak,
                       peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                       final_loss=float(holder["info"]["loss"]))
            if profile:
                res["profile"] = {"variant": variant, "batch": batch_size}
                try:
                    res["profile"].update(profile_steps(step, sync))
                except Exception as e:  # noqa: BLE001 - the timing above stands
                    res["profile"]["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        except Exception as e:  # noqa: BLE001 - an A/B run records the failure and goes on
            if stopped:  # the time limit (compilers re-raise it wrapped)
                rec.update(status="stopped", error=stopped["why"])
            else:
                rec.update(status="error", error=f"{type(e).__name__}: {str(e)[:600]}")
            print(f"   failed: {rec['error'][:200]}", flush=True)
        finally:
            if policy is not None:
                policy.zero_grad(set_to_none=True)
                set_frozen_dtype(policy, torch.float32)  # the next variant: fp32 frozen weights (bf16-rounded: same speed)
            del tr
            gc.collect()
            save()
        return rec

    def run_in_fresh_process(rec: dict, variant: str, batch_size: int, profile: bool) -> None:
        """This script with one variant at one batch, in a new process; its run (and profile) go into ``rec``."""
        child_out = Path(tmp.name) / "child.json"
        child_out.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--preset", preset, "--modalities", args.modalities,
               "--variants", variant, "--batch-size", str(batch_size), "--steps", str(steps),
               "--warmup", str(args.warmup), "--text-lengths", str(args.text_lengths), "--out", str(child_out)]
        cmd += (["--tiny"] if args.tiny else []) + (["--profile", variant] if profile else [])
        cmd += ["--flops-per-step", str(flops_at[batch_size])] if batch_size in flops_at else []
        try:  # a TimeoutError from the deadline kills the child (subprocess.run) and is handled by run()
            proc = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            child = json.loads(child_out.read_text()) if child_out.exists() else None
        if proc.returncode != 0 or child is None or not child["runs"]:
            tail = " ".join((proc.stderr or proc.stdout)[-500:].split())
            raise RuntimeError(f"the process of this run exited with {proc.returncode}: {tail}")
        rec.update(child["runs"][0], build_seconds=child["build_seconds"], built_on=child["built_on"])
        if rec.get("flops_per_step"):
            flops_at.setdefault(batch_size, rec["flops_per_step"])
        for key in ("parameters", "trainable_parameters", "attention"):
            res[key] = res[key] or child[key]
        if profile:
            res["profile"] = child["profile"]
        if rec["status"] != "ok":  # out of memory and the like: the probe for larger batches stops here
            raise RuntimeError(rec.get("error", rec["status"]))

    try:
        eager = [v for v in variants if not VARIANTS[v]["compile"]]
        for v in eager:
            run(v, batch0, profile=v == args.profile)
        largest = None
        if args.max_batch > batch0:
            probe = "optimized" if "optimized" in eager else (eager or ["optimized"])[0]
            b = 2 * batch0
            while b <= args.max_batch:
                rec = run(probe, b)
                if rec["status"] != "ok":
                    break
                largest = b
                b *= 2
            for v in eager:
                if largest and v != probe:
                    run(v, largest)
        for v in (v for v in variants if VARIANTS[v]["compile"]):  # last: compiled blocks stay compiled
            rec = run(v, batch0, profile=v == args.profile)
            if rec["status"] == "ok" and largest:  # a new batch size compiles again: about as long as the first time
                run(v, largest, expected_s=rec["warmup_seconds"] + 4 * (args.warmup + steps) * rec["step_ms"] / 1e3)
    except TimeoutError:  # arrived between two runs
        pass
    res["stopped"] = stopped.get("why")
    signal.setitimer(signal.ITIMER_REAL, 0)
    tmp.cleanup()
    save()

    built = "built again in each run's process" if args.fresh_process else f"build {build_s:.0f} s ({built_on})"
    print(f"\n{res['preset']} on {name}; {built}; {steps} timed steps after {args.warmup} "
          f"warm-up; attention {res['attention']}")
    head = ("variant", "batch", "step ms", "samples/s", "TFLOP/s", "% bf16 peak", "peak GiB", "warm-up s", "note")
    rows = []
    for r in res["runs"]:
        if r["status"] != "ok":
            rows.append((r["variant"], r["batch"], "", "", "", "", "", "", f"{r['status']}: {' '.join(r['error'].split())[:70]}"))
            continue
        rows.append((r["variant"], r["batch"], f"{r['step_ms']:.1f}", f"{r['samples_per_s']:.1f}",
                     f"{r['achieved_tflops']:.3g}", "n/a" if peak is None else f"{100 * r['share_of_bf16_peak']:.1f}",
                     "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}",
                     f"{r['warmup_seconds']:.1f}", "" if "first_length_step_ms" not in r else
                     f"new length {r['first_length_step_ms']:.0f} ms, seen {r['seen_length_step_ms'] or 0:.0f} ms"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    if res["profile"] and "error" not in res["profile"]:
        p = res["profile"]
        print(f"profile of {p['variant']} at batch {p['batch']}: {p['wall_ms_per_step_profiled']:.0f} ms per step, "
              f"GPU busy {100 * p['gpu_busy_share']:.0f} % of the wall time, {p['kernel_launches_per_step']:.0f} kernel launches and {p['host_syncs_per_step']} host "
              f"syncs per step; CPU ms per step {({k: round(v, 1) for k, v in p['cpu_ms_per_step_by_phase'].items()})}")
    print(f"wrote {out} ({res['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
