"""``megohand retarget train|apply``: the inverse-MANO retargeting network (joints -> MANO parameters)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro

from megohand.errors import check_input

ORDERS = Literal["mano", "openpose", "manopth", "fpha", "holoassist"]


@dataclass
class Train:
    """Train the network for a hand model (MANO from --mano-dir / $MANO_MODEL_DIR, else the bundled
    open hand, for which megohand already ships one) on sampled hands, optionally mixed with the
    ground-truth hands of a converted store. Writes OUT/config.json + OUT/model.safetensors."""

    out: Path
    """Output folder of the network."""
    steps: int = 18000
    """Training steps (the shipped open-hand network: 18000 x 512, about 10-15 min on 2 CPU cores)."""
    batch_size: int = 512
    """Hands per step."""
    hidden: int = 256
    """Width of the residual MLP."""
    blocks: int = 4
    """Residual blocks."""
    lr: float = 2e-3
    """Peak learning rate (one-cycle schedule)."""
    noise: float = 0.005
    """Input joint noise [m] (per-hand std ~ U(0, noise)): robustness to real joints off the hand model."""
    switch: float = 0.5
    """Fraction of the steps in stage 1 (shape and articulation), the rest stage 2 (wrist pose)."""
    mano_dir: Path | None = None
    """MANO folder (default $MANO_MODEL_DIR, else the bundled open hand)."""
    store: Path | None = None
    """Converted store whose ground-truth hands (train split) are mixed into half of every batch."""
    datasets: list[str] | None = None
    """Datasets of --store to use (default all)."""
    seed: int = 0
    """Random seed."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    device: str = "cpu"
    """cpu or cuda."""
    eval_hands: int = 256
    """Held-out hands for the final error report (0: skip)."""
    half: bool = False
    """Store float16 weights (half the size)."""
    overwrite: bool = False
    """Replace the network in a non-empty --out."""

    def run(self) -> None:
        import json

        import torch

        from megohand.hand import load_hand_model
        from megohand.hand.retarget import (
            RetargetConfig,
            Retargeter,
            evaluate,
            save_network,
            train_inverse_mano,
        )

        from megohand import io
        from megohand.errors import check, check_fraction, check_min

        check_min(1, steps=self.steps, batch_size=self.batch_size, hidden=self.hidden, blocks=self.blocks,
                  threads=self.threads)
        check_min(0, noise=self.noise, eval_hands=self.eval_hands)
        check(self.lr > 0, "--lr", self.lr, "a learning rate > 0")
        check_fraction(switch=self.switch)
        if self.store is not None:
            check_input(self.store, "--store", what="store")
        io.check_output_dir(self.out, self.overwrite)
        if self.threads:
            torch.set_num_threads(self.threads)
        hand = load_hand_model(self.mano_dir, device=self.device)
        extra = None
        if self.store is not None:
            extra = load_store_params(self.store, self.datasets)
            print(f"mixing {len(extra['betas'])} ground-truth hands from {self.store} into the batches")
        print(f"training for hand model {hand.name} ({hand.source})")
        net = train_inverse_mano(hand, RetargetConfig(hidden=self.hidden, blocks=self.blocks), steps=self.steps,
                                 batch_size=self.batch_size, lr=self.lr, switch=self.switch, seed=self.seed,
                                 extra_params=extra, noise=self.noise, progress=True)
        info = {"trained_by": "megohand retarget train", "steps": self.steps, "batch_size": self.batch_size,
                "lr": self.lr, "switch": self.switch, "seed": self.seed, "input_noise_m": self.noise,
                "store_frames": 0 if extra is None else len(extra["betas"])}
        if self.eval_hands > 0:
            ev = evaluate(Retargeter(net, mano_dir=self.mano_dir, device=self.device), n=self.eval_hands, seq_len=32)
            info["held_out"] = {k: round(v, 3) for k, v in ev.items() if k.startswith("joint_error")}
            print(f"held-out joint error: network {ev['joint_error_mm_network']:.2f} mm, "
                  f"refined ({ev['refine_steps']} steps) {ev['joint_error_mm_refined']:.2f} mm")
        net.config.info = info
        save_network(net, self.out, half=self.half)
        print(f"wrote {self.out} ({json.dumps(info)})")


