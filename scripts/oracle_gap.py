"""Oracle gap of a synthetic world: how much better the future wrist motion is predicted with the scene facts
that only the image shows than with the text and the hand state alone.

    nice python scripts/oracle_gap.py                      # the grounded world
    nice python scripts/oracle_gap.py --world classic

Draws ``--episodes`` episodes of the world from its generator (no rendering) and cuts every frame k into a window:
the input is what a model has at frame k, the target the wrist positions of frames k+1..k+16 relative to frame k
(``t_{k+i} - t_k``, each in its frame's camera frame as stored: what the action chunk holds; frames past the end
of the episode are masked). Two small MLPs with the same size, steps and seed learn it on the train and val
episodes:

* **text + state**: the state (the 109-vector: fingers, betas, wrist rotation and translation) and, as one-hots,
  what the text says: task, target colour and shape, landmark (mat or reference object) colour and shape, and the
  templates of the instruction and of the frame's segment text (names replaced by placeholders);
* **full information**: the same plus the exact facts only the image shows, at frame k in its camera frame: the
  target's base centre and sizes, the destination, the landmark's centre and size, every other object's centre and
  size, and the camera pose (rotation and translation above the table).

With ``--grounding-accuracy P ...``, a third MLP per P sees text + state and only what the policy's grounding tokens
carry (``--model.grounding.tokens``: where the instructed object and the destination are): the target's centre
and the destination at frame k in its camera frame, the target right with probability P and otherwise, per window,
another object's centre (what a head that picks the wrong object hands over; the same rate in training and test).
It says how much of the gap the grounding tokens can close at the grounding accuracy a cerebrum reaches
(``benchmarks/grounding_probe.py``).

All are scored on the test episodes (object-colour-task combinations never trained on): the mean wrist error of
the 16 future frames [cm], per phase of frame k and overall, and the ratio (text + state) / (full information);
the static pose (no motion) for scale. Writes ``benchmarks/results/oracle_gap_<world>.json`` (or ``--out``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from tqdm import tqdm

from megohand.data.synthetic import SynthConfig, generate_episode
from megohand.hand import load_hand_model
from megohand.hand.vector import HandParams, params_to_state

REPO = Path(__file__).resolve().parents[1]
MAX_OTHERS = 5  # other objects described to the full-information probe (the grounded world has at most 4)


@dataclass
class Args:
    world: str = "grounded"
    """Synthetic world ("grounded" or "classic")."""
    episodes: int = 1500
    """Episodes drawn (ids 0..episodes-1 of --seed); the test split's are held out."""
    seed: int = 0
    """World seed (SynthConfig.seed); the probes use it too."""
    horizon: int = 16
    """Future frames per window."""
    steps: int = 3000
    """Optimiser steps per probe."""
    batch: int = 512
    """Windows per step."""
    hidden: int = 384
    """Width of the MLPs' three hidden layers."""
    lr: float = 2e-3
    """Peak learning rate (AdamW, cosine decay)."""
    threads: int = 2
    """torch CPU threads."""
    text: Literal["instruction", "segment", "segment+task"] = "instruction"
    """What the probes read of the text: ``instruction``, the task and every name of the episode's instruction and
    the template of the frame's segment text; ``segment``, only the frame's segment text (its template and the names
    it says), which is what the policy reads (``megohand.data.windows``: a window's text is its segment's); and
    ``segment+task``, that and the task (what a segment text that names the task, "reach for the red cube to push
    it", would add)."""
    grounding_accuracy: tuple[float, ...] = ()
    """Also probe what the grounding tokens carry, the instructed object found with each of these probabilities."""
    mano_dir: Path | None = None
    """MANO folder; default $MANO_MODEL_DIR, else the bundled open hand."""
    out: Path | None = None
    """Result JSON; default benchmarks/results/oracle_gap_<world>.json."""


# ----------------------------------------------------------------------------- windows


def _template(text: str, names: dict[str, str]) -> str:
    for name, slot in names.items():
        if name:
            text = re.sub(rf"\b{re.escape(name)}\b", slot, text)
    return text


def landmark_name(ep) -> str | None:
    """The object or mat the text names besides the target (grounded: the landmark; classic: the reference)."""
    return ep.params.get("landmark") or ep.params.get("reference")


