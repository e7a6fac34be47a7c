"""Hands per second of megohand's hand layer and of ``smplx.MANO`` (forward, no grad, float32).

Both layers run on the same synthetic asset in MANO's exact format (778 vertices, 1538 faces, random
values; the speed does not depend on them), so no MANO licence is needed. Implementations:

* ``ours``: ``HandModel`` eager;
* ``ours+graph`` (CUDA): the same captured once in a CUDA graph, inputs copied into static buffers
  each call (what removes launch overhead at small batches);
* ``ours+compile`` (CUDA, optional): ``torch.compile`` of the layer;
* ``smplx``: ``smplx.MANO(use_pca=False, flat_hand_mean=True)`` eager.

Usage::

    python benchmarks/hand_layer.py --device cpu --threads 1 --min-time 0.5
    python benchmarks/hand_layer.py --device cuda --compile

Prints a table and writes ``benchmarks/results/hand_layer_<device>.json`` (atomic).
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from results_io import write_json  # benchmarks/results_io.py
from timing import bench_device, time_impls  # benchmarks/timing.py


@dataclass
class Args:
    device: str = "cpu"
    """cpu or cuda."""
    batches: list[int] = field(default_factory=lambda: [1, 32, 1024, 32768])
    """Batch sizes (hands per call)."""
    min_time: float = 0.5
    """Seconds of timed calls per (implementation, batch), in ~10 ms blocks (at most 100)."""
    rounds: int = 3
    """Minimum number of interleaved timing blocks; the best block counts."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    compile: bool = False
    """Also time torch.compile of our layer (CUDA; compiles once per batch size)."""
    smplx: bool = True
    """Also time smplx.MANO (the reference)."""
    note: str = ""
    """Free text stored in the JSON (e.g. machine load)."""
    out: Path | None = None
    """JSON path (default benchmarks/results/hand_layer_<device>.json)."""


def make_inputs(B: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(B, 3, generator=g)
    hp = torch.randn(B, 45, generator=g) * 0.5
    be = torch.randn(B, 10, generator=g)
    tr = torch.randn(B, 3, generator=g) * 0.1
    return [x.to(device) for x in (go, hp, be, tr)]


def graphed(hand, inputs):
    """Our layer captured in a CUDA graph; each call copies fresh inputs into the static buffers."""
    static = [x.clone() for x in inputs]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            hand(*static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = hand(*static)

    def run():
        for dst, src in zip(static, inputs):
            dst.copy_(src)
        g.replay()
        return out

    return run


def main(args: Args) -> dict:
    import smplx

    from megohand.hand import load_hand_model
    from megohand.hand.mano_io import write_synthetic_mano

    device = bench_device(args.device, args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="hand_bench_"))
    write_synthetic_mano(tmp)
    hand = load_hand_model(tmp, device=device)
    rows = []
    print(f"{'device':6} {'impl':14} {'batch':>7} {'ms/call':>10} {'hands/s':>12}")
    for B in args.batches:
        inputs = make_inputs(B, device)
        impls = {"ours": lambda: hand(*inputs)}
        if device.type == "cuda":
            with torch.no_grad():
                impls["ours+graph"] = graphed(hand, inputs)
            if args.compile:
                compiled = torch.compile(hand, dynamic=False)
                impls["ours+compile"] = lambda: compiled(*inputs)
        if args.smplx:
            ref = smplx.MANO(str(tmp), use_pca=False, flat_hand_mean=True, batch_size=B).to(device)
            go, hp, be, tr = inputs
            impls["smplx"] = lambda: ref(global_orient=go, hand_pose=hp, betas=be, transl=tr)
        with torch.no_grad():
            times = time_impls(impls, device, args.min_time, args.rounds)
        for name, sec in times.items():
            row = dict(impl=name, batch=B, ms_per_call=sec * 1e3, hands_per_s=B / sec)
            rows.append(row)
            print(f"{device.type:6} {name:14} {B:7d} {sec * 1e3:10.3f} {B / sec:12.0f}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    summary = {}
    for B in args.batches:
        ours = max(r["hands_per_s"] for r in rows if r["batch"] == B and r["impl"].startswith("ours"))
        ref = [r["hands_per_s"] for r in rows if r["batch"] == B and r["impl"] == "smplx"]
        summary[str(B)] = dict(ours_best=ours, smplx=ref[0] if ref else None, speedup=ours / ref[0] if ref else None)
    result = dict(
        benchmark="hand_layer",
        device=device.type,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        torch=torch.__version__,
        smplx=getattr(smplx, "__version__", "0.1.28+"),
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        dtype="float32",
        grad=False,
        asset="synthetic MANO-format (778 vertices, 1538 faces)",
        min_time_s=args.min_time,
        timing="best of interleaved ~10 ms blocks (>= rounds, <= min_time) per implementation",
        rounds=args.rounds,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        note=args.note,
        rows=rows,
        summary=summary,
    )
    for B, s in summary.items():
        if s["smplx"]:
            print(f"batch {B:>6}: ours {s['ours_best']:.0f} hands/s vs smplx {s['smplx']:.0f} ({s['speedup']:.2f}x)")
    out = args.out or Path(__file__).parent / "results" / f"hand_layer_{device.type}.json"
    write_json(result, out)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