@dataclass
class Apply:
    """Fit hand parameters to a joint sequence: network + per-sequence refinement (optionally with
    skeleton adaptation, --adapt). Writes global_orient (T,3), hand_pose (T,15,3) [rad], betas (T,10),
    transl (T,3) [m], valid (T,), fit_error_mm (T,) (mean joint error of the fit; NaN / null where
    the frame is not valid) and offsets (21,3) [m] (the adaptation's per-point offsets in bone frames,
    MANO21 order; zeros without --adapt)."""

    joints: Path
    """(T,J,3) joints: .npy, .npz (the array named --key, 'joints', or the only one) or .json (nested
    lists, or {"joints": ...}; null = missing). A missing joint (NaN) makes its frame invalid."""
    out: Path
    """Output .npz or .json."""
    model: Path | None = None
    """Network folder (default: the one shipped for the bundled open hand)."""
    order: ORDERS = "mano"
    """Joint order of the input (megohand.hand.joints)."""
    side: Literal["right", "left"] = "right"
    """Hand side."""
    unit: Literal["auto", "m", "cm", "mm"] = "auto"
    """Unit of the input (auto: from the hand size)."""
    refine_steps: int = 100
    """Refinement steps (0: network only)."""
    smooth: float = 1.0
    """Weight of the refinement's joint-acceleration term."""
    adapt: bool = False
    """Per-sequence skeleton adaptation: one offset per joint in its bone's frame, fitted with the
    shape over the sequence, for joints of another skeleton (sensors, trackers, image landmarks:
    knuckles and thumb base elsewhere, other bone lengths). Keeps betas plausible; fit_error_mm is
    then against the adapted skeleton (docs/retarget.md)."""
    mano_dir: Path | None = None
    """MANO folder (default $MANO_MODEL_DIR, else the bundled open hand)."""
    key: str | None = None
    """Array name inside an .npz input."""
    overwrite: bool = False
    """Replace an existing --out."""

    def run(self) -> None:
        from megohand.hand.retarget import Retargeter

        from megohand import io
        from megohand.errors import check, check_min

        check(self.out.suffix in (".npz", ".json"), "--out", str(self.out), "a file name ending in .npz or .json")
        check_min(0, refine_steps=self.refine_steps, smooth=self.smooth)
        if self.model is not None:
            check_input(self.model, "--model", what="retargeting network")
        io.check_output_file(self.out, self.overwrite)
        J = read_joints(self.joints, self.key)
        try:
            r = Retargeter.from_pretrained(self.model, mano_dir=self.mano_dir, refine_steps=self.refine_steps,
                                           smooth=self.smooth, adapt=self.adapt)
            res = r.fit_sequence(J, order=self.order, side=self.side, unit=self.unit)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(str(e)) from None
        err_mm = res["fit_error_mm"]
        meta = {"hand_model": r.hands[self.side].name, "side": self.side, "order": self.order,
                "input": str(self.joints), "refine_steps": self.refine_steps, "adapt": self.adapt}
        write_params(self.out, res, meta)
        v = res["valid"]
        msg = f"{v.sum()}/{len(v)} valid frames"
        if v.any():
            msg += f", joint error mean {err_mm[v].mean():.2f} mm, max {err_mm[v].max():.2f} mm"
        print(f"wrote {self.out}: {msg}")


@tyro.conf.configure(tyro.conf.OmitSubcommandPrefixes)
@dataclass
class Retarget:
    """Inverse-MANO retargeting network (joints -> MANO parameters): train it, or apply it to joints."""

    cmd: Annotated[
        Union[Annotated[Train, tyro.conf.subcommand("train")], Annotated[Apply, tyro.conf.subcommand("apply")]],
        tyro.conf.arg(name=""),
    ]

    def run(self) -> None:
        self.cmd.run()


