"""Why a policy misses the instructed object: its eyes (the grounding head points elsewhere) or its hand (it points
at the right object and the reach falls short), on the episodes one ``megohand eval`` report scored.

    megohand eval --root STORE --ckpt EXPORT --protocol.window-stride 16 --protocol.rollout-frames 64 \\
        --protocol.batch-size 64 --out runs/all/TID                # every test episode
    python benchmarks/target_misses.py --store STORE --ckpt EXPORT --eval runs/all/TID/eval.json \\
        --out benchmarks/results/target_misses_TID.json

Its parts, each per task of the synthetic world:

* **the metric's ceiling**: target accuracy (``megohand.evaluate.evaluator.task_outcome``) of the ground-truth motion
  over the same rollout frames, so that a policy's misses are read against what the metric can give;
* **the reach**: the grip point's distance to the instructed object's centre at the contact frame [cm], ground
  truth against the report's hits and misses, and how crowded the goal is: the recorded grip point's distance to
  the nearest other object then;
* **the hand from the recorded state**: one chunk predicted from the ground-truth state ``d`` frames before the
  contact frame (``--open-loop-frames``; the episode's picture and text there, noise seeded per episode), and
  whether its grip point at the contact frame is nearest the instructed object, for the report's hits and misses
  apart. Read it against a model that cannot see (T): close to contact the recorded motion already points at the
  object, and a blind model reaches from there too;
* **the path** of the report's own closed loop (rolled out again with the evaluator's batches and noise,
  ``megohand.evaluate.evaluator.closed_loop``; every outcome checked against the report's): the grip point's
  closest approach to the instructed object and to the object it reached at contact (for a hit: the nearest other
  object then), in cm and in frames after the contact frame, with the recorded motion's closest approach to that
  same object as the control; and the target accuracy a few frames before and after the contact frame;
* **the eyes** (a checkpoint with a grounding head, ``--model.grounding``): at the rollout's first frame, halfway
  to the contact frame and 4 frames before it, the head's expected location (soft-argmax over the image-token grid,
  what the grounded state reads) and which object's projected centre lies nearest it; the share where that is the
  instructed object and the distance to it [px of the model image], for the report's hits and misses apart.

The pictures are the episode's own frames, as in the closed-loop rollouts (the policy sees the recorded scene).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from results_io import write_json

PHASES = ("start", "halfway", "before contact")
OFFSETS = (-4, 0, 4, 8)  # frames after the contact frame at which the path part scores the target


def phase_frames(contact: int) -> dict[str, int]:
    """Episode frames of the three looks: the rollout's first frame (1), halfway to contact, 4 frames before it."""
    return {"start": 1, "halfway": max(1, contact // 2), "before contact": max(1, contact - 4)}


def median(xs) -> float | None:
    return float(np.median(xs)) if len(xs) else None


def by_outcome(rows: list[dict], flag: str, share: str, dist: str) -> dict:
    """Rows split by the report's outcome ("hits", "misses"; empty ones left out) -> per part {"episodes", share: the
    mean of ``flag``, dist + "_median": the median of ``dist``}."""
    parts = (("hits", [r for r in rows if r["hit"]]), ("misses", [r for r in rows if not r["hit"]]))
    return {who: {"episodes": len(part), share: float(np.mean([r[flag] for r in part])),
                  f"{dist}_median": median([r[dist] for r in part])} for who, part in parts if part}


def closed_loop_paths(store, policy, hand, cfg: dict, outcomes: dict, offsets=OFFSETS) -> list[dict]:
    """The report's closed loop with TOF again (its config ``cfg``: batches, noise seed, sampler) on every episode it
    scored (``outcomes``: (dataset, episode) -> its task outcome). One row per episode: the report's ``hit``;
    ``same_outcome`` (this rollout's outcome equals it) and ``target_cm`` (the distance at contact, again); the grip
    point's closest approach [cm] to the instructed object (``target_closest_cm``, ``target_closest_after``: its
    frame minus the contact frame; ``gt_target_...`` the recorded motion's) and to the other object, the one reached
    at contact for a miss or the nearest other one then for a hit (``other_closest_cm``, ``other_closest_after``;
    ``gt_other_closest_cm`` the recorded motion's); ``hit_at``: {offset: the closest object ``offset`` frames after
    contact is the instructed one}."""
    from dataclasses import fields

    from megohand.evaluate.evaluator import EvalConfig, closed_loop, load_episode, rollout_batches
    from megohand.hand.vector import state_to_params
    from megohand.metrics import closest_object, grip_point

    ecfg = EvalConfig(**{f.name: tuple(cfg[f.name]) if f.name == "reliance" else cfg[f.name]
                         for f in fields(EvalConfig) if f.name in cfg})
    S = policy.model.config.backbone.image_size
    by_ds = defaultdict(list)
    for ref in store.episodes(split=ecfg.split):
        by_ds[ref.dataset].append(ref)
    rows = []
    for d_i, (dataset, refs) in enumerate(sorted(by_ds.items())):
        refs = refs[: ecfg.max_episodes] if ecfg.max_episodes else refs
        if not any((dataset, r.episode) in outcomes for r in refs):
            continue
        eps = [load_episode(store, dataset, r.episode) for r in refs]
        for ep in eps:
            ep.frame_set = ep.episode_obj.frames_for(S)
        for ids, key in rollout_batches(eps, ecfg.batch_size, d_i):
            batch = [eps[i] for i in ids]
            T = min(ecfg.rollout_frames, *(e.num_frames - 2 for e in batch))
            if T < 1 or not any((dataset, e.episode) in outcomes for e in batch):
                continue
            with torch.no_grad():
                states = closed_loop(policy, batch, torch.stack([e.states[1] for e in batch]),
                                     T, ecfg, key).states  # (B, T + 1, 109): frame j = episode frame j + 1
            for ep, st in zip(batch, states):
                scored = outcomes.get((dataset, ep.episode))
                if scored is None:
                    continue
                f, c = ep.facts, ep.facts.contact_frame - 1
                grip = grip_point(hand.forward_params(state_to_params(st.double())).joints).numpy()
                gt_grip = grip_point(hand.forward_params(state_to_params(ep.states[1 : T + 2].double())).joints).numpy()
                centres = np.stack([np.asarray(f.centers[j + 1]) for j in range(T + 1)])  # (T + 1, N, 3)
                d = np.linalg.norm(centres - grip[:, None], axis=-1) * 100  # (T + 1, N) cm
                d_gt = np.linalg.norm(centres - gt_grip[:, None], axis=-1) * 100
                # per frame, the object the evaluator's metric calls reached (T + 1,)
                reached = closest_object(torch.from_numpy(grip), torch.from_numpy(centres)).numpy()
                tgt = int(f.target)
                order = [int(o) for o in np.argsort(d[c]) if int(o) != tgt]
                other = order[0] if order else None
                row = {"episode": ep.episode, "task": scored.get("task", ""), "hit": scored["hit"],
                       "same_outcome": (int(reached[c]) == tgt) == scored["hit"], "target_cm": float(d[c, tgt]),
                       "target_closest_cm": float(d[:, tgt].min()), "target_closest_after": int(d[:, tgt].argmin()) - c,
                       "gt_target_closest_cm": float(d_gt[:, tgt].min()),
                       "gt_target_closest_after": int(d_gt[:, tgt].argmin()) - c,
                       "hit_at": {str(o): int(reached[min(max(c + o, 0), T)]) == tgt for o in offsets}}
                if other is not None:
                    row.update(other_closest_cm=float(d[:, other].min()),
                               other_closest_after=int(d[:, other].argmin()) - c,
                               gt_other_closest_cm=float(d_gt[:, other].min()))
                rows.append(row)
    return rows


def path_summary(rows: list[dict]) -> dict:
    """Closed-loop path rows -> per outcome (hits, misses) the medians of the closest approaches and their timing,
    and the target accuracy at each offset from the contact frame over all rows."""
    out = {"same_outcome": int(sum(r["same_outcome"] for r in rows)), "episodes": len(rows)}
    for who, part in (("hits", [r for r in rows if r["hit"]]), ("misses", [r for r in rows if not r["hit"]])):
        if part:
            out[who] = {"episodes": len(part), **{f"{k}_median": median([r[k] for r in part if k in r])
                        for k in ("target_closest_cm", "target_closest_after", "gt_target_closest_cm",
                                  "gt_target_closest_after", "other_closest_cm",
                                  "other_closest_after", "gt_other_closest_cm")}}
    if rows:
        out["target_acc_at"] = {o: float(np.mean([r["hit_at"][o] for r in rows])) for o in rows[0]["hit_at"]}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="the store the report evaluated")
    ap.add_argument("--ckpt", type=Path, required=True, help="the checkpoint (or export) the report evaluated")
    ap.add_argument("--eval", type=Path, required=True, help="its megohand eval report (eval.json)")
    ap.add_argument("--open-loop-frames", type=int, nargs="*", default=[8, 15],
                    help="predict one chunk from the recorded state this many frames before contact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "target_misses.json")
    args = ap.parse_args(argv)

    from megohand.data.observation import episode_observation
    from megohand.data.store import Store
    from megohand.data.synthetic.facts import project
    from megohand.evaluate.evaluator import load_episode, task_outcome
    from megohand.hand import load_hand_model
    from megohand.hand.vector import decode_chunk, state_to_params
    from megohand.metrics import closest_object, grip_point
    from megohand.inference.policy import load_policy
    from megohand.models.grounding import expected_locations

    torch.set_num_threads(args.threads)
    report = json.loads(args.eval.read_text())
    cfg = report["config"]
    outcomes = {(o["dataset"], o["episode"]): o for o in report["task_outcomes"]["rollout-tof"]["model"]}
    store, hand = Store(args.store), load_hand_model()
    policy = load_policy(args.ckpt, "cpu", cfg.get("noise_scale"), cfg.get("text_guidance"),
                         cfg.get("ground_guidance"))  # the report's sampler
    model = policy.model
    S, ctx = model.config.backbone.image_size, model.config.text_context
    eyes = model.grounding_head is not None

    gt_hits, reach, crowd, looks, open_loop = defaultdict(list), defaultdict(list), defaultdict(list), [], []
    for ref in store.episodes(split=cfg.get("split", "test")):
        scored = outcomes.get((ref.dataset, ref.episode))
        if scored is None:
            continue
        ep = load_episode(store, ref.dataset, ref.episode)
        ep.frame_set = ep.episode_obj.frames_for(S)  # the pictures the evaluation read
        f, task = ep.facts, scored.get("task", "")
        T = min(cfg["rollout_frames"], ep.num_frames - 2)
        gt = task_outcome(hand, ep.states[1 : T + 2], ep, first_frame=1)
        if gt is not None:
            grip = grip_point(hand.forward_params(state_to_params(ep.states[f.contact_frame][None].double())).joints)[0]
            others = np.delete(np.asarray(f.centers[f.contact_frame]), int(f.target), axis=0)
            neighbour = float(np.linalg.norm(others - grip.numpy(), axis=-1).min()) * 100 if len(others) else None
            for key in (task, "all"):
                gt_hits[key].append(gt["hit"])
                reach[key, "ground truth"].append(gt["target_cm"])
                reach[key, "hits" if scored["hit"] else "misses"].append(scored["target_cm"])
                if neighbour is not None:
                    crowd[key, "hits" if scored["hit"] else "misses"].append(neighbour)
        for d in args.open_loop_frames:
            k = max(1, f.contact_frame - d)
            if f.contact_frame - k > model.config.horizon:
                continue
            image, depth = ep.observe([k])
            seed = np.random.SeedSequence([d, *ref.episode.encode()]).generate_state(1)[0]
            gen = torch.Generator().manual_seed(int(seed))
            with torch.no_grad():
                action = policy.predict_chunk(image, [ep.text_at(k, ctx)], ep.states[k][None].float(), depth,
                                              generator=gen)
            at_contact = decode_chunk(ep.states[k][None].double(), action.double())[:, f.contact_frame - k - 1]
            grip = grip_point(hand.forward_params(state_to_params(at_contact)).joints)[0]
            centres = torch.as_tensor(f.centers[f.contact_frame])
            open_loop.append({"episode": ref.episode, "task": task, "frames_before": d, "hit": scored["hit"],
                              "open_loop_hit": int(closest_object(grip, centres)) == int(f.target),
                              "target_cm": float((grip - centres[f.target]).norm()) * 100})
        if not eyes:
            continue
        frames = phase_frames(f.contact_frame)
        obs = [episode_observation(ep.episode_obj, k, S) for k in frames.values()]
        image = torch.stack([torch.from_numpy(np.array(o[0])).permute(2, 0, 1) for o in obs])
        depth = None if obs[0][1] is None else torch.stack([torch.as_tensor(o[1]) for o in obs])
        with torch.no_grad():
            text = model.prepare_text([ep.text_at(k, ctx) for k in frames.values()], len(frames))
            logits = model.encode_tokens(image, text, depth, ground=True)[-1]
        uv = expected_locations(logits)[0][:, 0].numpy()  # (3, 2) in [0, 1], the instructed object's channel
        for j, (phase, k) in enumerate(frames.items()):
            centres = (project(obs[j][2], f.centers[k]) + 0.5) / S  # (N, 2), NaN behind the camera
            dist = np.linalg.norm(centres - uv[j], axis=-1)
            dist = np.where(np.isfinite(dist), dist, np.inf)
            looks.append({"episode": ref.episode, "task": task, "phase": phase, "frame": k, "hit": scored["hit"],
                          "points_at_target": int(dist.argmin()) == int(f.target),
                          "target_px": float(dist[f.target] * S)})

    result = {
        "benchmark": "target_misses",
        "store": str(args.store), "checkpoint": str(args.ckpt), "eval": str(args.eval),
        "split": cfg.get("split", "test"), "rollout_frames": cfg["rollout_frames"],
        "ground_truth_target_acc": {k: {"hits": int(sum(v)), "episodes": len(v)} for k, v in sorted(gt_hits.items())},
        "reach_at_contact_cm_median": {
            task: {who: median(reach[task, who]) for who in ("ground truth", "hits", "misses")}
            for task in sorted(gt_hits)},
        "neighbour_at_contact_cm_median": {
            task: {who: median(crowd[task, who]) for who in ("hits", "misses")} for task in sorted(gt_hits)},
        "open_loop": {str(d): by_outcome([r for r in open_loop if r["frames_before"] == d], "open_loop_hit",
                                         "open_loop_target_acc", "target_cm") for d in args.open_loop_frames},
        "closed_loop_path": None,
        "grounding_head": None,
        "looks": looks,
        "open_loop_episodes": open_loop,
    }
    if eyes:
        result["grounding_head"] = {phase: by_outcome([r for r in looks if r["phase"] == phase], "points_at_target",
                                                      "points_at_target", "target_px") for phase in PHASES}
    paths = closed_loop_paths(store, policy, hand, cfg, outcomes)
    result["closed_loop_path"] = path_summary(paths)
    result["closed_loop_path_episodes"] = paths
    write_json(result, args.out)
    all_gt = result["ground_truth_target_acc"]["all"]
    print(f"ground truth reaches the instructed object in {all_gt['hits']} of {all_gt['episodes']} episodes")
    for task, r in result["reach_at_contact_cm_median"].items():
        line = ", ".join(f"{who} {v:.1f}" for who, v in r.items() if v is not None)
        print(f"reach at contact [cm, median], {task}: {line}")
    crowd_all = result["neighbour_at_contact_cm_median"]["all"]
    print("nearest other object to the recorded grip point at contact [cm, median]: "
          + ", ".join(f"{who} {v:.1f}" for who, v in crowd_all.items() if v is not None))
    for d, r in result["open_loop"].items():
        line = "; ".join(f"{who} ({v['episodes']}): {100 * v['open_loop_target_acc']:.0f} % reach it, "
                         f"{v['target_cm_median']:.1f} cm off" for who, v in r.items())
        print(f"from the recorded state {d} frames before contact: {line}")
    pr = result["closed_loop_path"]
    print(f"closed loop again: {pr['same_outcome']} of {pr['episodes']} outcomes as in the report")
    for who in ("hits", "misses"):
        if who in pr:
            v = pr[who]
            line = (f"{who} ({v['episodes']}): closest to the target {v['target_closest_cm_median']:.1f} cm, "
                    f"{v['target_closest_after_median']:+.0f} frames after contact (recorded motion: "
                    f"{v['gt_target_closest_cm_median']:.1f} cm, {v['gt_target_closest_after_median']:+.0f})")
            if v["other_closest_cm_median"] is not None:
                line += (f"; to the other object {v['other_closest_cm_median']:.1f} cm, "
                         f"{v['other_closest_after_median']:+.0f} frames (recorded motion: "
                         f"{v['gt_other_closest_cm_median']:.1f} cm)")
            print(line)
    print("target accuracy at frames after contact: "
          + ", ".join(f"{int(o):+d}: {100 * a:.1f} %" for o, a in pr.get("target_acc_at", {}).items()))
    for phase, r in (result["grounding_head"] or {}).items():
        line = "; ".join(f"{who} ({v['episodes']}): {100 * v['points_at_target']:.0f} % at the target, "
                         f"{v['target_px_median']:.1f} px off" for who, v in r.items())
        print(f"grounding head, {phase}: {line}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
