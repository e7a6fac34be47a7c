"""Interactive 3D view of an episode as a rerun recording (``.rrd``; open with ``rerun FILE.rrd``).

Optional: needs ``rerun-sdk`` (``pip install megohand[viz]``). Logged on the timeline "frame":
the head camera (pose, pinhole, RGB, depth), each valid hand (mesh + 21 joints with bones) and,
for the synthetic world, the objects and the table. Everything is in the world frame when the
episode has ``T_cam_from_world``, else in the camera frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from megohand import io
from megohand.data.store import Episode

# Bones of the 21 joints (MANO16 + tips: thumb, index, middle, ring, pinky tips = 16..20).
BONES = [(0, 1), (1, 2), (2, 3), (3, 17), (0, 4), (4, 5), (5, 6), (6, 18), (0, 7), (7, 8), (8, 9), (9, 20),
         (0, 10), (10, 11), (11, 12), (12, 19), (0, 13), (13, 14), (14, 15), (15, 16)]


def _rgba(rgb) -> np.ndarray:
    return np.array([*(np.asarray(rgb, dtype=float) * 255).round().astype(int), 255], dtype=np.uint8)


def write_rrd(episode: Episode, hands: dict, path: str | Path, max_depth: float = 2.0) -> Path:
    """Write the 3D recording of ``episode`` to ``path``; ``hands``: {side: HandModel}."""
    import rerun as rr

    from megohand.data.synthetic.world import TABLE_EXTENT, objects_from_extra
    from megohand.data.synthetic.scene import HAND_COLOR
    from megohand.viz.frames import HAND_COLORS

    path = Path(path)
    meta = episode.meta
    T = episode.num_frames
    K = np.asarray(episode.K, dtype=np.float64)
    T_cw = episode.T_cam_from_world
    T_wc = np.linalg.inv(T_cw) if T_cw is not None else np.tile(np.eye(4), (T, 1, 1))
    with io.atomic_path(path) as tmp:
        rec = rr.RecordingStream("megohand", recording_id=f"{meta.dataset}/{meta.episode}")
        rec.save(str(tmp))
        rec.log("world", rr.TextDocument(f"{meta.dataset} / {meta.episode}\n\n{meta.instruction}"), static=True)
        if str(meta.extra.get("world", "")).startswith("z up"):
            rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
            (x0, x1), (y0, y1) = TABLE_EXTENT
            rec.log("world/table", rr.Mesh3D(vertex_positions=[[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]],
                                             triangle_indices=[[0, 1, 2], [0, 2, 3]], albedo_factor=[158, 158, 148, 255]),
                    static=True)
        objects = objects_from_extra(meta.extra)
        for i, o in enumerate(objects):
            rec.log(f"world/objects/{i}_{o['name'].replace(' ', '_')}",
                    rr.Mesh3D(vertex_positions=o["vertices"], triangle_indices=o["faces"], albedo_factor=_rgba(o["rgb"])),
                    static=True)
        height, width = episode.rgb(0).shape[:2]
        rec.log("world/camera/image", rr.Pinhole(image_from_camera=K, width=width, height=height,
                                                 camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=0.1), static=True)
        sides = {}
        for side, model in hands.items():
            h = episode.hands(side)
            valid = np.asarray(h["valid"], dtype=bool)
            if not valid.any():
                continue
            p = {k: torch.tensor(np.asarray(h[k], dtype=np.float32)) for k in ("global_orient", "hand_pose", "betas",
                                                                                  "transl")}
            with torch.no_grad():
                out = model(p["global_orient"], p["hand_pose"].reshape(-1, 15, 3), p["betas"], p["transl"])
            to_world = lambda X: np.einsum("tij,tvj->tvi", T_wc[:, :3, :3], X) + T_wc[:, None, :3, 3]  # noqa: E731
            color = HAND_COLOR if side == "right" else HAND_COLORS["left"]
            sides[side] = (to_world(out.vertices.double().numpy()), to_world(out.joints.double().numpy()), valid,
                           model.faces.cpu().numpy(), _rgba(color))
        for k in range(T):
            rec.set_time("frame", sequence=k)
            rec.set_time("time", duration=k / meta.fps)
            rec.log("world/camera", rr.Transform3D(translation=T_wc[k, :3, 3], mat3x3=T_wc[k, :3, :3]))
            rec.log("world/camera/image/rgb", rr.Image(episode.rgb(k)))
            depth = episode.depth(k)
            if depth is not None:
                rec.log("world/camera/image/depth", rr.DepthImage(depth, meter=1.0, depth_range=[0.0, max_depth]))
            seg = next((t for s, e, t in meta.segments if s <= k < e), "")
            rec.log("segment", rr.TextLog(seg))
            for i, o in enumerate(objects):
                P = o["poses"][k]
                rec.log(f"world/objects/{i}_{o['name'].replace(' ', '_')}",
                        rr.Transform3D(translation=P[:3, 3], mat3x3=P[:3, :3]))
            for side, (V, J, valid, faces, color) in sides.items():
                if not valid[k]:
                    rec.log(f"world/hands/{side}", rr.Clear(recursive=True))
                    continue
                rec.log(f"world/hands/{side}/mesh", rr.Mesh3D(vertex_positions=V[k].astype(np.float32),
                                                              triangle_indices=faces, albedo_factor=color))
                rec.log(f"world/hands/{side}/joints", rr.Points3D(J[k].astype(np.float32), radii=0.003))
                rec.log(f"world/hands/{side}/bones", rr.LineStrips3D([J[k][[a, b]] for a, b in BONES], radii=0.0015))
        rec.flush()
        rec.disconnect()
    return path