def read_joints(path: Path, key: str | None = None):
    """(T,J,3) float64 joints from .npy / .npz / .json (a single (J,3) frame becomes T = 1)."""
    import json

    import numpy as np

    check_input(path, "--joints", kind="file", what="joints")
    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.keys())
                name = key or ("joints" if "joints" in names else names[0] if len(names) == 1 else None)
                if name not in names:
                    raise SystemExit(f"{path}: choose the joints array with --key (arrays: {names})")
                a = z[name]
        elif path.suffix == ".json":
            d = json.loads(path.read_text())
            d = d.get("joints") if isinstance(d, dict) else d
            a = np.array([[[np.nan if c is None else c for c in j] for j in f] for f in d], dtype=np.float64)
        else:
            raise SystemExit(f"{path}: joints must be .npy, .npz or .json")
    except SystemExit:
        raise
    except (ValueError, TypeError, OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: cannot read joints ({e})") from None
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise SystemExit(f"{path}: joints must be (T,J,3), got {a.shape}")
    return a


def write_params(path: Path, res: dict, meta: dict) -> None:
    """Atomic write of the fitted parameters as .npz (arrays + meta_json) or .json (lists, NaN -> null)."""
    import json

    import numpy as np

    from megohand import io

    if path.suffix == ".npz":
        with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **res, meta_json=np.array(json.dumps(meta)))
    else:
        def clean(a):
            a = np.asarray(a)
            if a.dtype == bool:
                return a.tolist()
            return np.where(np.isfinite(a), a, None).tolist()

        io.write_json(path, {**meta, **{k: clean(v) for k, v in res.items()}}, indent=None)


def load_store_params(root, datasets: list[str] | None = None, split: str = "train", max_frames: int = 200_000,
                      seed: int = 0) -> dict:
    """Canonical hand params of a converted store (valid frames of ``gt`` episodes only, never
    retargeted ones), both sides, left hands mirrored into right-hand params (axis-angle (x, -y, -z)).
    At most ``max_frames`` frames, drawn at random. Returns dict of float32 tensors as
    :func:`megohand.hand.retarget.sample_params`. (Here, not in ``hand``: the hand package knows no datasets.)"""
    import numpy as np
    import torch

    from megohand.data.store import Store

    store = Store(root)
    chunks = {k: [] for k in ("global_orient", "hand_pose", "betas", "transl")}
    flip = np.array([1.0, -1.0, -1.0], np.float32)  # axis-angle under x -> -x
    mirror = np.array([-1.0, 1.0, 1.0], np.float32)  # positions under x -> -x
    for ref in store.episodes(datasets, split=split):
        ep = store.open(ref)
        if ep.meta.hand_source != "gt":
            continue
        for side in ep.store_info.get("sides", ("right", "left")):
            h = ep.hands(side)
            v = h["valid"]
            if not v.any():
                continue
            s = flip if side == "left" else np.ones(3, np.float32)
            chunks["global_orient"].append(h["global_orient"][v] * s)
            chunks["hand_pose"].append(h["hand_pose"][v] * s)
            chunks["betas"].append(h["betas"][v])
            chunks["transl"].append(h["transl"][v] * (mirror if side == "left" else 1.0))
    if not chunks["betas"]:
        raise ValueError(f"store {root}: no valid ground-truth hands in split {split!r}"
                         + (f" of datasets {datasets}" if datasets else ""))
    out = {k: np.concatenate(v) for k, v in chunks.items()}
    n = len(out["betas"])
    if n > max_frames:
        keep = np.random.default_rng(seed).choice(n, max_frames, replace=False)
        out = {k: v[keep] for k, v in out.items()}
    return {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32) for k, v in out.items()}
