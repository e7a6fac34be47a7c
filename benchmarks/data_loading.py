"""Training samples per second read from the store, per CPU core, at 224x224 with depth (goal >= 200/s/core).

Builds a store with random content (smooth images with shapes, edges and sensor-like noise; smooth depth with
objects on a 2 m background; random hand motion) in a temporary folder, then reads WindowDataset samples in a
random order in one process with one torch thread. Reports samples per wall second and per CPU second (the
latter is the per-core rate and is robust to other jobs sharing the machine), a per-stage breakdown, and the
alternatives the format was chosen against (H.264 random access, PNG-16 / zlib depth).

    python benchmarks/data_loading.py [--sizes 640x480,1920x1080 --episodes 8 --frames 120 --samples 600]

Writes benchmarks/results/data_loading_<device>.json (device: cpu).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from results_io import write_json  # benchmarks/results_io.py


def natural_frames(T: int, H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8: gradient background, random ellipses/rectangles, noise; slow pan between frames."""
    from PIL import Image, ImageDraw

    big = Image.new("RGB", (W + T * 2 + 8, H + T + 8))
    g = np.linspace(0, 1, big.size[0])[None, :, None] * rng.uniform(60, 200, 3) + \
        np.linspace(0, 1, big.size[1])[:, None, None] * rng.uniform(0, 60, 3)
    big = Image.fromarray(g.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(big)
    for _ in range(25):
        x0, y0 = rng.uniform(0, big.size[0]), rng.uniform(0, big.size[1])
        x1, y1 = x0 + rng.uniform(10, W / 3), y0 + rng.uniform(10, H / 3)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x1, y1), fill=fill)
    base = np.asarray(big)
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        crop = base[t:t + H, 2 * t:2 * t + W].astype(np.int16)
        out[t] = (crop + rng.normal(0, 3, crop.shape)).clip(0, 255).astype(np.uint8)
    return out


def depth_frames(T: int, H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W) float32 metres: a tilted table plane, a few spheres, 2 m background at the top."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = np.empty((T, H, W), np.float32)
    blobs = [(rng.uniform(0, W), rng.uniform(H / 3, H), rng.uniform(20, 60)) for _ in range(4)]
    for t in range(T):
        d = 0.4 + 0.8 * (1 - yy / H) + 0.002 * t
        for cx, cy, r in blobs:
            rr = ((xx - cx - t) ** 2 + (yy - cy) ** 2) / r ** 2
            d = np.where(rr < 1, np.minimum(d, 0.35 - 0.05 * np.sqrt(np.maximum(1 - rr, 0))), d)
        d[yy < H / 4] = 2.0
        out[t] = d
    return out


def random_hands(T: int, rng: np.random.Generator) -> dict:
    walk = lambda *s: np.cumsum(rng.normal(0, 0.02, (T, *s)), 0)  # noqa: E731
    return {"global_orient": rng.normal(size=3) + walk(3), "hand_pose": 0.3 * rng.normal(size=(15, 3)) + walk(15, 3),
            "betas": np.tile(rng.normal(size=10), (T, 1)), "transl": np.array([0, 0.1, 0.5]) + walk(3) * 0.1,
            "valid": np.ones(T, bool)}


def build_store(root: Path, episodes: int, frames: int, H: int, W: int, seed: int = 0) -> float:
    from megohand.data.store import EpisodeMeta, StoreWriter

    rng = np.random.default_rng(seed)
    w = StoreWriter(root)
    K = [[0.8 * W, 0, W / 2 - 0.5], [0, 0.8 * W, H / 2 - 0.5], [0, 0, 1]]
    t0 = time.perf_counter()
    for i in range(episodes):
        meta = EpisodeMeta("bench", f"subject{i % 3}/episode_{i:03d}", "pick up the red box", K=K,
                           depth_source="rendered", hand_source="synthetic")
        w.write_episode(meta, {"right": random_hands(frames, rng)}, natural_frames(frames, H, W, rng),
                        depth=depth_frames(frames, H, W, rng))
    return (time.perf_counter() - t0) / (episodes * frames)


