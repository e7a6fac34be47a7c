"""Timing shared by the benchmarks: the best of many short, interleaved blocks of calls (load from other
processes on a shared machine only ever adds time, so the minimum is the honest figure)."""

from __future__ import annotations

import sys
import time
import warnings

import torch


def bench_device(name: str, threads: int | None = None) -> torch.device:
    """The benchmark's device (exits when CUDA is asked for but absent), CPU threads set, warnings silenced."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA requested but not available")
    if threads:
        torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_impls(impls: dict, device: torch.device, min_time: float, rounds: int = 3) -> dict[str, float]:
    """Seconds per call of each implementation: the best of many short interleaved blocks.

    A block is ~10 ms of calls (at least one call); there are ``rounds`` blocks or more, up to
    ``min_time`` seconds per implementation. Blocks of the implementations alternate and the
    minimum is kept, because load from other processes on a shared machine only ever adds time.
    """
    calls, blocks = {}, {}
    for name, fn in impls.items():
        fn()  # warm-up (allocations, cuBLAS handles, graph capture, compilation)
        fn()
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        one = max(time.perf_counter() - t, 1e-7)
        calls[name] = max(1, int(0.01 / one))
        blocks[name] = max(rounds, min(100, int(min_time / (calls[name] * one))))
    best = {name: float("inf") for name in impls}
    for r in range(max(blocks.values())):
        for name, fn in impls.items():
            if r >= blocks[name]:
                continue
            n = calls[name]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            sync(device)
            best[name] = min(best[name], (time.perf_counter() - t) / n)
    return best
