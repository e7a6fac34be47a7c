"""Training samples: windows of one episode (and of one instruction segment), as the model sees them.

A sample at frame k of an episode (docs/data_format.md, docs/model.md)::

    image        uint8 (3, S, S)      frame k through megohand.data.observation (centred square, S = image_size)
    depth        float32 (1, S, S)    metres (0 = no measurement); zeros when has_depth is False
    has_depth    bool
    K            float32 (3, 3)       intrinsics of the cropped, resized image
    instruction  str                  the segment's text (else the episode's instruction); with text_context
                                      "task+segment" the episode's instruction before it (``window_text``)
    state        float32 (109,)       h_k (megohand.hand.vector layout)
    action       float32 (L, 99)      encode_chunk(h_k, h_{k+1..k+L})
    action_mask  float32 (L,)         1 for real future frames; 0 beyond the segment end (padded with its last
                                      frame) or where the hand is not valid
    ground_uv    float32 (2, 2)       where the instructed object and its destination are in the image, [0, 1]
    ground_valid bool (2,)            whether each is known and in the picture (synthetic scene facts)
    refer_text   str                  "the <colour> <shape>" of one object in the picture drawn at random ("" when
                                      unknown): the referring question of grounding (docs/model.md)
    refer_uv     float32 (2,)         where that object is in the image, [0, 1]
    refer_valid  bool
    object_uv    float32 (16, 2)      the objects in the picture, [0, 1] (scene parsing, docs/model.md)
    object_attr  int64 (16, 2)        their colour and shape index (synthetic world's vocabulary); -1: no object
    meta         dict                 dataset, episode, k

Values are not normalised (megohand.data.normalize does that). Windows start at every ``stride``-th frame
of a segment whose hand is valid and that has at least one later frame in the segment.

``window_scope`` says where a window's future may run: ``"segment"`` (the paper's default: inside the segment
of frame k, masked beyond its end) or ``"episode"`` (across the following segments up to the episode's end,
still with the text of frame k's segment: what ``megohand eval``'s window protocol compares). Stores whose
segments are shorter than L (the synthetic world's motion phases, ~10 frames) need ``"episode"``, otherwise the
later steps of a chunk are rarely supervised.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence, TypedDict

import numpy as np
import torch

from megohand.data.cache import BytesLRU
from megohand.data.observation import episode_observation, to_tensor
from megohand.data.store import Episode, EpisodeRef, Store, StoreError
from megohand.hand.vector import HandParams, encode_chunk, params_to_state, wrist_rotations

STORED_DEPTH = ("auto", "required", "none")


class Sample(TypedDict):
    """One training window (module docstring); a batch (``megohand.train.trainer.collate``) stacks each tensor
    along a new first axis, keeps ``instruction`` as a list of B strings and ``meta`` as a list of B dicts. The
    policy's ``forward`` reads a batch, ``predict_chunk`` its image / depth / instruction / state."""

    image: torch.Tensor
    depth: torch.Tensor
    has_depth: bool
    K: torch.Tensor
    ground_uv: torch.Tensor
    ground_valid: torch.Tensor
    refer_text: str
    refer_uv: torch.Tensor
    refer_valid: bool
    object_uv: torch.Tensor
    object_attr: torch.Tensor
    instruction: str
    state: torch.Tensor
    action: torch.Tensor
    action_mask: torch.Tensor
    meta: dict


WINDOW_SCOPES = ("segment", "episode")
TEXT_CONTEXTS = ("segment", "task+segment")


def window_text(segment: str, instruction: str, context: str = "segment") -> str:
    """The text a policy reads at a frame. ``"segment"`` (the paper's): the frame's segment text, else the episode's
    instruction. ``"task+segment"``: "<instruction>: <segment>", so that every segment also names the task (the
    instruction alone where the segment has no text or repeats it): in the synthetic world every task's reach reads
    "reach for the purple box", a push's and a grasp's alike (README, "During the reach the policy cannot know the
    task")."""
    if context not in TEXT_CONTEXTS:
        raise ValueError(f"text context must be one of {TEXT_CONTEXTS}, got {context!r}")
    if context == "segment" or not instruction or not segment or segment == instruction:
        return segment or instruction
    return f"{instruction}: {segment}"
