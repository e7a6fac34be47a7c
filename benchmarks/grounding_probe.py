"""How fast does the compact cerebrum learn *where* the instructed object is? Grounding-only training, per variant.

Trains only the backbone and the grounding head (``megohand.models.grounding``) of the compact TI policy on windows
of a synthetic store (``megohand synth --world grounded``), and reports on the test split (held-out shape / colour /
task combos): the grounding cross-entropy (beside its floor, the target's entropy, and a uniform guess), the mean
location error in token cells, and whether the soft-argmax location lies nearest the instructed object (over all
windows, before contact, and in the first 3 frames of the reach, where the hand has not moved yet); and, asked by
name for another object of the picture, whether it finds that one. Variants:

- ``late``: the image CNN never sees the text; the fusion transformer must match colour words to image tokens.
- ``film``: the CNN is conditioned on the sentence (``--model.backbone.film``, FiLM as in RT-1).
- ``refer``: ``late``, and half of every batch asks instead for a random visible object by name ("the red cube"),
  with that object's location as the target: the hand's motion cannot answer that, only the colour and shape can.
- ``query``, ``query-refer``: the head matches each image token against a query pooled from the tokens
  (``--model.grounding.head query``), without and with the referring question.
- ``refer-parse``, ``query-refer-parse``: and every image token also says the colour and shape of the object whose
  projected centre lies within one cell of it (or "none"): dense supervision of what the picture shows where.
- ``refer-dest-parse``: ``refer-parse``, and each referring question also names a destination, a mat or another
  object in the picture ("the red cube to the blue mat"), with its location as the destination channel's target
  (the destination is otherwise learnt from the instructions alone).

The control: the same model with the instruction of another window. Where it still picks the instructed object,
the head finds it without reading the sentence (from the hand's motion, for one).

    megohand synth --out runs/g300 --episodes 300 --workers 2
    python benchmarks/grounding_probe.py --store runs/g300 --steps 1000 --eval-every 500 --test-samples 3000 \
        --variants late refer film --seed 1 --out benchmarks/results/grounding_probe_s1.json

prints a table and writes the JSON (default ``benchmarks/results/grounding_probe.json``); about 7 minutes a variant
on 2 CPU cores.

``--checkpoints NAME=FOLDER ...`` trains nothing: it asks the grounding head of each trained policy (full or slim
checkpoint with ``--model.grounding.weight`` > 0) the same questions, on ``--split`` (with the store's depth where
the policy reads depth), e.g. whether the cerebrum of a benchmark run knows which object its hand should reach:

    python benchmarks/grounding_probe.py --store runs/benchmark/store --split val --test-samples 1500 \
        --checkpoints TIDrp_s0=runs/exports/TID_s0_refer+parse --out benchmarks/results/grounding_head_val.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from megohand.data.windows import WindowDataset
from megohand.models.config import GroundingConfig, compact
from megohand.models.grounding import (TARGETS, cell_labels, expected_locations, gaussian_targets, grounding_loss,
                                       parse_loss)
from megohand.models.policy import MEgoHandPolicy


def load(store: Path, split: str, n: int, size: int, seed: int, unnamed_destinations: bool = False,
         depth: bool = False) -> dict:
    """n random windows of ``split`` -> image uint8 (n, 3, S, S), text list, uv (n, 2, 2), valid (n, 2), and with
    ``depth`` the store's depth (n, 1, S, S) [m] (None otherwise or where an episode has none).
    The destination is a target where the window's text names it (as in training), or, with
    ``unnamed_destinations``, wherever it is in the picture (the rule before 2026-12-06)."""
    from megohand.data.synthetic.facts import image_targets, project, scene_objects, to_camera

    ds = WindowDataset(store, split=split, image_size=size, window_scope="episode",
                       stored_depth="auto" if depth else "none")
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    samples = [ds[int(i)] for i in idx]
    objects, names, early, start = [], [], [], []  # every object's centre in the model image, [0, 1] (NaN: behind the camera)
    ends = []  # every object's centre (N, 3) [m, camera frame] L frames later
    landmarks = []  # (uv [0, 1], "colour mat") of the mats in the picture
    for i, s in zip(idx, samples):
        facts = ds.facts(int(ds._ep[i]))
        k = s["meta"]["k"]
        ep = ds.store.open(ds.refs[int(ds._ep[i])])
        mats = scene_objects(ep.meta.extra.get("landmarks") or [])
        uv_m = (project(s["K"].numpy(), to_camera(ep.T_cam_from_world[k:k + 1], np.array(
            [[[o.xy[0], o.xy[1], o.height / 2] for o in mats]]))[0]) + 0.5) / size if mats else np.zeros((0, 2))
        landmarks.append([(torch.from_numpy(q).float(), o.name) for q, o in zip(uv_m, mats) if ((q >= 0) & (q <= 1)).all()])
        early.append(facts.contact_frame is None or k < facts.contact_frame)
        reach = [a for a, _, phase in ds.store.open(ds.refs[int(ds._ep[i])]).meta.extra["phases"] if phase == "reach"]
        start.append(bool(reach) and reach[0] <= k < reach[0] + 3)
        objects.append((project(s["K"].numpy(), facts.centers[s["meta"]["k"]]) + 0.5) / size)
        ends.append(facts.centers[min(k + ds.horizon, len(facts.centers) - 1)].copy())
        if unnamed_destinations:
            uv, valid = image_targets(facts, k, s["K"].numpy(), size)
            s["ground_uv"], s["ground_valid"] = torch.from_numpy(uv), torch.from_numpy(valid)
        names.append([f"{o['color']} {o['shape']}" for o in ds.store.open(ds.refs[int(ds._ep[i])]).meta.extra["objects"]])
        if facts.target != 0:  # the instructed object first
            objects[-1][[0, facts.target]] = objects[-1][[facts.target, 0]]
            ends[-1][[0, facts.target]] = ends[-1][[facts.target, 0]]
            names[-1][0], names[-1][facts.target] = names[-1][facts.target], names[-1][0]
    width = max(len(o) for o in objects)
    objects = [np.pad(o, ((0, width - len(o)), (0, 0)), constant_values=np.nan) for o in objects]
    ends = [np.pad(o, ((0, width - len(o)), (0, 0)), constant_values=np.nan) for o in ends]
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "depth": torch.stack([s["depth"] for s in samples]).float() if depth and all(
            "depth" in s and bool(s.get("has_depth", True)) for s in samples) else None,
        "text": [s["instruction"] for s in samples],
        "uv": torch.stack([s["ground_uv"] for s in samples]),
        "valid": torch.stack([s["ground_valid"] for s in samples]),
        "objects": torch.from_numpy(np.stack(objects)).float(),  # (n, N, 2), the instructed one first
        "ends": torch.from_numpy(np.stack(ends)),  # (n, N, 3) float64 [m], camera frame, L frames later, same order
        "state": torch.stack([s["state"] for s in samples]),  # (n, 109)
        "names": names,  # n lists of "colour shape", in the order of objects
        "visible": [np.flatnonzero(((o >= 0) & (o <= 1)).all(-1)) for o in objects],  # indices of objects in the picture
        "mats": landmarks,  # n lists of (uv (2,), "colour mat") of the mats in the picture
        "before_contact": torch.tensor(early),  # (n,) the hand has not touched the instructed object yet
        "reach_start": torch.tensor(start),  # (n,) first 3 frames of the reach: the hand has barely moved, the text
        # names the object (before, the idle phase's text is "rest"), only colour and shape in the image say where
    }


def _depth(data: dict, rows) -> tuple:
    """(depth, has_depth) of ``rows`` for encode_tokens: the store's depth where ``load`` kept it, else (None, None)."""
    d = data.get("depth")
    return (None, None) if d is None else (d[rows], torch.ones(len(d[rows]), dtype=torch.bool))


