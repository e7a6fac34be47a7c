"""Synthetic frames per second: generation + rendering + writing into the store.

For each image size, episodes 0..N-1 of ``SynthConfig(seed=0)`` are generated (scene, script,
hand parameters), rendered (RGB + depth + masks with megohand.render) and written (StoreWriter:
JPEG RGB, uint16 depth, parquet hands) in one process; each stage is timed separately, then the
whole pipeline is run through ``synthesize`` with 1 and --workers processes.

    python benchmarks/synthetic.py                       # CPU (Mesa llvmpipe) or GPU (NVIDIA EGL)
    python benchmarks/synthetic.py --episodes 16 --workers 2 --device-name h100

Prints a table and writes benchmarks/results/synthetic_<device>.json (device = "cpu" for Mesa's
software rasterisers, else "gpu", or --device-name).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without install

import torch  # noqa: E402

from megohand.data.store import StoreWriter  # noqa: E402
from megohand.data.synthetic import SynthConfig, generate_episode, render_episode, synthesize  # noqa: E402
from megohand.data.synthetic.build import episode_meta  # noqa: E402
from megohand.data.synthetic.world import make_renderer  # noqa: E402
from megohand.hand import load_hand_model  # noqa: E402
from megohand.render.rasterizer import gl_context  # noqa: E402
from results_io import write_json  # benchmarks/results_io.py


def stages(size: int, episodes: int, hand) -> dict:
    """Time generation, rendering and writing separately (one process)."""
    cfg = SynthConfig(seed=0, width=size, height=size)
    renderer = make_renderer(size, size)
    render_episode(generate_episode(cfg, 0, hand), hand, renderer)  # warm-up (GL context, shaders)
    t = {"generate": 0.0, "render": 0.0, "write": 0.0}
    frames = 0
    with tempfile.TemporaryDirectory() as root:
        writer = StoreWriter(root)
        for i in range(episodes):
            t0 = time.perf_counter()
            ep = generate_episode(cfg, i, hand)
            t1 = time.perf_counter()
            out = render_episode(ep, hand, renderer)
            t2 = time.perf_counter()
            writer.write_episode(episode_meta(ep, cfg, hand), hands={"right": ep.hands}, rgb=out["rgb"],
                                 depth=out["depth"], T_cam_from_world=ep.T_cam_from_world)
            t3 = time.perf_counter()
            t["generate"] += t1 - t0
            t["render"] += t2 - t1
            t["write"] += t3 - t2
            frames += ep.num_frames
    total = sum(t.values())
    return {
        "image_size": size, "episodes": episodes, "frames": frames,
        "fps": round(frames / total, 1),
        "ms_per_frame": {k: round(1000 * v / frames, 3) for k, v in t.items()},
        "stage_fps": {k: round(frames / v, 1) for k, v in t.items()},
    }


def pipeline(size: int, episodes: int, workers: int) -> dict:
    """End to end through ``synthesize`` (what ``megohand synth`` runs), start-up included."""
    cfg = SynthConfig(seed=0, width=size, height=size)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        synthesize(root, episodes, cfg, workers=workers, progress=False)
        dt = time.perf_counter() - t0
        from megohand.data.store import Store

        frames = sum(r.num_frames for r in Store(root).episodes("synthetic"))
    return {"image_size": size, "episodes": episodes, "workers": workers, "frames": frames,
            "seconds": round(dt, 2), "fps": round(frames / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=8, help="episodes per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="square image sizes [px]")
    ap.add_argument("--workers", type=int, default=2, help="processes of the parallel end-to-end run")
    ap.add_argument("--device-name", default=None, help="name in the JSON file name (default cpu/gpu)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    ctx = gl_context()
    renderer_name = ctx.info["GL_RENDERER"]
    software = any(s in renderer_name.lower() for s in ("llvmpipe", "softpipe", "swrast"))
    device = args.device_name or ("cpu" if software else "gpu")
    hand = load_hand_model()
    rows = [stages(s, args.episodes, hand) for s in args.sizes]
    ends = [pipeline(args.sizes[0], args.episodes, w) for w in sorted({1, args.workers})]
    result = {
        "benchmark": "synthetic",
        "device": device,
        "gl_renderer": renderer_name,
        "hand_model": f"{hand.name} ({hand.num_vertices} vertices, {len(hand.faces)} faces)",
        "what": "frames/s of generate (scene, script, hand params) + render (rgb, depth, masks) + write (store)",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "stages": rows,
        "end_to_end": ends,
    }
    print(f"synthetic benchmark on {device}: {renderer_name}; hand {result['hand_model']}")
    print(f"{'size':>6} {'frames':>7} {'fps':>8} {'gen ms':>8} {'render ms':>10} {'write ms':>9}")
    for r in rows:
        ms = r["ms_per_frame"]
        print(f"{r['image_size']:>6} {r['frames']:>7} {r['fps']:>8.1f} {ms['generate']:>8.2f} {ms['render']:>10.2f} "
              f"{ms['write']:>9.2f}")
    for e in ends:
        print(f"end to end {e['image_size']} px, {e['workers']} worker(s): {e['fps']:.1f} frames/s "
              f"({e['frames']} frames in {e['seconds']} s)")
    out = Path(args.out_dir) / f"synthetic_{device}.json"
    write_json(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