def episode_windows(ep, horizon: int) -> dict:
    """Per frame k < T-1 of one episode: state (109), the text facts (strings), the scene facts (vector), the
    future wrist offsets (horizon, 3) and their mask, the phase name."""
    T = ep.num_frames
    h = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in ep.hands.items() if k != "valid"}
    state = params_to_state(HandParams(h["global_orient"], h["hand_pose"], h["betas"], h["transl"])).numpy()
    t = ep.hands["transl"].astype(np.float64)
    ks = np.arange(T - 1)
    idx = ks[:, None] + np.arange(1, horizon + 1)[None]
    mask = idx < T
    future = t[np.minimum(idx, T - 1)] - t[ks][:, None]
    target = ep.objects[ep.target]
    lm = landmark_name(ep)
    names = {target.name: "<target>", lm or "": "<landmark>"}
    phase_of = np.empty(T, dtype=object)
    for s, e, name in ep.phases:
        phase_of[s:e] = name
    seg_of = np.empty(T, dtype=object)
    for s, e, text in ep.segments:
        seg_of[s:e] = _template(text, names)
    lm_color, lm_shape = (lm.split(" ", 1) if lm else ("none", "none"))
    text = {"task": ep.task, "color": target.color, "shape": target.shape, "landmark_color": lm_color,
            "landmark_shape": lm_shape, "instruction": _template(ep.instruction, names)}
    says_lm = np.array([bool(s) and "<landmark>" in s for s in seg_of[ks]])  # the segment text names the landmark
    return {"state": state[ks], "future": future, "mask": mask, "phase": phase_of[ks], "segment": seg_of[ks],
            "text": [text] * len(ks), "says_landmark": says_lm, "task": np.array([ep.task] * len(ks), dtype=object),
            "scene": scene_facts(ep, ks)}


# the text facts each --text choice reads (the segment's template is always read; the landmark's names only where
# the segment text says them)
TEXT_KEYS = {"instruction": ("task", "color", "shape", "landmark_color", "landmark_shape", "instruction"),
             "segment": ("color", "shape", "landmark_color", "landmark_shape"),
             "segment+task": ("task", "color", "shape", "landmark_color", "landmark_shape")}


def scene_facts(ep, ks: np.ndarray) -> np.ndarray:
    """(len(ks), D) what only the image shows at frame k, in the camera frame of k [m]."""
    T_cw = ep.T_cam_from_world[ks]
    to_cam = lambda p: np.einsum("kij,kj->ki", T_cw[:, :3, :3], p) + T_cw[:, :3, 3]  # noqa: E731
    n = len(ks)
    target = ep.objects[ep.target]

    def size(o):
        return [o.height, o.radius, o.half_width]

    cols = [to_cam(ep.object_poses[ks, ep.target, :3, 3]), np.tile(size(target), (n, 1))]
    dest = ep.destination
    cols += [to_cam(np.tile(dest, (n, 1))) if dest is not None else np.zeros((n, 3)),
             np.full((n, 1), float(dest is not None))]
    lm = landmark_name(ep)
    named = [o for o in ep.objects + ep.landmarks if o.name == lm and o is not target]
    if named:
        o = named[0]
        centre = (ep.object_poses[ks, ep.objects.index(o), :3, 3] if o in ep.objects
                  else np.tile([*o.xy, 0.0], (n, 1)))
        cols += [to_cam(centre), np.tile(size(o) + [1.0], (n, 1))]
    else:
        cols += [np.zeros((n, 3)), np.zeros((n, 4))]
    others = [i for i in range(len(ep.objects)) if i != ep.target]
    others.sort(key=lambda i: np.hypot(*(np.asarray(ep.objects[i].xy) - target.xy)))
    for j in range(MAX_OTHERS):
        if j < len(others):
            o = ep.objects[others[j]]
            cols += [to_cam(ep.object_poses[ks, others[j], :3, 3]), np.tile(size(o) + [1.0], (n, 1))]
        else:
            cols += [np.zeros((n, 3)), np.zeros((n, 4))]
    cols.append(np.full((n, 1), max([0.0] + [ep.objects[i].height for i in others])))
    cols += [T_cw[:, :3, :3].reshape(n, 9), T_cw[:, :3, 3]]
    return np.concatenate(cols, axis=1)


