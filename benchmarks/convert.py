"""Frames per second of `megohand convert` end to end on sources without depth (virtual RGB-D renderer).

Writes native miniature datasets made bigger into a temporary folder, then times per episode:

* end to end: ``source.load`` + ``convert_episode`` (canonical hands, RGB decode, rendered depth, JPEG +
  zstd depth + Parquet store write, atomic rename), as ``megohand convert`` runs it in one worker;
* render only: ``render_episode_depth`` over the same episode at the stored size (hand layer for all
  frames, then rasterise + read back), and its hand-layer part alone.

Datasets (scene per frame: both hands in front of a moving head camera, a 4096-face mug carried by
the right hand, a 12-face box on the table):

* ``oakink2``: OakInk2 layout, 848x480 PNG frames (the dataset's own egocentric size);
* ``arctic``: ARCTIC layout, 2800x2000 distorted view-0 JPEGs (undistorted by the converter), stored at
  ``--arctic-short-side`` (default 480 -> 672x480, rendered at that size).

    python benchmarks/convert.py                       # CPU: Mesa llvmpipe through EGL
    python benchmarks/convert.py --device gpu          # GPU: the NVIDIA driver's EGL (refuses a software GL)
    python benchmarks/convert.py --datasets oakink2 --frames 600
    python benchmarks/convert.py --device gpu --arctic-short-side 0   # ARCTIC kept and rendered at 2800x2000

The hand layer and the annotations run on the CPU in both cases (as in `megohand convert`); --device
chooses where OpenGL rasterises. Prints a table and writes benchmarks/results/convert_<device>.json
(device = cpu | gpu, or --device-name).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import write_json  # benchmarks/results_io.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without install

from megohand.data import DEFAULT_COPY_SIZES  # noqa: E402

OAKINK2_TASK = "scene_04__A008/seq__ff070467cd91f735acab__2023-04-23-11-28-29"
ARCTIC_TASK = "s01/box_use_02"
MESA_EGL_VENDOR = "/usr/share/glvnd/egl_vendor.d/50_mesa.json"
SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "software")


# ----------------------------------------------------------------------------- GL device


def select_gl(device: str) -> dict:
    """Make this process's GL context on the asked device; returns its info (GL_RENDERER, ...)."""
    if device == "cpu" and Path(MESA_EGL_VENDOR).is_file():
        os.environ.setdefault("__EGL_VENDOR_LIBRARY_FILENAMES", MESA_EGL_VENDOR)  # Mesa only, even on a GPU host
    from megohand.render.rasterizer import gl_context

    info = dict(gl_context().info)
    software = any(s in info["GL_RENDERER"].lower() for s in SOFTWARE_GL)
    if device == "gpu" and software:
        raise SystemExit(
            f"--device gpu: the OpenGL renderer is {info['GL_RENDERER']!r} (software). On an NVIDIA machine the "
            "driver's EGL (libEGL_nvidia.so.0, /usr/share/glvnd/egl_vendor.d/10_nvidia.json) must be installed; "
            "GLCONTEXT_DEVICE_INDEX=<n> picks another EGL device."
        )
    info["software"] = software
    return info


# ----------------------------------------------------------------------------- synthetic native data


def smooth(rng, T, n, scale, cutoff=20.0):
    """(T, n) smooth random curves with unit-ish amplitude times scale (sum of a few sinusoids)."""
    t = np.arange(T)[:, None] / cutoff
    out = np.zeros((T, n))
    for _ in range(3):
        out += np.sin(t * rng.uniform(0.5, 2.0, n) + rng.uniform(0, 2 * np.pi, n)) / 3
    return out * scale


def rotvec_to_R(rv):
    import torch

    from megohand.geometry.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(torch.as_tensor(rv, dtype=torch.float64)).numpy()


