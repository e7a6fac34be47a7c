"""The training loop of ``megohand train`` (Hugging Face accelerate: one GPU, DDP, FSDP, several nodes).

Exact resume: a checkpoint holds the weights, the AdamW state, the scheduler, every process's RNG states and the
data position (epoch, micro-batch within the epoch). The data order of epoch e is a pure function of
(seed, e) (a seeded permutation, or the dataset-weighted sampler of megohand.data.windows), sharded over
processes; DataLoader workers draw from a per-epoch generator, evaluation runs under a forked RNG, so a run
killed after a checkpoint and resumed produces the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections import deque
from pathlib import Path

import torch

from megohand import io
from megohand.errors import UserError, check_input
from megohand.models.policy import savable
from megohand.train import checkpoint as ck
from megohand.train.config import TrainConfig


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup`` steps, then cosine 1 -> 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup if warmup > 0 else 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_order(dataset, epoch: int, seed: int) -> list[int]:
    """Sample order of one epoch: the dataset-weighted sampler when the dataset carries weights, else a permutation."""
    weights = getattr(dataset, "weights", None)
    if weights and len(weights) > 1:
        from megohand.data.windows import make_sampler

        sampler = make_sampler(dataset, seed=seed)
        sampler.set_epoch(epoch)
        return list(iter(sampler))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(len(dataset), generator=g).tolist()


def rank_batches(order: list[int], rank: int, world: int, batch_size: int) -> list[list[int]]:
    """This process's micro-batches of an epoch: every world-th sample from rank, full batches only."""
    mine = order[rank::world][: len(order) // world]
    n = len(mine) // batch_size
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(n)]


def collate(samples: list[dict]) -> dict:
    """default_collate, but the ``meta`` dicts stay a list."""
    from torch.utils.data import default_collate

    meta = [s.get("meta") for s in samples]
    out = default_collate([{k: v for k, v in s.items() if k != "meta"} for s in samples])
    out["meta"] = meta
    return out


class EpochSamples(torch.utils.data.Dataset):
    """``dataset`` indexed by epoch * len(dataset) + i: sample i with the epoch's augmentation draws (a WindowDataset's
    ``seed`` becomes seed * 1_000_003 + epoch), so one DataLoader serves every epoch."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, j: int):
        epoch, i = divmod(int(j), len(self.dataset))
        if hasattr(self.dataset, "seed") and hasattr(self.dataset, "augment"):
            self.dataset.seed = self.seed * 1_000_003 + epoch  # new augmentation draws each epoch
        return self.dataset[i]


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with ``cfg``'s hyper-parameters over ``params``; its fused kernel when the model trains on a GPU and
    ``cfg.fused_optimizer`` (else torch's default: foreach on GPUs, a loop on the CPU)."""
    fused = cfg.fused_optimizer and device.type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, fused=True if fused else None)