CACHE_BYTES = 256 << 20
"""Per process (each DataLoader worker has its own) and per cache (hand states, scene facts): enough for every
episode of a few-thousand-episode synthetic store, about 800 long real ones."""


def episode_ranges(num_frames: int, segments: Sequence) -> list[tuple[int, int, str | None]]:
    """Frame ranges [start, end) that windows live in: the segments if any, else the whole episode (text None)."""
    if segments:
        return [(int(s), min(int(e), num_frames), str(t)) for s, e, t in segments if min(int(e), num_frames) > int(s)]
    return [(0, num_frames, None)]


def episode_windows(valid: np.ndarray, segments: Sequence, stride: int = 1, scope: str = "segment"):
    """Window starts of one episode by range: yields (starts (n,) int, future end, text or None) per range of
    ``episode_ranges``; the future of a window stops at the range's end (scope "segment") or at the episode's end
    ("episode", starts may then also be a segment's last frame). ``valid`` (T,) bool."""
    if scope not in WINDOW_SCOPES:
        raise ValueError(f"window scope must be one of {WINDOW_SCOPES}, got {scope!r}")
    T = len(valid)
    for s, e, text in episode_ranges(T, segments):
        if scope == "segment":
            yield window_starts(valid, s, e, stride), e, text
        else:
            yield window_starts(valid, s, min(e + 1, T), stride), T, text


def window_starts(valid: np.ndarray, start: int, end: int, stride: int = 1) -> np.ndarray:
    """Window start frames in [start, end): every stride-th frame with a valid hand and a later frame in range."""
    ks = np.arange(start, end - 1, stride)
    return ks[valid[ks]] if len(ks) else ks