def scene(T: int, seed: int = 0) -> dict:
    """Camera-frame hands, world->camera poses and object poses (camera frame) for T frames."""
    rng = np.random.default_rng(seed)
    head = np.tile(np.eye(4), (T, 1, 1))  # world -> camera: slow head rotation and sway
    head[:, :3, :3] = rotvec_to_R(smooth(rng, T, 3, 0.15, 40))
    head[:, :3, 3] = smooth(rng, T, 3, 0.05, 40)
    hands = {}
    for side, x in (("right", 0.07), ("left", -0.09)):
        wrist = np.array([x, 0.06, 0.42]) + smooth(rng, T, 3, 0.04)
        go = rotvec_to_R(np.array([np.pi / 2, 0.0, 0.0]) + smooth(rng, T, 3, 0.3))
        pose = rotvec_to_R((0.15 + smooth(rng, T, 45, 0.2)).reshape(T, 15, 3))
        hands[side] = {"wrist_cam": wrist, "R_cam": go, "R_joints": pose, "betas": rng.normal(scale=0.5, size=10)}
    mug = np.tile(np.eye(4), (T, 1, 1))
    mug[:, :3, :3] = rotvec_to_R(np.array([np.pi / 2, 0, 0]) + smooth(rng, T, 3, 0.2))
    mug[:, :3, 3] = hands["right"]["wrist_cam"] + [-0.02, 0.07, 0.04]
    box = np.tile(np.eye(4), (T, 1, 1))
    box[:, :3, 3] = [-0.12, 0.16, 0.55]
    return {"T_cw": head, "hands": hands, "objects": {"mug": mug, "box": box}}


