"""Evaluation of chunk policies on a store's test split, or its val split to choose inference settings (protocols:
docs/metrics.md, docs/inference.md).

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
from typing import Callable, Literal

import numpy as np
import torch

from megohand.data.cache import BytesLRU
from megohand.data.windows import window_text
from megohand.errors import UserError
from megohand.hand.vector import decode_chunk, state_to_params
from megohand.inference.baselines import ConstantVelocityPolicy, StaticPolicy
from megohand.inference.rollout import Policy, rollout, text_context

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
    tof_decay: float = 0.0
    """TOF weight exp(-d * i) of the estimate i frames into its chunk: newer queries count more (0 = the paper's
    uniform mean; ``megohand.inference.tof``)."""
    steps: int | None = None
    """Euler steps K (None = the model's default)."""
    noise_scale: float | None = None
    """Initial-noise scale of the model's sampler (None = the checkpoint's, 1 unless it says otherwise; 0 = the
    deterministic path from the noise mean). Applied where the model is loaded (``load_policy``)."""
    text_guidance: float | None = None
    """Classifier-free guidance w on the instruction (None = the checkpoint's, 1 = none; ``FlowConfig.text_guidance``).
    Applied where the model is loaded (``load_policy``)."""
    ground_guidance: float | None = None
    """Guidance w on the grounded state of a policy trained with ``--model.grounding.state`` (None = the checkpoint's,
    1 = none; ``FlowConfig.ground_guidance``). Applied where the model is loaded (``load_policy``)."""
    batch_size: int = 16
    """Windows per policy call."""
    max_episodes: int = 0
    """Episodes per dataset (0 = all)."""
    seed: int = 0
    """Seed of the policy noise (each query batch draws from its own seeded generator, so every input condition of
    one batch gets the same noise)."""
    frame_cache_mb: int = 2048
    """Decoded frames kept in memory across methods and conditions [MiB] (0: decode every time)."""
    image_size: int | None = None
    """Input size S of the models evaluated: frames come from each episode's training-size copy that fits S
    (docs/data_format.md), else the stored frames; None: the stored frames (`megohand eval` sets the checkpoint's)."""
    reliance: tuple[str, ...] = ("rgb", "depth", "text")
    """Input-reliance rows: the model again with its RGB, depth or text taken from another test episode (a fixed
    derangement), windows and TOF rollouts; () = none."""
    split: Literal["test", "val"] = "test"
    """Store split to evaluate: test for the figures you report, val to choose inference settings (noise scale,
    query stride, Euler steps) without looking at the test episodes."""


@dataclass
class EpisodeData:
    """One test episode, right hand: states (T, 109) float32, valid (T,) bool, frames on demand; ``facts`` the
    scene facts of a synthetic episode (``megohand.data.synthetic.facts``) or None."""

    dataset: str
    episode: str
    fps: float
    states: torch.Tensor
    valid: torch.Tensor
    episode_obj: object  # megohand.data.store.Episode (rgb(k), depth(k))
    instruction: str = ""
    segments: tuple = ()  # ((start, end, text), ...)
    facts: object = None

    @property
    def num_frames(self) -> int:
        return self.states.shape[0]

    def text_at(self, k: int, context: str = "segment") -> str:
        """The text a policy reads at frame k (``megohand.data.windows.window_text``): the segment text covering
        frame k, else the episode instruction; ``context="task+segment"``: the instruction, then that."""
        segment = next((text for s, e, text in self.segments if s <= k < e and text), "")
        return window_text(segment, self.instruction, context)

    frames: "FrameCache | None" = None  # decoded frames shared by every method and condition
    frame_set: object = None  # the episode's FrameSet to read (a training-size copy), None: the stored frames

    def frame(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame k decoded: rgb uint8 (H, W, 3), depth float (H, W) [m] or None (through ``frames`` when set)."""
        key = (self.dataset, self.episode, k)
        hit = None if self.frames is None else self.frames.get(key)
        if hit is None:
            ep = self.episode_obj
            hit = (np.asarray(ep.rgb(k, self.frame_set)), ep.depth(k, self.frame_set))
            if self.frames is not None:
                self.frames.put(key, hit)
        return hit

    def observe(self, ks: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frames ks (clamped to the episode) -> image uint8 (N,3,H,W), depth (N,1,H,W) [m] or None."""
        frames = [self.frame(min(max(int(k), 0), self.num_frames - 1)) for k in ks]
        img = torch.from_numpy(np.stack([f[0] for f in frames])).permute(0, 3, 1, 2).contiguous()
        if any(f[1] is None for f in frames):
            return img, None
        return img, torch.from_numpy(np.stack([f[1] for f in frames])).float().unsqueeze(1)


class FrameCache(BytesLRU):
    """Decoded frames (image, depth or None), least recently used first out, up to ``max_bytes``: an evaluation reads
    the same frames for every method and every input-reliance condition, and decoding them again cost more than the
    models on a GPU."""

    def __init__(self, max_bytes: int = 2 << 30):
        super().__init__(max_bytes)


def load_episode(store, dataset: str, episode: str, side: str = "right") -> EpisodeData:
    """Read one episode's hand states from a :class:`megohand.data.store.Store`."""
    from megohand.data.synthetic.facts import scene_facts
    from megohand.data.windows import episode_states

    ep = store.open(dataset, episode)
    states = episode_states(ep, side)
    finite = torch.isfinite(states).all(-1)
    states = torch.where(finite[:, None], states, torch.zeros_like(states))
    valid = torch.as_tensor(np.asarray(ep.hands(side)["valid"]), dtype=torch.bool) & finite
    m = ep.meta
    segs = tuple((int(a), int(b), str(t)) for a, b, t in (m.segments or ()))
    facts = scene_facts(m.extra, ep.T_cam_from_world)
    return EpisodeData(dataset, episode, float(m.fps), states, valid, ep, m.instruction, segs, facts)


# ---------------------------------------------------------------- input reliance

RELIANCE = {
    "rgb": "RGB from another episode",
    "depth": "depth from another episode",
    "text": "text from another episode",
}
"""Input-reliance conditions: the model's input of that kind comes from another test episode (same frame index,
clamped; a fixed derangement of the dataset's episodes of equal image size), everything else and the noise unchanged."""


def reliance_name(method: str, swap: str) -> str:
    """Result key of ``method`` under the input swap ``swap`` (a key of RELIANCE)."""
    return f"{method} · {RELIANCE[swap]}"


def derangement(eps: list[EpisodeData]) -> list[int | None]:
    """Partner index of every episode: the next episode of equal image size (cyclic), None when it has none."""
    groups: dict = defaultdict(list)
    for i, e in enumerate(eps):
        fs = getattr(e, "frame_set", None) or e.episode_obj.meta  # the frames read: a copy's or the stored size
        groups[(fs.width, fs.height)].append(i)
    partner: list[int | None] = [None] * len(eps)
    for members in groups.values():
        if len(members) > 1:
            for j, i in enumerate(members):
                partner[i] = members[(j + 1) % len(members)]
    return partner


class _View:
    """What a policy sees of an episode under an input swap: frames and texts, some taken from ``other``."""

    def __init__(self, ep: EpisodeData, other: EpisodeData | None = None, swap: str | None = None):
        self.ep, self.other, self.swap = ep, other, swap

    def observe(self, ks: list[int]):
        img, dep = self.ep.observe(ks)
        if self.swap in ("rgb", "depth"):
            o_img, o_dep = self.other.observe(ks)
            img, dep = (o_img, dep) if self.swap == "rgb" else (img, o_dep)
        return img, dep

    def text_at(self, k: int, context: str = "segment") -> str:
        return (self.other if self.swap == "text" else self.ep).text_at(k, context)


def _uses_obs(policy) -> bool:
    return not isinstance(policy, (StaticPolicy, ConstantVelocityPolicy))


def _generator(seed: int, *key: int) -> torch.Generator:
    """A generator seeded by (seed, key...): every condition of one query batch draws the same noise."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *key]).generate_state(1)[0]))


def task_outcome(hand, states: torch.Tensor, ep: EpisodeData, first_frame: int) -> dict | None:
    """What a generated motion does to the instructed object: states (T, 109), frame j = episode frame
    ``first_frame + j``. None without scene facts or when the contact frame is outside the motion; else
    ``{"hit": the grip point's closest object at the contact frame is the instructed one, "closest": its index,
    "target_cm": the grip point's distance to the instructed object's centre then, "dest_cm": distance from where the
    hand leaves the object to its destination (None without one in range)}``
    (``megohand.metrics``: grip_point, closest_object, carried_to)."""
    from megohand.metrics import carried_to, closest_object, grip_point

    f, T = ep.facts, states.shape[0]
    if f is None or f.contact_frame is None or not 0 <= f.contact_frame - first_frame < T:
        return None
    rows = [f.contact_frame - first_frame]
    if f.destination is not None and f.release_frame is not None and 0 <= f.release_frame - first_frame < T:
        rows.append(f.release_frame - first_frame)
    grip = grip_point(hand.forward_params(state_to_params(states[rows].double())).joints)  # (len(rows), 3)
    centers = torch.as_tensor(f.centers[f.contact_frame])
    closest = int(closest_object(grip[0], centers))
    dest = None
    if len(rows) == 2:
        left = carried_to(grip[0], grip[1], centers[f.target])
        dest = float((left - torch.as_tensor(f.destination[f.release_frame])).norm()) * 100
    target_cm = float((grip[0] - centers[f.target]).norm()) * 100
    return {"hit": closest == f.target, "closest": closest, "target_cm": target_cm, "dest_cm": dest}


class _Pool:
    """Collects (pred, gt, mask) per (protocol, method, dataset) and reduces with hand_metrics; task outcomes
    (target hits, destination distances) likewise."""

    def __init__(self, hand):
        self.hand = hand
        self.parts: dict[tuple, list] = defaultdict(list)
        self.task: dict[tuple, dict] = defaultdict(lambda: {"hits": [], "dest": []})
        self.outcomes: dict[tuple, list] = defaultdict(list)  # (protocol, method) -> one dict per episode

    def add(self, key: tuple, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, fps: float) -> None:
        """pred, gt: (N, T, 109) states; mask (N, T) bool."""
        from megohand.metrics import hand_metrics

        if not bool(mask.any()):
            return
        m = hand_metrics(state_to_params(pred.double()), state_to_params(gt.double()), self.hand, fps, mask)
        self.parts[key].append((m, int(mask.sum())))

    def add_task(self, key: tuple, states: torch.Tensor, eps: list[EpisodeData], first_frame: int) -> None:
        """Task outcomes (``task_outcome``) of rollout states (B, T, 109) whose frame j is episode frame
        ``first_frame + j``."""
        for b, ep in enumerate(eps):
            out = task_outcome(self.hand, states[b], ep, first_frame)
            if out is not None:
                objects = ep.facts.names
                names = {"target_object": objects[ep.facts.target], "reached_object": objects[out["closest"]]} \
                    if len(objects) == ep.facts.num_objects else {}
                task = {"task": ep.facts.task} if ep.facts.task else {}
                self.outcomes[key[:2]].append({"dataset": ep.dataset, "episode": ep.episode, "target": int(ep.facts.target),
                                               **out, **names, **task})
                self.task[key]["hits"].append(out["hit"])
                if out["dest_cm"] is not None:
                    self.task[key]["dest"].append(out["dest_cm"])

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
        for (proto, method, dataset), t in sorted(self.task.items()):
            res = out.setdefault(proto, {}).setdefault(method, {}).setdefault(dataset, {})
            if t["hits"]:
                res["target_acc"] = float(np.mean(t["hits"]))
                res["task_episodes"] = len(t["hits"])
            if t["dest"]:
                res["dest_cm"] = float(np.mean(t["dest"]))
        return out


def _window_eval(pool: _Pool, ep: EpisodeData, methods: dict[str, PolicyFactory], cfg: EvalConfig, key: tuple,
                 partner: EpisodeData | None = None) -> int:
    """Window protocol on one episode; the observation-using methods also under each input swap of
    ``cfg.reliance`` with ``partner``'s inputs. ``key`` seeds the noise (the same for every condition)."""
    from megohand.data.windows import future_indices, window_starts

    L, T = cfg.horizon, ep.num_frames
    valid = ep.valid.numpy()
    starts = window_starts(valid, 0, T - L + 1, cfg.window_stride).tolist()  # all L future frames in the episode
    for i in range(0, len(starts), cfg.batch_size):
        ks = starts[i : i + cfg.batch_size]
        idx, mask = future_indices(np.asarray(ks), T, L, valid)
        state = ep.states[torch.as_tensor(ks)]
        fut, mask = ep.states[torch.from_numpy(idx)], torch.from_numpy(mask).bool()
        prev = torch.stack([ep.states[k - 1] if k > 0 and ep.valid[k - 1] else torch.full_like(ep.states[0], math.nan) for k in ks])
        for name, make in methods.items():
            policy = make(prev, 1)
            swaps = [None] + ([s for s in cfg.reliance if partner is not None] if _uses_obs(policy) else [])
            ctx = text_context(policy)
            for swap in swaps:
                view = _View(ep, partner, swap)
                image, depth = view.observe(ks) if _uses_obs(policy) else (None, None)
                gen = _generator(cfg.seed, *key, i)
                a = policy.predict_chunk(image, [view.text_at(k, ctx) for k in ks], state, depth, **_kw(cfg, gen))
                pred = decode_chunk(state, a.to(state.dtype)[:, :L])
                pool.add(("window", name if swap is None else reliance_name(name, swap), ep.dataset), pred, fut, mask,
                         ep.fps)
    return len(starts)


def _kw(cfg: EvalConfig, gen) -> dict:
    return {"generator": gen} if cfg.steps is None else {"steps": cfg.steps, "generator": gen}


def rollout_batches(eps: list[EpisodeData], batch_size: int, dataset_index: int = 0) -> list[tuple[list[int], tuple]]:
    """How ``evaluate_store`` groups one dataset's episodes (in store order) for its closed-loop rollouts: episodes
    that can start at frame 1, of one image size and frame rate, ``batch_size`` at a time. Returns ``(indices into
    eps, key)`` per batch; ``_generator(cfg.seed, *key)`` draws that batch's noise, so a script that rolls the same
    batches out again (benchmarks/target_misses.py) reproduces the report's rollouts."""
    by_size = defaultdict(list)
    for e_i, ep in enumerate(eps):
        if bool(ep.valid[1]):
            m = ep.episode_obj.meta
            by_size[(m.width, m.height, round(ep.fps, 3))].append(e_i)
    batches = [ids[i : i + batch_size] for ids in by_size.values() for i in range(0, len(ids), batch_size)]
    return [(ids, (dataset_index, 1_000_000 + b_i)) for b_i, ids in enumerate(batches)]


def closed_loop(policy, views: list, init: torch.Tensor, T: int, cfg: EvalConfig, key: tuple, tof: bool = True):
    """One batch's closed-loop rollout as ``evaluate_store`` runs it: from ``init`` (B, 109), the states of episode
    frame 1, over T frames; the policy reads frame k + 1 of each view (an :class:`EpisodeData`, or an episode with
    an input swapped: anything with its ``observe`` and ``text_at``) when it predicts from frame k of the rollout; noise from ``_generator(cfg.seed, *key)``. Returns the
    ``megohand.inference.rollout`` result (its ``states`` (B, T + 1, 109): frame j = episode frame j + 1)."""
    if _uses_obs(policy):

        def observe(k):
            obs = [v.observe([k + 1]) for v in views]
            img = torch.cat([o[0] for o in obs])
            dep = None if any(o[1] is None for o in obs) else torch.cat([o[1] for o in obs])
            return img, dep

    else:

        def observe(k):
            return None, None

    kw = {} if cfg.steps is None else {"steps": cfg.steps}
    ctx = text_context(policy)
    return rollout(policy, observe, lambda k: [v.text_at(k + 1, ctx) for v in views], init, T, stride=cfg.stride,
                   tof=tof, generator=_generator(cfg.seed, *key), tof_decay=cfg.tof_decay, **kw)


def _rollout_eval(pool: _Pool, eps: list[EpisodeData], methods: dict[str, PolicyFactory], cfg: EvalConfig, key: tuple,
                  partners: list[EpisodeData] | None = None) -> None:
    """Closed-loop rollouts of a batch of episodes with equal image size (cropped to a common length), with and
    without TOF; the observation-using methods also with TOF under each input swap of ``cfg.reliance`` (when every
    episode has a partner).

    The rollout starts at the episode's frame 1 from its GT state; frame 0 serves only as the
    one-frame history of the constant-velocity baseline (NaN where invalid).
    """
    T = min(cfg.rollout_frames, *(e.num_frames - 2 for e in eps))
    if T < 1:
        return
    init = torch.stack([e.states[1] for e in eps])
    gt = torch.stack([e.states[1 : T + 2] for e in eps])
    mask = torch.stack([e.valid[1 : T + 2] for e in eps])[:, 1:]
    prev = torch.stack([e.states[0] if e.valid[0] else torch.full_like(e.states[0], math.nan) for e in eps])
    for name, make in methods.items():
        conditions = [(True, None), (False, None)]
        if partners is not None and _uses_obs(make(prev, cfg.stride)):
            conditions += [(True, s) for s in cfg.reliance]
        for tof, swap in conditions:
            views = [_View(e, p, swap) for e, p in zip(eps, partners or [None] * len(eps))]
            res = closed_loop(make(prev, cfg.stride), views, init, T, cfg, key, tof)
            proto = "rollout-tof" if tof else "rollout-raw"
            pkey = (proto, name if swap is None else reliance_name(name, swap), eps[0].dataset)
            pool.add(pkey, res.states[:, 1:], gt[:, 1:], mask, eps[0].fps)
            pool.add_task(pkey, res.states, eps, first_frame=1)


def evaluate_store(store, methods: dict[str, PolicyFactory], hand, cfg: EvalConfig, log=print,
                   progress: bool = False) -> dict:
    """Evaluate every method on the ``cfg.split`` split (test by default) of ``store`` (a
    :class:`megohand.data.store.Store`);
    ``progress``: a progress bar over episodes (each counted once for its windows, once for its rollout).

    Returns a JSON-able dict: ``config``, ``datasets`` (per dataset: group, episodes, windows),
    ``results[protocol][method][dataset or group] = {metric: value}``; methods that look at the observation also
    appear there as ``reliance_name(method, swap)`` for every swap of ``cfg.reliance`` (listed in ``reliance``);
    ``task_outcomes[protocol][method]`` = one ``{dataset, episode, target, hit, closest, target_cm, dest_cm[, task]}``
    per rolled-out episode with scene facts (``task_outcome``; object indices into the episode's ``objects``), with
    ``target_object`` and ``reached_object`` (their ``SceneFacts.names``, "<colour> <shape>") where they are known.
    """
    unknown = set(cfg.reliance) - set(RELIANCE)
    if unknown:
        raise ValueError(f"unknown reliance conditions {sorted(unknown)}; expected some of {list(RELIANCE)}")
    pool = _Pool(hand)
    frames = FrameCache(cfg.frame_cache_mb << 20)
    info: dict = {}
    by_ds: dict[str, list] = defaultdict(list)
    for ref in store.episodes(split=cfg.split):
        by_ds[ref.dataset].append(ref)
    if not by_ds:
        raise UserError(f"no {cfg.split} episodes (split {cfg.split!r}) in this store", path=getattr(store, "root", None),
                        hint=f"evaluate a store with a {cfg.split} split (megohand synth / convert write one)")
    from tqdm import tqdm

    n_eps = sum(min(len(r), cfg.max_episodes or len(r)) for r in by_ds.values())
    bar = tqdm(total=n_eps * (2 if cfg.rollout_frames > 0 else 1), desc="eval", unit="ep", disable=not progress)
    for d_i, (dataset, refs) in enumerate(sorted(by_ds.items())):
        refs = refs[: cfg.max_episodes] if cfg.max_episodes else refs
        eps = [load_episode(store, dataset, ref.episode) for ref in refs]
        for ep in eps:
            ep.frames = frames
            ep.frame_set = ep.episode_obj.frames_for(cfg.image_size)
        partner = derangement(eps) if cfg.reliance else [None] * len(eps)
        windows = 0
        for e_i, ep in enumerate(eps):
            windows += _window_eval(pool, ep, methods, cfg, (d_i, e_i),
                                    None if partner[e_i] is None else eps[partner[e_i]])
            bar.update(1)
        if cfg.rollout_frames > 0:
            batches = rollout_batches(eps, cfg.batch_size, d_i)
            for ids, key in batches:
                partners = None
                if cfg.reliance and all(partner[i] is not None for i in ids):
                    partners = [eps[partner[i]] for i in ids]
                _rollout_eval(pool, [eps[i] for i in ids], methods, cfg, key, partners)
                bar.update(len(ids))
            bar.update(len(eps) - sum(len(ids) for ids, _ in batches))  # episodes too short to roll out
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
                keys = sorted({k for r in rs for k in r})
                per_ds[f"[{g}]"] = {
                    k: int(sum(r.get(k, 0) for r in rs)) if k in ("frames", "task_episodes")
                    else float(np.nanmean([r.get(k, math.nan) for r in rs]))
                    for k in keys
                }
    present = {m for proto in results.values() for m in proto}
    reliance = [n for m in methods for n in (reliance_name(m, s) for s in cfg.reliance) if n in present]
    outcomes = {proto: {} for proto in results}
    for (proto, method), rows in sorted(pool.outcomes.items()):
        outcomes.setdefault(proto, {})[method] = rows
    return {"config": asdict(cfg), "methods": list(methods), "reliance": reliance, "datasets": info, "results": results,
            "task_outcomes": outcomes}
