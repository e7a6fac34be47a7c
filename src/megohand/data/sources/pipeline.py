"""From a :class:`NativeEpisode` to a stored episode: canonical hands, depth, metadata, atomic write."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .common import NativeEpisode, SourceError, canonical_hands

DepthMode = Literal["auto", "sensor", "render", "none"]


class HandModels:
    """Lazily loaded hand models per side (MANO from ``mano_dir``/$MANO_MODEL_DIR, else the open hand)."""

    def __init__(self, mano_dir=None, dtype=None):
        import torch

        self.mano_dir = mano_dir
        self.dtype = dtype or torch.float64
        self._models = {}

    def __getitem__(self, side: str):
        if side not in self._models:
            from megohand.hand import load_hand_model

            self._models[side] = load_hand_model(self.mano_dir, side=side, dtype=self.dtype)
        return self._models[side]

    @property
    def name(self) -> str:
        h = self["right"]
        return "mano" if h.is_mano else h.name


def fill_missing_poses(T: np.ndarray | None) -> np.ndarray | None:
    """Non-finite rows of (T,4,4) camera poses -> copy of the nearest finite row (their hands are
    already invalid); None stays None; all-missing -> None."""
    if T is None:
        return None
    T = np.asarray(T, np.float64).copy()
    ok = np.isfinite(T).all(axis=(1, 2))
    if ok.all():
        return T
    if not ok.any():
        return None
    good = np.flatnonzero(ok)
    for i in np.flatnonzero(~ok):
        T[i] = T[good[np.argmin(np.abs(good - i))]]
    return T


def stored_size(ep: NativeEpisode, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) the store keeps of the episode's frames (``StoreWriter(max_short_side=...)``)."""
    from megohand.data.store import _FrameSizer

    sizer = _FrameSizer(max_short_side)
    sizer.check((ep.height, ep.width), f"{ep.dataset}/{ep.episode}", 0)
    return sizer.out[1], sizer.out[0]


def episode_hands(ep: NativeEpisode, hands: HandModels, retargeter=None) -> dict[str, dict]:
    """Canonical camera-frame hand params per side (see common.canonical_hands)."""
    if ep.hands:
        return {side: canonical_hands(raw, ep.convention, hands[side], ep.T_cam_from_world) for side, raw in ep.hands.items()}
    if ep.joints:
        if retargeter is None:
            raise SourceError(f"{ep.dataset}/{ep.episode}: joint-only hands need the retargeting network (--retarget-model)")
        return {side: retargeter.fit_sequence(J, order=ep.joint_order, side=side) for side, J in ep.joints.items()}
    raise SourceError(f"{ep.dataset}/{ep.episode}: no hands")


def convert_episode(
    ep: NativeEpisode,
    writer,
    hands: HandModels,
    depth: DepthMode = "auto",
    renderer=None,
    retargeter=None,
    overwrite: bool = False,
):
    """Canonicalise and write one episode (atomic). Returns the store's EpisodeRef.

    depth: "sensor" keeps only native depth; "render" renders hands (+ object meshes) at the RGB
    camera (virtual depth, 2 m background, see megohand.data.virtual_depth), at the size the writer
    stores; "auto" = sensor if the source has it, else render; "none" stores no depth.
    """
    from megohand.data.store import EpisodeMeta

    canon = episode_hands(ep, hands, retargeter)
    for side, h in canon.items():
        if len(h["valid"]) != ep.num_frames:
            raise SourceError(f"{ep.dataset}/{ep.episode}: {side} hand has {len(h['valid'])} frames, episode {ep.num_frames}")
    if ep.rgb is None:
        raise SourceError(f"{ep.dataset}/{ep.episode}: no RGB frames available (see the layout in `megohand convert --help`)")
    depth_frames, depth_source, extra = None, "none", dict(ep.extra)
    if depth in ("auto", "sensor") and ep.depth is not None:
        depth_frames, depth_source = ep.depth(), ep.depth_source
    elif depth == "render" or (depth == "auto" and ep.depth is None):
        from megohand.data.virtual_depth import render_episode_depth

        size = None if renderer is not None else stored_size(ep, getattr(writer, "max_short_side", None))
        depth_frames = render_episode_depth(ep, canon, hands, renderer=renderer, render_size=size)
        depth_source = "rendered"
        extra["rendered_objects"] = [o.name for o in ep.objects]
    T_cw = fill_missing_poses(ep.T_cam_from_world)
    meta = EpisodeMeta(
        dataset=ep.dataset,
        episode=ep.episode,
        instruction=ep.instruction,
        segments=[(int(s), int(e), str(t)) for s, e, t in ep.segments],
        fps=float(ep.fps),
        width=int(ep.width),
        height=int(ep.height),
        K=np.asarray(ep.K, float).tolist(),
        split=ep.split,
        hand_source=ep.hand_source if ep.hands else "retargeted",
        depth_source=depth_source,
        hand_model=hands.name,
        extra=extra,
    )
    return writer.write_episode(
        meta,
        hands=canon,
        rgb=ep.rgb(),
        depth=depth_frames,
        T_cam_from_world=T_cw,
        overwrite=overwrite,
    )