def frames(T: int, H: int, W: int, seed: int = 0):
    """T (H, W, 3) uint8 frames: gradient, shapes and mild noise, panning slowly (JPEG/PNG-realistic)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    big = np.linspace(0, 1, W + T)[None, :, None] * rng.uniform(60, 200, 3) + np.linspace(0, 1, H)[:, None, None] * 50
    img = Image.fromarray(big.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(30):
        x0, y0 = rng.uniform(0, W + T), rng.uniform(0, H)
        box = (x0, y0, x0 + rng.uniform(10, W / 4), y0 + rng.uniform(10, H / 4))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    base = np.asarray(img).astype(np.int16)
    noise = rng.normal(0, 2.5, (H, W, 3)).astype(np.int16)
    for t in range(T):
        yield (base[:, t:t + W] + np.roll(noise, t, axis=1)).clip(0, 255).astype(np.uint8)


def mug_mesh():
    """A 4096-face closed cylinder (r 4 cm, h 10 cm) and a 12-face box, metres."""
    from megohand.render.primitives import box, cylinder

    return {"mug": cylinder(0.04, 0.10, 1024), "box": box((0.12, 0.06, 0.08))}


def world_hands(sc):
    """Per side world-frame (R_global (T,3,3), wrist position (T,3), R_joints, betas) for the layouts."""
    out = {}
    Rcw, tcw = sc["T_cw"][:, :3, :3], sc["T_cw"][:, :3, 3]
    for side, h in sc["hands"].items():
        R_w = np.swapaxes(Rcw, 1, 2) @ h["R_cam"]
        wrist_w = np.einsum("tji,tj->ti", Rcw, h["wrist_cam"] - tcw)
        out[side] = (R_w, wrist_w, h["R_joints"], h["betas"])
    return out


def write_oakink2(root: Path, T: int, hands_model, H=480, W=848) -> str:
    """OakInk2 layout (anno pkl as released: numpy arrays; PNG frames; object meshes as OBJ)."""
    import torch

    from megohand.geometry.rotations import matrix_to_quat_wxyz

    sc = scene(T, seed=1)
    token = OAKINK2_TASK.replace("/", "++")
    fids = list(range(T))
    K = np.array([[608.0, 0, 423.5], [0, 608.0, 239.5], [0, 0, 1]])
    raw = {}
    for (side, (R_w, wrist_w, R_j, betas)), prefix in zip(world_hands(sc).items(), ("rh", "lh")):
        R16 = np.concatenate([R_w[:, None], R_j], axis=1)
        q = matrix_to_quat_wxyz(torch.as_tensor(R16)).numpy()
        for t, f in enumerate(fids):
            rec = raw.setdefault(f, {})
            rec[f"{prefix}__pose_coeffs"] = q[t][None]
            rec[f"{prefix}__tsl"] = wrist_w[t][None]  # manotorch center_idx=0: tsl = wrist position
            rec[f"{prefix}__betas"] = betas[None]
    meshes = mug_mesh()
    T_wc = np.linalg.inv(sc["T_cw"])
    anno = {
        "cam_def": {"cam_0001": "egocentric"},
        "frame_id_list": fids,
        "cam_intr": {"egocentric": {f: K for f in fids}},
        "cam_extr": {"egocentric": {f: sc["T_cw"][t] for t, f in enumerate(fids)}},
        "obj_list": list(meshes),
        "obj_transf": {name: {f: (T_wc @ sc["objects"][name])[t] for t, f in enumerate(fids)} for name in meshes},
        "raw_mano": raw,
    }
    (root / "anno_preview").mkdir(parents=True)
    with open(root / "anno_preview" / f"{token}.pkl", "wb") as fh:
        pickle.dump(anno, fh)  # writing the dataset's own format (read back through the restricted unpickler)
    for name, (v, f) in meshes.items():
        d = root / "object_raw" / "align_ds" / name
        d.mkdir(parents=True)
        write_obj(d / f"{name}.obj", v, f)
    (root / "program").mkdir()
    (root / "program" / "task_target.json").write_text(json.dumps({OAKINK2_TASK: "pour water from the mug"}))
    img_dir = root / "data" / token / "cam_0001"
    img_dir.mkdir(parents=True)
    from PIL import Image

    for f, img in zip(fids, frames(T, H, W)):
        Image.fromarray(img).save(img_dir / f"{f:06d}.png", compress_level=1)
    return OAKINK2_TASK


def write_obj(path: Path, v, f, scale=1.0):
    path.write_text("".join(f"v {x * scale:.6f} {y * scale:.6f} {z * scale:.6f}\n" for x, y, z in v)
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f))


def write_arctic(root: Path, T: int, hands_model, H=2000, W=2800) -> str:
    """ARCTIC layout (np.save of dicts as released; distorted view-0 JPEGs; object template in mm)."""
    import torch

    from megohand.geometry.rotations import matrix_to_axis_angle

    sc = scene(T, seed=2)
    sid, seq = ARCTIC_TASK.split("/")
    raw = root / "raw_seqs" / sid
    raw.mkdir(parents=True)
    K = np.array([[1900.0, 0, 1399.5], [0, 1900.0, 999.5], [0, 0, 1]])
    mano = {}
    for side, (R_w, wrist_w, R_j, betas) in world_hands(sc).items():
        m = hands_model[side]
        with torch.no_grad():
            J0 = m.rest_joints(torch.as_tensor(betas))[0].double().numpy()
        mean = m.hands_mean.double().numpy().reshape(45)
        pose = matrix_to_axis_angle(torch.as_tensor(R_j)).numpy().reshape(T, 45) - mean  # flat_hand_mean=False
        mano[side] = {"rot": matrix_to_axis_angle(torch.as_tensor(R_w)).numpy(), "pose": pose,
                      "trans": wrist_w - J0, "shape": betas, "fitting_err": np.zeros(T)}
    np.save(raw / f"{seq}.mano.npy", mano, allow_pickle=True)
    np.save(raw / f"{seq}.egocam.dist.npy", {"R_k_cam_np": sc["T_cw"][:, :3, :3], "T_k_cam_np": sc["T_cw"][:, :3, 3:4],
                                            "intrinsics": K, "dist8": np.array([-0.05, 0.01, 0, 0, 0, 0, 0, 0.0])},
            allow_pickle=True)
    # object: the mug as bottom + a box lid as top part (hinge angle 0); pose = the mug's, in world, mm
    mv, mf = mug_mesh()["mug"]
    lv, lf = mug_mesh()["box"]
    tmpl = root / "meta" / "object_vtemplates" / "box"
    tmpl.mkdir(parents=True)
    write_obj(tmpl / "mesh.obj", np.r_[mv, lv + [0, 0, 0.09]], np.r_[mf, lf + len(mv)], scale=1000.0)
    (tmpl / "parts.json").write_text(json.dumps([0] * len(mv) + [1] * len(lv)))
    T_wo = np.linalg.inv(sc["T_cw"]) @ sc["objects"]["mug"]
    obj = np.zeros((T, 7))
    obj[:, 1:4] = matrix_to_axis_angle(torch.as_tensor(T_wo[:, :3, :3])).numpy()
    obj[:, 4:7] = T_wo[:, :3, 3] * 1000.0
    np.save(raw / f"{seq}.object.npy", obj)
    (root / "meta" / "misc.json").write_text(json.dumps({sid: {"ioi_offset": 0}}))
    img_dir = root / "images" / sid / seq / "0"
    img_dir.mkdir(parents=True)
    from PIL import Image

    for k, img in enumerate(frames(T, H, W)):
        Image.fromarray(img).save(img_dir / f"{k:05d}.jpg", quality=90)
    return ARCTIC_TASK


# ----------------------------------------------------------------------------- timing


def time_dataset(name, root, task, hands, short_side, repeats, copy_sizes=DEFAULT_COPY_SIZES) -> dict:
    from megohand.data.sources import get_source
    from megohand.data.sources.pipeline import convert_episode, episode_hands, stored_size
    from megohand.data.store import Store, StoreWriter
    from megohand.data.virtual_depth import get_renderer, render_episode_depth

    src = get_source(name)(root)
    store = root.parent / f"store_{name}"
    writer = StoreWriter(store, max_short_side=short_side, copy_sizes=copy_sizes)  # as `megohand convert` writes
    ep = src.load(task)
    size = stored_size(ep, short_side)
    canon = episode_hands(ep, hands)
    next(iter(render_episode_depth(ep, canon, hands, render_size=size)))  # warm-up: GL context, shaders
    r = get_renderer(*size)
    e2e, e2e_cpu, load, render, layer = [], [], [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        ep = src.load(task)
        convert_episode(ep, writer, hands, overwrite=True)
        e2e.append(time.perf_counter() - t0)
        e2e_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        ep = src.load(task)
        canon = episode_hands(ep, hands)
        load.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        it = render_episode_depth(ep, canon, hands, renderer=r)
        layer.append(time.perf_counter() - t0)
        n = sum(1 for _ in it)
        render.append(time.perf_counter() - t0)
        assert n == ep.num_frames
    e = Store(store).open(name, task)
    D = np.stack([e.depth(k) for k in range(0, e.num_frames, max(1, e.num_frames // 10))])
    assert e.meta.depth_source == "rendered" and (D < 2.0).mean() > 0.02, "hands/objects are not in view"
    T = ep.num_frames
    faces = sum(len(hands[s].faces) for s in canon) + sum(len(o.faces) for o in ep.objects)
    best = int(np.argmin(e2e))
    return {
        "dataset": name,
        "frames": T,
        "source_size": [ep.width, ep.height],
        "stored_size": list(size),
        "render_size": list(size),
        "objects": [o.name for o in ep.objects],
        "faces_per_frame": int(faces),
        "repeats": repeats,
        "end_to_end_fps": round(T / min(e2e), 1),
        "end_to_end_ms_per_frame": round(1000 * min(e2e) / T, 2),
        "end_to_end_cpu_ms_per_frame": round(1000 * e2e_cpu[best] / T, 2),
        "render_only_fps": round(T / min(render), 1),
        "render_only_ms_per_frame": round(1000 * min(render) / T, 2),
        "hand_layer_ms_per_frame": round(1000 * min(layer) / T, 3),
        "load_and_hands_ms_per_frame": round(1000 * min(load) / T, 2),
        "render_share": round(min(render) / min(e2e), 3),
        "rendered_pixel_fraction": round(float((D < 2.0).mean()), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "gpu", "cuda"], default="auto",
                    help="where OpenGL rasterises: cpu = Mesa llvmpipe, gpu/cuda = the NVIDIA driver's EGL, "
                         "auto = the first EGL device")
    ap.add_argument("--datasets", default="oakink2,arctic", help="comma-separated: oakink2, arctic")
    ap.add_argument("--frames", type=int, default=300, help="frames of the OakInk2 episode")
    ap.add_argument("--arctic-frames", type=int, default=30, help="frames of the ARCTIC episode (2800x2000 images)")
    ap.add_argument("--arctic-short-side", type=int, default=480,
                    help="--max-short-side of the ARCTIC store (0: keep and render 2800x2000)")
    ap.add_argument("--repeats", type=int, default=2, help="timed conversions per dataset (best is reported)")
    ap.add_argument("--copy-sizes", type=int, nargs="*", default=list(DEFAULT_COPY_SIZES),
                    help="training-size copies written beside the frames (as `megohand convert --copy-sizes`; "
                         "none: give the option without values)")
    ap.add_argument("--device-name", default=None, help="name in the JSON file name (default cpu/gpu)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    device = "gpu" if args.device == "cuda" else args.device

    import torch

    load_start = round(os.getloadavg()[0], 2)
    torch.set_num_threads(1)  # as in `megohand convert` workers (OpenGL has its own threads)
    info = select_gl(device)
    device = args.device_name or ("cpu" if info["software"] else "gpu")
    from megohand.data.sources.pipeline import HandModels

    hands = HandModels()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            root = Path(tmp) / name
            root.mkdir()
            if name == "oakink2":
                task, short = write_oakink2(root, args.frames, hands), None
            elif name == "arctic":
                task, short = write_arctic(root, args.arctic_frames, hands), (args.arctic_short_side or None)
            else:
                raise SystemExit(f"unknown dataset {name!r} (oakink2, arctic)")
            rows.append(time_dataset(name, root, task, hands, short, args.repeats, args.copy_sizes))

    result = {
        "benchmark": "convert",
        "device": device,
        "gl_renderer": info["GL_RENDERER"],
        "gl_vendor": info["GL_VENDOR"],
        "gl_version": info["GL_VERSION"],
        "hand_model": hands.name,
        "what": "end to end = source.load + convert_episode (canonical hands, RGB decode, rendered depth, "
                "JPEG q90 + zstd depth + Parquet write, training-size copies); render only = render_episode_depth "
                "(hand layer for all frames + rasterise + read-back of depth), at the stored size",
        "copy_sizes": list(args.copy_sizes),
        "scene": "both hands, a 4096-face cylinder 'mug' (ARCTIC: + a 12-face lid part), a 12-face box (OakInk2)",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "torch_threads": torch.get_num_threads(), "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS"),
                 "loadavg_1min_at_start": load_start, "loadavg_1min_at_end": round(os.getloadavg()[0], 2)},
        "results": rows,
    }
    print(f"convert benchmark on {device}: {info['GL_RENDERER']}  (hand model: {hands.name})")
    print(f"{'dataset':>8} {'frames':>6} {'source':>10} {'stored':>9} {'e2e fps':>8} {'e2e ms':>8} "
          f"{'render fps':>10} {'render ms':>9} {'share':>6}")
    for r in rows:
        print(f"{r['dataset']:>8} {r['frames']:>6} {'%dx%d' % tuple(r['source_size']):>10} "
              f"{'%dx%d' % tuple(r['stored_size']):>9} {r['end_to_end_fps']:>8.1f} {r['end_to_end_ms_per_frame']:>8.2f} "
              f"{r['render_only_fps']:>10.1f} {r['render_only_ms_per_frame']:>9.2f} {r['render_share']:>6.2f}")
    out = Path(args.out_dir) / f"convert_{device}.json"
    write_json(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
