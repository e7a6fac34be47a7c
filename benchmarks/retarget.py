"""Inverse-MANO retargeting: joint reconstruction error and speed (network, network + refinement).

* **Error** [mm]: held-out hands of the hand model (smooth sequences from
  ``megohand.hand.retarget.sample_sequences`` with another seed than training; joints from the full
  hand layer), fitted by the network alone and after ``--refine-steps`` of per-sequence refinement;
  mean / median / p95 / max of the per-frame mean joint error, right hands, mirrored left hands, and
  right hands on other skeletons (every bone scaled by U(0.9, 1.1) per sequence, as real joints are
  never the model's; the error is then against those joints and cannot reach 0).
* **Foreign skeletons** [mm]: the same held-out hands as another skeleton reports them
  (``megohand.hand.retarget.foreign_skeleton``: bones +-10 %, knuckles 15-25 mm closer to the wrist, the
  thumb base moved 20 mm, 2 mm noise), fitted by the network, the refinement, and the refinement with
  per-sequence skeleton adaptation: mean joint error against the noise-free foreign points (of the
  adapted skeleton where adapted) and against the noisy ones, the hand model's own joints against the
  hand that made the sequence, the largest |beta|. Goal: <= 3 mm after adaptation, every beta within +-3.
* **Speed** [hands/s]: the network (``Retargeter.predict``) at several batch sizes, and network +
  refinement of one sequence of T frames (``predict`` + ``refine``) at several T. Best of
  interleaved timing blocks (other load only ever adds time).

Usage::

    python benchmarks/retarget.py --device cpu --threads 2
    python benchmarks/retarget.py --device cuda

Prints tables and writes ``benchmarks/results/retarget_<device>.json`` (atomic).
"""

from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from results_io import write_json  # benchmarks/results_io.py
from timing import bench_device, time_impls  # benchmarks/timing.py