def future_indices(k, end: int, horizon: int, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames k+1..k+L clamped to end-1 (padding with the last frame), and their mask float32: shapes (L,) for
    one start k, (n, L) for an array of n starts."""
    idx = np.asarray(k)[..., None] + np.arange(1, 1 + horizon)  # a scalar k: (1,) + (L,) -> (L,)
    inside = idx < end
    idx = np.minimum(idx, end - 1)
    return idx, (inside & valid[idx]).astype(np.float32)


def episode_states(ep: Episode, side: str) -> torch.Tensor:
    """(T, 109) float32 states of one episode's ``side`` hand."""
    h = ep.hands(side)
    p = HandParams(*(torch.from_numpy(np.array(h[n], dtype=np.float32))
                     for n in ("global_orient", "hand_pose", "betas", "transl")))
    return params_to_state(p).float()


class WindowDataset(torch.utils.data.Dataset):
    """Training windows over a store (see the module docstring for a sample).

    Args:
        store_or_root: a Store or its folder.
        datasets: dataset names (None: all in the store).
        split: stored split to use ("train", "val", "test", or None for all); ignored when ``episodes`` is given.
        horizon: L, the number of future frames per action chunk.
        side: "right" or "left".
        stride: distance between window starts.
        image_size: S, the square output size.
        stored_depth: whether samples carry the store's depth (docs/data_format.md, "Depth: one vocabulary"):
            "auto" (where the episode has it), "required" (every episode must have depth), "none" (never read).
        episodes: explicit EpisodeRefs (overrides datasets/split).
        augment: GR00T-style train augmentation: random square crop of 0.95 of the short side and colour jitter
            (brightness 0.3, contrast 0.4, saturation 0.5); depth gets the same crop, never jitter.
        seed: augmentation seed (combined with the sample index, so workers are reproducible).
        window_scope: "segment" or "episode": where a window's future may run (module docstring).
        text_context: "segment" or "task+segment": the text of a window (``window_text``).
        copies: read an episode's training-size copy where one fits ``image_size`` (docs/data_format.md); False:
            always the stored frames.

    ``read_rgb`` (attribute, default True): False leaves the frames unread and gives a black ``image`` (for a model
    that uses no image, like ``stored_depth="none"`` for one that uses no depth).
    """

    def __init__(
        self,
        store_or_root: Store | str | Path,
        datasets: Sequence[str] | str | None = None,
        split: str | None = "train",
        horizon: int = 16,
        side: str = "right",
        stride: int = 1,
        image_size: int = 224,
        stored_depth: str = "auto",
        episodes: Iterable[EpisodeRef] | None = None,
        augment: bool = False,
        seed: int = 0,
        progress: bool = False,
        window_scope: str = "segment",
        copies: bool = True,
        text_context: str = "segment",
    ):
        if window_scope not in WINDOW_SCOPES:
            raise ValueError(f"window_scope must be one of {WINDOW_SCOPES}, got {window_scope!r}")
        window_text("", "", text_context)  # checks it
        self.text_context = text_context
        if stored_depth not in STORED_DEPTH:
            raise ValueError(f"stored_depth must be one of {STORED_DEPTH}, got {stored_depth!r}")
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        if horizon < 1 or stride < 1 or image_size < 1:
            raise ValueError(f"horizon, stride and image_size must be >= 1, got {horizon}, {stride}, {image_size}")
        self.store = store_or_root if isinstance(store_or_root, Store) else Store(store_or_root)
        self.horizon, self.side, self.stride = int(horizon), side, int(stride)
        self.image_size, self.stored_depth = int(image_size), stored_depth
        self.augment, self.seed, self.window_scope = augment, seed, window_scope
        self.copies, self.read_rgb = copies, True
        if episodes is None:
            if isinstance(datasets, str):
                datasets = [datasets]
            known = self.store.datasets()
            for d in datasets or []:
                if d not in known:
                    raise StoreError(f"dataset {d!r} not in store {self.store.root} (has {known})")
            episodes = self.store.episodes(datasets if datasets is not None else None, split)
        self.refs: list[EpisodeRef] = list(episodes)
        if stored_depth == "required":
            missing = [f"{r.dataset}/{r.episode}" for r in self.refs if not r.has_depth]
            if missing:
                raise StoreError(f"stored_depth='required' but {len(missing)} episodes have no depth, e.g. {missing[:3]}")
        self._build_index(progress)
        self._states, self._facts = BytesLRU(CACHE_BYTES), BytesLRU(CACHE_BYTES)

    def _build_index(self, progress: bool) -> None:
        import pyarrow.parquet as pq

        eps, ks, ends, texts, text_ids = [], [], [], [], {}
        self._valid: list[np.ndarray] = []
        it = self.refs
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="indexing windows", unit="ep")
        for i, ref in enumerate(it):
            ep = self.store.open(ref)
            path = ep.path / "frames.parquet"
            try:
                valid = pq.read_table(path, columns=[f"{self.side}_valid"]).column(0).to_numpy(zero_copy_only=False)
            except Exception as e:
                raise StoreError(f"{ep.what} [{self.side}_valid]: cannot read {path}: {e}") from None
            if len(valid) != ep.num_frames:
                raise StoreError(f"{ep.what} [frames.parquet]: {len(valid)} rows, meta says {ep.num_frames} frames")
            self._valid.append(valid.astype(bool))
            for k, e, text in episode_windows(self._valid[-1], ep.meta.segments, self.stride, self.window_scope):
                text = window_text(text, ep.meta.instruction, self.text_context)
                tid = text_ids.setdefault(text, len(text_ids))
                eps.append(np.full(len(k), i, np.int32))
                ks.append(k.astype(np.int32))
                ends.append(np.full(len(k), e, np.int32))
                texts.append(np.full(len(k), tid, np.int32))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int32)  # noqa: E731
        self._ep, self._k, self._end, self._text = cat(eps), cat(ks), cat(ends), cat(texts)
        self._texts = list(text_ids)
        self.dataset_names = sorted({r.dataset for r in self.refs})
        ds_id = {d: j for j, d in enumerate(self.dataset_names)}
        ep_ds = np.array([ds_id[r.dataset] for r in self.refs], np.int32)
        self.window_dataset = ep_ds[self._ep] if len(self._ep) else np.zeros(0, np.int32)

    def __len__(self) -> int:
        return len(self._k)

    def __getstate__(self):
        s = self.__dict__.copy()
        s["_states"], s["_facts"] = BytesLRU(CACHE_BYTES), BytesLRU(CACHE_BYTES)
        return s

    def window(self, i: int) -> tuple[EpisodeRef, int, int, str]:
        """(episode ref, start frame k, range end, instruction) of window i."""
        return self.refs[self._ep[i]], int(self._k[i]), int(self._end[i]), self._texts[self._text[i]]

    def states(self, ep_index: int) -> torch.Tensor:
        """(T, 109) states of episode ``ep_index`` (cached per process)."""
        return self._episode_states(ep_index)[0]

    def _episode_states(self, ep_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, 109) states of episode ``ep_index`` and their wrist rotations (T, 3, 3), cached per process."""
        def make():
            st = episode_states(self.store.open(self.refs[ep_index]), self.side)
            return st, wrist_rotations(st)

        return self._states.get_or_make(ep_index, make)

    def facts(self, ep_index: int):
        """Scene facts (``megohand.data.synthetic.facts``) of episode ``ep_index`` or None (cached per process)."""
        from megohand.data.synthetic.facts import scene_facts

        def make():
            ep = self.store.open(self.refs[ep_index])
            return scene_facts(ep.meta.extra, ep.T_cam_from_world)

        return self._facts.get_or_make(ep_index, make)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)} windows)")
        i = i % len(self)
        e = int(self._ep[i])
        ref, k, end, text = self.window(i)
        ep = self.store.open(ref)
        st, wrist_R = self._episode_states(e)
        idx, mask = future_indices(k, end, self.horizon, self._valid[e])
        state, fut = st[k], torch.from_numpy(idx)
        action = encode_chunk(state, st[fut], wrist_R[k], wrist_R[fut])

        rng = np.random.default_rng((self.seed, i)) if self.augment else None
        S = self.image_size
        has_depth = self.stored_depth != "none" and ep.has_depth
        img, depth, K = episode_observation(ep, k, S, 0.95 if self.augment else 1.0, rng, has_depth, self.copies,
                                            self.read_rgb)
        if img is None:
            image = torch.zeros(3, S, S, dtype=torch.uint8)
        else:
            image = to_tensor(img if rng is None else _color_jitter(img, rng))
        depth = depth if has_depth else torch.zeros(1, S, S)
        from megohand.data.synthetic.facts import image_targets, objects_in_image, referring_target

        facts = self.facts(e)
        ground_uv, ground_valid = image_targets(facts, k, K, S, text)
        refer_text, refer_uv, refer_valid = referring_target(facts, k, K, S, np.random.default_rng((self.seed, i, 1)))
        object_uv, object_attr = objects_in_image(facts, k, K, S)
        return Sample(
            image=image,
            depth=depth,
            has_depth=has_depth,
            K=torch.from_numpy(K.astype(np.float32)),
            ground_uv=torch.from_numpy(ground_uv),
            ground_valid=torch.from_numpy(ground_valid),
            refer_text=refer_text,
            refer_uv=torch.from_numpy(refer_uv),
            refer_valid=refer_valid,
            object_uv=torch.from_numpy(object_uv),
            object_attr=torch.from_numpy(object_attr),
            instruction=text,
            state=state.clone(),
            action=action.float(),
            action_mask=torch.from_numpy(mask),
            meta={"dataset": ref.dataset, "episode": ref.episode, "k": k},
        )


def _color_jitter(img, rng: np.random.Generator, brightness=0.3, contrast=0.4, saturation=0.5):
    """GR00T's colour jitter factors (hue left out), applied in a random order."""
    from PIL import ImageEnhance

    ops = [(ImageEnhance.Brightness, brightness), (ImageEnhance.Contrast, contrast), (ImageEnhance.Color, saturation)]
    for j in rng.permutation(len(ops)):
        enh, amount = ops[j]
        img = enh(img).enhance(float(rng.uniform(max(0.0, 1 - amount), 1 + amount)))
    return img