def timeit(fn, n: int) -> tuple[float, float]:
    """(wall s, cpu s) per call."""
    fn(0)
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="640x480,1920x1080", help="source frame sizes WxH, comma separated")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    ap.add_argument("--root", type=Path, default=None, help="existing store to read (skips building one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_loading_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = []
    for size in args.sizes.split(","):
        args.width, args.height = (int(x) for x in size.lower().split("x"))
        runs.append(run_one(args))
        if args.root is not None:
            break
    out = {"benchmark": "data_loading", "device": "cpu", "goal_samples_per_s_per_core": 200,
           "samples_per_cpu_s": {f"{r['source_size'][0]}x{r['source_size'][1]}": r["samples_per_cpu_s"] for r in runs},
           "runs": runs}
    write_json(out, args.out, indent=1)
    print(f"wrote {args.out}")


def run_one(args) -> dict:
    from megohand.data.windows import WindowDataset

    tmp = tempfile.TemporaryDirectory()
    root = args.root or Path(tmp.name)
    write_s = None
    if args.root is None:
        print(f"building a store: {args.episodes} episodes x {args.frames} frames at {args.width}x{args.height} ...")
        write_s = build_store(root, args.episodes, args.frames, args.height, args.width)
    ds = WindowDataset(root, split="train", horizon=16, image_size=args.image_size, stored_depth="auto")
    order = np.random.default_rng(0).permutation(len(ds))
    order = np.resize(order, args.samples)
    first = ds[int(order[0])]
    assert first["image"].shape == (3, args.image_size, args.image_size) and first["has_depth"]

    n = args.samples
    wall, cpu = timeit(lambda i: ds[int(order[i])], n)
    # stage breakdown on the same random frames
    refs = [ds.window(int(i)) for i in order[:n]]
    eps = [ds.store.open(r) for r, *_ in refs]
    S = args.image_size
    from PIL import Image

    def rgb_stage(i):
        ep, k = eps[i], refs[i][1]
        W, H = ep.meta.width, ep.meta.height
        s = min(W, H)
        img = ep.rgb_image(k, min_size=(-(-S * W // s), -(-S * H // s)) if s >= 2 * S else None)
        f = img.size[0] / W
        x0, y0 = (W - s) // 2, (H - s) // 2
        img.resize((S, S), Image.BILINEAR, box=(x0 * f, y0 * f, (x0 + s) * f, (y0 + s) * f))

    from megohand.data.store import resize_nearest

    def depth_stage(i):
        ep, k = eps[i], refs[i][1]
        W, H = ep.meta.width, ep.meta.height
        s = min(W, H)
        x0, y0 = (W - s) // 2, (H - s) // 2
        resize_nearest(ep.depth_mm(k)[y0:y0 + s, x0:x0 + s], (S, S)).astype(np.float32) / np.float32(1000)

    from megohand.data.windows import future_indices
    from megohand.hand.vector import encode_chunk

    def hand_stage(i):
        e = int(ds._ep[order[i]])
        st = ds.states(e)
        idx, _ = future_indices(refs[i][1], refs[i][2], 16, ds._valid[e])
        encode_chunk(st[refs[i][1]], st[torch.from_numpy(idx)])

    stages = {name: timeit(fn, n) for name, fn in (("rgb decode+crop+resize", rgb_stage),
                                                    ("depth decode+crop+resize", depth_stage),
                                                    ("state+action (encode_chunk)", hand_stage))}
    ep0 = eps[0]
    rgb_bytes = ep0._pack("rgb").frame_sizes().mean()
    depth_bytes = ep0._pack("depth").frame_sizes().mean()

    loader = None
    if args.workers > 0:  # before PyAV runs (its threads must not be forked); spawn to be safe anyway
        dl = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, order.tolist()), batch_size=32,
                                         num_workers=args.workers, multiprocessing_context="spawn",
                                         persistent_workers=True)
        for _ in dl:  # first epoch starts the workers
            pass
        t0 = time.perf_counter()
        cnt = sum(len(b["state"]) for b in dl)
        loader = {"workers": args.workers, "samples_per_s": cnt / (time.perf_counter() - t0)}
    alternatives = compare_alternatives(ep0, S, min(n, 100))

    res = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpus_visible": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "source_size": [args.width, args.height],
        "image_size": S,
        "horizon": 16,
        "depth": True,
        "windows": len(ds),
        "samples_timed": n,
        "samples_per_s_wall": 1 / wall,
        "samples_per_cpu_s": 1 / cpu,
        "goal_samples_per_s_per_core": 200,
        "meets_goal_per_cpu_s": 1 / cpu >= 200,
        "ms_per_sample_stage_cpu": {k: 1e3 * v[1] for k, v in stages.items()},
        "bytes_per_frame": {"rgb_jpeg_q90": float(rgb_bytes), "depth_zstd": float(depth_bytes),
                            "rgb_raw": args.width * args.height * 3, "depth_raw_u16": args.width * args.height * 2},
        "write_s_per_frame": write_s,
        "alternatives_ms_per_frame_cpu": alternatives,
        "dataloader": loader,
    }
    print(f"\nsource {args.width}x{args.height} -> {S}x{S} with depth, horizon 16, one process, 1 torch thread "
          f"(load average {res['load_avg']:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'measure':<36}{'value':>12}")
    print(f"{'samples / s (wall)':<36}{res['samples_per_s_wall']:>12.1f}")
    print(f"{'samples / CPU-s (per core)':<36}{res['samples_per_cpu_s']:>12.1f}   goal >= 200")
    for k, v in res["ms_per_sample_stage_cpu"].items():
        print(f"{'  ms ' + k:<36}{v:>12.2f}")
    for k, v in res["bytes_per_frame"].items():
        print(f"{'  bytes/frame ' + k:<36}{v:>12.0f}")
    for k, v in alternatives.items():
        print(f"{'  alt ms ' + k:<36}{v:>12.2f}")
    if loader:
        print(f"{'DataLoader samples / s':<36}{loader['samples_per_s']:>12.1f}   ({args.workers} workers)")
    tmp.cleanup()
    return res


def compare_alternatives(ep, S: int, n: int) -> dict:
    """CPU ms per random frame for the formats not chosen, on the same content."""
    import av
    from PIL import Image

    rgb = [ep.rgb(k) for k in range(min(ep.num_frames, 60))]
    depth = [ep.depth_mm(k) for k in range(min(ep.num_frames, 60))]
    H, W = rgb[0].shape[:2]
    rng = np.random.default_rng(1)
    ks = rng.integers(0, len(rgb), n)
    out = {}
    for name, gop in (("h264_crf18_gop1_seek", 1), ("h264_crf18_gop30_seek", 30)):
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as f:
            st = f.add_stream("libx264", rate=30)
            st.width, st.height, st.pix_fmt = W, H, "yuv420p"
            st.options = {"crf": "18", "g": str(gop), "preset": "veryfast"}
            for fr in rgb:
                for p in st.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                    f.mux(p)
            for p in st.encode():
                f.mux(p)
        data = buf.getvalue()
        inp = av.open(io.BytesIO(data))
        vs = inp.streams.video[0]
        step = int(round(1 / (vs.average_rate * vs.time_base)))

        def read(i):
            target = int(ks[i % n]) * step
            inp.seek(target, stream=vs, backward=True)
            for fr in inp.decode(vs):
                if fr.pts >= target:
                    return fr.to_ndarray(format="rgb24")

        out[name] = 1e3 * timeit(read, n)[1]
    pngs = []
    for d in depth:
        b = io.BytesIO()
        Image.fromarray(d).save(b, format="PNG")
        pngs.append(b.getvalue())
    out["depth_png16_decode"] = 1e3 * timeit(lambda i: np.asarray(Image.open(io.BytesIO(pngs[ks[i % n]]))), n)[1]
    zl = [zlib.compress(d.tobytes(), 6) for d in depth]
    out["depth_zlib6_decode"] = 1e3 * timeit(lambda i: np.frombuffer(zlib.decompress(zl[ks[i % n]]), np.uint16), n)[1]
    out["depth_png16_bytes"] = float(np.mean([len(b) for b in pngs]))
    return out


if __name__ == "__main__":
    main()
