"""Virtual RGB-D renderer: metric depth for sources without depth at the RGB camera (ARCTIC, HOT3D, OakInk2).

Per frame, both hands (the hand layer's mesh from the canonical camera-frame parameters; invalid frames
skipped) and every :class:`~megohand.data.sources.common.ObjectTrack` of the episode (mesh and articulated
``parts`` posed by ``T_world_from_object``, moved into the camera by ``ep.T_cam_from_world`` for
world-frame sources) are rasterised at the RGB camera (the episode's K, width, height; OpenCV frame) with
:class:`megohand.render.Renderer`. A pixel holds the camera z [m] of the nearest surface; pixels with no
surface hold the 2 m background, and everything is clipped to [0, 2] m (farther surfaces read 2 m).

Frames are rendered in chunks of up to ``MAX_CHUNK`` frames (one ``render_batch`` call each, depth only: the
renderer draws as many frames per draw call as its framebuffer holds and reads them back at once) and
streamed: the result is an iterator of T float32 (H, W) frames, which ``StoreWriter.write_episode(depth=...)``
consumes one by one. One renderer per image size is kept per process (the GL context is per process; a GPU's
EGL when present).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from megohand.data.sources.common import NativeEpisode, SourceError

BACKGROUND_M = 2.0  # paper: background and upper clip of rendered depth [m]
CHUNK_BYTES = 256 << 20  # per chunk: the depth frames (4 bytes/pixel), and the vertices (32 bytes each)
MAX_CHUNK = 256

_RENDERERS: dict[tuple[int, int], object] = {}


def get_renderer(width: int, height: int):
    """This process's depth renderer for (width, height): 2 m background, made once per size."""
    from megohand.render import Renderer

    key = (int(width), int(height))
    if key not in _RENDERERS:
        _RENDERERS[key] = Renderer(key[0], key[1], background_depth=BACKGROUND_M)
    return _RENDERERS[key]


