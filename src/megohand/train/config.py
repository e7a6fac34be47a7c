"""Training configuration (a frozen dataclass; every field is a ``megohand train`` option through tyro)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megohand.errors import check, check_fraction, check_min
from megohand.models.config import PolicyConfig, compact


def default_workers() -> int:
    """DataLoader workers per device: up to 4, leaving a core to the main process (0 on one core)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


@dataclass(frozen=True)
class TrainConfig:
    """What ``megohand train`` does: data, model preset, optimiser, schedule, checkpoints."""

    store: Path | None = None
    """Unified store root (``megohand convert`` / ``megohand synth`` output)."""
    datasets: tuple[str, ...] = ()
    """Datasets of the store to train on, optionally weighted as ``name:weight`` (empty = all)."""
    split_portion: float = 1.0
    """Per dataset, the share of the stored train split used for training; the rest is the eval set
    (1.0: train on the whole train split, evaluate on the stored val split)."""
    out: Path = Path("runs/megohand")
    """Run folder: checkpoints/, model/ (final policy), tensorboard/, metrics.jsonl."""
    model: PolicyConfig = field(default_factory=compact)
    """Policy configuration (preset + overrides)."""
    steps: int = 10_000
    """Optimiser steps in total (GR00T-N1 fine-tune: 10 000)."""
    batch_size: int = 16
    """Samples per device per micro-batch (GR00T-N1: 16 per GPU)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    lr: float = 1e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.95, 0.999)
    """AdamW betas."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    warmup_ratio: float = 0.05
    """Share of steps with linear warm-up before the cosine decay to 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping (global L2 norm); 0 disables."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto = bf16 autocast on a GPU that supports it, else fp32."""
    num_workers: int = field(default_factory=default_workers)
    """DataLoader worker processes per device (default: up to 4, one fewer than the CPU cores)."""
    augment: bool = True
    """GR00T-style image augmentation in WindowDataset (random crop 0.95, colour jitter)."""
    stride: int = 1
    """Distance between window starts."""
    window_scope: Literal["segment", "episode"] = "segment"
    """Where a window's future may run: inside the segment of its start frame (the paper's default) or across the
    following segments to the episode's end (stores whose segments are shorter than the horizon, e.g. the
    synthetic world; megohand.data.windows)."""
    stored_depth: Literal["auto", "required", "none"] = "auto"
    """Whether samples carry the store's depth (docs/data_format.md, "Depth: one vocabulary"): auto = where the
    episode has it; required = every episode must have it; none = never read."""
    side: Literal["right", "left"] = "right"
    """Hand side."""
    normalizer: Literal["min_max", "q99", "min_max_per_step", "q99_per_step"] = "min_max"
    """State/action normaliser (pooled store statistics): min_max, q99 (q01..q99, clipped), or the *_per_step
    variants with action bounds per horizon step (L, 99), a finer scale for the near chunk frames."""
    seed: int = 0
    """Seed of initialisation, data order, augmentation and flow noise."""
    log_every: int = 10
    """Steps between logged losses (tensorboard + metrics.jsonl)."""
    eval_every: int = 500
    """Steps between evaluations of the flow-matching loss on the eval set (0 = never)."""
    eval_batches: int = 10
    """Batches per evaluation (a fixed subset, fixed noise)."""
    save_every: int = 1000
    """Steps between checkpoints (one is also written at the end and when stopping early)."""
    keep_last: int = 3
    """Checkpoints kept (older ones are deleted)."""
    resume: bool = True
    """Resume from the newest checkpoint in ``out/checkpoints`` if there is one."""
    init_from: Path | None = None
    """Fine-tune: start from the weights and normaliser of a trained policy (a full or slim checkpoint folder, e.g. a
    benchmark run's ``model/`` or the shipped demo) instead of a fresh initialisation. Its architecture must match
    ``--model`` where both have a module; modules only ``--model`` has (say ``--model.grounding.tokens`` added) start
    fresh. A run that resumes from its own checkpoint ignores it."""
    stop_after: int | None = None
    """Stop (with a checkpoint) once this many steps are done in total, e.g. to split a run into jobs."""
    progress: bool = True
    """Show a progress bar."""
    tf32: bool = True
    """Allow TF32 matmuls on NVIDIA GPUs."""
    fused_optimizer: bool = True
    """On a GPU, AdamW's fused kernel (a few launches for all parameters instead of a foreach chain); the CPU
    keeps the default implementation."""
    channels_last: bool = True
    """On a GPU, keep the ResNet depth encoder's convolutions channels-last (the layout bf16 tensor-core
    convolutions run in)."""
    cudnn_benchmark: bool = True
    """On a GPU, let cuDNN time its convolution algorithms once per input shape and keep the fastest (the
    policy's images always have one size)."""
    cache_text: bool = True
    """With the compact preset's frozen text encoder: encode each distinct string once and gather its tokens after,
    instead of tokenising and running MiniLM every step (``megohand.models.backbones.text_cache``; inference has it
    on too)."""
    frozen_bf16: bool = False
    """Under bf16 mixed precision (not FSDP), keep the parameters the run does not train (pretrained encoders) in
    bf16: autocast casts a frozen fp32 weight at every use, every step (its cast cache keeps only weights that need
    grad; the paper preset's H100 profile, benchmarks/results/train_throughput_h100.json, counts about 1100 bf16
    casts among 6600 kernel launches per step, part of them of frozen weights), and they take half the memory.
    Measured on one H100 (benchmarks/results/train_throughput_frozen_bf16_h100.json): 3.2 GiB less memory, 188 fewer
    casts per step, no faster (batch 64: 182 and 186 samples/s against 187); so off by default, on to save memory."""
    compile: bool = False
    """torch.compile the policy's repeated blocks in place (regional compilation: vision layers, LLM layers, DiT
    blocks, depth-encoder stages; ``MEgoHandPolicy.compile_training``). The first steps take minutes; off by
    default. Alone it is as fast as eager (the paper preset on an H200, batch 16); its worth is ``--compile-mode``."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    """With ``--compile``: torch.compile's mode for the blocks. ``reduce-overhead`` replays each compiled block as a
    CUDA graph (one launch instead of dozens: for launch-bound steps, small batches); each step then begins with
    ``torch.compiler.cudagraph_mark_step_begin``. The paper preset on one H100 at batch 16: 174-184 samples/s against
    98-113 eager (benchmarks/train_throughput.py --variants optimized compile-graphs); a new input shape (another
    instruction length) records its graphs again."""
    config: str | None = None
    """Named recipe (megohand.train.experiments: paper, synthetic, synthetic-classic, demo) the other options
    override; ``--config NAME`` comes first on the command line."""

    def __post_init__(self):
        check_min(1, steps=self.steps, batch_size=self.batch_size, grad_accum=self.grad_accum, stride=self.stride,
                  log_every=self.log_every, eval_batches=self.eval_batches, save_every=self.save_every,
                  keep_last=self.keep_last, stop_after=self.stop_after)
        check_min(0, num_workers=self.num_workers, eval_every=self.eval_every, weight_decay=self.weight_decay,
                  max_grad_norm=self.max_grad_norm, adam_eps=self.adam_eps)
        check(self.lr > 0, "--lr", self.lr, "a learning rate > 0")
        check(0 < self.split_portion <= 1, "--split-portion", self.split_portion, "a share in (0, 1]")
        check_fraction(warmup_ratio=self.warmup_ratio)
        check(all(0 <= b < 1 for b in self.adam_betas), "--adam-betas", self.adam_betas, "two numbers in [0, 1)")
        self.dataset_weights()

    def dataset_weights(self) -> dict[str, float] | None:
        """``datasets`` as {name: weight} (None when empty)."""
        if not self.datasets:
            return None
        out = {}
        for d in self.datasets:
            name, _, w = d.partition(":")
            try:
                out[name] = float(w) if w else 1.0
            except ValueError:
                out[name] = -1.0
            check(bool(name) and out[name] > 0, "--datasets", d, "NAME or NAME:WEIGHT with a weight > 0")
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