def evaluate(policy: MEgoHandPolicy, data: dict, sigma: float, shuffle_text: bool, batch: int = 64) -> dict:
    """Per target on ``data`` (text rotated by one when shuffle_text): grounding CE, mean location error [cells];
    for the object, the share of samples whose predicted location is nearest the instructed object's centre."""
    policy.eval()
    texts = data["text"][1:] + data["text"][:1] if shuffle_text else data["text"]
    ce, err, n = torch.zeros(len(TARGETS)), torch.zeros(len(TARGETS)), torch.zeros(len(TARGETS))
    picked, n_picked = torch.zeros(3), torch.zeros(3)  # all samples; before contact; reach start
    with torch.no_grad():
        for a in range(0, len(texts), batch):
            img, uv, valid, objects = (data[k][a:a + batch] for k in ("image", "uv", "valid", "objects"))
            text = policy.prepare_text(texts[a:a + batch], len(img))
            logits = policy.encode_tokens(img, text, *_depth(data, slice(a, a + batch)), ground=True)[-1]
            grid = int(round(logits.shape[1] ** 0.5))
            pred, _ = expected_locations(logits)  # (b, 2, 2)
            for j in range(len(TARGETS)):
                v = valid[:, j]
                ce[j] += grounding_loss(logits[:, :, j:j + 1], uv[:, j:j + 1], valid[:, j:j + 1], sigma) * v.sum()
                err[j] += ((pred[:, j] - uv[:, j]).norm(dim=-1) * grid)[v].sum()
                n[j] += v.sum()
            d = (objects - pred[:, :1]).norm(dim=-1).nan_to_num(float("inf"))  # (b, N)
            hit = d.argmin(-1) == 0
            for j, v in enumerate((valid[:, 0], valid[:, 0] & data["before_contact"][a:a + batch],
                                   valid[:, 0] & data["reach_start"][a:a + batch])):
                picked[j] += hit[v].sum()
                n_picked[j] += v.sum()
    # by name: "the <colour> <shape>" of one other visible object per sample (fixed draw); is that one found?
    rng, queries = np.random.default_rng(0), []
    for i, visible in enumerate(data["visible"]):
        seen = [j for j in visible if j != 0]
        if seen:
            queries.append((i, int(rng.choice(seen))))
    found = 0
    with torch.no_grad():
        for a in range(0, len(queries), batch):
            q = queries[a:a + batch]
            idx = torch.tensor([i for i, _ in q])
            text = policy.prepare_text([f"the {data['names'][i][j]}" for i, j in q], len(q))
            pred, _ = expected_locations(policy.encode_tokens(data["image"][idx], text, *_depth(data, idx), ground=True)[-1])
            d = (data["objects"][idx] - pred[:, :1]).norm(dim=-1).nan_to_num(float("inf"))
            found += int((d.argmin(-1) == torch.tensor([j for _, j in q])).sum())
    policy.train()
    out = {t: {"ce": float(ce[j] / n[j]), "error_cells": float(err[j] / n[j])} for j, t in enumerate(TARGETS)}
    out["object"]["finds_named_other_object"] = found / max(len(queries), 1)
    out["object"]["picks_instructed"] = float(picked[0] / n_picked[0].clamp(min=1))
    out["object"]["picks_instructed_before_contact"] = float(picked[1] / n_picked[1].clamp(min=1))
    out["object"]["picks_instructed_reach_start"] = float(picked[2] / n_picked[2].clamp(min=1))
    return out