def render_episode_depth(
    ep: NativeEpisode,
    canon: dict[str, dict],
    hands,
    renderer=None,
    render_size: tuple[int, int] | None = None,
) -> Iterator[np.ndarray]:
    """Rendered depth of an episode: an iterator of ``ep.num_frames`` float32 (H, W) frames [m].

    Args:
        ep: the native episode (K, width, height, num_frames, objects, T_cam_from_world, convention).
        canon: side -> canonical camera-frame params (``global_orient`` (T,3), ``hand_pose`` (T,15,3),
            ``betas`` (T,10), ``transl`` (T,3), ``valid`` (T,)), as from ``pipeline.episode_hands``.
        hands: side -> hand model (``pipeline.HandModels``).
        renderer: a ``Renderer`` to use, its settings as they are (default: this process's one for the
            render size, 2 m background).
        render_size: (width, height) to rasterise at (default: the renderer's size, else the episode's),
            with K scaled to match (pixel-centre convention); frames are then enlarged by nearest
            neighbour to (ep.width, ep.height), so that a store that downscales to render_size
            (``StoreWriter(max_short_side=...)``) gets exactly the rendered pixels.
    Raises:
        SourceError: naming the episode and the field, when poses, meshes or hands do not fit the episode.
    """
    what = f"{ep.dataset}/{ep.episode}"
    T, W, H = int(ep.num_frames), int(ep.width), int(ep.height)
    K = np.asarray(ep.K, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise SourceError(f"{what} [K]: need finite 3x3 intrinsics, got shape {K.shape}")
    if render_size is None and renderer is not None:
        render_size = (renderer.width, renderer.height)
    w, h = (int(x) for x in (render_size or (W, H)))
    down = None
    if (w, h) != (W, H):
        from megohand.data.store import Downscale, scale_intrinsics

        down = Downscale.of(W, H, min(w, h))  # the store's write-time downscale, when it is that one
        down = down if (down.width, down.height) == (w, h) else None
        K = down.K(K) if down is not None else scale_intrinsics(K, (w / W, h / H))
    if renderer is None:
        renderer = get_renderer(w, h)
    elif (renderer.width, renderer.height) != (w, h):
        raise ValueError(f"{what}: renderer is {renderer.width}x{renderer.height}, frames are {w}x{h}")
    hand_meshes = _hand_vertices(what, T, canon, hands)
    objects = _object_poses(what, ep)
    vertices = sum(v.shape[1] for _, v, _ in hand_meshes) + sum(len(v) for v, _, _ in objects)
    chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // (4 * w * h), CHUNK_BYTES // (32 * max(vertices, 1))))
    return _frames(T, K, renderer, hand_meshes, objects, chunk, (H, W), down)


def _hand_vertices(what: str, T: int, canon: dict, hands) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per side (valid (T,) bool, vertices (T,V,3) float32 camera frame [m], faces (F,3) int32), one
    batched hand-layer call per side over the valid frames."""
    import torch

    out = []
    for side, h in canon.items():
        valid = np.asarray(h.get("valid", np.ones(T, bool)), bool).reshape(-1)
        if len(valid) != T:
            raise SourceError(f"{what} [{side} hand]: {len(valid)} frames, episode has {T}")
        model = hands[side]
        faces = model.faces.detach().cpu().numpy().astype(np.int32)
        verts = np.zeros((T, model.num_vertices, 3), np.float32)
        idx = np.flatnonzero(valid)
        if len(idx):
            dt, dev = model.J_template.dtype, model.J_template.device

            def arg(name, shape):
                a = np.asarray(h[name], np.float64)
                if a.shape[0] != T:
                    raise SourceError(f"{what} [{side} {name}]: {a.shape[0]} frames, episode has {T}")
                return torch.as_tensor(a[idx].reshape(len(idx), *shape), dtype=dt, device=dev)

            with torch.no_grad():
                out_v = model(arg("global_orient", (3,)), arg("hand_pose", (15, 3)), arg("betas", (10,)),
                              arg("transl", (3,))).vertices
            verts[idx] = out_v.cpu().numpy()
        out.append((valid, verts, faces))
    return out


def _object_poses(what: str, ep: NativeEpisode) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every object mesh and articulated part as (vertices (V,3) float32, faces (F,3) int32,
    T_cam_from_object (T,4,4) float64, NaN where unknown)."""
    T = int(ep.num_frames)
    pieces = []
    for i, obj in enumerate(ep.objects):
        name = f"object {getattr(obj, 'name', i)!r}"
        pieces.append((name, obj.vertices, obj.faces, obj.T_world_from_object))
        for j, part in enumerate(getattr(obj, "parts", None) or []):
            try:
                v, f, P = part
            except (TypeError, ValueError):
                raise SourceError(f"{what}: {name} [parts][{j}]: need (vertices, faces, poses)") from None
            pieces.append((f"{name} [parts][{j}]", v, f, P))
    if not pieces:
        return []
    T_cw = None
    if ep.convention.frame == "world":
        if ep.T_cam_from_world is None:
            raise SourceError(f"{what} [T_cam_from_world]: world-frame objects need per-frame world->camera poses")
        T_cw = np.asarray(ep.T_cam_from_world, np.float64)
        if T_cw.shape != (T, 4, 4):
            raise SourceError(f"{what} [T_cam_from_world]: need ({T}, 4, 4), got {T_cw.shape}")
    out = []
    for name, v, f, P in pieces:
        v, f, P = np.asarray(v, np.float32), np.asarray(f), np.asarray(P, np.float64)
        if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
            raise SourceError(f"{what}: {name} [vertices]: need finite (V, 3) metres, got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
            raise SourceError(f"{what}: {name} [faces]: need (F, 3) indices into {len(v)} vertices, got {f.shape}")
        if P.shape != (T, 4, 4):
            n = P.shape[0] if P.ndim == 3 else P.shape
            raise SourceError(f"{what}: {name} [T_world_from_object]: {n} poses, episode has {T} frames")
        out.append((v, f.astype(np.int32), P if T_cw is None else T_cw @ P))
    return out


def _frames(T, K, renderer, hand_meshes, objects, chunk, out_hw, down=None) -> Iterator[np.ndarray]:
    """Render chunks of frames (depth only, many frames per draw); yield (H, W) float32 [m] frames at out_hw
    (enlarged by nearest neighbour so that the ``Downscale`` ``down``, when given, takes back exactly the rendered
    pixels)."""
    from megohand.data.store import resize_nearest
    from megohand.render import Mesh

    for s in range(0, T, chunk):
        e = min(s + chunk, T)
        posed = []  # every object over the chunk at once: (n, V, 3) camera-frame vertices, faces, known (n,)
        for v, f, P in objects:
            R, t = P[s:e, :3, :3].astype(np.float32), P[s:e, :3, 3].astype(np.float32)
            posed.append((np.einsum("nij,vj->nvi", R, v) + t[:, None], f, np.isfinite(P[s:e]).all((1, 2))))
        frames = []
        for t in range(s, e):
            meshes = [Mesh(verts[t], faces) for valid, verts, faces in hand_meshes if valid[t]]
            meshes += [Mesh(pv[t - s], f) for pv, f, known in posed if known[t - s]]
            frames.append(meshes)
        depth = renderer.render_batch(K, frames, outputs=("depth",)).depth
        for d in depth:
            yield d if d.shape == out_hw else resize_nearest(d, out_hw) if down is None else down.enlarge(d, out_hw)


__all__ = ["BACKGROUND_M", "get_renderer", "render_episode_depth"]
