"""Distributed-training check of ``megohand train``: start, train, checkpoint, kill-and-resume, throughput scaling.

For every process count N of ``--processes`` it runs ``accelerate launch ... -m megohand.cli.main train`` three
times on a synthetic store:

1. an uninterrupted run of ``--steps`` steps (``full``);
2. the same command with ``--stop-after k`` (a job that ends early with a checkpoint at step k, ``killed``);
3. the same command again without ``--stop-after``: it resumes from step k and finishes (``resumed``).

(a) resume: out/model/model.safetensors of ``full`` and ``resumed`` must be equal: bitwise, or (``--rtol``) with
    ||full - resumed|| <= rtol * ||resumed - step k|| (relative to the training update after step k;
    GPU kernels are not all deterministic). The optimiser states of the final checkpoints are compared too.
(b) throughput: train/samples_per_s of ``full`` from out/metrics.jsonl (median over the logs after the first
    ``--warmup-logs``; checkpoint and evaluation time excluded by the trainer) and the ratio to 1 process.

CPU: DDP over gloo (``--multi_gpu`` with ``ACCELERATE_USE_CPU=1``; one thread per process). CUDA: ``--multi_gpu
--num_processes N`` (DDP) or a generated FSDP config like docs/model.md's fsdp.yaml (``--mode fsdp``); the child
environment keeps ``NCCL_NVLS_ENABLE=0``.

    python benchmarks/dist_check.py --make-store --processes 1,2 --device cpu --tiny          # CPU, minutes
    python benchmarks/dist_check.py --store S --preset paper --processes 1,8 --device cuda    # DDP on 8 GPUs
    python benchmarks/dist_check.py --store S --preset paper --processes 1,8 --device cuda --mode fsdp

Prints a table and writes benchmarks/results/dist_check_<device>.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from megohand import io

ROOT = Path(__file__).resolve().parents[1]
# toy-size compact policy (the CPU check): the settings of the tests' compact_cfg
TINY = ("--model.horizon 4 --model.backbone.image-size 32 --model.backbone.width 32 --model.backbone.fusion-layers 1 "
        "--model.dit.width 32 --model.dit.num-layers 2 --model.dit.num-heads 4 --model.dit.output-dim 32 "
        "--model.dit.head-hidden 32")
# FSDP units per preset (accelerate refuses a class name that the model lacks)
FSDP_LAYERS = {"paper": "SiglipEncoderLayer,LlamaDecoderLayer,DiTBlock", "compact": "DiTBlock"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp_config(path: Path, n: int, cuda: bool, preset: str) -> Path:
    """An accelerate config file for FSDP on n processes (docs/model.md's fsdp.yaml)."""
    io.write_text(path, "\n".join([
        "compute_environment: LOCAL_MACHINE",
        "distributed_type: FSDP",
        "mixed_precision: " + ("bf16" if cuda else "'no'"),  # a bare no would be YAML false
        f"num_processes: {n}",
        "num_machines: 1",
        "machine_rank: 0",
        "dynamo_config: {}",
        "fsdp_config:",
        "  fsdp_version: 1",
        "  fsdp_sharding_strategy: FULL_SHARD",
        "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
        f"  fsdp_transformer_layer_cls_to_wrap: {FSDP_LAYERS[preset]}",
        "  fsdp_use_orig_params: true",
        "  fsdp_state_dict_type: FULL_STATE_DICT",
        "  fsdp_sync_module_states: true",
        "",
    ]))
    return path


def launch_prefix(args, mode: str, n: int, work: Path) -> list[str]:
    """``accelerate launch`` options for n processes of the requested device and mode (ddp / fsdp)."""
    cuda = args.device == "cuda"
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if mode == "fsdp":
        cmd += ["--config_file", str(fsdp_config(work / f"fsdp_{n}.yaml", n, cuda, args.preset))]
    elif n > 1:
        cmd += ["--multi_gpu", "--num_processes", str(n), "--num_machines", "1"]
    else:
        cmd += ["--num_processes", "1", "--num_machines", "1"] + ([] if cuda else ["--cpu"])
    if mode != "fsdp":
        cmd += ["--mixed_precision", "bf16" if cuda else "no", "--dynamo_backend", "no"]
    if not cuda:
        cmd += ["--num_cpu_threads_per_process", str(args.threads)]
    return cmd + ["--main_process_port", str(free_port()), "-m", "megohand.cli.main", "train"]


def train_args(args, out: Path, stop_after: int | None) -> list[str]:
    a = ["--store", str(args.store), "--out", str(out), "--steps", str(args.steps), "--save-every", str(args.save_every),
         "--keep-last", str(args.keep_last), "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
         "--log-every", str(args.log_every), "--eval-every", "0", "--no-progress", "--seed", "0"]
    if stop_after is not None:
        a += ["--stop-after", str(stop_after)]
    a += shlex.split(args.train_args)
    a += ["model:" + args.preset]
    if args.preset == "paper":
        a += ["--model.backbone.random-init"]
    if args.tiny:
        a += shlex.split(TINY)
    return a + shlex.split(args.model_args)


def child_env(args) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # the GPU machines need NVLink multicast off
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    if args.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"  # accelerate sets up gloo DDP (MULTI_CPU) only when told
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def run(cmd: list[str], env: dict, log: Path, timeout: float) -> float:
    """Run cmd with output to log; returns seconds; raises naming the log on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(shlex.join(cmd) + "\n\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    dt = time.perf_counter() - t0
    if rc != 0:
        lines = log.read_text().splitlines()
        errs = [ln.strip() for ln in lines if re.match(r"^\s*(\[rank\d+\]: )?\w+(Error|Exception): ", ln)
                and "ChildFailedError" not in ln]
        print("\n".join(lines[-30:]), flush=True)
        raise RuntimeError(f"{log}: exit status {rc} after {dt:.0f} s: {errs[0] if errs else 'see the log'}")
    return dt


def compare(a_path: Path, b_path: Path) -> dict:
    """Tensor-by-tensor comparison of two safetensors files (read one tensor at a time)."""
    from safetensors import safe_open

    d2, n_diff, max_diff = 0.0, 0, 0.0
    with safe_open(str(a_path), "pt") as a, safe_open(str(b_path), "pt") as b:
        if set(a.keys()) != set(b.keys()):
            raise ValueError(f"{a_path} and {b_path}: different tensor names")
        for k in a.keys():
            x, y = a.get_tensor(k), b.get_tensor(k)
            if not x.equal(y):
                x, y = x.double(), y.double()
                n_diff += 1
                max_diff = max(max_diff, (x - y).abs().max().item())
                d2 += (x - y).square().sum().item()
        n = len(a.keys())
    return {"tensors": n, "tensors_different": n_diff, "bitwise_equal": n_diff == 0, "max_abs_diff": max_diff,
            "diff_norm": math.sqrt(d2)}


def samples_per_s(metrics: Path, warmup_logs: int) -> tuple[float | None, list[float]]:
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no metrics (the run logged nothing)")
    vals = [r["train/samples_per_s"] for r in map(json.loads, metrics.read_text().splitlines())
            if "train/samples_per_s" in r]
    kept = vals[warmup_logs:] or vals[-1:]
    return (statistics.median(kept) if kept else None), vals


def check(args, mode: str, n: int, env: dict) -> dict:
    """full / killed / resumed runs on n processes; returns the result record."""
    work = args.work / f"{mode}_{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res: dict = {"processes": n, "mode": mode}
    prefix = launch_prefix(args, mode, n, work)
    shown = shlex.join(["python"] + prefix[1:] + train_args(args, work / "full", None))
    res["command"] = shown.replace(str(ROOT) + os.sep, "")  # as run from the repository root
    # stopped + resumed first; their redundant files go before the full run writes its own (disk)
    res["seconds_killed"] = run(prefix + train_args(args, work / "killed", args.stop_after), env,
                                work / "killed.log", args.timeout)
    ckpt_k = work / "killed" / "checkpoints" / f"step-{args.stop_after:07d}"
    if not (ckpt_k / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{ckpt_k}: no checkpoint after --stop-after {args.stop_after}")
    res["distributed_type"] = json.loads((ckpt_k / "trainer_state.json").read_text()).get("distributed_type")
    ref = work / f"model_step{args.stop_after}.safetensors"
    os.link(ckpt_k / "model.safetensors", ref)  # survives the pruning of the checkpoint, no copy
    res["seconds_resumed"] = run(prefix + train_args(args, work / "killed", None), env, work / "resumed.log",
                                 args.timeout)
    res["resume_message"] = next((ln.strip() for ln in (work / "resumed.log").read_text().splitlines()
                                  if ln.startswith("resumed from")), None)
    resumed = work / "killed" / "model" / "model.safetensors"
    update = compare(resumed, ref)["diff_norm"]  # ||w_end - w_k||: the scale of a resume error
    last = f"step-{args.steps:07d}"
    if not args.keep_runs:  # disk: the paper preset's weights are 7.6 GB a copy
        ref.unlink()
        (work / "killed" / "checkpoints" / last / "model.safetensors").unlink(missing_ok=True)  # = out/model
    res["seconds_full"] = run(prefix + train_args(args, work / "full", None), env, work / "full.log", args.timeout)
    res["weights"] = compare(work / "full" / "model" / "model.safetensors", resumed)
    res["weights"]["update_norm_after_k"] = update
    rel = res["weights"]["diff_norm"] / update if update > 0 else None
    res["weights"]["diff_over_update"] = rel
    oa, ob = (work / r / "checkpoints" / last / "optimizer.safetensors" for r in ("full", "killed"))
    res["optimizer"] = compare(oa, ob) if oa.is_file() and ob.is_file() else None
    res["resume_ok"] = res["weights"]["bitwise_equal"] or (args.rtol > 0 and rel is not None and rel <= args.rtol)
    res["samples_per_s"], res["samples_per_s_logs"] = samples_per_s(work / "full" / "metrics.jsonl", args.warmup_logs)
    if not args.keep_runs:
        for r in ("full", "killed"):
            shutil.rmtree(work / r / "checkpoints", ignore_errors=True)
            shutil.rmtree(work / r / "model", ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=None, help="synthetic store (default: <work>/store)")
    ap.add_argument("--make-store", action="store_true", help="create the store with `megohand synth` if absent")
    ap.add_argument("--episodes", type=int, default=40, help="episodes of a created store")
    ap.add_argument("--image-size", type=int, default=128, help="image size of a created store")
    ap.add_argument("--preset", choices=["compact", "paper"], default="compact")
    ap.add_argument("--tiny", action="store_true", help="toy-size compact model (CPU)")
    ap.add_argument("--processes", default="1,2", help="comma-separated process counts (1 first for the ratio)")
    ap.add_argument("--mode", default="ddp", help="ddp, fsdp or both as ddp,fsdp")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--stop-after", type=int, default=6, help="the killed run's last step")
    ap.add_argument("--save-every", type=int, default=None, help="default: --steps (only the stop and final checkpoints)")
    ap.add_argument("--keep-last", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="per process (default 16 on CUDA, 4 on CPU)")
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per process (default 4 / 0)")
    ap.add_argument("--log-every", type=int, default=1)
    ap.add_argument("--warmup-logs", type=int, default=2, help="first samples/s logs left out")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per process (CPU)")
    ap.add_argument("--rtol", type=float, default=None,
                    help="accepted ||full - resumed|| / ||full - step k|| (default 0 = bitwise on CPU, 0.05 on CUDA)")
    ap.add_argument("--train-args", default="", help="extra `megohand train` options (before the model preset)")
    ap.add_argument("--model-args", default="", help="extra model options (after model:<preset>)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "dist_check")
    ap.add_argument("--keep-runs", action="store_true", help="keep checkpoints and models of the runs")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = args.device == "cuda"
    args.store = args.store or args.work / "store"
    args.save_every = args.save_every or args.steps
    args.batch_size = args.batch_size or (16 if cuda else 4)
    args.num_workers = args.num_workers if args.num_workers is not None else (4 if cuda else 0)
    args.rtol = args.rtol if args.rtol is not None else (0.05 if cuda else 0.0)
    procs = [int(p) for p in args.processes.split(",")]
    modes = args.mode.split(",")
    if not set(modes) <= {"ddp", "fsdp"}:
        ap.error(f"--mode {args.mode}: ddp and/or fsdp")
    if not 0 < args.stop_after < args.steps:
        ap.error(f"--stop-after {args.stop_after} must lie between 0 and --steps {args.steps}")
    if cuda and max(procs) > torch.cuda.device_count():
        ap.error(f"--processes {args.processes}: only {torch.cuda.device_count()} GPU(s) visible")
    env = child_env(args)
    if not (args.store / "store.json").is_file():
        if not args.make_store:
            ap.error(f"store {args.store} does not exist (pass --make-store to create it)")
        print(f"creating store {args.store} ({args.episodes} episodes, {args.image_size} px)", flush=True)
        run([sys.executable, "-m", "megohand.cli.main", "synth", "--out", str(args.store), "--episodes",
             str(args.episodes), "--image-size", str(args.image_size), "--workers", str(min(8, os.cpu_count() or 1))],
            env, args.work / "synth.log", args.timeout)

    load_before = os.getloadavg()  # a shared CPU machine distorts the scaling: recorded with the figures
    results, errors = [], {}
    for mode in modes:
        for n in procs:
            print(f"--- {mode}, {n} process(es) on {args.device}", flush=True)
            try:
                results.append(check(args, mode, n, env))
            except Exception as e:  # record and go on with the other runs
                errors[f"{mode}_{n}"] = str(e).replace(str(ROOT) + os.sep, "")
                print(f"FAILED: {e}", flush=True)
    for r in results:
        base = next((q["samples_per_s"] for q in results if q["processes"] == 1 and q["mode"] == r["mode"]), None)
        r["scaling_vs_1"] = r["samples_per_s"] / base if base and r["samples_per_s"] else None
        r["efficiency"] = r["scaling_vs_1"] / r["processes"] if r["scaling_vs_1"] else None

    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    out = {
        "benchmark": "dist_check", "device": args.device, "device_name": name, "modes": modes,
        "preset": args.preset + (" (tiny)" if args.tiny else "") + (" random init" if args.preset == "paper" else ""),
        "steps": args.steps, "stop_after": args.stop_after, "save_every": args.save_every,
        "batch_per_process": args.batch_size, "threads_per_process": None if cuda else args.threads,
        "rtol": args.rtol, "warmup_logs": args.warmup_logs, "store": str(args.store).replace(str(ROOT) + os.sep, ""),
        "results": results, "errors": errors,
        "all_ok": not errors and all(r["resume_ok"] for r in results),
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
    }
    import accelerate

    out["accelerate"] = accelerate.__version__
    rows = [("mode", "procs", "type", "resume", "max|diff|", "samples/s", "vs 1", "eff.", "s (full)")]
    for r in results:
        w = r["weights"]
        rows.append((r["mode"], str(r["processes"]), str(r["distributed_type"]),
                     "bitwise" if w["bitwise_equal"] else ("ok" if r["resume_ok"] else "DIFFERS"),
                     f"{w['max_abs_diff']:.2e}", f"{r['samples_per_s']:.2f}",
                     "-" if r["scaling_vs_1"] is None else f"{r['scaling_vs_1']:.2f}",
                     "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}", f"{r['seconds_full']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows))
    for key, e in errors.items():
        print(f"{key}: FAILED: {e}")
    path = args.out or ROOT / "benchmarks" / "results" / f"dist_check_{args.device}.json"
    io.write_text(path, json.dumps(out, indent=1))
    print(f"wrote {path}")
    sys.exit(0 if out["all_ok"] else 1)


if __name__ == "__main__":
    main()