SCENE_TARGET, SCENE_DESTINATION = slice(0, 3), slice(6, 10)  # columns of scene_facts: target centre; destination + flag
SCENE_OTHERS = 17  # first column of the other objects, 7 each (centre, sizes, present flag)


def grounding_features(scene: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """(N, 7) what the grounding tokens carry, from scene_facts rows: the target's centre (another object's, present
    in the scene, in a share 1 - accuracy of the windows that have one) and the destination with its flag."""
    target = scene[:, SCENE_TARGET].copy()
    present = np.stack([scene[:, SCENE_OTHERS + 7 * j + 6] > 0 for j in range(MAX_OTHERS)], 1)  # (N, MAX_OTHERS)
    wrong = (rng.random(len(scene)) >= accuracy) & present.any(1)
    for i in np.flatnonzero(wrong):
        j = rng.choice(np.flatnonzero(present[i]))
        target[i] = scene[i, SCENE_OTHERS + 7 * j: SCENE_OTHERS + 7 * j + 3]
    return np.concatenate([target, scene[:, SCENE_DESTINATION]], 1)


def one_hot(values: list, vocab: list) -> np.ndarray:
    """(len(values), len(vocab) + 1) one-hots; the last column is "unseen"."""
    index = {v: i for i, v in enumerate(vocab)}
    out = np.zeros((len(values), len(vocab) + 1), dtype=np.float32)
    out[np.arange(len(values)), [index.get(v, len(vocab)) for v in values]] = 1.0
    return out


def text_features(w: dict, vocab: dict, text: str = "instruction") -> np.ndarray:
    """One-hots of the text facts that ``text`` (``Args.text``) reads, then of the segment's template."""
    cols = []
    for k in TEXT_KEYS[text]:
        values = [t[k] for t in w["text"]]
        if text != "instruction" and k.startswith("landmark"):  # named only by the segments that say it
            values = [v if say else "none" for v, say in zip(values, w["says_landmark"])]
        cols.append(one_hot(values, vocab[k]))
    cols.append(one_hot(list(w["segment"]), vocab["segment"]))
    return np.concatenate(cols, axis=1)


# ----------------------------------------------------------------------------- probes


def train_probe(x: np.ndarray, y: np.ndarray, m: np.ndarray, args: Args) -> torch.nn.Module:
    """MLP x (N, D) -> y (N, H*3) on the masked MSE of standardised targets; inputs standardised inside."""
    torch.manual_seed(args.seed)
    xm, xs = x.mean(0), np.maximum(x.std(0), 1e-3)
    yv = y.reshape(len(y), -1, 3)[m]
    ys = float(yv.std())
    mlp = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], args.hidden), torch.nn.GELU(), torch.nn.Linear(args.hidden, args.hidden),
        torch.nn.GELU(), torch.nn.Linear(args.hidden, args.hidden), torch.nn.GELU(),
        torch.nn.Linear(args.hidden, y.shape[1]))
    X = torch.as_tensor((x - xm) / xs, dtype=torch.float32)
    Y = torch.as_tensor(y / ys, dtype=torch.float32)
    M = torch.as_tensor(np.repeat(m, 3, axis=1), dtype=torch.float32)
    opt = torch.optim.AdamW(mlp.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    for _ in tqdm(range(args.steps), desc="probe", unit="step", leave=False):
        b = torch.randint(len(X), (args.batch,), generator=gen)
        loss = (((mlp(X[b]) - Y[b]) ** 2) * M[b]).sum() / M[b].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    mlp.eval()

    def predict(xq: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return mlp(torch.as_tensor((xq - xm) / xs, dtype=torch.float32)).numpy() * ys

    return predict


def window_errors(pred: np.ndarray, y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(N,) mean wrist error over each window's valid future frames [cm]."""
    err = np.linalg.norm(pred.reshape(len(y), -1, 3) - y.reshape(len(y), -1, 3), axis=-1)
    return 100 * (err * m).sum(1) / m.sum(1)


def main(args: Args) -> dict:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = SynthConfig(world=args.world, seed=args.seed)
    hand = load_hand_model(None if args.mano_dir is None else str(args.mano_dir), side="right")
    parts: dict[str, list] = {"train": [], "test": []}
    for i in tqdm(range(args.episodes), desc=f"{args.world} episodes", unit="ep"):
        ep = generate_episode(cfg, i, hand)
        parts["test" if ep.split == "test" else "train"].append(episode_windows(ep, args.horizon))
    data = {k: {f: np.concatenate([w[f] for w in v]) if f != "text" else sum((w[f] for w in v), [])
                for f in v[0]} for k, v in parts.items()}
    tr, te = data["train"], data["test"]
    vocab = {k: sorted({t[k] for t in tr["text"]}) for k in tr["text"][0]}
    vocab["segment"] = sorted(set(tr["segment"]))
    x_text = {k: np.concatenate([d["state"], text_features(d, vocab, args.text)], 1) for k, d in data.items()}
    x_full = {k: np.concatenate([x_text[k], d["scene"]], 1) for k, d in data.items()}
    y = {k: d["future"].reshape(len(d["future"]), -1) for k, d in data.items()}
    gen_s = time.perf_counter() - t0
    errors = {"static pose": window_errors(np.zeros_like(y["test"]), y["test"], te["mask"])}
    probes = [("text + state", x_text), ("full information", x_full)]
    for p in args.grounding_accuracy:
        rng = np.random.default_rng(args.seed)
        probes.append((f"grounding tokens, {100 * p:.0f} % right", {
            k: np.concatenate([x_text[k], grounding_features(d["scene"], p, rng)], 1) for k, d in data.items()}))
    for name, x in probes:
        predict = train_probe(x["train"], y["train"], tr["mask"], args)
        errors[name] = window_errors(predict(x["test"]), y["test"], te["mask"])
    phases = sorted(set(te["phase"]), key=lambda p: -np.mean(te["phase"] == p))

    def row(sel) -> dict:
        r = {k: round(float(v[sel].mean()), 3) for k, v in errors.items()}
        r["ratio"] = round(r["text + state"] / r["full information"], 3)
        r["windows"] = int(sel.sum())
        return r

    table = {"overall": row(np.ones(len(te["phase"]), dtype=bool))} | {p: row(te["phase"] == p) for p in phases}
    by_task = {t: row(te["task"] == t) for t in sorted(set(te["task"]))}
    reach = te["phase"] == "reach"
    by_task_reach = {t: row(reach & (te["task"] == t)) for t in sorted(set(te["task"]))
                     if (reach & (te["task"] == t)).any()}
    result = {
        "world": args.world, "args": json.loads(json.dumps(dataclasses.asdict(args), default=str)),
        "hand_model": hand.name, "train_windows": len(y["train"]), "test_windows": len(y["test"]),
        "test_episodes": len(parts["test"]), "inputs": {name: int(x["train"].shape[1]) for name, x in probes},
        "unit": "cm, mean wrist error over the 16 future frames, per window (phase = phase of the window's first frame)",
        "ratio_overall": table["overall"]["ratio"], "table": table, "by_task": by_task,
        "by_task_reach_phase": by_task_reach,
        "seconds": {"generate": round(gen_s, 1), "total": round(time.perf_counter() - t0, 1)},
        "torch_threads": args.threads, "load_average": os.getloadavg()[0],
    }
    print(f"oracle gap, {args.world} world: {len(parts['test'])} test episodes, {len(y['test'])} windows "
          f"(train {len(y['train'])}), {args.steps} steps per probe, {result['seconds']['total']} s")
    extra = [name for name, _ in probes[2:]]
    print(f"{'phase':<10} {'windows':>7} {'static':>7} {'text+state':>10} {'full info':>9} {'ratio':>6}"
          + "".join(f" | {name}" for name in extra))
    rows = list(table.items()) + [(f"task {t}", r) for t, r in by_task.items()] + [
        (f"reach, {t}", r) for t, r in by_task_reach.items()]
    for p, r in rows:
        print(f"{p:<10} {r['windows']:>7} {r['static pose']:>7.2f} {r['text + state']:>10.2f} "
              f"{r['full information']:>9.2f} {r['ratio']:>6.2f}" + "".join(f" | {r[name]:.2f}" for name in extra))
    out = args.out or REPO / "benchmarks" / "results" / f"oracle_gap_{args.world}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # atomic: temporary name, then rename
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