def errors(r, hands: int, seq_len: int, refine_steps: int, side: str, seed: int, bone_jitter: float = 0.0) -> dict:
    """Per-frame mean joint errors [mm] of the network and of the refinement on held-out sequences;
    ``bone_jitter`` > 0: every bone of each sequence scaled by U(1 - j, 1 + j) (error against those joints)."""
    from megohand.hand.retarget import sample_sequences, scale_bones

    n_seq = max(1, hands // seq_len)
    seqs = sample_sequences(r.hands["right"], n_seq, seq_len, torch.Generator().manual_seed(seed))
    if side == "left":  # mirror right-hand params into left-hand ones: axis-angle (x, -y, -z)
        s = torch.tensor([1.0, -1.0, -1.0])
        seqs = {**seqs, "global_orient": seqs["global_orient"] * s, "hand_pose": seqs["hand_pose"] * s}
    hand = r.hands[side]
    e_net, e_ref = [], []
    for i in range(n_seq):
        p = {k: v[i].to(r.device, r.dtype) for k, v in seqs.items()}
        with torch.no_grad():
            J = hand(p["global_orient"], p["hand_pose"], p["betas"], p["transl"]).joints
        if bone_jitter > 0:
            g = torch.Generator().manual_seed(seed + i)
            J = scale_bones(J, (1 + bone_jitter * (2 * torch.rand(21, generator=g) - 1)).to(J))
        a = r.predict(J, side)
        b = r.refine(a, J, side=side, steps=refine_steps)
        for out, q in ((e_net, a), (e_ref, b)):
            with torch.no_grad():
                Q = hand(q["global_orient"], q["hand_pose"], q["betas"], q["transl"]).joints
            out.append(((Q - J).norm(dim=-1).mean(-1) * 1000).cpu().numpy())

    def stats(x):
        x = np.concatenate(x)
        return dict(mean=float(x.mean()), median=float(np.median(x)), p95=float(np.percentile(x, 95)),
                    max=float(x.max()))

    return dict(side=side, bone_jitter=bone_jitter, hands=n_seq * seq_len, seq_len=seq_len, network=stats(e_net),
                refined=stats(e_ref), refine_steps=refine_steps)


def foreign_errors(r, sequences: int, seq_len: int, refine_steps: int, seed: int) -> dict:
    """Fits of foreign skeletons (module docstring): per fit (network, refined, adapted) the mean over
    sequences of the mean joint error [mm] against the clean and the observed foreign points, of the hand
    model's joints against the true hand's, and the largest |beta| of any sequence."""
    from megohand.hand.retarget import foreign_skeleton, sample_sequences

    seqs = sample_sequences(r.hands["right"], sequences, seq_len, torch.Generator().manual_seed(seed))
    hand = r.hands["right"]
    rows = {name: [] for name in ("network", "refined", "adapted")}
    for i in range(sequences):
        p = {k: v[i].to(r.device, r.dtype) for k, v in seqs.items()}
        with torch.no_grad():
            J = hand(p["global_orient"], p["hand_pose"], p["betas"], p["transl"]).joints
        seen, clean = foreign_skeleton(J, torch.Generator().manual_seed(seed + 1000 + i))
        a = r.predict(seen)
        fits = {"network": a, "refined": r.refine(a, seen, steps=refine_steps, adapt=False),
                "adapted": r.refine(a, seen, steps=refine_steps, adapt=True)}
        for name, q in fits.items():
            with torch.no_grad():
                fitted = r.joints(q)  # with the adaptation's offsets where adapted
                own = hand(q["global_orient"], q["hand_pose"], q["betas"], q["transl"]).joints
            mm = lambda x, y: float((x - y).norm(dim=-1).mean()) * 1000  # noqa: E731
            rows[name].append((mm(fitted, clean), mm(fitted, seen), mm(own, J), float(q["betas"].abs().max()),
                               float(q.get("offsets", torch.zeros(21, 3)).norm(dim=-1).mean()) * 1000))
    out = {}
    for name, v in rows.items():
        v = np.asarray(v)
        out[name] = dict(to_clean_mm=float(v[:, 0].mean()), to_observed_mm=float(v[:, 1].mean()),
                         hand_vs_true_mm=float(v[:, 2].mean()), max_abs_beta=float(v[:, 3].max()),
                         mean_offset_mm=float(v[:, 4].mean()))
    return dict(sequences=sequences, seq_len=seq_len, refine_steps=refine_steps, seed=seed, fits=out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--model", type=Path, default=None, help="network folder (default: the shipped open-hand one)")
    ap.add_argument("--mano-dir", type=Path, default=None, help="default $MANO_MODEL_DIR, else the open hand")
    ap.add_argument("--hands", type=int, default=1024, help="held-out hands for the error")
    ap.add_argument("--seq-len", type=int, default=32, help="frames per held-out sequence")
    ap.add_argument("--refine-steps", type=int, default=100)
    ap.add_argument("--bone-jitter", type=float, default=0.1,
                    help="also fit other skeletons: bones scaled by U(1-j, 1+j) per sequence (0: skip)")
    ap.add_argument("--foreign", type=int, default=32, help="foreign-skeleton sequences to fit (0: skip)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 1024, 8192], help="network batch sizes")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[32, 128, 512], help="frames per refined sequence")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per row")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--note", default="", help="free text stored in the JSON")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/retarget_<device>.json")
    args = ap.parse_args(argv)

    from megohand.hand.retarget import PRETRAINED_DIR, Retargeter, sample_sequences

    device = bench_device(args.device, args.threads)
    r = Retargeter.from_pretrained(args.model, mano_dir=args.mano_dir, refine_steps=args.refine_steps, device=device)
    model_dir = args.model or PRETRAINED_DIR

    print(f"{'side':6} {'bones':>6} {'fit':10} {'mean mm':>8} {'median':>8} {'p95':>8} {'max':>8}")
    err = []
    for side, jitter in (("right", 0.0), ("left", 0.0), ("right", args.bone_jitter)):
        if side == "right" and jitter == 0.0 and err:
            continue
        e = errors(r, args.hands, args.seq_len, args.refine_steps, side, seed=123, bone_jitter=jitter)
        err.append(e)
        for name in ("network", "refined"):
            s = e[name]
            label = name if name == "network" else f"+{args.refine_steps} ref"
            bones = "model" if jitter == 0 else f"+-{jitter:.0%}"
            print(f"{side:6} {bones:>6} {label:10} {s['mean']:8.3f} {s['median']:8.3f} {s['p95']:8.3f} {s['max']:8.3f}",
                  flush=True)

    foreign = None
    if args.foreign > 0:
        foreign = foreign_errors(r, args.foreign, args.seq_len, args.refine_steps, seed=123)
        print(f"\nforeign skeletons ({args.foreign} sequences): {'fit':9} {'to clean':>9} {'to noisy':>9} "
              f"{'hand vs true':>12} {'max |beta|':>10} {'offsets':>8}")
        for name, f in foreign["fits"].items():
            print(f"{'':34}{name:9} {f['to_clean_mm']:9.2f} {f['to_observed_mm']:9.2f} {f['hand_vs_true_mm']:12.2f} "
                  f"{f['max_abs_beta']:10.2f} {f['mean_offset_mm']:8.1f}", flush=True)

    rows = []
    pool = sample_sequences(r.hands["right"], 1, max(args.batches + args.seq_lens), torch.Generator().manual_seed(7))
    with torch.no_grad():
        J_all = r.hands["right"](*(pool[k][0].to(device) for k in ("global_orient", "hand_pose", "betas", "transl")))
        J_all = J_all.joints
    print(f"\n{'device':6} {'what':22} {'hands':>7} {'ms/call':>10} {'hands/s':>12}")
    for B in args.batches:
        J = J_all[:B].contiguous()
        sec = time_impls({"net": lambda: r.predict(J)}, device, args.min_time)["net"]
        rows.append(dict(what="network", batch=B, ms_per_call=sec * 1e3, hands_per_s=B / sec))
        print(f"{device.type:6} {'network':22} {B:7d} {sec * 1e3:10.3f} {B / sec:12.0f}", flush=True)
    for T in args.seq_lens:
        J = J_all[:T].contiguous()
        fit = lambda: r.refine(r.predict(J), J, steps=args.refine_steps)  # noqa: E731
        sec = time_impls({"fit": fit}, device, args.min_time, rounds=2)["fit"]
        what = f"network+{args.refine_steps} refine"
        rows.append(dict(what=what, batch=T, ms_per_call=sec * 1e3, hands_per_s=T / sec))
        print(f"{device.type:6} {what:22} {T:7d} {sec * 1e3:10.3f} {T / sec:12.0f}", flush=True)

    cfg = r.net.config
    result = dict(
        benchmark="retarget",
        device=device.type,
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or platform.machine()),
        torch=torch.__version__,
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        dtype="float32",
        model=str(model_dir),
        network=dict(hidden=cfg.hidden, blocks=cfg.blocks, canonical=cfg.canonical,
                     parameters=sum(p.numel() for p in r.net.parameters()), trained=cfg.info),
        hand_model=r.hands["right"].name,
        held_out="megohand.hand.retarget.sample_sequences(seed=123): smooth sequences, joints of the full hand layer",
        refine=dict(steps=args.refine_steps, smooth=r.smooth, smooth_start=r.smooth_start, lr=r.lr),
        timing="best of interleaved ~10 ms blocks; refinement rows: one sequence of `batch` frames per call",
        min_time_s=args.min_time,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        note=args.note,
        errors_mm=err,
        foreign_skeletons=foreign,
        rows=rows,
    )
    out = args.out or Path(__file__).parent / "results" / f"retarget_{device.type}.json"
    write_json(result, out)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