# ---------------------------------------------------------------- mixtures over datasets


class DatasetWeightedSampler(torch.utils.data.Sampler):
    """Samples windows so that dataset d is drawn with probability w_d / sum(w) (uniform within a dataset).

    Args:
        dataset: a WindowDataset.
        weights: dataset name -> weight (missing names get 1; None: proportional to window counts, i.e. uniform).
        num_samples: samples per epoch (default len(dataset)).
        seed: base seed; ``set_epoch(e)`` changes the draw per epoch.
    """

    def __init__(self, dataset: WindowDataset, weights: dict[str, float] | None = None,
                 num_samples: int | None = None, seed: int = 0):
        self.num_samples = len(dataset) if num_samples is None else int(num_samples)
        self.seed, self.epoch = seed, 0
        ids = dataset.window_dataset
        self.members = [np.flatnonzero(ids == j) for j in range(len(dataset.dataset_names))]
        if weights is None:
            w = np.array([len(m) for m in self.members], float)
        else:
            unknown = set(weights) - set(dataset.dataset_names)
            if unknown:
                raise ValueError(f"weights for datasets not in the dataset: {sorted(unknown)}")
            w = np.array([float(weights.get(n, 1.0)) for n in dataset.dataset_names])
        w = np.where([len(m) > 0 for m in self.members], w, 0.0)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"dataset weights must be >= 0 with a positive total over non-empty datasets, got {w}")
        self.probs = w / w.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        which = rng.choice(len(self.probs), size=self.num_samples, p=self.probs)
        out = np.empty(self.num_samples, np.int64)
        for j, m in enumerate(self.members):
            sel = which == j
            if sel.any():
                out[sel] = m[rng.integers(0, len(m), int(sel.sum()))]
        return iter(out.tolist())


