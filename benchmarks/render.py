"""Rendered frames per second of megohand.render (depth + RGB + instance mask per frame).

Scene per frame: one hand mesh (the bundled/MANO hand at rest pose if a hand model loads, else a
1536-face sphere proxy) moving a little every frame (so vertices are re-uploaded), a table top, a box,
a cylinder and a sphere; camera looking down at the table. Resolutions 224x224 and 640x480.

    python benchmarks/render.py                     # CPU (Mesa llvmpipe through EGL) or GPU (NVIDIA EGL)
    python benchmarks/render.py --seconds 5 --device-name h100

Prints a table and writes benchmarks/results/render_<device>.json (device = "cpu" for Mesa's
software rasterisers, else "gpu", or --device-name).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without install

from megohand.render import Mesh, Renderer  # noqa: E402
from megohand.render.primitives import box, cylinder, uv_sphere  # noqa: E402
from megohand.render.rasterizer import gl_context  # noqa: E402
from results_io import write_json  # benchmarks/results_io.py

RESOLUTIONS = [(224, 224), (640, 480)]


def hand_geometry():
    """(vertices (V, 3) hand-centred, faces (F, 3), description)."""
    try:
        import torch

        from megohand.hand import load_hand_model

        hand = load_hand_model()
        with torch.no_grad():
            out = hand(torch.zeros(3), torch.zeros(15, 3), torch.zeros(10), torch.zeros(3))
        v = out.vertices.numpy().astype(np.float32)
        return v - v.mean(0), hand.faces.numpy(), f"{hand.name} ({len(hand.faces)} faces)"
    except Exception as e:  # noqa: BLE001 - the benchmark still measures the renderer with a proxy
        v, f = uv_sphere(0.04, 25, 32)
        return v, f, f"sphere proxy ({len(f)} faces; hand model unavailable: {type(e).__name__})"


def scenes(n: int, hand_v: np.ndarray, hand_f: np.ndarray) -> list[list[Mesh]]:
    """n frames: hand moving along a small arc above the table, four static objects."""
    table = box((0.8, 0.02, 0.6))
    objs = [
        Mesh(table[0] + [0, 0.16, 0.55], table[1], (0.55, 0.4, 0.3)),
        Mesh(box((0.06, 0.06, 0.06))[0] + [-0.12, 0.12, 0.5], box()[1], (0.2, 0.3, 0.9)),
        Mesh(cylinder(0.03, 0.1, 48)[0] + [0.1, 0.1, 0.55], cylinder(1, 1, 48)[1], (0.9, 0.2, 0.2)),
        Mesh(uv_sphere(0.035, 16, 32)[0] + [0.0, 0.115, 0.65], uv_sphere(1, 16, 32)[1], (0.2, 0.8, 0.3)),
    ]
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / max(n, 1)
        pos = np.array([0.05 * np.cos(a), 0.02 + 0.01 * np.sin(a), 0.45], np.float32)
        frames.append([Mesh(hand_v + pos, hand_f, (0.95, 0.72, 0.58), smooth=True), *objs])
    return frames


def intrinsics(w: int, h: int) -> np.ndarray:
    f = 0.9 * w  # about 58 degrees horizontal field of view
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])


def bench(w: int, h: int, frames: list[list[Mesh]], seconds: float) -> dict:
    r = Renderer(w, h)
    K = intrinsics(w, h)
    r.render_batch(K, frames[:3])  # warm-up: context, shaders, buffers
    n_done, t0 = 0, time.perf_counter()
    while True:
        out = r.render_batch(K, frames)
        n_done += len(frames)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
    single = []
    for i in range(10):
        t = time.perf_counter()
        r.render(K, frames[i % len(frames)])
        single.append(time.perf_counter() - t)
    assert (out.mask > 0).any() and out.depth.min() < 1.0  # something was drawn
    return {
        "width": w,
        "height": h,
        "frames": n_done,
        "seconds": round(dt, 3),
        "fps": round(n_done / dt, 1),
        "ms_per_frame": round(1000 * dt / n_done, 3),
        "single_frame_ms_median": round(1000 * float(np.median(single)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per resolution")
    ap.add_argument("--frames", type=int, default=60, help="frames per render_batch call")
    ap.add_argument("--device-name", default=None, help="name in the JSON file name (default cpu/gpu)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    ctx = gl_context()
    renderer_name = ctx.info["GL_RENDERER"]
    software = any(s in renderer_name.lower() for s in ("llvmpipe", "softpipe", "swrast"))
    device = args.device_name or ("cpu" if software else "gpu")
    hv, hf, hand_desc = hand_geometry()
    frames = scenes(args.frames, hv, hf)
    faces = sum(len(m.faces) for m in frames[0])

    rows = [bench(w, h, frames, args.seconds) for w, h in RESOLUTIONS]
    result = {
        "benchmark": "render",
        "device": device,
        "gl_renderer": renderer_name,
        "gl_vendor": ctx.info["GL_VENDOR"],
        "gl_version": ctx.info["GL_VERSION"],
        "outputs": "depth (float32 z) + rgb (uint8) + instance mask (int32), read back to numpy",
        "scene": f"hand: {hand_desc}; + table, box, cylinder, sphere; {faces} faces per frame",
        "meshes_per_frame": len(frames[0]),
        "frames_per_call": args.frames,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS"),
                 "loadavg_1min_at_end": round(os.getloadavg()[0], 2)},
        "results": rows,
    }
    print(f"render benchmark on {device}: {renderer_name}")
    print(f"scene: {result['scene']}")
    print(f"{'resolution':>12} {'fps':>10} {'ms/frame':>10} {'single ms':>10}")
    for r in rows:
        print(f"{r['width']:>6}x{r['height']:<5} {r['fps']:>10.1f} {r['ms_per_frame']:>10.3f} {r['single_frame_ms_median']:>10.3f}")
    out = Path(args.out_dir) / f"render_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