def follow_tokens(policy: MEgoHandPolicy, data: dict, batch: int = 64) -> dict | None:
    """Does the action head go where its grounding tokens say? At the reach's start (samples with two or more
    objects in view), the object token forced onto each visible object in turn (``sample(teacher=...)``), one chunk
    per case (same noise for every case of a sample): the share of chunks whose grip point ends nearest that
    object, L frames later, for the instructed object and for the others; beside them, unforced, the shares that end
    there anyway. A head that ignores the tokens follows them no more often than it ends there unforced. The same
    for ``grounding.state`` (what the state token reads is forced). None for a policy with neither."""
    from megohand.hand import load_hand_model
    from megohand.hand.vector import decode_chunk, state_to_params
    from megohand.metrics import grip_point

    if policy.grounding_tokens is None and policy.grounding_state is None:
        return None
    policy.eval()
    hand = load_hand_model(None)
    starts = np.flatnonzero(data["reach_start"].numpy())
    noise = policy.draw_noise(len(data["text"]), torch.Generator().manual_seed(0))
    cases = [(int(i), None) for i in starts if len(data["visible"][i]) > 1]
    cases += [(i, int(j)) for i, _ in list(cases) for j in data["visible"][i]]
    ends = []
    with torch.no_grad():
        for a in range(0, len(cases), batch):
            rows = torch.tensor([i for i, _ in cases[a:a + batch]])
            forced = torch.tensor([j is not None for _, j in cases[a:a + batch]])
            uv = torch.zeros(len(rows), 2, 2)
            uv[:, 0] = data["objects"][rows, torch.tensor([j or 0 for _, j in cases[a:a + batch]])]
            use = torch.stack([forced, torch.zeros_like(forced)], dim=1)
            text = policy.prepare_text([data["text"][i] for i in rows.tolist()], len(rows))
            act = policy.sample(data["image"][rows], text, data["state"][rows], noise[rows],
                                policy.config.flow.inference_steps, *_depth(data, rows), teacher=(uv, use))
            last = decode_chunk(data["state"][rows].double(), act.double())[:, -1]
            grip = grip_point(hand.forward_params(state_to_params(last)).joints)  # (b, 3)
            ends += (data["ends"][rows] - grip[:, None]).norm(dim=-1).nan_to_num(float("inf")).argmin(-1).tolist()
    unforced = {i: e for (i, j), e in zip(cases, ends) if j is None}
    own = [e == 0 for e in unforced.values()]
    to_instructed = [e == j for (_, j), e in zip(cases, ends) if j == 0]
    others = [(i, j, e) for (i, j), e in zip(cases, ends) if j is not None and j > 0]
    return {"unforced_ends_at_instructed": float(np.mean(own)), "forced_instructed_followed": float(np.mean(to_instructed)),
            "forced_other_followed": float(np.mean([e == j for _, j, e in others])),
            "unforced_ends_at_that_other": float(np.mean([unforced[i] == j for i, j, _ in others])),
            "samples": len(own), "forced_cases": len(cases) - len(own)}


