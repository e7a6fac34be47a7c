"""Evaluation of chunk policies on a store's test split (protocols: docs/metrics.md, docs/inference.md).

Two protocols, both on the right hand in the camera frame:

* ``window`` (primary): every ``window_stride`` frames k of an episode, the policy gets the
  **ground-truth** state h_k and frame k; its **raw** chunk (frames k+1..k+L) is compared with GT.
  Frame k itself (the given state) is excluded. Windows need h_k valid and all L future frames inside
  the episode; invalid future frames are masked out.
* ``rollout`` (secondary): closed loop from a GT initial state over ``rollout_frames`` frames (or the
  episode), querying every ``stride`` frames, with TOF and without (raw latest chunk); the initial
  frame is excluded. The rollout starts at the episode's frame 1 so that the constant-velocity
  baseline can see one frame of GT history (frame 0); every method starts from the same state.

Averages: metrics are pooled over the valid frames of one dataset (every window weighs the same);
a group (in-domain, cross-domain, synthetic, ...) is the unweighted mean of its dataset means, as
the paper's in-domain column is the mean of its five datasets.

Methods are given as factories ``make(prev_state, stride) -> Policy`` because the constant-velocity
baseline needs the GT state one frame before its first query (``prev_state`` (B, 109), NaN rows where
unknown) and the query stride; the model and the static baseline ignore both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from megohand.hand.vector import HandParams, decode_chunk, params_to_state, state_to_params
from megohand.inference.baselines import ConstantVelocityPolicy, StaticPolicy
from megohand.inference.rollout import Policy, rollout

PolicyFactory = Callable[["torch.Tensor | None", int], Policy]

# dataset groups of the paper (names lower-cased, aliases allowed); anything else is its own group
GROUPS: dict[str, tuple[str, ...]] = {
    "in-domain": ("taco", "hoi4d", "h2o", "hot3d", "oakink2"),
    "cross-domain": ("arctic", "holo", "holoassist"),
    "synthetic": ("synthetic", "synth"),
    "fpha (train-only labels)": ("fpha",),
}

METRIC_KEYS = (
    "mpjpe_cm",
    "mpjpe_pa_cm",
    "mpve_cm",
    "mpve_pa_cm",
    "mwte_cm",
    "mre_rad",
    "accel_error_m_s2",
    "jitter_m_s3",
)


def group_of(dataset: str) -> str:
    """The paper group of a dataset name ('in-domain', 'cross-domain', 'synthetic', or the name itself)."""
    d = dataset.lower()
    for g, names in GROUPS.items():
        if d in names or d.split("-")[0] in names:
            return g
    return d


def baseline_factories(horizon: int) -> dict[str, PolicyFactory]:
    """The two model-free baselines at chunk length ``horizon``."""
    return {
        "static": lambda prev, stride: StaticPolicy(horizon),
        "const-vel": lambda prev, stride: ConstantVelocityPolicy(horizon, prev_state=prev, stride=stride),
    }


@dataclass
class EvalConfig:
    """Protocol knobs (saved in the result JSON)."""

    horizon: int = 16
    """L, frames per chunk (the model's horizon)."""
    window_stride: int = 16
    """Frames between window starts (16 = non-overlapping windows)."""
    rollout_frames: int = 64
    """Frames generated per closed-loop rollout (capped by the episode length; 0 = skip rollouts)."""
    stride: int = 1
    """Query stride s of the closed-loop rollouts."""
    steps: int | None = None
    """Euler steps K (None = the model's default)."""
    noise_scale: float | None = None
    """Initial-noise scale of the model's sampler (None = the checkpoint's, 1 unless it says otherwise; 0 = the
    deterministic path from the noise mean). Applied where the model is loaded (``load_policy``)."""
    batch_size: int = 16
    """Windows per policy call."""
    max_episodes: int = 0
    """Episodes per dataset (0 = all)."""
    seed: int = 0
    """Seed of the policy noise."""


@dataclass
class EpisodeData:
    """One test episode, right hand: states (T, 109) float32, valid (T,) bool, frames on demand."""

    dataset: str
    episode: str
    fps: float
    states: torch.Tensor
    valid: torch.Tensor
    episode_obj: object  # megohand.data.store.Episode (rgb(k), depth(k))
    instruction: str = ""
    segments: tuple = ()  # ((start, end, text), ...)

    def text_at(self, k: int) -> str:
        """The segment text covering frame k, else the episode instruction."""
        for s, e, text in self.segments:
            if s <= k < e and text:
                return text
        return self.instruction

    def observe(self, ks: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frames ks -> image uint8 (N,3,H,W), depth (N,1,H,W) [m] or None."""
        ep = self.episode_obj
        img = torch.from_numpy(np.stack([np.asarray(ep.rgb(k)) for k in ks])).permute(0, 3, 1, 2).contiguous()
        depths = [ep.depth(k) for k in ks]
        if any(d is None for d in depths):
            return img, None
        return img, torch.from_numpy(np.stack(depths)).float().unsqueeze(1)


def load_episode(store, dataset: str, episode: str, side: str = "right") -> EpisodeData:
    """Read one episode's hand states from a :class:`megohand.data.store.Store`."""
    ep = store.open(dataset, episode)
    h = ep.hands(side)
    p = HandParams(*(torch.tensor(np.asarray(h[k], dtype=np.float32)) for k in ("global_orient", "hand_pose", "betas", "transl")))
    valid = torch.as_tensor(np.asarray(h["valid"]), dtype=torch.bool)
    states = params_to_state(p)
    finite = torch.isfinite(states).all(-1)
    states = torch.where(finite[:, None], states, torch.zeros_like(states))
    m = ep.meta
    segs = tuple((int(a), int(b), str(t)) for a, b, t in (m.segments or ()))
    return EpisodeData(dataset, episode, float(m.fps), states, valid & finite, ep, m.instruction, segs)


def _uses_obs(policy) -> bool:
    return not isinstance(policy, (StaticPolicy, ConstantVelocityPolicy))


class _Pool:
    """Collects (pred, gt, mask) per (protocol, method, dataset) and reduces with hand_metrics."""

    def __init__(self, hand):
        self.hand = hand
        self.parts: dict[tuple, list] = defaultdict(list)

    def add(self, key: tuple, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, fps: float) -> None:
        """pred, gt: (N, T, 109) states; mask (N, T) bool."""
        from megohand.metrics import hand_metrics

        if not bool(mask.any()):
            return
        m = hand_metrics(state_to_params(pred.double()), state_to_params(gt.double()), self.hand, fps, mask)
        self.parts[key].append((m, int(mask.sum())))

    def reduce(self) -> dict:
        """-> {protocol: {method: {dataset: {metric: value, 'frames': n}}}}."""
        out: dict = {}
        for (proto, method, dataset), parts in sorted(self.parts.items()):
            w = np.array([n for _, n in parts], dtype=np.float64)
            res = {}
            for k in parts[0][0]:
                v = np.array([m[k] for m, _ in parts], dtype=np.float64)
                ok = np.isfinite(v)
                res[k] = float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else math.nan
            res["frames"] = int(w.sum())
            out.setdefault(proto, {}).setdefault(method, {})[dataset] = res
        return out


def _window_eval(pool: _Pool, ep: EpisodeData, methods: dict[str, PolicyFactory], cfg: EvalConfig, gen) -> int:
    L, T = cfg.horizon, ep.states.shape[0]
    starts = [k for k in range(0, T - L, cfg.window_stride) if bool(ep.valid[k])]
    for i in range(0, len(starts), cfg.batch_size):
        ks = starts[i : i + cfg.batch_size]
        idx = torch.tensor(ks)
        state = ep.states[idx]
        fut = torch.stack([ep.states[k + 1 : k + 1 + L] for k in ks])
        mask = torch.stack([ep.valid[k + 1 : k + 1 + L] for k in ks])
        prev = torch.stack([ep.states[k - 1] if k > 0 and ep.valid[k - 1] else torch.full_like(ep.states[0], math.nan) for k in ks])
        obs = None
        for name, make in methods.items():
            policy = make(prev, 1)
            if _uses_obs(policy):
                obs = obs or ep.observe(ks)
                image, depth = obs
            else:
                image, depth = None, None
            a = policy.predict_chunk(image, [ep.text_at(k) for k in ks], state, depth, **_kw(cfg, gen))
            pred = decode_chunk(state, a.to(state.dtype)[:, :L])
            pool.add(("window", name, ep.dataset), pred, fut, mask, ep.fps)
    return len(starts)


def _kw(cfg: EvalConfig, gen) -> dict:
    return {"generator": gen} if cfg.steps is None else {"steps": cfg.steps, "generator": gen}


def _rollout_eval(pool: _Pool, eps: list[EpisodeData], methods: dict[str, PolicyFactory], cfg: EvalConfig, gen) -> None:
    """Closed-loop rollouts of a batch of episodes with equal image size (cropped to a common length).

    The rollout starts at the episode's frame 1 from its GT state; frame 0 serves only as the
    one-frame history of the constant-velocity baseline (NaN where invalid).
    """
    T = min(cfg.rollout_frames, *(e.states.shape[0] - 2 for e in eps))
    if T < 1:
        return
    init = torch.stack([e.states[1] for e in eps])
    gt = torch.stack([e.states[1 : T + 2] for e in eps])
    mask = torch.stack([e.valid[1 : T + 2] for e in eps])[:, 1:]
    prev = torch.stack([e.states[0] if e.valid[0] else torch.full_like(e.states[0], math.nan) for e in eps])
    for name, make in methods.items():
        for tof in (True, False):
            policy = make(prev, cfg.stride)
            if _uses_obs(policy):

                def observe(k):
                    obs = [e.observe([k + 1]) for e in eps]
                    img = torch.cat([o[0] for o in obs])
                    dep = None if any(o[1] is None for o in obs) else torch.cat([o[1] for o in obs])
                    return img, dep

            else:

                def observe(k):
                    return None, None

            kw = {} if cfg.steps is None else {"steps": cfg.steps}
            res = rollout(policy, observe, lambda k: [e.text_at(k + 1) for e in eps], init, T, stride=cfg.stride, tof=tof, generator=gen, **kw)
            proto = "rollout-tof" if tof else "rollout-raw"
            pool.add((proto, name, eps[0].dataset), res.states[:, 1:], gt[:, 1:], mask, eps[0].fps)


def evaluate_store(store, methods: dict[str, PolicyFactory], hand, cfg: EvalConfig, log=print,
                   progress: bool = False) -> dict:
    """Evaluate every method on the test split of ``store`` (a :class:`megohand.data.store.Store`);
    ``progress``: a progress bar over episodes (each counted once for its windows, once for its rollout).

    Returns a JSON-able dict: ``config``, ``datasets`` (per dataset: group, episodes, windows),
    ``results[protocol][method][dataset or group] = {metric: value}``.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    pool = _Pool(hand)
    info: dict = {}
    by_ds: dict[str, list] = defaultdict(list)
    for ref in store.episodes(split="test"):
        by_ds[ref.dataset].append(ref)
    if not by_ds:
        raise ValueError(f"{getattr(store, 'root', store)}: no test episodes (split='test') in this store")
    from tqdm import tqdm

    n_eps = sum(min(len(r), cfg.max_episodes or len(r)) for r in by_ds.values())
    bar = tqdm(total=n_eps * (2 if cfg.rollout_frames > 0 else 1), desc="eval", unit="ep", disable=not progress)
    for dataset, refs in sorted(by_ds.items()):
        refs = refs[: cfg.max_episodes] if cfg.max_episodes else refs
        eps, windows = [], 0
        for ref in refs:
            ep = load_episode(store, dataset, ref.episode)
            windows += _window_eval(pool, ep, methods, cfg, gen)
            eps.append(ep)
            bar.update(1)
        if cfg.rollout_frames > 0:
            by_size = defaultdict(list)
            for ep in eps:
                if bool(ep.valid[1]):
                    m = ep.episode_obj.meta
                    by_size[(m.width, m.height, round(ep.fps, 3))].append(ep)
            for batch in by_size.values():
                for i in range(0, len(batch), cfg.batch_size):
                    _rollout_eval(pool, batch[i : i + cfg.batch_size], methods, cfg, gen)
                    bar.update(len(batch[i : i + cfg.batch_size]))
            bar.update(len(eps) - sum(len(b) for b in by_size.values()))  # episodes too short to roll out
        info[dataset] = {"group": group_of(dataset), "episodes": len(eps), "windows": windows}
        log(f"{dataset}: {len(eps)} episodes, {windows} windows")
    bar.close()
    results = pool.reduce()
    for proto in results.values():
        for per_ds in proto.values():
            groups = defaultdict(list)
            for ds, res in list(per_ds.items()):
                groups[group_of(ds)].append(res)
            for g, rs in groups.items():
                per_ds[f"[{g}]"] = {
                    k: float(np.nanmean([r[k] for r in rs])) if k != "frames" else int(sum(r[k] for r in rs))
                    for k in rs[0]
                }
    return {"config": asdict(cfg), "methods": list(methods), "datasets": info, "results": results}
