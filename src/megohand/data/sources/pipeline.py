"""From a :class:`NativeEpisode` to a stored episode: canonical hands, depth, metadata, atomic write."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .common import NativeEpisode, SourceError, canonical_hands, hand_fidelity

# the stored depth origins, and auto (docs/data_format.md, "Depth: one vocabulary")
DepthMode = Literal["auto", "sensor", "rendered", "none"]
# unit sanity at conversion time: an egocentric camera sees hands within arm's reach and depth within a room;
# values far beyond mean the source's units are off (millimetres or centimetres stored as metres)
MAX_HAND_DISTANCE_M = 5.0
MAX_DEPTH_M = 20.0


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


def hand_path(ep: NativeEpisode, hands: HandModels) -> tuple[str, str]:
    """Which of the episode's hands are converted, and the fidelity note ("" = faithful).

    ``"params"``: the released MANO parameters (``ep.hands``); ``"joints"``: joints (``ep.joints``)
    through the retargeting network. A source may offer both (HOT3D: MANO PCA coefficients and the
    UmeTrack joints): the parameters when the hand model represents them faithfully
    (:func:`~megohand.data.sources.common.hand_fidelity`), else the joints. The note says what is
    approximate when the parameters must be used anyway.
    """
    note = hand_fidelity(ep.convention, hands["right"]) if ep.hands else ""
    if ep.hands and (not note or not ep.joints):
        return "params", note
    if ep.joints:
        return "joints", ""
    raise SourceError(f"{ep.dataset}/{ep.episode}: no hands")


def episode_hands(ep: NativeEpisode, hands: HandModels, retargeter=None) -> dict[str, dict]:
    """Canonical camera-frame hand params per side (see common.canonical_hands), by :func:`hand_path`."""
    if hand_path(ep, hands)[0] == "params":
        out = {}
        for side, raw in ep.hands.items():
            try:
                out[side] = canonical_hands(raw, ep.convention, hands[side], ep.T_cam_from_world)
            except SourceError as e:
                raise SourceError(f"{ep.dataset}/{ep.episode}: {side} hand: {e}") from None
        return out
    if retargeter is None:
        raise SourceError(f"{ep.dataset}/{ep.episode}: hands from joints need the retargeting network (--retarget-model)")
    return {side: retargeter.fit_sequence(J, order=ep.joint_order, side=side, unobserved=ep.joints_unobserved)
            for side, J in ep.joints.items()}


def check_hand_units(ep: NativeEpisode, canon: dict[str, dict]) -> None:
    """SourceError when a valid hand is farther than MAX_HAND_DISTANCE_M from the camera (units off)."""
    for side, h in canon.items():
        v = np.asarray(h["valid"], bool)
        if not v.any():
            continue
        dist = np.linalg.norm(np.asarray(h["transl"], np.float64)[v], axis=1)
        if np.median(dist) > MAX_HAND_DISTANCE_M:
            raise SourceError(
                f"{ep.dataset}/{ep.episode}: {side} hand translation: median {np.median(dist):.3g} m from the camera, "
                f"expected metres within {MAX_HAND_DISTANCE_M} m (millimetres or centimetres read as metres?)",
                hint="fix the source files or the converter's units; --skip-unit-checks stores them anyway")


def check_depth_units(ep: NativeEpisode, frames):
    """Peek at the first depth frame of the iterator ``frames``: SourceError when its median valid depth is
    beyond MAX_DEPTH_M (depth in millimetres read as metres?); returns an iterator over all frames."""
    import itertools

    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return iter(())
    d = np.asarray(first, np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size and np.median(d) > MAX_DEPTH_M:
        raise SourceError(f"{ep.dataset}/{ep.episode}: depth frame 0: median {np.median(d):.3g} m, expected metres "
                          f"within {MAX_DEPTH_M} m (millimetres read as metres?)",
                          hint="fix the source's depth scale; --skip-unit-checks stores it anyway")
    return itertools.chain([first], frames)


def convert_episode(
    ep: NativeEpisode,
    writer,
    hands: HandModels,
    depth: DepthMode = "auto",
    renderer=None,
    retargeter=None,
    overwrite: bool = False,
    unit_checks: bool = True,
):
    """Canonicalise and write one episode (atomic). Returns the store's EpisodeRef.

    depth: "sensor" keeps only native depth; "rendered" renders hands (+ object meshes) at the RGB
    camera (virtual depth, 2 m background, see megohand.data.virtual_depth), at the size the writer
    stores; "auto" = sensor if the source has it, else rendered; "none" stores no depth.
    unit_checks: refuse hands beyond MAX_HAND_DISTANCE_M and sensor depth beyond MAX_DEPTH_M (units off).
    """
    from megohand.data.store import EpisodeMeta

    path, note = hand_path(ep, hands)
    canon = episode_hands(ep, hands, retargeter)
    if unit_checks:
        check_hand_units(ep, canon)
    for side, h in canon.items():
        if len(h["valid"]) != ep.num_frames:
            raise SourceError(f"{ep.dataset}/{ep.episode}: {side} hand has {len(h['valid'])} frames, episode {ep.num_frames}")
    if ep.rgb is None:
        raise SourceError(f"{ep.dataset}/{ep.episode}: no RGB frames available",
                          hint="the source folder holds annotations only: convert a layout with its images "
                               "(`megohand convert --help`; docs/datasets.md)")
    depth_frames, depth_source, extra = None, "none", dict(ep.extra)
    if depth in ("auto", "sensor") and ep.depth is not None:
        depth_frames, depth_source = ep.depth(), ep.depth_source
        if unit_checks:
            depth_frames = check_depth_units(ep, depth_frames)
    elif depth == "rendered" or (depth == "auto" and ep.depth is None):
        from megohand.data.virtual_depth import render_episode_depth

        size = None if renderer is not None else stored_size(ep, getattr(writer, "max_short_side", None))
        depth_frames = render_episode_depth(ep, canon, hands, renderer=renderer, render_size=size)
        depth_source = "rendered"
        extra["rendered_objects"] = [o.name for o in ep.objects]
    extra["hand_path"] = "parameters" if path == "params" else f"joints ({ep.joint_order}) -> retargeting network"
    if path == "joints":
        extra["retarget_joint_error_mm"] = {
            s: round(float(np.nanmean(h["fit_error_mm"])), 3) for s, h in canon.items() if "fit_error_mm" in h and h["valid"].any()
        }
    if note:
        extra["hand_fidelity"] = note
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
        hand_source=ep.hand_source if path == "params" else "retargeted",
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
