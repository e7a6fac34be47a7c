"""Training samples per second read from the store, per CPU core, at 224x224 with depth, from the stored frames
(goal >= 200/s/core) and from the training-size copies (goal >= 1000/s/core, <= 40 kB per frame with depth).

Builds a store with random content (smooth images with shapes, edges and sensor-like noise; smooth depth with
objects on a 2 m background; random hand motion) in a temporary folder, then reads WindowDataset samples in a
random order in one process with one torch thread. Reports samples per wall second and per CPU second (the
latter is the per-core rate and is robust to other jobs sharing the machine), a per-stage breakdown, and the
alternatives the format was chosen against (H.264 random access, PNG-16 / zlib depth). Then adds the copies
(``add_episode_copies``, as `megohand add-copies` does; timed) and reads the same windows from them at each
model size: samples per CPU second, bytes per frame, the difference of the training tensors from the full-frame
path, and the encodings the copies were chosen against (JPEG qualities, WebP, lossless PNG, all-intra H.264;
zstd / PNG-16 depth).

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
    ap.add_argument("--copy-sizes", default="224,128", help="training-size copies to add and read, comma separated "
                    "(each model size is read from its own copy and, when larger copies exist, from the next larger)")
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
           "goal_copy_samples_per_s_per_core": 1000, "goal_copy_bytes_per_frame": 40_000,
           "copy_samples_per_cpu_s": {f"{r['source_size'][0]}x{r['source_size'][1]}":
                                      {k: v["samples_per_cpu_s"] for k, v in r["copies"]["reads"].items()} for r in runs},
           "copy_bytes_per_frame": {f"{r['source_size'][0]}x{r['source_size'][1]}":
                                    {k: v["total"] for k, v in r["copies"]["bytes_per_frame"].items()} for r in runs},
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
    ds = WindowDataset(root, split="train", horizon=16, image_size=args.image_size, stored_depth="auto", copies=False)
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
    rgb_bytes = ep0._pack("rgb.pack", "rgb").frame_sizes().mean()
    depth_bytes = ep0._pack("depth.pack", "depth").frame_sizes().mean()

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
    copies = measure_copies(args, root, ds, order)

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
        "copies": copies,
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
    print(f"\ntraining-size copies (added at {', '.join(f'{k}: {v:.2f} ms' for k, v in copies['add_ms_per_frame'].items())}"
          f" per frame)")
    print(f"{'model size, read from':<36}{'samples/CPU-s':>14}{'full frames':>13}{'|d image|':>11}{'d K px':>9}")
    for k, v in copies["reads"].items():
        print(f"{k:<36}{v['samples_per_cpu_s']:>14.1f}{v['full_frames_samples_per_cpu_s']:>13.1f}"
              f"{v['image_mean_abs_diff']:>11.2f}{v['K_max_abs_diff_px']:>9.3f}")
    for k, v in copies["bytes_per_frame"].items():
        print(f"{'  bytes/frame copy ' + k:<36}{v['total']:>12.0f}   (rgb {v['rgb']:.0f}, depth {v['depth']:.0f}; goal <= 40000)")
    for k, v in copies["encodings"].items():
        print(f"{'  copy ' + k:<36}{v['bytes']:>10.0f} B {v['decode_ms']:>7.3f} ms" +
              (f"  PSNR {v['psnr_db']:.1f} dB" if "psnr_db" in v else ""))
    tmp.cleanup()
    return res


def measure_copies(args, root: Path, full: "WindowDataset", order: np.ndarray) -> dict:
    """Add the copies to the store (timed), read the same windows from them at each model size, compare."""
    from megohand.data.store import Store, add_episode_copies
    from megohand.data.windows import WindowDataset

    store = Store(root)
    paths = [store.episode_path(r.dataset, r.episode) for r in store.episodes()]
    frames = sum(r.num_frames for r in store.episodes())
    sizes = sorted({int(x) for x in args.copy_sizes.split(",")}, reverse=True)
    n = args.samples
    out = {"add_ms_per_frame": {}, "reads": {}, "bytes_per_frame": {}}
    for c in sizes:  # largest first: a model size is read from the next larger copy before its own exists
        c0 = time.process_time()
        for p in paths:
            add_episode_copies(p, [c])
        out["add_ms_per_frame"][str(c)] = 1e3 * (time.process_time() - c0) / frames
        for S in sorted({int(x) for x in args.copy_sizes.split(",")}, reverse=True):
            if S > c:
                continue
            ds = WindowDataset(Store(root), split="train", horizon=16, image_size=S, stored_depth="auto")
            key = f"{S} from copy {c}"
            if key in out["reads"] or ds.store.open(ds.refs[0]).frames_for(S).size != c:
                continue
            ref = WindowDataset(Store(root), split="train", horizon=16, image_size=S, stored_depth="auto", copies=False)
            cpu = timeit(lambda i: ds[int(order[i])], n)[1]
            cpu_full = timeit(lambda i: ref[int(order[i])], n)[1] if S != args.image_size else None
            diffs = [(ds[int(i)], ref[int(i)]) for i in order[:200]]
            d_img = np.concatenate([(a["image"].float() - b["image"].float()).abs().flatten().numpy()
                                    for a, b in diffs])
            out["reads"][key] = {
                "samples_per_cpu_s": 1 / cpu,
                "full_frames_samples_per_cpu_s": 1 / (cpu_full if cpu_full is not None else
                                                      timeit(lambda i: full[int(order[i])], n)[1]),
                "image_mean_abs_diff": float(d_img.mean()),
                "image_p99_abs_diff": float(np.percentile(d_img, 99)),
                "depth_equal_fraction": float(np.mean([(a["depth"] == b["depth"]).float().mean() for a, b in diffs])),
                "K_max_abs_diff_px": float(max((a["K"] - b["K"]).abs().max() for a, b in diffs)),
            }
        ep = Store(root).open(store.episodes()[0])  # a fresh reader: the cached one predates the copy
        fs = [f for f in ep.frame_sets() if f.size == c][0]
        rgb_b = ep._pack(fs.rgb_file, "rgb").frame_sizes().mean()
        depth_b = ep._pack(fs.depth_file, "depth").frame_sizes().mean()
        out["bytes_per_frame"][str(c)] = {"rgb": float(rgb_b), "depth": float(depth_b), "total": float(rgb_b + depth_b),
                                          "size": [fs.width, fs.height]}
    out["encodings"] = compare_copy_encodings(store.open(store.episodes()[0]), max(sizes), min(n, 60))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def compare_copy_encodings(ep, size: int, n: int) -> dict:
    """Bytes, CPU ms per decode and PSNR (against the copy before encoding) of the encodings a copy could use."""
    import av
    import zstandard
    from PIL import Image

    from megohand.data.store import Downscale

    g = Downscale.of(ep.meta.width, ep.meta.height, size)
    raw = [g.rgb(ep.rgb(k)) for k in range(min(ep.num_frames, n))]
    depth = [g.depth(ep.depth_mm(k)) for k in range(len(raw))]
    out = {}

    def image_codec(name, fmt, **kw):
        blobs = []
        for r in raw:
            b = io.BytesIO()
            Image.fromarray(r).save(b, format=fmt, **kw)
            blobs.append(b.getvalue())
        dec = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
        ms = 1e3 * timeit(lambda i: Image.open(io.BytesIO(blobs[i % len(blobs)])).load(), len(blobs))[1]
        out[name] = {"bytes": float(np.mean([len(b) for b in blobs])), "decode_ms": ms,
                     "psnr_db": float(np.mean([psnr(d, r) for d, r in zip(dec, raw)]))}

    for q in (75, 85, 90, 95):
        image_codec(f"rgb jpeg q{q}{' (chosen)' if q == 90 else ''}", "JPEG", quality=q)
    image_codec("rgb webp q90", "WEBP", quality=90)
    image_codec("rgb png (lossless)", "PNG")
    # all-intra H.264 through PyAV: one frame per packet, decoded alone (random access)
    W, H = raw[0].shape[1] // 2 * 2, raw[0].shape[0] // 2 * 2
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = W, H, "yuv420p"
    codec.options = {"crf": "18", "g": "1", "preset": "veryfast", "tune": "zerolatency"}
    pkts = []
    for r in raw:
        pkts += [bytes(p) for p in codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(r[:H, :W]), format="rgb24"))]
    pkts += [bytes(p) for p in codec.encode(None)]

    def dec264(i):
        d = av.CodecContext.create("h264", "r")
        for f in d.decode(av.Packet(pkts[i % len(pkts)])):
            return f.to_ndarray(format="rgb24")
        for f in d.decode(None):
            return f.to_ndarray(format="rgb24")

    ms = 1e3 * timeit(dec264, len(pkts))[1]
    dec = [dec264(i) for i in range(len(pkts))]
    out["rgb h264 crf18 all-intra (PyAV)"] = {"bytes": float(np.mean([len(p) for p in pkts])), "decode_ms": ms,
                                              "psnr_db": float(np.mean([psnr(d, r[:H, :W]) for d, r in zip(dec, raw)]))}
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    for name, blobs, fn in (
        ("depth zstd-3 uint16 mm (chosen, lossless)", [cctx.compress(d.tobytes()) for d in depth],
         lambda b: np.frombuffer(dctx.decompress(b), np.uint16)),
        ("depth png-16 (lossless)", [_png16(d) for d in depth], lambda b: np.asarray(Image.open(io.BytesIO(b)))),
    ):
        ms = 1e3 * timeit(lambda i: fn(blobs[i % len(blobs)]), len(blobs))[1]
        out[name] = {"bytes": float(np.mean([len(b) for b in blobs])), "decode_ms": ms}
    return out


def _png16(d: np.ndarray) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(d).save(b, format="PNG")
    return b.getvalue()


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