def _portion_key(ref: EpisodeRef, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{ref.dataset}/{ref.episode}".encode()).hexdigest()


def load_cascaded_dataset(
    dataset_path: str | Path,
    dataset_list: Sequence[str] | Sequence[tuple[str, float]] | dict[str, float],
    split_portion: float = 0.9,
    window_size: int = 16,
    side: str = "right",
    is_render_depth: bool = False,
    image_size: int = 224,
    stride: int = 1,
    seed: int = 0,
    augment: bool = False,
    **kwargs,
) -> tuple[WindowDataset, WindowDataset]:
    """The paper's cascaded loader: (train, eval) WindowDatasets over several datasets of one store.

    Per dataset, the episodes of the stored "train" split are ordered by a seeded hash of their id; the first
    ``split_portion`` of them train, the rest evaluate (whole episodes, never windows of one episode in both).
    With ``split_portion >= 1`` the eval set is the stored "val" split. The stored "test" split is never used here.

    Args:
        dataset_list: names, (name, weight) pairs or {name: weight}; weights feed ``train.weights`` for
            ``make_sampler``.
        is_render_depth: True -> every episode must carry stored (sensor or rendered) depth (stored_depth
            "required"); False -> stored depth where present ("auto"); a ``stored_depth`` keyword overrides it.
        kwargs: passed to WindowDataset.
    """
    if isinstance(dataset_list, dict):
        weights = {str(k): float(v) for k, v in dataset_list.items()}
    else:
        weights = {}
        for d in dataset_list:
            name, w = (d, 1.0) if isinstance(d, str) else (d[0], float(d[1]))
            weights[name] = w
    if not 0 < split_portion <= 1:
        raise ValueError(f"split_portion must be in (0, 1], got {split_portion}")
    store = dataset_path if isinstance(dataset_path, Store) else Store(dataset_path)
    known = store.datasets()
    missing = [d for d in weights if d not in known]
    if missing:
        raise StoreError(f"datasets {missing} not in store {store.root} (has {known})")
    train_refs, eval_refs = [], []
    for name in weights:
        refs = sorted(store.episodes(name, "train"), key=lambda r: _portion_key(r, seed))
        if split_portion >= 1:
            train_refs += refs
            eval_refs += store.episodes(name, "val")
            continue
        n_train = int(round(split_portion * len(refs)))
        if len(refs) >= 2:
            n_train = min(max(n_train, 1), len(refs) - 1)
        train_refs += refs[:n_train]
        eval_refs += refs[n_train:]
    common = dict(horizon=window_size, side=side, stride=stride, image_size=image_size,
                  **{"stored_depth": "required" if is_render_depth else "auto", **kwargs})
    train = WindowDataset(store, episodes=train_refs, augment=augment, seed=seed, **common)
    evald = WindowDataset(store, episodes=eval_refs, augment=False, seed=seed, **common)
    train.weights = weights
    evald.weights = weights
    return train, evald


def make_sampler(dataset: WindowDataset, num_samples: int | None = None, seed: int = 0) -> DatasetWeightedSampler:
    """DatasetWeightedSampler with the dataset's ``weights`` (set by load_cascaded_dataset), else uniform over windows."""
    return DatasetWeightedSampler(dataset, getattr(dataset, "weights", None), num_samples, seed)