def chance(data: dict, grid: int, sigma: float) -> dict:
    """Floor (the targets' own entropy) and the uniform guess's CE; the within-one-cell share of a guess at the
    image centre."""
    out = {}
    for j, t in enumerate(TARGETS):
        v = data["valid"][:, j]
        p = gaussian_targets(data["uv"][v][:, j:j + 1].float(), grid, sigma)
        floor = float(-(p * p.clamp(min=1e-12).log()).sum(-1).mean())
        out[t] = {"floor": floor, "uniform": float(np.log(grid * grid)),
                  "centre_error_cells": float(((data["uv"][v][:, j] - 0.5).norm(dim=-1) * grid).mean())}
    n_objects = (~data["objects"].isnan().any(-1)).sum(-1).float()
    out["object"]["picks_instructed_at_random"] = float((1 / n_objects[data["valid"][:, 0]]).mean())
    out["object"]["picks_other_at_random"] = float((1 / n_objects[n_objects > 1]).mean())
    for subset in ("before_contact", "reach_start"):
        m = data["valid"][:, 0] & data[subset]
        out["object"][f"picks_instructed_at_random_{subset}"] = float((1 / n_objects[m]).mean())
        out["object"][f"{subset}_samples"] = int(m.sum())
    return out


def parse_labels(data: dict, grid: int) -> torch.Tensor:
    """(n, G^2, 2) long, ``megohand.models.grounding.cell_labels`` of every object of each sample (those just outside
    the picture too, so an edge cell within one cell of one is labelled with it)."""
    from megohand.data.synthetic.scene import COLORS
    from megohand.data.synthetic.shapes import SHAPES

    attr = torch.full(data["objects"].shape, -1, dtype=torch.long)  # (n, N, 2); -1: padding or behind the camera
    for i, names in enumerate(data["names"]):
        for j, name in enumerate(names):
            if not bool(data["objects"][i, j].isnan().any()):
                colour, shape = name.split()
                attr[i, j] = torch.tensor([list(COLORS).index(colour), SHAPES.index(shape)])
    return cell_labels(data["objects"], attr, grid, len(COLORS), len(SHAPES))


