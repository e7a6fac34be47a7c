"""How fast does the compact cerebrum learn *where* the instructed object is? Grounding-only training, per variant.

Trains only the backbone and the grounding head (``megohand.models.grounding``) of the compact TI policy on windows
of a synthetic store (``megohand synth --world grounded``), and reports on the test split (held-out shape / colour /
task combos): the grounding cross-entropy (its floor, the target's entropy, and a uniform guess beside it) and the
share of targets whose soft-argmax location lies within one token cell of the truth. Variants:

- ``late``: the image CNN never sees the text; the fusion transformer must match colour words to image tokens.
- ``film``: the CNN is conditioned on the sentence (``--model.backbone.film``, FiLM as in RT-1).

The control: the same model with the instruction taken from another window (``shuffled text``) must fall to chance,
or the head finds the object without reading the sentence (e.g. the only object of its shape).

    python benchmarks/grounding_probe.py --store runs/g300 --steps 600 --batch 32

writes ``benchmarks/results/grounding_probe.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from megohand.data.windows import WindowDataset
from megohand.models.config import GroundingConfig, compact
from megohand.models.grounding import TARGETS, expected_locations, gaussian_targets, grounding_loss
from megohand.models.policy import MEgoHandPolicy


def load(store: Path, split: str, n: int, size: int, seed: int) -> dict:
    """n random windows of ``split`` -> image uint8 (n, 3, S, S), text list, uv (n, 2, 2), valid (n, 2)."""
    from megohand.data.synthetic.facts import project

    ds = WindowDataset(store, split=split, image_size=size, window_scope="episode", stored_depth="none")
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    samples = [ds[int(i)] for i in idx]
    objects = []  # every object's centre in the model image, [0, 1] (NaN: behind the camera)
    for i, s in zip(idx, samples):
        facts = ds.facts(int(ds._ep[i]))
        objects.append((project(s["K"].numpy(), facts.centers[s["meta"]["k"]]) + 0.5) / size)
        if facts.target != 0:  # the instructed object first
            objects[-1][[0, facts.target]] = objects[-1][[facts.target, 0]]
    width = max(len(o) for o in objects)
    objects = [np.pad(o, ((0, width - len(o)), (0, 0)), constant_values=np.nan) for o in objects]
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "text": [s["instruction"] for s in samples],
        "uv": torch.stack([s["ground_uv"] for s in samples]),
        "valid": torch.stack([s["ground_valid"] for s in samples]),
        "objects": torch.from_numpy(np.stack(objects)).float(),  # (n, N, 2), the instructed one first
    }


def evaluate(policy: MEgoHandPolicy, data: dict, sigma: float, shuffle_text: bool, batch: int = 64) -> dict:
    """Per target on ``data`` (text rotated by one when shuffle_text): grounding CE, mean location error [cells];
    for the object, the share of samples whose predicted location is nearest the instructed object's centre."""
    policy.eval()
    texts = data["text"][1:] + data["text"][:1] if shuffle_text else data["text"]
    ce, err, n = torch.zeros(len(TARGETS)), torch.zeros(len(TARGETS)), torch.zeros(len(TARGETS))
    picked = n_picked = 0
    with torch.no_grad():
        for a in range(0, len(texts), batch):
            img, uv, valid, objects = (data[k][a:a + batch] for k in ("image", "uv", "valid", "objects"))
            text = policy.prepare_text(texts[a:a + batch], len(img))
            logits = policy.encode_tokens(img, text, ground=True)[-1]
            grid = int(round(logits.shape[1] ** 0.5))
            pred, _ = expected_locations(logits)  # (b, 2, 2)
            for j in range(len(TARGETS)):
                v = valid[:, j]
                ce[j] += grounding_loss(logits[:, :, j:j + 1], uv[:, j:j + 1], valid[:, j:j + 1], sigma) * v.sum()
                err[j] += ((pred[:, j] - uv[:, j]).norm(dim=-1) * grid)[v].sum()
                n[j] += v.sum()
            d = (objects - pred[:, :1]).norm(dim=-1).nan_to_num(float("inf"))  # (b, N)
            v = valid[:, 0]
            picked += int((d.argmin(-1) == 0)[v].sum())
            n_picked += int(v.sum())
    policy.train()
    out = {t: {"ce": float(ce[j] / n[j]), "error_cells": float(err[j] / n[j])} for j, t in enumerate(TARGETS)}
    out["object"]["picks_instructed"] = picked / max(n_picked, 1)
    return out


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
    n_objects = (~data["objects"][data["valid"][:, 0]].isnan().any(-1)).sum(-1).float()
    out["object"]["picks_instructed_at_random"] = float((1 / n_objects).mean())
    return out


