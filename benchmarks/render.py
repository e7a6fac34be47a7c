"""Rendered frames per second of megohand.render: one frame per call against batches of many frames per draw.

Scene per frame: one hand mesh (the bundled/MANO hand at rest pose if a hand model loads, else a
1536-face sphere proxy, smooth-shaded) moving a little every frame (so vertices are re-uploaded), a table
top, a box, a cylinder and a sphere; camera looking down at the table. Resolutions 224x224 and 640x480.
Two output sets: "all" (depth + RGB + instance mask, what the synthetic world stores) and "depth" (what
virtual depth stores). Per resolution and output set: ``render`` one frame at a time ("single"), then
``render_batch`` with 8, 32 and 128 frames per call (a call of more frames than ``batch_capacity`` is drawn
in several batches). Then "virtual_depth": ``megohand.data.virtual_depth.render_episode_depth`` of a
128-frame episode (both hands through the hand layer, a box and a sphere posed per frame; 2 x 3196 + 2316
faces), one frame per call against its default chunks. A rate is the best of several passes over 128
frames (load from other processes only ever adds time); ``fps_mean`` is the mean over the timed passes.

    python benchmarks/render.py                     # CPU (Mesa llvmpipe through EGL) or GPU (NVIDIA EGL)
    python benchmarks/render.py --seconds 2 --device-name h100

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
OUTPUTS = {"all": ("depth", "rgb", "mask"), "depth": ("depth",)}
BATCHES = [1, 8, 32, 128]  # 1 = Renderer.render, one frame per call
POOL = 128  # frames per timed pass
GOAL_FPS = {(224, 224): 1000, (640, 480): 500}  # batched, on one H100/H200


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


def one_pass(r: Renderer, K: np.ndarray, frames: list[list[Mesh]], batch: int, outputs: tuple) -> None:
    """Render every frame once: one ``render`` per frame (batch 1) or ``render_batch`` of ``batch`` frames."""
    if batch == 1:
        for meshes in frames:
            r.render(K, meshes, outputs=outputs)
        return
    for s in range(0, len(frames), batch):
        out = r.render_batch(K, frames[s:s + batch], outputs=outputs)
    assert out.depth.min() < 1.0  # something was drawn


def bench(w: int, h: int, frames: list[list[Mesh]], seconds: float) -> list[dict]:
    """Rows of (resolution, outputs, frames per call) in interleaved rounds; the best pass of each."""
    r = Renderer(w, h)
    K = intrinsics(w, h)
    configs = [(o, b) for o in OUTPUTS for b in BATCHES]
    for o, b in configs:  # warm-up: context, shaders, buffers, framebuffers at full size
        one_pass(r, K, frames, b, OUTPUTS[o])
    times = {c: [] for c in configs}
    t_end = time.perf_counter() + seconds * len(configs)
    while time.perf_counter() < t_end or min(len(t) for t in times.values()) < 2:
        for c in configs:
            t0 = time.perf_counter()
            one_pass(r, K, frames, c[1], OUTPUTS[c[0]])
            times[c].append(time.perf_counter() - t0)
    rows = []
    for (o, b), t in times.items():
        single = times[(o, 1)]
        rows.append({
            "width": w,
            "height": h,
            "outputs": o,
            "frames_per_call": b,
            "draws_per_call": -(-b // r.batch_capacity),
            "passes": len(t),
            "fps": round(len(frames) / min(t), 1),
            "fps_mean": round(len(frames) * len(t) / sum(t), 1),
            "ms_per_frame": round(1000 * min(t) / len(frames), 3),
            "speedup_vs_single": round(min(single) / min(t), 2),
        })
    return rows


def virtual_depth_episode(T: int, w: int, h: int):
    """A camera-frame episode of T frames for ``render_episode_depth``: both hands (the hand layer's mesh,
    rest pose, moving) over a box and a sphere that turn and slide; (episode, canonical hands)."""
    from megohand.data.sources.common import Convention, NativeEpisode, ObjectTrack

    t = np.arange(T) / T
    poses = []
    for k, (x, y, z) in enumerate([(-0.08, 0.1, 0.55), (0.09, 0.08, 0.6)]):
        P = np.tile(np.eye(4), (T, 1, 1))
        a = 2 * np.pi * t + k
        P[:, 0, 0], P[:, 0, 2], P[:, 2, 0], P[:, 2, 2] = np.cos(a), np.sin(a), -np.sin(a), np.cos(a)
        P[:, :3, 3] = np.stack([x + 0.02 * np.sin(a), np.full(T, y), np.full(T, z)], 1)
        poses.append(P)
    objects = [ObjectTrack("box", *box((0.08, 0.06, 0.1)), poses[0]),
               ObjectTrack("ball", *uv_sphere(0.04, 24, 48), poses[1])]
    f = 0.9 * w
    ep = NativeEpisode(dataset="bench", episode="virtual_depth", instruction="", fps=30.0, width=w, height=h,
                       K=np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]]), split="test",
                       num_frames=T, convention=Convention(frame="camera"), objects=objects)
    canon = {}
    for side, x in (("right", 0.06), ("left", -0.06)):
        transl = np.stack([x + 0.03 * np.cos(2 * np.pi * t), 0.02 * np.sin(2 * np.pi * t), np.full(T, 0.45)], 1)
        canon[side] = {"global_orient": np.tile([np.pi / 2, 0, 0], (T, 1)), "hand_pose": np.zeros((T, 15, 3)),
                       "betas": np.zeros((T, 10)), "transl": transl, "valid": np.ones(T, bool)}
    return ep, canon


def bench_virtual_depth(w: int, h: int, seconds: float) -> list[dict]:
    """``render_episode_depth`` of a 128-frame episode (hand layer, posing, rasterising, depth read back):
    one frame per ``render_batch`` call against the default chunks; the best pass of each."""
    import megohand.data.virtual_depth as vd
    from megohand.data.sources.pipeline import HandModels

    hands = HandModels()
    ep, canon = virtual_depth_episode(POOL, w, h)
    default = vd.MAX_CHUNK
    times = {1: [], default: []}
    try:
        for chunk in times:  # warm-up
            vd.MAX_CHUNK = chunk
            depth = np.stack(list(vd.render_episode_depth(ep, canon, hands)))
            assert (depth < 2.0).mean() > 0.02, "hands and objects are not in view"
        t_end = time.perf_counter() + seconds * len(times)
        while time.perf_counter() < t_end or min(len(t) for t in times.values()) < 2:
            for chunk, t in times.items():
                vd.MAX_CHUNK = chunk
                t0 = time.perf_counter()
                for _ in vd.render_episode_depth(ep, canon, hands):
                    pass
                t.append(time.perf_counter() - t0)
    finally:
        vd.MAX_CHUNK = default
    faces = 2 * len(hands["right"].faces) + sum(len(o.faces) for o in ep.objects)
    return [{"width": w, "height": h, "outputs": "virtual_depth", "frames_per_call": chunk, "passes": len(t),
             "fps": round(POOL / min(t), 1), "fps_mean": round(POOL * len(t) / sum(t), 1),
             "ms_per_frame": round(1000 * min(t) / POOL, 3), "speedup_vs_single": round(min(times[1]) / min(t), 2),
             "faces_per_frame": faces} for chunk, t in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per configuration (at least 2 passes)")
    ap.add_argument("--device-name", default=None, help="name in the JSON file name (default cpu/gpu)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    t_start = time.perf_counter()
    ctx = gl_context()
    renderer_name = ctx.info["GL_RENDERER"]
    software = any(s in renderer_name.lower() for s in ("llvmpipe", "softpipe", "swrast"))
    device = args.device_name or ("cpu" if software else "gpu")
    hv, hf, hand_desc = hand_geometry()
    frames = scenes(POOL, hv, hf)
    faces = sum(len(m.faces) for m in frames[0])

    rows, capacity = [], {}
    for w, h in RESOLUTIONS:
        rows += bench(w, h, frames, args.seconds)
        rows += bench_virtual_depth(w, h, args.seconds)
        capacity[f"{w}x{h}"] = Renderer(w, h).batch_capacity
    for row in rows:
        if row["frames_per_call"] > 1:
            row["meets_goal"] = row["fps"] >= GOAL_FPS[(row["width"], row["height"])]
    result = {
        "benchmark": "render",
        "device": device,
        "gl_renderer": renderer_name,
        "gl_vendor": ctx.info["GL_VENDOR"],
        "gl_version": ctx.info["GL_VERSION"],
        "outputs": {k: " + ".join(v) + ", read back to numpy" for k, v in OUTPUTS.items()},
        "scene": f"hand: {hand_desc}, smooth-shaded; + table, box, cylinder, sphere; {faces} faces per frame",
        "meshes_per_frame": len(frames[0]),
        "frames_per_pass": POOL,
        "batch_capacity": capacity,
        "goal_fps_batched": {f"{w}x{h}": g for (w, h), g in GOAL_FPS.items()},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS"),
                 "loadavg_1min_at_end": round(os.getloadavg()[0], 2)},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "results": rows,
    }
    print(f"render benchmark on {device}: {renderer_name}")
    print(f"scene: {result['scene']}; frames per draw at most {capacity}")
    print(f"{'resolution':>12} {'outputs':>13} {'frames/call':>12} {'fps':>9} {'ms/frame':>9} {'vs single':>10}")
    for r in rows:
        print(f"{r['width']:>6}x{r['height']:<5} {r['outputs']:>13} {r['frames_per_call']:>12} {r['fps']:>9.1f} "
              f"{r['ms_per_frame']:>9.3f} {r['speedup_vs_single']:>9.2f}x")
    out = Path(args.out_dir) / f"render_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)
    print(f"wrote {out} ({result['wall_seconds']} s)")


if __name__ == "__main__":
    main()
