"""Everything ``megohand show`` writes for one episode."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from megohand.data.store import Episode
from megohand.viz.frames import episode_panels
from megohand.viz.strip import pick, save_gif, save_strip
from megohand.viz.video import write_mp4


def load_hands(episode: Episode, source=None) -> dict:
    """{side: HandModel} for the sides with valid frames (``source`` as ``load_hand_model``)."""
    from megohand.hand import load_hand_model

    hands = {}
    for side in ("right", "left"):
        if side not in episode.store_info.get("sides", ("right", "left")):
            continue
        valid = np.asarray(episode.hands(side)["valid"], dtype=bool)  # a damaged frames.parquet fails here, loudly
        if valid.any():
            hands[side] = load_hand_model(source, side=side)
    stored = episode.meta.hand_model
    for model in hands.values():
        if not (stored == model.name or (model.is_mano and stored.lower().startswith("mano"))):
            warnings.warn(f"{episode.meta.dataset}/{episode.meta.episode}: parameters are for hand model "
                          f"{stored!r} but drawing with {model.name!r} (pass --hand)", stacklevel=2)
        break
    return hands


def show_episode(episode: Episode, out: str | Path, hand_source=None, scale: int = 0, alpha: float = 0.55,
                 rrd: str | Path | None = None, strip: str | Path | None = None,
                 gif: str | Path | None = None) -> list[Path]:
    """Write the MP4 (and optionally a rerun ``.rrd``, a PNG strip, a GIF); returns the paths."""
    hands = load_hands(episode, hand_source)
    H = episode.rgb(0).shape[0]
    scale = scale or max(1, round(384 / H))
    paths = []
    write_mp4(episode_panels(episode, hands, alpha=alpha, scale=scale), out, fps=episode.meta.fps)
    paths.append(Path(out))
    if strip is not None:
        idx = pick(episode.num_frames, 6)
        frames = list(episode_panels(episode, hands, alpha=alpha, scale=max(1, round(192 / H)), frames=idx,
                                     caption=False))
        paths.append(save_strip(frames, strip, columns=3, title=episode.meta.instruction))
    if gif is not None:
        idx = list(range(0, episode.num_frames, 2))
        frames = list(episode_panels(episode, hands, alpha=alpha, scale=max(1, round(192 / H)), frames=idx))
        paths.append(save_gif(frames, gif, fps=episode.meta.fps / 2))
    if rrd is not None:
        from megohand.viz.rerun_view import write_rrd

        paths.append(write_rrd(episode, hands, rrd))
    return paths


def save_overview(episodes: list[Episode], path: str | Path, per_row: int = 5, scale: int = 1) -> Path:
    """One row per episode: ``per_row`` evenly spaced raw RGB frames, titled by the instruction
    (e.g. one episode per task of the synthetic world)."""
    from megohand.viz.frames import _caption

    rows = []
    for ep in episodes:
        frames = [ep.rgb(k) for k in pick(ep.num_frames, per_row)]
        row = np.concatenate([np.pad(f, ((0, 0), (0, 2), (0, 0)), constant_values=255) for f in frames], axis=1)
        if scale > 1:
            row = row.repeat(scale, axis=0).repeat(scale, axis=1)
        rows.append(np.concatenate([_caption(row.shape[1], [ep.meta.instruction], 1), row], axis=0))
    return save_strip(rows, path, columns=1)