def run(variant: str, train: dict, test: dict, args) -> dict:
    torch.manual_seed(args.seed)
    cfg = compact()
    cfg = cfg.__class__(**{**cfg.__dict__, "modalities": "TI", "grounding": GroundingConfig(weight=1.0, sigma=args.sigma),
                           "backbone": cfg.backbone.replace(image_size=args.image_size, film=variant == "film")})
    policy = MEgoHandPolicy(cfg)
    params = [p for n, p in policy.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        b = torch.from_numpy(rng.integers(0, len(train["text"]), args.batch))
        text = policy.prepare_text([train["text"][i] for i in b.tolist()], args.batch)
        logits = policy.encode_tokens(train["image"][b], text, ground=True)[-1]
        loss = grounding_loss(logits, train["uv"][b], train["valid"][b], args.sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            ev = evaluate(policy, test, args.sigma, shuffle_text=False)
            curve.append({"step": step, "train_ce": float(loss.detach()), "test": ev, "seconds": time.perf_counter() - t0})
            print(f"{variant:5s} step {step:5d}  train CE {float(loss.detach()):.3f}  test CE "
                  f"{ev['object']['ce']:.3f} / {ev['destination']['ce']:.3f}  error "
                  f"{ev['object']['error_cells']:.2f} / {ev['destination']['error_cells']:.2f} cells  picks "
                  f"{100 * ev['object']['picks_instructed']:.0f} %  ({curve[-1]['seconds']:.0f} s)", flush=True)
    return {"variant": variant, "curve": curve, "final": curve[-1]["test"],
            "shuffled_text": evaluate(policy, test, args.sigma, shuffle_text=True),
            "train_seconds": time.perf_counter() - t0, "parameters": sum(p.numel() for p in params)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", default=["late", "film"], choices=["late", "film"])
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
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "grounding_probe.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load(args.store, "train", args.train_samples, args.image_size, args.seed)
    test = load(args.store, "test", args.test_samples, args.image_size, args.seed + 1)
    grid = args.image_size // 16
    report = {"command": "python benchmarks/grounding_probe.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items() if k != "out"),
              "chance": chance(test, grid, args.sigma), "device": "cpu", "threads": torch.get_num_threads(),
              "runs": [run(v, train, test, args) for v in args.variants]}
    c = report["chance"]
    print("\n| variant | test CE, object / destination | location error [cells] | picks the instructed object "
          "| same, text from another window |")
    print("|---|---|---|---|---|")
    print(f"| floor; centre guess; random object | {c['object']['floor']:.2f} / {c['destination']['floor']:.2f} (uniform "
          f"{c['object']['uniform']:.2f}) | {c['object']['centre_error_cells']:.2f} / "
          f"{c['destination']['centre_error_cells']:.2f} | {100 * c['object']['picks_instructed_at_random']:.0f} % | |")
    for r in report["runs"]:
        f, s = r["final"], r["shuffled_text"]
        print(f"| {r['variant']} | {f['object']['ce']:.2f} / {f['destination']['ce']:.2f} | "
              f"{f['object']['error_cells']:.2f} / {f['destination']['error_cells']:.2f} | "
              f"{100 * f['object']['picks_instructed']:.0f} % | {100 * s['object']['picks_instructed']:.0f} % |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