def set_frozen_dtype(policy: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast the floating-point parameters that do not require grad to ``dtype`` in place; returns how many."""
    frozen = [p for p in policy.parameters() if not p.requires_grad and p.is_floating_point() and p.dtype != dtype]
    for p in frozen:
        p.data = p.data.to(dtype)
    return len(frozen)


def apply_speed_settings(policy, cfg: TrainConfig, device: torch.device, fsdp: bool = False,
                         mixed_precision: str = "no") -> dict:
    """``cfg``'s speed settings on a policy before it is wrapped: frozen weights in bf16 under bf16 autocast (not
    under FSDP, which flattens parameters of one dtype), a channels-last depth encoder on a GPU (not under FSDP
    either), cuDNN autotuning (process-wide), the frozen text encoder's cache (not under FSDP), regional
    torch.compile (``MEgoHandPolicy.compile_training``). Returns what was applied (for logs and benchmarks)."""
    frozen_bf16 = cfg.frozen_bf16 and mixed_precision == "bf16" and not fsdp
    cast = set_frozen_dtype(policy, torch.bfloat16) if frozen_bf16 else 0
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    enc = policy.depth_encoder
    channels_last = cfg.channels_last and device.type == "cuda" and not fsdp and enc is not None
    if enc is not None:
        enc.use_channels_last(channels_last)
    use_cache = getattr(policy.backbone, "use_text_cache", None)
    text_cache = bool(use_cache and use_cache(cfg.cache_text and not fsdp))
    options = {} if cfg.compile_mode == "default" else {"mode": cfg.compile_mode}
    compiled = policy.compile_training(**options) if cfg.compile else []
    return {"frozen_bf16": cast, "channels_last": channels_last, "text_cache": text_cache, "compiled": compiled}


def build_datasets(cfg: TrainConfig, image_size: int):
    """(train, eval or None) WindowDatasets from the store (load_cascaded_dataset)."""
    from megohand.data.store import Store
    from megohand.data.windows import load_cascaded_dataset

    weights = cfg.dataset_weights() or {d: 1.0 for d in Store(cfg.store).datasets()}
    train, evald = load_cascaded_dataset(
        cfg.store, weights, split_portion=cfg.split_portion, window_size=cfg.model.horizon, side=cfg.side,
        stored_depth=cfg.stored_depth, image_size=image_size, stride=cfg.stride, seed=cfg.seed,
        augment=cfg.augment, window_scope=cfg.window_scope, text_context=cfg.model.text_context,
    )
    for ds in (train, evald):
        if cfg.stored_depth == "none" or not cfg.model.uses_depth:
            ds.stored_depth = "none"  # do not read depth the model does not use
        ds.read_rgb = cfg.model.uses_image  # nor frames (T)
    if len(train) == 0:
        raise UserError(f"no training windows for datasets {sorted(weights)}", path=cfg.store,
                        hint="check --datasets, and that the store has train-split episodes longer than the horizon")
    return train, (evald if len(evald) else None)


def store_normalizer(cfg: TrainConfig, accelerator):
    """Pooled normaliser (``cfg.normalizer`` mode, default min_max) of the training datasets (computed once by the
    main process, cached in the store)."""
    from megohand.data.stats import compute_store_statistics, load_normalizer

    names = sorted(cfg.dataset_weights() or {}) or None
    if accelerator.is_main_process:
        compute_store_statistics(cfg.store, names, cfg.side, cfg.model.horizon, split="train", mode=cfg.normalizer,
                                 progress=cfg.progress, window_scope=cfg.window_scope)
    accelerator.wait_for_everyone()
    return load_normalizer(cfg.store, names, cfg.side, cfg.model.horizon, mode=cfg.normalizer,
                           window_scope=cfg.window_scope)


def initial_weights(folder: Path):
    """The trained policy of ``TrainConfig.init_from`` (full or slim checkpoint), on the CPU."""
    from megohand.inference.policy import load_model

    check_input(folder, "--init-from", what="checkpoint")
    return load_model(folder)


def load_initial_weights(policy, init, folder: Path) -> list[str]:
    """Copy ``init``'s weights into ``policy`` (fine-tuning); -> the modules of ``policy`` that ``init`` lacks (they
    keep their fresh initialisation). A weight of another shape, or one that ``policy`` has no place for,
    is a UserError naming the checkpoint."""
    own, theirs = savable(policy.state_dict()), savable(init.state_dict())
    extra = sorted(set(theirs) - set(own))
    wrong = [k for k in theirs if k in own and theirs[k].shape != own[k].shape]
    if extra or wrong:
        raise UserError(f"this checkpoint does not fit --model: {len(extra)} weights it has no place for "
                        f"({', '.join(extra[:3])}), {len(wrong)} of another shape ({', '.join(wrong[:3])})",
                        path=folder, field="--init-from",
                        hint="give the checkpoint's architecture (its config.json) on the command line")
    policy.load_state_dict(theirs, strict=False)
    missing = set(own) - set(theirs)

    def module(key: str) -> str:  # the outermost module whose weights are all missing
        parts = key.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i]) + "."
            if all(k in missing for k in own if k.startswith(prefix)):
                return prefix[:-1]
        return key

    return sorted({module(k) for k in missing})


class Trainer:
    """Builds the policy, optimiser and data, then ``run()``; see the module docstring for resume semantics.

    ``train_dataset`` / ``eval_dataset`` / ``normalizer`` replace the store-built ones (tests, custom data):
    any map-style dataset of WindowDataset samples. ``policy``: an already built MEgoHandPolicy of ``cfg.model``
    to train instead of a new one (benchmarks reuse one across settings; a compiled policy stays compiled).
    """

    def __init__(self, cfg: TrainConfig, train_dataset=None, eval_dataset=None, normalizer=None, policy=None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        from megohand.models import MEgoHandPolicy
        from megohand.models.policy import checkpoint_config

        self.cfg = cfg
        if train_dataset is None:
            if cfg.store is None:
                raise UserError("no training data", field="--store", expected="a store folder (megohand synth / convert)")
            check_input(cfg.store, "--store", what="store")
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        world = int(os.environ.get("WORLD_SIZE", "1"))
        # without CUDA, a multi-process launch (accelerate launch --multi_gpu / torchrun) is CPU DDP over gloo;
        # accelerate only sets that up when told cpu=True, otherwise every process trains alone as "rank 0"
        cpu = world > 1 and not torch.cuda.is_available()
        self.acc = acc = Accelerator(mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum, cpu=cpu)
        if acc.num_processes != world:
            raise RuntimeError(f"launched as {world} processes (WORLD_SIZE) but accelerate set up {acc.num_processes} "
                               f"({acc.distributed_type.value}); check the accelerate launch options")
        if cfg.tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.out = Path(cfg.out)
        self.ckdir = self.out / "checkpoints"
        self.resume_dir = ck.latest_checkpoint(self.ckdir) if cfg.resume else None
        torch.manual_seed(cfg.seed)  # same initial weights on every process

        init = None
        if self.resume_dir is not None:
            normalizer = checkpoint_config(self.resume_dir)[1]
        elif cfg.init_from is not None:
            init = initial_weights(cfg.init_from)
            normalizer = init.normalizer
        elif normalizer is None and train_dataset is None:
            normalizer = store_normalizer(cfg, acc)
        if policy is None:
            policy = MEgoHandPolicy(cfg.model, normalizer)
        elif policy.config != cfg.model:
            raise ValueError("the given policy was built from another config than cfg.model")
        elif normalizer is not None:
            policy.set_normalizer(normalizer)
        if self.resume_dir is not None:
            policy.load_weights(self.resume_dir / "model.safetensors")
        elif init is not None:
            fresh = load_initial_weights(policy, init, cfg.init_from)
            if acc.is_main_process:
                print(f"started from {cfg.init_from}" + (f"; new, freshly initialised: {', '.join(fresh)}" if fresh else ""))
        if train_dataset is None:
            train_dataset, eval_dataset = build_datasets(cfg, policy.backbone.image_size)
        self.train_ds, self.eval_ds = train_dataset, eval_dataset

        self.n_params = (policy.num_parameters(), policy.num_parameters(trainable_only=True))  # before FSDP shards
        self.fsdp = acc.distributed_type == DistributedType.FSDP
        self.speed = apply_speed_settings(policy, cfg, acc.device, self.fsdp, acc.mixed_precision)
        if self.fsdp:  # FSDP: wrap first, then build the optimiser on the sharded (original) parameters
            policy = acc.prepare(policy)
        params = [p for p in policy.parameters() if p.requires_grad]
        opt = make_optimizer(params, cfg, acc.device)
        warmup = int(cfg.warmup_ratio * cfg.steps)
        total = cfg.steps

        def lr_lambda(step):
            return cosine_with_warmup(step, warmup, total)

        self.sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        if self.fsdp:
            self.opt = acc.prepare(opt)
            self.model = policy
        else:
            self.model, self.opt = acc.prepare(policy, opt)
        self.policy = acc.unwrap_model(self.model)
        self.step, self.epoch, self.batch_pos = 0, 0, 0
        if self.resume_dir is not None:
            self._load_training_state(self.resume_dir)

    # ------------------------------------------------------------------ checkpoints
    def _load_training_state(self, folder: Path) -> None:
        state = io.read_json(folder / "trainer_state.json", "training state")
        meta = io.read_json(folder / "optimizer.json", "optimizer state")
        osd = ck.optimizer_from_flat(io.load_safetensors(folder / "optimizer.safetensors"), meta)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # parameter-name keyed, full (unsharded) state: the same file serves 1 GPU, DDP and FSDP
        set_optimizer_state_dict(self.model, self.opt.optimizer, osd, options=StateDictOptions(full_state_dict=True))
        self.sched.load_state_dict(io.read_json(folder / "scheduler.json", "scheduler state"))
        self.step, self.epoch, self.batch_pos = state["step"], state["epoch"], state["batch_in_epoch"]
        same_shape = (state["world_size"], state["batch_size"], state["grad_accum"]) == (
            self.acc.num_processes, self.cfg.batch_size, self.cfg.grad_accum)
        rng = folder / f"rng-rank{self.acc.process_index}.safetensors"
        if same_shape and rng.is_file():
            ck.load_rng(rng)
        else:
            warnings.warn(f"{folder}: resuming with a different run shape (processes, batch size, accumulation) "
                          "or without this process's RNG file; the data position is mapped by samples seen and "
                          "the result is not bit-identical to an uninterrupted run")
            seen = state["batch_in_epoch"] * state["batch_size"] * state["world_size"]
            self.batch_pos = seen // (self.cfg.batch_size * self.acc.num_processes)
        if self.acc.is_main_process:
            self._truncate_metrics(self.step)
            print(f"resumed from {folder} at step {self.step} (epoch {self.epoch}, batch {self.batch_pos})")

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines after ``step`` (and lines torn by a crash) from metrics.jsonl."""
        path = self.out / "metrics.jsonl"
        if path.is_file():
            keep = [r for r in io.read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= step]
            io.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    def save_checkpoint(self) -> Path:
        """Write out/checkpoints/step-N atomically (all processes must call it)."""
        acc = self.acc
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        sd = acc.get_state_dict(self.model)
        osd = get_optimizer_state_dict(self.model, self.opt.optimizer,
                                       options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        final = ck.step_dir(self.ckdir, self.step)
        tmp = final.with_name(f".{final.name}.tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        ck.save_rng(tmp / f"rng-rank{acc.process_index}.safetensors")
        acc.wait_for_everyone()
        if acc.is_main_process:
            sd = savable(sd)
            self.policy.write_files(tmp, sd)
            tensors, meta = ck.optimizer_to_flat(osd)
            io.save_safetensors(tensors, tmp / "optimizer.safetensors")
            io.write_json(tmp / "optimizer.json", meta, indent=2)
            io.write_json(tmp / "scheduler.json", json.loads(json.dumps(self.sched.state_dict())), indent=2)
            io.write_json(tmp / "trainer_state.json", {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_pos,
                "world_size": acc.num_processes, "batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum,
                "seed": self.cfg.seed, "distributed_type": acc.distributed_type.value,
                "train_config": self.cfg.to_dict(),
            })
            io.fsync_tree(tmp)
            io.replace_dir(tmp, final)
            ck.prune(self.ckdir, self.cfg.keep_last)
        acc.wait_for_everyone()
        return final

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses over a fixed subset of the eval set with fixed noise (does not touch the training RNG)."""
        acc, cfg = self.acc, self.cfg
        order = list(range(len(self.eval_ds)))
        batches = rank_batches(order, acc.process_index, acc.num_processes, cfg.batch_size)[: cfg.eval_batches]
        if not batches:
            return {}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        sums: dict[str, torch.Tensor] = {}
        self.model.eval()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed + 12345)
            loader = torch.utils.data.DataLoader(self.eval_ds, batch_sampler=batches, num_workers=cfg.num_workers,
                                                 collate_fn=collate)
            for batch in loader:
                with acc.autocast():
                    _, info = self.model(batch)
                for k, v in info.items():
                    sums[k] = sums.get(k, 0) + v.float()
        self.model.train()
        return {f"eval/{k}": acc.reduce(v / len(batches), "mean").item() for k, v in sums.items()}

    # ------------------------------------------------------------------ loop
    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One micro-batch: forward and backward, then on an accumulation boundary clipping, the optimiser and the
        scheduler. Returns the detached loss terms (and ``grad_norm``) as device tensors; nothing here waits for
        the GPU (``run`` reads them every ``log_every`` steps)."""
        from torch.profiler import record_function  # named ranges in profiles (benchmarks/train_throughput.py)

        acc, cfg = self.acc, self.cfg
        if cfg.compile and cfg.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the graphs' outputs of the last step may be overwritten
        with acc.accumulate(self.model):
            with record_function("train_step.forward"), acc.autocast():
                loss, info = self.model(batch)
            with record_function("train_step.backward"):
                acc.backward(loss)
            with record_function("train_step.optimizer"):
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    info["grad_norm"] = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.opt.step()
                if acc.sync_gradients:
                    self.sched.step()
                self.opt.zero_grad(set_to_none=True)
        return info

    def _epoch_batches(self, positions: deque):
        """This process's batches from (epoch, batch_pos) on, epoch after epoch, as indices of ``EpochSamples``
        (epoch * N + window); the (epoch, batch position) of each batch handed out is appended to ``positions``."""
        acc, cfg, n = self.acc, self.cfg, len(self.train_ds)
        epoch, pos = self.epoch, self.batch_pos
        while True:
            batches = rank_batches(epoch_order(self.train_ds, epoch, cfg.seed), acc.process_index, acc.num_processes,
                                   cfg.batch_size)
            if not batches:
                raise ValueError(f"{n} training samples cannot fill one batch of {cfg.batch_size} on each of "
                                 f"{acc.num_processes} processes")
            for b in range(pos, len(batches)):
                positions.append((epoch, b))
                yield [epoch * n + i for i in batches[b]]
            epoch, pos = epoch + 1, 0

    def run(self) -> Path:
        """Train to ``steps`` (or ``stop_after``); returns the final policy folder (or the last checkpoint)."""
        from tqdm import tqdm

        acc, cfg = self.acc, self.cfg
        stop_at = min(cfg.steps, cfg.stop_after) if cfg.stop_after is not None else cfg.steps
        writer = None
        if len(self.train_ds) // acc.num_processes < cfg.batch_size:
            raise UserError(f"{len(self.train_ds)} training windows cannot fill one batch on each of "
                            f"{acc.num_processes} process(es)", field="--batch-size", expected=f"at most "
                            f"{len(self.train_ds) // acc.num_processes}", hint="lower --batch-size or add data")
        if self.eval_ds is None and cfg.eval_every and acc.is_main_process:
            print(f"note: no evaluation windows (no val split in the store; --split-portion below 1 holds out part of "
                  f"the train split), so --eval-every {cfg.eval_every} evaluates nothing")
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            io.write_json(self.out / "train_config.json", cfg.to_dict(), indent=2)
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"))
            n_all, n_train = self.n_params
            print(f"policy {cfg.model.preset}: {n_all / 1e6:.1f} M parameters, {n_train / 1e6:.1f} M trainable; "
                  f"{len(self.train_ds)} training windows; {acc.num_processes} process(es) ({acc.distributed_type.value}), "
                  f"mixed precision {acc.mixed_precision}")
        bar = tqdm(total=stop_at, initial=self.step, desc="train", unit="step",
                   disable=not (cfg.progress and acc.is_main_process))
        sums: dict[str, torch.Tensor] = {}
        n_sum, t0, samples, waited = 0, time.perf_counter(), 0, 0.0
        saved_at = self.step if self.resume_dir is not None else -1
        self.model.train()
        # One DataLoader for the whole run (its workers keep their caches across epochs); the batch sampler walks the
        # epochs from (epoch, batch_pos), and the loader delivers batches in order, so a queue of their positions
        # tells which one arrived: (epoch, batch_pos) are those of the batches consumed, whatever was prefetched.
        positions: deque = deque()
        loader = torch.utils.data.DataLoader(
            EpochSamples(self.train_ds, cfg.seed), batch_sampler=self._epoch_batches(positions),
            num_workers=cfg.num_workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(cfg.seed * 7919 + self.epoch),
            prefetch_factor=4 if cfg.num_workers else None,
        )
        batch_iter = iter(loader)
        while self.step < stop_at:
            t_wait = time.perf_counter()  # the time spent waiting for batches is logged as data_wait_share
            batch = next(batch_iter)
            waited += time.perf_counter() - t_wait
            self.epoch, self.batch_pos = positions.popleft()
            self.batch_pos += 1
            info = self.train_step(batch)
            samples += len(batch["state"]) * acc.num_processes
            for k, v in info.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            n_sum += 1
            if not acc.sync_gradients:
                continue
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == stop_at:
                logs = {f"train/{k}": acc.reduce(v / n_sum, "mean").item() for k, v in sums.items()}
                dt = time.perf_counter() - t0
                logs["train/lr"] = self.sched.get_last_lr()[0]
                logs["train/samples_per_s"] = samples / max(dt, 1e-9)
                logs["train/data_wait_share"] = waited / max(dt, 1e-9)  # near 1: loading frames limits training
                self._log(writer, logs)
                bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                sums, n_sum, t0, samples, waited = {}, 0, time.perf_counter(), 0, 0.0
            t_pause = time.perf_counter()  # evaluation and checkpoints do not count in samples/s
            if self.eval_ds is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                self._log(writer, self.evaluate())
            if self.step % cfg.save_every == 0 or self.step == stop_at:
                self.save_checkpoint()
                saved_at = self.step
            t0 += time.perf_counter() - t_pause
        del batch_iter, loader
        bar.close()
        if saved_at != self.step:
            self.save_checkpoint()
        result = ck.step_dir(self.ckdir, self.step)
        if self.step >= cfg.steps:
            if self.eval_ds is not None and cfg.eval_every and self.step % cfg.eval_every:
                self._log(writer, self.evaluate())
            sd = acc.get_state_dict(self.model)
            result = self.out / "model"
            if acc.is_main_process:
                sd = savable(sd)
                self.policy.save_pretrained(result, state_dict=sd)
        if writer is not None:
            writer.close()
        acc.wait_for_everyone()
        return result

    def _log(self, writer, logs: dict[str, float]) -> None:
        if not logs or not self.acc.is_main_process:
            return
        for k, v in logs.items():
            writer.add_scalar(k, v, self.step)
        io.append_jsonl(self.out / "metrics.jsonl", {"step": self.step, **logs})


def train(cfg: TrainConfig, train_dataset=None, eval_dataset=None, normalizer=None) -> Path:
    """Build a Trainer and run it; returns the final policy folder (or the last checkpoint when stopped early)."""
    return Trainer(cfg, train_dataset, eval_dataset, normalizer).run()
