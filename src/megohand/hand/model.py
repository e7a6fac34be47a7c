"""The hand layer: MANO-format parameters -> vertices and 21 joints (batched, differentiable).

Parameters are MANO's with **absolute local joint rotations** (smplx ``flat_hand_mean=True``):
``global_orient`` (..., 3), ``hand_pose`` (..., 15, 3) (or (..., 45)), ``betas`` (..., 10),
``transl`` (..., 3) [m], smplx meaning: the posed wrist joint is at ``J0(betas) + transl``.
Rotations may also be 6D (..., 6) / (..., 15, 6) or matrices (..., 3, 3) / (..., 15, 3, 3)
(``rot="rot6d"`` / ``"matrix"``). Any leading batch shape; inputs broadcast against each other.

Outputs are metres, in the frame of the parameters. Joint order (see :mod:`megohand.hand.joints`):
MANO's 16 (wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3) then the 5 fingertip
vertices (thumb, index, middle, ring, pinky).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from megohand.geometry.rotations import RotationFormat, to_matrix
from megohand.hand.joints import MANO_TIP_VERTEX_IDS
from megohand.hand.lbs import KinematicChain, rodrigues, rodrigues_basis, skin_transposed
from megohand.hand.mano_io import find_mano_file, load_asset

NUM_BETAS = 10
CPU_CHUNK = 64  # hands per block on CPU: keeps the per-vertex transforms in cache (about 5x faster)
ASSET_DIR = Path(__file__).parent / "assets"


class HandOutput(NamedTuple):
    """vertices (..., V, 3) and joints (..., 21, 3), metres."""

    vertices: torch.Tensor
    joints: torch.Tensor


class HandModel(nn.Module):
    """MANO-format linear blend skinning hand (MANO itself or the bundled open hand).

    Build it with :func:`load_hand_model` or from an asset dict (:func:`megohand.hand.mano_io.load_asset`).
    Buffers follow ``.to(device, dtype)``; none is persistent, so a hand inside another module adds
    nothing to its ``state_dict`` (the asset file is the source of truth).
    """

    def __init__(self, asset: dict, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        V = asset["v_template"].shape[0]
        nb = asset["shapedirs"].shape[2]
        shapedirs = np.zeros((V, 3, NUM_BETAS))
        shapedirs[:, :, : min(nb, NUM_BETAS)] = asset["shapedirs"][:, :, :NUM_BETAS]
        Jreg = asset["J_regressor"]
        self.name: str = asset["name"]
        self.is_mano: bool = bool(asset["is_mano"])
        self.side: str = asset.get("side", "right")
        self.license: str = asset.get("license", "")
        self.source: str = asset.get("path", "")
        self.left_fix_applied: bool = bool(asset.get("left_fix_applied", False))
        self.chain = KinematicChain(list(asset["parents"]))
        n_joints = Jreg.shape[0]
        if n_joints != 16:
            raise ValueError(f"{self.source}: expected MANO's 16 joints, got {n_joints}")
        tips = asset.get("tip_vertex_ids")
        tips = np.asarray(MANO_TIP_VERTEX_IDS if tips is None else tips, dtype=np.int64)
        if tips.shape != (5,) or tips.min() < 0 or tips.max() >= V:
            raise ValueError(f"{self.source}: tip_vertex_ids must be 5 vertex ids < {V}, got {tips.tolist()}")

        f64 = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)  # noqa: E731
        # Shape and pose blend shapes in one matrix, columns in (3, V) order (vertices last):
        # [betas | pose_feature] (B, 10+135) @ blend -> (B, 3*V)
        sd_T = shapedirs.transpose(2, 1, 0).reshape(NUM_BETAS, 3 * V)
        pd_T = asset["posedirs"].transpose(2, 1, 0).reshape(-1, 3 * V)
        blend = torch.cat([f64(sd_T), f64(pd_T)])
        J_template = f64(Jreg @ asset["v_template"])  # (16, 3)
        J_shapedirs = f64(np.einsum("jv,vkb->bjk", Jreg, shapedirs).reshape(NUM_BETAS, n_joints * 3))
        buffers = {
            "v_template": f64(asset["v_template"]),
            "v_template_T": f64(asset["v_template"].T.reshape(-1)),  # (3*V,)
            "blend": blend,
            "J_template": J_template,
            "J_shapedirs": J_shapedirs,
            "weights": f64(asset["weights"]),
            "weights_T": f64(asset["weights"].T),  # (16, V)
            "hands_mean": f64(asset["hands_mean"]),
            "hands_components": f64(asset["hands_components"]),
            "shapedirs": f64(shapedirs),
            "J_regressor": f64(Jreg),
        }
        for k, v in buffers.items():
            self.register_buffer(k, v.to(dtype=dtype, device=device), persistent=False)
        self.register_buffer("_eye", torch.eye(3, dtype=dtype, device=device), persistent=False)
        self.register_buffer("_rodrigues", rodrigues_basis(dtype, device), persistent=False)
        self.register_buffer("faces", torch.as_tensor(asset["faces"], dtype=torch.long, device=device), persistent=False)
        self.register_buffer("tip_vertex_ids", torch.as_tensor(tips, dtype=torch.long, device=device), persistent=False)

    # ------------------------------------------------------------------ info
    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return 21

    def describe(self) -> str:
        """Human-readable summary: name, MANO or not, sizes, source, licence."""
        lines = [
            f"hand model : {self.name} ({'MANO' if self.is_mano else 'NOT MANO'}), {self.side} hand",
            f"source     : {self.source}",
            f"vertices   : {self.num_vertices}   faces: {self.faces.shape[0]}   joints: 16 + 5 tips",
            f"betas      : {NUM_BETAS}   pose bases: {self.blend.shape[0] - NUM_BETAS}",
            f"tip verts  : {self.tip_vertex_ids.tolist()} (thumb, index, middle, ring, pinky)",
            f"licence    : {self.license}",
        ]
        if self.side == "left" and self.is_mano:
            lines.append(f"left fix   : shapedirs[:,0,:] flipped = {self.left_fix_applied}")
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, is_mano={self.is_mano}, side={self.side}, V={self.num_vertices}"

    # ------------------------------------------------------------------ geometry
    def rest_joints(self, betas: torch.Tensor | None = None) -> torch.Tensor:
        """Shaped rest-pose joints: betas (..., 10) -> (..., 16, 3) [m]; J0 = [..., 0, :]."""
        if betas is None:
            return self.J_template
        betas = betas.to(self.J_template.dtype)
        return self.J_template + (betas @ self.J_shapedirs).unflatten(-1, (16, 3))

    def _rotations(self, global_orient, hand_pose, rot: RotationFormat) -> torch.Tensor:
        """(..., 16, 3, 3) local rotations, row 0 = global orient; batch dims broadcast."""
        width = {"axis_angle": 3, "rot6d": 6}.get(rot)
        dt = self.J_template.dtype
        global_orient, hand_pose = global_orient.to(dt), hand_pose.to(dt)
        if width is not None and hand_pose.shape[-1] == 15 * width:
            hand_pose = hand_pose.unflatten(-1, (15, width))
        tail = (width,) if width is not None else (3, 3)
        if rot not in ("axis_angle", "rot6d", "matrix"):
            raise ValueError(f"unknown rotation format {rot!r}; expected axis_angle, rot6d or matrix")
        n = len(tail)
        if global_orient.shape[-n:] != tail or hand_pose.shape[-n - 1 :] != (15, *tail):
            raise ValueError(
                f"bad rotation shapes for rot={rot!r}: global_orient {tuple(global_orient.shape)}, "
                f"hand_pose {tuple(hand_pose.shape)}; expected (..., {tail}) and (..., 15, {tail})"
            )
        batch = torch.broadcast_shapes(global_orient.shape[:-n], hand_pose.shape[: -n - 1])
        rots = torch.cat(
            [global_orient.expand(*batch, *tail).unsqueeze(-n - 1), hand_pose.expand(*batch, 15, *tail)], dim=-n - 1
        )
        if rot == "axis_angle":  # fused kernel, same convention as geometry.rotations (tested)
            return rodrigues(rots, self._rodrigues)
        return to_matrix(rots, rot)

    def forward(
        self,
        global_orient: torch.Tensor,
        hand_pose: torch.Tensor,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        rot: RotationFormat = "axis_angle",
    ) -> HandOutput:
        """Posed hand. Shapes in the module docstring; betas/transl default to zeros.

        Returns:
            HandOutput(vertices (..., V, 3), joints (..., 21, 3)) in metres.
        """
        R = self._rotations(global_orient, hand_pose, rot)
        dt = self.J_template.dtype
        shapes = [R.shape[:-3]]
        if betas is not None:
            betas = betas.to(dt)
            if betas.shape[-1] != NUM_BETAS:
                raise ValueError(f"betas must have {NUM_BETAS} values, got shape {tuple(betas.shape)}")
            shapes.append(betas.shape[:-1])
        if transl is not None:
            transl = transl.to(dt)
            shapes.append(transl.shape[:-1])
        batch = torch.broadcast_shapes(*shapes)
        B = math.prod(batch)
        R = R.expand(*batch, 16, 3, 3).reshape(B, 16, 3, 3)
        if betas is not None:
            betas = betas.expand(*batch, NUM_BETAS).reshape(B, NUM_BETAS)
        if transl is not None:
            transl = transl.expand(*batch, 3).reshape(B, 3)
        if R.device.type == "cpu" and B > 2 * CPU_CHUNK:
            verts = R.new_empty(B, self.num_vertices, 3)
            joints = R.new_empty(B, 21, 3)
            for s in range(0, B, CPU_CHUNK):
                e = s + CPU_CHUNK
                vT, j = self._forward_flat(
                    R[s:e], None if betas is None else betas[s:e], None if transl is None else transl[s:e]
                )
                verts[s:e] = vT.transpose(1, 2)  # autograd-safe slice writes (CopySlices)
                joints[s:e] = j
        else:
            vT, joints = self._forward_flat(R, betas, transl)
            verts = vT.transpose(1, 2).contiguous()
        return HandOutput(verts.view(*batch, -1, 3), joints.view(*batch, 21, 3))

    def _forward_flat(self, R: torch.Tensor, betas: torch.Tensor | None, transl: torch.Tensor | None):
        """R (B, 16, 3, 3), betas (B, 10) | None, transl (B, 3) | None -> vertices (B, 3, V) (transposed), joints (B, 21, 3)."""
        B = R.shape[0]
        pose_feature = (R[:, 1:] - self._eye).reshape(B, -1)  # (B, 135)
        if betas is None:
            feats = torch.cat([pose_feature.new_zeros(B, NUM_BETAS), pose_feature], dim=-1)
            J = self.J_template.expand(B, 16, 3)
        else:
            feats = torch.cat([betas, pose_feature], dim=-1)
            J = self.J_template + (betas @ self.J_shapedirs).view(B, 16, 3)
        v_posed_T = torch.addmm(self.v_template_T, feats, self.blend).view(B, 3, -1)  # (B, 3, V)

        G_R, G_t = self.chain.forward_kinematics(R, J)
        verts_T = skin_transposed(G_R, G_t, J, v_posed_T, self.weights_T, transl)  # (B, 3, V), with transl
        tips = verts_T.index_select(2, self.tip_vertex_ids).transpose(1, 2)  # (B, 5, 3)
        joints = torch.cat([G_t if transl is None else G_t + transl.unsqueeze(1), tips], dim=1)
        return verts_T, joints

    def forward_params(self, params, rot: RotationFormat = "axis_angle") -> HandOutput:
        """Same as forward for a :class:`megohand.hand.vector.HandParams`."""
        return self(params.global_orient, params.hand_pose, params.betas, params.transl, rot=rot)


def open_hand_path(side: str = "right") -> Path:
    """Where the bundled open hand asset of ``side`` lives."""
    return ASSET_DIR / f"open_hand_{side}.npz"


def load_hand_model(
    source: str | os.PathLike | None = None,
    side: str = "right",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> HandModel:
    """The hand model: MANO from ``source`` (folder or file) or ``$MANO_MODEL_DIR``, else the bundled open hand.

    Args:
        source: MANO folder (``MANO_RIGHT.pkl``/``MANO_LEFT.pkl`` or ``.npz``) or one asset file
            (MANO or any MANO-format ``.npz``, e.g. the open hand).
        side: "right" or "left".
    Raises:
        FileNotFoundError: naming what is missing (MANO file, or the bundled open hand asset).
        ValueError: naming the file when it is corrupt or not MANO-format.
    """
    path = find_mano_file(source, side)
    if path is None:
        path = open_hand_path(side)
        if not path.is_file():
            raise FileNotFoundError(
                f"no hand model: $MANO_MODEL_DIR is unset and the bundled open hand asset {path} is missing "
                "(build it with scripts/build_open_hand.py, or pass a MANO folder)"
            )
    return HandModel(load_asset(path, side=side), dtype=dtype, device=device)
