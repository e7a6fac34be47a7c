"""Training throughput of a policy preset: samples per second and the share of the accelerator's bf16 peak.

Builds the preset (``paper`` at full size with random weights: SigLIP-2 so400m/14-224, SmolLM2-1.7B truncated
to 12 layers, ResNet-50 depth encoder, DiT 16 x 1536, horizon 16) inside the real ``Trainer`` (accelerate,
bf16 autocast on GPU, AdamW, gradient clipping, cosine schedule) and times full optimiser steps on one
random batch kept on the device (model throughput: data loading is excluded; benchmarks/data_loading.py
measures that side). FLOPs per step are counted once with torch.utils.flop_counter (forward + backward,
matmuls / convolutions / attention), so the share of peak is achieved FLOP/s over the dense bf16 peak of
the GPU (H100/H200 SXM 989 TFLOP/s).

    python benchmarks/train_throughput.py --preset paper --batch-size 16      # on a GPU
    accelerate launch --multi_gpu --num_processes 8 benchmarks/train_throughput.py --preset paper
    python benchmarks/train_throughput.py --tiny                              # CPU smoke run

Prints a table and writes benchmarks/results/train_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without install

from megohand.models import PolicyConfig  # noqa: E402
from megohand.train.config import TrainConfig  # noqa: E402
from megohand.train.trainer import Trainer, collate  # noqa: E402
from results_io import write_json  # benchmarks/results_io.py

# dense bf16 tensor-core peaks [FLOP/s] (no sparsity)
PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
         "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12}
TEXTS = ["pick up the red cylinder and put it left of the blue box", "open the drawer", "pour the cup into the bowl",
         "push the green box to the right"]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["paper", "compact"], default=None, help="default: paper on GPU, compact on CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="per device; default 16 on GPU, 4 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed optimiser steps (default 10 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--tiny", action="store_true", help="toy-size compact model (CPU smoke run)")
    ap.add_argument("--modalities", default="TID")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # shared CPU machines: one thread gives stable numbers
    preset = args.preset or ("paper" if cuda else "compact")
    batch_size = args.batch_size or (16 if cuda else 4)
    steps = args.steps or (10 if cuda else 3)
    model = tiny_model() if args.tiny else PolicyConfig.paper() if preset == "paper" else PolicyConfig.compact()
    if preset == "paper" and not args.tiny:
        model = dataclasses.replace(model, backbone=model.backbone.replace(random_init=True))
    model = dataclasses.replace(model, modalities=args.modalities)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out=Path(tmp), model=model, steps=10_000, batch_size=batch_size, num_workers=0,
                          progress=False, resume=False)
        t0 = time.perf_counter()
        tr = Trainer(cfg, train_dataset=random_samples(batch_size, 224 if preset == "paper" else model.backbone.image_size,
                                                       model.horizon))
        build_s = time.perf_counter() - t0
        acc = tr.acc
        batch = collate(tr.train_ds[:batch_size] if isinstance(tr.train_ds, list) else [tr.train_ds[i] for i in range(batch_size)])
        batch = {k: (v.to(acc.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        params = tr.model.parameters

        def step():
            with acc.autocast():
                loss, _ = tr.model(batch)
            acc.backward(loss)
            acc.clip_grad_norm_(params(), cfg.max_grad_norm)
            tr.opt.step()
            tr.sched.step()
            tr.opt.zero_grad(set_to_none=True)
            return loss

        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup):
            step()
        sync()
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:  # forward + backward of one step (the optimiser is not counted)
            with acc.autocast():
                loss, _ = tr.model(batch)
            acc.backward(loss)
        tr.opt.zero_grad(set_to_none=True)
        flops = float(fc.get_total_flops())
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        dt = (time.perf_counter() - t0) / steps

    world = acc.num_processes
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    peak = peak_flops(name) if cuda else None
    samples_s = batch_size * world / dt
    achieved = flops / dt  # per device
    res = {
        "benchmark": "train_throughput",
        "preset": preset + (" (tiny)" if args.tiny else "") + (" random weights" if preset == "paper" else ""),
        "modalities": args.modalities,
        "device": name, "processes": world, "mixed_precision": acc.mixed_precision,
        "batch_per_device": batch_size, "horizon": model.horizon,
        "parameters": tr.policy.num_parameters(), "trainable_parameters": tr.policy.num_parameters(trainable_only=True),
        "build_seconds": build_s, "steps_timed": steps,
        "step_seconds": dt, "samples_per_s": samples_s,
        "flops_per_step_per_device": flops, "achieved_tflops_per_device": achieved / 1e12,
        "peak_bf16_tflops": None if peak is None else peak / 1e12,
        "share_of_bf16_peak": None if peak is None else achieved / peak,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "final_loss": float(loss.detach()), "torch": torch.__version__, "python": platform.python_version(),
        "note": "model throughput on one device-resident random batch; data loading excluded",
    }
    if not acc.is_main_process:
        return
    rows = [("preset", res["preset"]), ("device", f"{name} x{world}"), ("precision", acc.mixed_precision),
            ("params (trainable)", f"{res['parameters'] / 1e6:.1f} M ({res['trainable_parameters'] / 1e6:.1f} M)"),
            ("batch / device", batch_size), ("step time", f"{dt * 1e3:.1f} ms"), ("samples/s", f"{samples_s:.1f}"),
            ("FLOPs / step / device", f"{flops / 1e9:.1f} G"), ("achieved", f"{achieved / 1e12:.3f} TFLOP/s"),
            ("share of bf16 peak", "n/a" if peak is None else f"{100 * achieved / peak:.1f} %"),
            ("peak memory", "n/a" if not cuda else f"{res['peak_memory_gb']:.1f} GiB")]
    w = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{w}}  {v}" for k, v in rows))
    dev = "cpu" if not cuda else name.lower().replace("nvidia ", "").replace(" ", "-")
    out = args.out or Path(__file__).resolve().parent / "results" / f"train_throughput_{dev}{'_tiny' if args.tiny else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(res, out, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