def run(variant: str, train: dict, test: dict, args) -> dict:
    torch.manual_seed(args.seed)
    cfg = compact()
    head = "query" if variant.startswith("query") else "linear"
    cfg = cfg.__class__(**{**cfg.__dict__, "modalities": "TI",
                           "grounding": GroundingConfig(weight=1.0, sigma=args.sigma, head=head),
                           "backbone": cfg.backbone.replace(image_size=args.image_size, film=variant == "film")})
    policy = MEgoHandPolicy(cfg)
    params = [p for n, p in policy.named_parameters() if p.requires_grad and not n.startswith("head.")]
    parse = None
    if variant.endswith("parse"):
        from megohand.data.synthetic.scene import COLORS
        from megohand.data.synthetic.shapes import SHAPES

        grid = args.image_size // 16
        labels = parse_labels(train, grid)
        parse = torch.nn.Linear(cfg.dit.width, len(COLORS) + 1 + len(SHAPES) + 1)
        params += list(parse.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        b = torch.from_numpy(rng.integers(0, len(train["text"]), args.batch))
        texts, uv, valid = [train["text"][i] for i in b.tolist()], train["uv"][b].clone(), train["valid"][b].clone()
        if "refer" in variant:  # half the batch: "the <colour> <shape>" of a random visible object, and where it is
            for r, i in enumerate(b.tolist()[: args.batch // 2]):
                seen = train["visible"][i]
                if len(seen):
                    j = int(rng.choice(seen))
                    texts[r], uv[r, 0], valid[r] = f"the {train['names'][i][j]}", train["objects"][i, j], torch.tensor([True, False])
                    # and, with "-dest", a destination too: a mat or another object in the picture, in the
                    # destination channel, phrased as the tasks name one ("the red cube to the blue mat")
                    places = [(q, n) for q, n in train["mats"][i]] + [
                        (train["objects"][i, o], train["names"][i][o]) for o in seen if o != j]
                    if "dest" in variant and places:
                        q, name = places[int(rng.integers(len(places)))]
                        texts[r] += f" to the {name}"
                        uv[r, 1], valid[r, 1] = q, True
        text = policy.prepare_text(texts, args.batch)
        vl, *_, logits = policy.encode_tokens(train["image"][b], text, ground=True)
        loss = grounding_loss(logits, uv, valid, args.sigma)
        if parse is not None:
            out = parse(policy.backbone.image_tokens(vl, text))  # (B, G^2, colours + 1 + shapes + 1)
            loss = loss + parse_loss(out, labels[b], torch.ones(len(b), dtype=torch.bool), len(COLORS))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            ev = evaluate(policy, test, args.sigma, shuffle_text=False)
            curve.append({"step": step, "train_ce": float(loss.detach()), "test": ev, "seconds": time.perf_counter() - t0})
            print(f"{variant:11s} step {step:5d}  train CE {float(loss.detach()):.3f}  test CE "
                  f"{ev['object']['ce']:.3f} / {ev['destination']['ce']:.3f}  error "
                  f"{ev['object']['error_cells']:.2f} / {ev['destination']['error_cells']:.2f} cells  picks "
                  f"{100 * ev['object']['picks_instructed']:.0f} % (before contact "
                  f"{100 * ev['object']['picks_instructed_before_contact']:.0f} %, reach start "
                  f"{100 * ev['object']['picks_instructed_reach_start']:.0f} %; finds another object by name "
                  f"{100 * ev['object']['finds_named_other_object']:.0f} %)  ({curve[-1]['seconds']:.0f} s)",
                  flush=True)
    return {"variant": variant, "curve": curve, "final": curve[-1]["test"],
            "shuffled_text": evaluate(policy, test, args.sigma, shuffle_text=True),
            "train_seconds": time.perf_counter() - t0, "parameters": sum(p.numel() for p in params)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--unnamed-destinations", action="store_true",
                    help="train the destination channel wherever the destination is in the picture, also where the "
                         "window's text does not name it (the rule before 2026-12-06); the test set names it")
    ap.add_argument("--variants", nargs="+", default=["late", "refer"],
                    choices=["late", "film", "refer", "query", "query-refer", "refer-parse", "query-refer-parse",
                             "refer-dest-parse"])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--sigma", type=float, default=GroundingConfig.sigma)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--train-samples", type=int, default=6000)
    ap.add_argument("--test-samples", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--checkpoints", nargs="+", default=[], metavar="NAME=FOLDER",
                    help="evaluate the grounding heads of these trained policies instead of training variants")
    ap.add_argument("--split", choices=["test", "val"], default="test", help="split of the test samples")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "grounding_probe.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoints:
        return checkpoints(args)
    train = load(args.store, "train", args.train_samples, args.image_size, args.seed, args.unnamed_destinations)
    test = load(args.store, args.split, args.test_samples, args.image_size, args.seed + 1)
    grid = args.image_size // 16
    report = {"command": "python benchmarks/grounding_probe.py " + " ".join(
                  f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else
                                                 f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
                  for k, v in vars(args).items() if k != "out" and v is not False and v != []),
              "chance": chance(test, grid, args.sigma), "device": "cpu", "threads": torch.get_num_threads(),
              "runs": [run(v, train, test, args) for v in args.variants]}
    print_table(report)
    write(report, args.out)


def checkpoints(args) -> None:
    """The grounding heads of trained policies on ``args.split`` (no training)."""
    from megohand.inference.policy import load_model

    runs, test = [], None
    for item in args.checkpoints:
        name, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"--checkpoints wants NAME=FOLDER with an existing folder, got {item!r}")
        policy = load_model(folder).float().eval()
        cfg = policy.config
        if policy.grounding_head is None:
            raise SystemExit(f"{folder}: this policy has no grounding head (--model.grounding.weight 0, or no text or image)")
        size = cfg.backbone.image_size
        if test is None or test["size"] != size or test["has_depth"] != cfg.uses_depth:
            test = load(args.store, args.split, args.test_samples, size, args.seed + 1, depth=cfg.uses_depth)
            test["size"], test["has_depth"] = size, cfg.uses_depth
        t0 = time.perf_counter()
        runs.append({"variant": name, "checkpoint": str(folder), "final": evaluate(policy, test, cfg.grounding.sigma, False),
                     "shuffled_text": evaluate(policy, test, cfg.grounding.sigma, True),
                     "follows_tokens": follow_tokens(policy, test), "eval_seconds": time.perf_counter() - t0})
        if runs[-1]["follows_tokens"] is not None:
            f = runs[-1]["follows_tokens"]
            print(f"{name}: at the reach's start ({f['samples']} samples), unforced chunks end nearest the instructed "
                  f"object {100 * f['unforced_ends_at_instructed']:.0f} %; the object token forced onto the instructed "
                  f"object: followed {100 * f['forced_instructed_followed']:.0f} %, onto another: followed "
                  f"{100 * f['forced_other_followed']:.0f} % (unforced, {100 * f['unforced_ends_at_that_other']:.0f} % "
                  "end there anyway)", flush=True)
    grid = test["size"] // 16
    report = {"command": "python benchmarks/grounding_probe.py " + " ".join(sys.argv[1:]), "split": args.split,
              "chance": chance(test, grid, GroundingConfig.sigma), "device": "cpu", "threads": torch.get_num_threads(),
              "runs": runs}
    print_table(report)
    write(report, args.out)


def print_table(report: dict) -> None:
    c, d = report["chance"]["object"], report["chance"]["destination"]
    pct = lambda r, suffix="": " / ".join(f"{100 * r[f'picks_instructed{suffix}{x}']:.0f}"  # noqa: E731
                                          for x in ("", "_before_contact", "_reach_start")) + " %"
    print("\n| variant | test CE, object / destination | location error [cells] | picks the instructed object: all / "
          "before contact / reach start | same, text from another window | finds another object by name |")
    print("|---|---|---|---|---|---|")
    print(f"| floor; centre guess; random object | {c['floor']:.2f} / {d['floor']:.2f} (uniform {c['uniform']:.2f}) | "
          f"{c['centre_error_cells']:.2f} / {d['centre_error_cells']:.2f} | "
          f"{100 * c['picks_instructed_at_random']:.0f} / {100 * c['picks_instructed_at_random_before_contact']:.0f} / "
          f"{100 * c['picks_instructed_at_random_reach_start']:.0f} % | | {100 * c['picks_other_at_random']:.0f} % |")
    for r in report["runs"]:
        f, s = r["final"], r["shuffled_text"]
        print(f"| {r['variant']} | {f['object']['ce']:.2f} / {f['destination']['ce']:.2f} | "
              f"{f['object']['error_cells']:.2f} / {f['destination']['error_cells']:.2f} | {pct(f['object'])} | "
              f"{pct(s['object'])} | {100 * f['object']['finds_named_other_object']:.0f} % |")
    print(f"({c['before_contact_samples']} test samples before contact, {c['reach_start_samples']} at the reach's start)")


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    main()
