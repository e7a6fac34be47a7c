"""Inverse MANO retargeting: 21 3D joints -> hand parameters (the Inverse MANO Retargeting Network of
arXiv 2505.16602; the paper leaves the details open, the choices below are ours).

Network ``InverseMANO``: a residual MLP on **wrist-centred** joints (21x3, MANO21 order, metres,
scaled to decimetres) -> finger rotations (15 x 6D), betas (10), wrist rotation (6D) and a wrist
offset ``d`` (3). With ``canonical=True`` (default) the centred joints are first expressed in a palm
frame built from the input (wrist -> middle1, index1 - pinky1; Gram-Schmidt), and the predicted wrist
rotation and offset are rotated back: the MLP never has to learn the 3D rotation group. The smplx
translation follows from the input wrist: ``transl = wrist + d - J0(betas)`` (the posed wrist sits
at ``J0 + transl``), so the network never has to guess absolute positions.

Training (``train_inverse_mano``) samples parameters from the hand model (uniform global rotations,
fingers curled along ``hands_mean`` by a random factor plus noise, betas ~ N(0, 1), optional extra
params from converted datasets), with the paper's two-stage objective, L2 terms, w1 = w2 = 1:

* stage 1 (first ``switch`` fraction of steps, sigma = 1): ``w1 L_shape(theta, beta) + L_recon``;
* stage 2 (sigma = 0): ``w2 L_pose(r, t) + L_recon``;

``L_recon`` = squared joint error of the hand model on the predicted params against the input
joints [dm^2]; ``L_shape`` = MSE of the 15 finger 6Ds and the betas; ``L_pose`` = MSE of the wrist
6D and of the translation [dm].

Optional per-sequence refinement (:meth:`Retargeter.refine`): Adam on per-frame 6D rotations and
translation with one shared beta, minimising joint error + temporal smoothness (joint acceleration
of consecutive frames) + a small beta prior, starting from the network output.

Left hands are mirrored (x -> -x) into right hands for the network and mirrored back (exact when
the left model is the mirror image of the right one, as the bundled open hand; close for MANO);
the refinement then runs with the left hand model itself.

Checkpoints (:func:`save_network` / :func:`load_network`): a folder with ``config.json`` and
``model.safetensors``. The config records the hand model (name + joints at two fixed parameter
sets, :func:`hand_signature`); :class:`Retargeter` refuses a network trained for another model. The
package ships one for the bundled open hand (:data:`PRETRAINED_DIR`), used when no path is given.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from megohand.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)

IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
MIRROR = torch.tensor([-1.0, 1.0, 1.0])
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "assets" / "retarget" / "open_hand"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
# MANO21 joints of the palm frame: wrist, index1, middle1, pinky1
_WRIST, _INDEX1, _MIDDLE1, _PINKY1 = 0, 1, 4, 7


@dataclass
class RetargetConfig:
    """Network size and the hand model it was trained for."""

    hidden: int = 256
    """Width of the residual MLP."""
    blocks: int = 4
    """Residual blocks."""
    canonical: bool = True
    """Express the input in the palm frame (rotation-invariant input)."""
    hand_model: str = ""
    """Name of the hand model used for training (checked at load time)."""
    hand_signature: list = field(default_factory=list)
    """:func:`hand_signature` of that model (checked at load time)."""
    info: dict = field(default_factory=dict)
    """Provenance: training settings and held-out errors (not used by the code)."""


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x):
        return x + self.net(x)


def palm_frame(joints: torch.Tensor) -> torch.Tensor:
    """Right-hand palm frame of MANO21 joints (B,21,3) -> rotation (B,3,3) whose columns are its axes
    in the input frame: x = wrist -> middle1, y = index1 - pinky1 made orthogonal to x, z = x cross y."""
    a = joints[:, _MIDDLE1] - joints[:, _WRIST]
    b = joints[:, _INDEX1] - joints[:, _PINKY1]
    return rot6d_to_matrix(torch.cat([a, b], dim=-1))


class InverseMANO(nn.Module):
    """Wrist-centred joints (B,21,3) [m], camera frame -> (theta6d (B,15,6), betas (B,10),
    r6d (B,6) wrist rotation in the camera frame, wrist offset (B,3) [m])."""

    def __init__(self, config: RetargetConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.inp = nn.Linear(63, h)
        self.blocks = nn.Sequential(*[_Block(h) for _ in range(config.blocks)])
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, 90 + 10 + 6 + 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("identity6d", torch.tensor(IDENTITY_6D))

    def forward(self, joints_centred: torch.Tensor):
        F = palm_frame(joints_centred) if self.config.canonical else None
        x = joints_centred if F is None else joints_centred @ F  # coordinates in the palm frame
        out = self.head(self.norm(self.blocks(self.inp((x * 10.0).flatten(-2)))))
        theta = out[..., :90].unflatten(-1, (15, 6)) + self.identity6d
        betas = out[..., 90:100]
        r6d = out[..., 100:106] + self.identity6d
        offset = out[..., 106:109] * 0.1
        if F is not None:
            r6d = matrix_to_rot6d(F @ rot6d_to_matrix(r6d))
            offset = (F @ offset.unsqueeze(-1)).squeeze(-1)
        return theta, betas, r6d, offset


# ----------------------------------------------------------------------------- fast joints


class JointsOnly:
    """The hand model's 21 joints without skinning every vertex (training and refinement only need
    joints): FK for the 16 joints, blend shapes + LBS for the 5 fingertip vertices only. Same maths
    as ``hand(...).joints`` (tested against it). Follows the hand's device and dtype."""

    def __init__(self, hand):
        V = hand.v_template.shape[0]
        if hand.blend.shape[1] != 3 * V:
            raise ValueError(f"{hand.source}: blend matrix has {hand.blend.shape[1]} columns, expected 3 x {V}")
        self.hand = hand

    def __call__(self, rot, hand_pose, betas, transl, fmt: str = "rot6d", offsets=None) -> torch.Tensor:
        """rot (B,6|3,3|3), hand_pose (B,15,6|3,3|3), betas (B,10), transl (B,3) [m] -> joints (B,21,3) [m].

        ``offsets`` (21,3) or (B,21,3) [m]: skeleton adaptation, each point moved by its offset expressed
        in its bone's frame (:func:`bone_frames`; the posed global rotation of that joint)."""
        h = self.hand
        dt = h.J_template.dtype
        R = torch.cat([_to_matrix(rot.to(dt).unsqueeze(-2 if fmt != "matrix" else -3), fmt, h),
                       _to_matrix(hand_pose.to(dt), fmt, h)], dim=-3)  # (B,16,3,3)
        B, V = R.shape[0], h.v_template.shape[0]
        betas = betas.to(dt)
        J = h.rest_joints(betas)  # (B,16,3)
        G_R, G_t = h.chain.forward_kinematics(R, J)
        tips = h.tip_vertex_ids
        # the blend matrix's columns are in (3, V) order (HandModel): coordinate k of vertex v at k*V + v
        cols = (torch.arange(3, device=tips.device)[None] * V + tips[:, None]).reshape(-1)
        feats = torch.cat([betas, (R[:, 1:] - h._eye).reshape(B, -1)], dim=-1)
        v = h.v_template[tips] + (feats @ h.blend.index_select(1, cols)).view(B, 5, 3)
        # LBS: v' = sum_j w_j (G_R[j] (v - J[j]) + G_t[j])
        local = v[:, :, None, :] - J[:, None, :, :]  # (B,5,16,3)
        posed = (G_R[:, None] @ local.unsqueeze(-1)).squeeze(-1) + G_t[:, None]
        tip_pos = (h.weights[tips][None, :, :, None] * posed).sum(-2)
        out = torch.cat([G_t, tip_pos], dim=1) + transl.to(dt)[:, None]
        if offsets is not None:
            frames = G_R[:, bone_frames(h)]  # (B,21,3,3)
            out = out + (frames @ offsets.to(dt).expand(B, 21, 3).unsqueeze(-1)).squeeze(-1)
        return out


# the last joint of each fingertip's finger (tips in MANO21 order: thumb, index, middle, ring, pinky)
_TIP_PARENTS = (15, 3, 6, 12, 9)


def bone_frames(hand) -> list[int]:
    """For each MANO21 point, the joint whose posed global rotation carries the bone that ends at the
    point (the parent joint; the wrist: itself; a fingertip: its finger's last joint): the frame of
    the point's skeleton-adaptation offset (21 ints)."""
    parents = hand.chain.parents
    return [0] + [int(parents[j]) for j in range(1, 16)] + list(_TIP_PARENTS)


def _to_matrix(rot: torch.Tensor, fmt: str, hand) -> torch.Tensor:
    if fmt == "axis_angle":  # the hand layer's fused Rodrigues (same convention, tested there)
        from megohand.hand.lbs import rodrigues

        return rodrigues(rot, hand._rodrigues)
    from megohand.geometry.rotations import to_matrix

    return to_matrix(rot, fmt)


def hand_signature(hand) -> list[float]:
    """Joints of ``hand`` [m] at two fixed parameter sets (rest; a deterministic pose + shape),
    flattened (126 values, rounded to 0.1 um): what a checkpoint uses to recognise its hand model."""
    dt = hand.J_template.dtype
    dev = hand.J_template.device
    k = torch.arange(45, dtype=torch.float64)
    pose = torch.stack([torch.zeros(45, dtype=torch.float64), 0.3 * torch.sin(1.7 * k)]).view(2, 15, 3)
    go = torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.4, 0.1]], dtype=torch.float64)
    betas = torch.stack([torch.zeros(10, dtype=torch.float64), torch.cos(0.9 * torch.arange(10, dtype=torch.float64))])
    with torch.no_grad():
        J = hand(go.to(dev, dt), pose.to(dev, dt), betas.to(dev, dt), torch.zeros(2, 3, device=dev, dtype=dt)).joints
    return [round(float(x), 7) for x in J.double().cpu().reshape(-1)]


def same_hand(signature: list, hand, atol: float = 2e-5) -> bool:
    """True when ``signature`` (from a checkpoint) matches ``hand`` within ``atol`` metres."""
    ref = np.asarray(hand_signature(hand))
    sig = np.asarray(signature, dtype=np.float64)
    return sig.shape == ref.shape and bool(np.abs(sig - ref).max() <= atol)


# ----------------------------------------------------------------------------- sampling / losses

# hand_pose rows of each finger (MANO order: index, middle, pinky, ring, thumb)
_FINGER_OF_JOINT = torch.arange(15) // 3


def sample_params(hand, n: int, generator: torch.Generator | None = None, finger_std: float = 0.25,
                  curl: tuple[float, float] = (-0.4, 2.6)):
    """Random hand parameters (float32).

    Wrist rotation uniform; fingers ``c * hands_mean + N(0, finger_std)`` per axis-angle component,
    with a curl factor ``c`` ~ U(curl) per finger (+ N(0, 0.15) per joint), so that open hands
    (c < 0) to fists (c ~ 2.5: MANO's and the open hand's mean pose flex each joint 0.25-0.65 rad)
    are covered; betas ~ N(0,1) clipped to +-3; wrist position ~ N((0,0,0.5), 0.15) m.
    Returns dict(global_orient (n,3), hand_pose (n,15,3), betas (n,10), transl (n,3)) [rad, m].
    """
    import roma

    g = generator
    f64 = torch.float64
    q = torch.randn(n, 4, generator=g, dtype=f64)  # normalised Gaussian = uniform rotation
    R = roma.unitquat_to_rotmat(q / q.norm(dim=-1, keepdim=True))
    mean = hand.hands_mean.detach().cpu().double().reshape(15, 3)
    lo, hi = curl
    c = lo + (hi - lo) * torch.rand(n, 5, generator=g, dtype=f64)
    c = c[:, _FINGER_OF_JOINT] + 0.15 * torch.randn(n, 15, generator=g, dtype=f64)
    pose = c[..., None] * mean + finger_std * torch.randn(n, 15, 3, generator=g, dtype=f64)
    betas = torch.randn(n, 10, generator=g, dtype=f64).clamp(-3, 3)
    wrist = torch.tensor([0.0, 0.0, 0.5], dtype=f64) + 0.15 * torch.randn(n, 3, generator=g, dtype=f64)
    J0 = hand.rest_joints(betas.to(hand.J_template)).detach().cpu()[..., 0, :].double()
    return {
        "global_orient": matrix_to_axis_angle(R).float(),
        "hand_pose": pose.float(),
        "betas": betas.float(),
        "transl": (wrist - J0).float(),
    }


def sample_sequences(hand, n: int, length: int, generator: torch.Generator | None = None,
                     turn: float = 0.5, move: float = 0.1) -> dict:
    """n smooth sequences of ``length`` frames between two hands a, b: a from :func:`sample_params`,
    b with a's betas, fresh fingers, the wrist turned by N(0, ``turn``) rad per axis and moved by
    N(0, ``move``) m per axis (at 30 fps and 32 frames: about a second of brisk motion). Every local
    rotation is slerped, the translation lerped. Returns dict of (n, length, ...) tensors as
    :func:`sample_params`."""
    import roma

    a, b = sample_params(hand, n, generator), sample_params(hand, n, generator)
    d = turn * torch.randn(n, 3, generator=generator)
    b["global_orient"] = roma.rotmat_to_rotvec(axis_angle_to_matrix(d) @ axis_angle_to_matrix(a["global_orient"]))
    b["transl"] = a["transl"] + move * torch.randn(n, 3, generator=generator)
    w = torch.linspace(0, 1, length)
    qa = roma.rotvec_to_unitquat(torch.cat([a["global_orient"][:, None], a["hand_pose"]], 1))  # (n,16,4)
    qb = roma.rotvec_to_unitquat(torch.cat([b["global_orient"][:, None], b["hand_pose"]], 1))
    aa = roma.unitquat_to_rotvec(roma.unitquat_slerp(qa, qb, w))  # (length, n, 16, 3)
    aa = aa.transpose(0, 1)
    return {
        "global_orient": aa[:, :, 0].contiguous(),
        "hand_pose": aa[:, :, 1:].contiguous(),
        "betas": a["betas"][:, None].expand(n, length, 10).contiguous(),
        "transl": a["transl"][:, None] + w[None, :, None] * (b["transl"] - a["transl"])[:, None],
    }


# parent of each MANO21 point (the 16 MANO joints, then the tips of thumb, index, middle, ring, pinky)
PARENTS21 = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14) + _TIP_PARENTS
_KNUCKLES = (1, 4, 7, 10)  # index1, middle1, pinky1, ring1 (MCP)
_THUMB_BASE = 13  # thumb1 (CMC)


def scale_bones(joints: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """MANO21 joints (T,21,3) with every bone (point - parent) scaled by ``scale`` (21,) (entry 0 unused)."""
    out = joints.clone()
    for j in range(1, 21):  # parents come first
        p = PARENTS21[j]
        out[:, j] = out[:, p] + scale[j] * (joints[:, j] - joints[:, p])
    return out


def foreign_skeleton(joints: torch.Tensor, generator: torch.Generator | None = None, bone_jitter: float = 0.1,
                     knuckle_mm: tuple[float, float] = (15.0, 25.0), thumb_base_mm: float = 20.0,
                     noise_mm: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A hand model's joint sequence (T,21,3) [m] as another skeleton would report it (a sensor's, a tracker's,
    an image landmarker's), constant over the sequence except the noise:

    * every bone scaled by U(1 - ``bone_jitter``, 1 + ``bone_jitter``) (the person's bones differ);
    * the four knuckles (MCP) moved towards the wrist along their metacarpal by U(``knuckle_mm``) (real
      skeletons put them 15-25 mm closer to the wrist than MANO's joints);
    * the thumb base (CMC) moved by ``thumb_base_mm`` in a random direction fixed in the palm frame
      (:func:`palm_frame`);
    * i.i.d. Gaussian noise of ``noise_mm`` RMS 3D length per point and frame.

    Returns (observed (T,21,3), clean (T,21,3)) [m]: with and without the noise."""
    g = generator
    dt = joints.dtype
    J = scale_bones(joints, 1 + bone_jitter * (2 * torch.rand(21, generator=g, dtype=dt) - 1))
    out = J.clone()
    for k in _KNUCKLES:
        d = J[:, 0] - J[:, k]
        shift = (knuckle_mm[0] + (knuckle_mm[1] - knuckle_mm[0]) * torch.rand((), generator=g, dtype=dt)) * 1e-3
        out[:, k] = J[:, k] + shift * d / d.norm(dim=-1, keepdim=True)
    u = torch.randn(3, generator=g, dtype=dt)
    out[:, _THUMB_BASE] = J[:, _THUMB_BASE] + palm_frame(joints) @ (thumb_base_mm * 1e-3 * u / u.norm())
    noise = torch.randn(out.shape, generator=g, dtype=dt) * (noise_mm * 1e-3 / 3 ** 0.5)
    return out + noise, out


def _decode(fk: JointsOnly, wrist, theta6d, betas, r6d, offset):
    """Network outputs -> (joints (B,21,3), transl (B,3)) [m]."""
    J0 = fk.hand.rest_joints(betas)[..., 0, :]
    transl = wrist + offset - J0
    return fk(r6d, theta6d, betas, transl), transl


def two_stage_loss(fk: JointsOnly, net: InverseMANO, batch: dict, sigma: float, w1: float = 1.0, w2: float = 1.0,
                   noise: float = 0.0, generator: torch.Generator | None = None):
    """L_inv = sigma * (w1 L_shape + L_recon) + (1 - sigma) * (w2 L_pose + L_recon) on a batch of
    params (axis-angle, :func:`sample_params`). ``noise`` [m]: Gaussian noise on the network's input
    joints, its standard deviation drawn per hand from U(0, noise) (the reconstruction target stays
    clean). Returns (loss, parts)."""
    with torch.no_grad():
        R_gt = axis_angle_to_matrix(torch.cat([batch["global_orient"][:, None], batch["hand_pose"]], 1))  # (B,16,3,3)
        joints = fk(R_gt[:, 0], R_gt[:, 1:], batch["betas"], batch["transl"], fmt="matrix")
        rot6d_gt = matrix_to_rot6d(R_gt)
        inp = joints
        if noise > 0:
            B = joints.shape[0]
            std = noise * torch.rand(B, 1, 1, generator=generator, dtype=joints.dtype)
            inp = joints + (std * torch.randn(joints.shape, generator=generator, dtype=joints.dtype)).to(joints.device)
    wrist = inp[:, 0]
    theta, betas, r6d, offset = net(inp - wrist[:, None])
    pred_joints, transl = _decode(fk, wrist, theta, betas, r6d, offset)
    recon = ((pred_joints - joints) * 10.0).pow(2).sum(-1).mean()  # dm^2 per joint
    l_shape = (theta - rot6d_gt[:, 1:]).pow(2).mean() + (betas - batch["betas"]).pow(2).mean()
    l_pose = (r6d - rot6d_gt[:, 0]).pow(2).mean() + ((transl - batch["transl"]) * 10.0).pow(2).mean()
    loss = sigma * (w1 * l_shape + recon) + (1.0 - sigma) * (w2 * l_pose + recon)
    parts = {"recon": float(recon.detach()), "shape": float(l_shape.detach()), "pose": float(l_pose.detach()),
             "mpjpe_mm": float((pred_joints - joints).detach().norm(dim=-1).mean()) * 1000}
    return loss, parts


def train_inverse_mano(
    hand,
    config: RetargetConfig,
    steps: int = 20000,
    batch_size: int = 512,
    lr: float = 1e-3,
    switch: float = 0.5,
    seed: int = 0,
    extra_params: dict | None = None,
    log_every: int = 0,
    noise: float = 0.005,
    w1: float = 1.0,
    w2: float = 1.0,
    progress: bool = False,
) -> InverseMANO:
    """Train the network on parameters sampled from ``hand`` (+ ``extra_params``: dict of tensors
    with the keys of :func:`sample_params`, e.g. converted dataset hands, mixed in at half of each
    batch). sigma = 1 for the first ``switch`` fraction of the steps, then 0. ``noise`` [m]: input
    joint noise of :func:`two_stage_loss` (without it a long-trained network is precise on the hand
    model's own joints but breaks down on joints a millimetre off them). ``progress``: tqdm bar.
    The returned network's config carries the hand's name and signature."""
    config.hand_model = hand.name
    config.hand_signature = hand_signature(hand)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dev, dt = hand.J_template.device, hand.J_template.dtype
    net = InverseMANO(config).to(dev, dt)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    n_extra = 0 if not extra_params else len(extra_params["betas"])
    fk = JointsOnly(hand)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="retarget train", unit="step", dynamic_ncols=True)
    for step in range(steps):
        batch = sample_params(hand, batch_size, g)
        if n_extra:
            idx = torch.randint(n_extra, (batch_size // 2,), generator=g)
            for k in batch:
                batch[k][: batch_size // 2] = extra_params[k][idx].to(batch[k])
        batch = {k: v.to(dev, dt) for k, v in batch.items()}
        sigma = 1.0 if step < switch * steps else 0.0
        loss, parts = two_stage_loss(fk, net, batch, sigma, w1, w2, noise=noise, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(stage=1 if sigma else 2, loss=f"{loss.item():.4f}", mpjpe_mm=f"{parts['mpjpe_mm']:.2f}")
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:6d}  sigma {sigma:.0f}  loss {loss.item():.4f}  "
                  + "  ".join(f"{k} {v:.4f}" for k, v in parts.items()), flush=True)
    if bar is not None:
        bar.close()
    return net.eval()


# ----------------------------------------------------------------------------- inference


def _mirror_joints(J: torch.Tensor) -> torch.Tensor:
    return J * MIRROR.to(J)


def _mirror_R(R: torch.Tensor) -> torch.Tensor:
    M = torch.diag(MIRROR).to(R)
    return M @ R @ M


def _mismatch(config: RetargetConfig, hand) -> str:
    """Why a network of ``config`` does not fit ``hand`` ("" when it does)."""
    if config.hand_model and config.hand_model != hand.name:
        return f"trained for hand model {config.hand_model!r}, but {hand.name!r} ({hand.source}) is loaded"
    if config.hand_signature and not same_hand(config.hand_signature, hand):
        return (f"trained for hand model {config.hand_model!r}, and the loaded {hand.name!r} ({hand.source}) has "
                "the same name but other joints (another model file)")
    return ""


def _check_side(side: str) -> str:
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return side


class Retargeter:
    """Joints -> canonical hand parameters, with the network and optional per-sequence refinement.

    Args:
        net: the network (:func:`load_network`), trained for the hand model of ``mano_dir``.
        mano_dir: MANO folder/file (default ``$MANO_MODEL_DIR``, else the bundled open hand).
        refine_steps: Adam steps of :meth:`refine` in :meth:`fit_sequence` (0: network only).
        smooth: weight of the joint-acceleration term of the refinement (both terms in dm^2 per joint;
            1 is a gentle low-pass, about 5 Hz at 30 fps).
        smooth_start: fraction of the refinement steps fitted to the joints alone before the
            smoothness term joins (it otherwise spends the first steps on the network's per-frame
            jitter and converges slowly).
        lr: Adam learning rate of the refinement (6D components; translation in dm).
        beta_prior: weight of mean(beta^2) in the refinement (the data term is in dm^2 per joint:
            1e-5 weighs like a 0.3 mm joint error at |beta| = 1).
        adapt: per-sequence skeleton adaptation in :meth:`refine` / :meth:`fit_sequence` (for joints
            of other skeletons: sensors, trackers, image landmarks).
        offset_prior: weight of mean(|offset|^2) [dm^2] of the adaptation (1e-3: a 10 mm offset
            weighs like a 1 mm joint error).
        adapt_beta_prior: weight of mean(beta^2) with adaptation (1e-3: |beta| = 1 weighs like a
            3 mm joint error... of one point in ten).
        guard: once smoothing joins, a frame whose mean squared joint error exceeds the network's
            weighs ``1 + guard`` times more in the data term (holds each frame's fit near or below the
            network's; the sequence's mean is guaranteed by a final check). 0: neither, the smoothing
            alone decides (stronger denoising, a fit error that may exceed the network's).
    Raises:
        ValueError: the network was trained for another hand model (names both).
    """

    def __init__(self, net: InverseMANO, mano_dir=None, refine_steps: int = 100, smooth: float = 1.0,
                 lr: float = 0.01, dtype=torch.float32, device=None, beta_prior: float = 1e-5,
                 smooth_start: float = 0.5, adapt: bool = False, offset_prior: float = 1e-3,
                 adapt_beta_prior: float = 1e-3, guard: float = 10.0):
        from megohand.hand import load_hand_model

        self.mano_dir = mano_dir
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.hands = {s: load_hand_model(mano_dir, side=s, dtype=dtype, device=self.device) for s in ("right", "left")}
        hand = self.hands["right"]
        problem = _mismatch(net.config, hand)
        if problem:
            where = getattr(net, "source", None) or "the retargeting network"
            raise ValueError(
                f"{where}: {problem}; give the matching --mano-dir, or train a network for this hand model with "
                f"`megohand retarget train --mano-dir <MANO folder> --out DIR` and pass it (--retarget-model DIR)")
        self.net = net.to(self.device, dtype).eval()
        self.refine_steps = refine_steps
        self.smooth = smooth
        self.lr = lr
        self.beta_prior = beta_prior
        self.smooth_start = smooth_start
        self.adapt = adapt
        self.offset_prior = offset_prior
        self.adapt_beta_prior = adapt_beta_prior
        self.guard = guard
        self.beta_lr = 1.0

    # -- persistence
    def save_pretrained(self, path, half: bool = False) -> None:
        save_network(self.net, path, half=half)

    @classmethod
    def from_pretrained(cls, path=None, mano_dir=None, **kw) -> "Retargeter":
        """Network from ``path`` (a folder of :func:`save_network`); ``None``: the network shipped for
        the bundled open hand, which only fits that hand (with MANO: train one, the error says how)."""
        if path is not None:
            return cls(load_network(path), mano_dir=mano_dir, **kw)
        from megohand.hand import load_hand_model

        net = load_network(PRETRAINED_DIR)
        hand = load_hand_model(mano_dir)
        if _mismatch(net.config, hand):
            raise ValueError(
                f"no retargeting network given, and the one shipped with megohand ({PRETRAINED_DIR}) is for the "
                f"bundled open hand, not for {hand.name!r} ({hand.source}); train one for it with "
                f"`megohand retarget train --mano-dir <MANO folder> --out DIR` (about 10-15 min on a CPU) and pass "
                f"it with --retarget-model DIR")
        return cls(net, mano_dir=mano_dir, **kw)

    # -- network
    @torch.no_grad()
    def predict(self, joints: torch.Tensor, side: str = "right") -> dict:
        """joints (B,21,3) MANO21 order, camera frame [m] -> params dict of (B, ...) tensors
        (global_orient, hand_pose axis-angle [rad], betas, transl [m]) via the network only."""
        _check_side(side)
        J = joints.to(self.device, self.dtype)
        if side == "left":
            J = _mirror_joints(J)
        wrist = J[:, 0]
        theta, betas, r6d, offset = self.net(J - wrist[:, None])
        R_f, R_g = rot6d_to_matrix(theta), rot6d_to_matrix(r6d)
        wrist_pred = wrist + offset
        if side == "left":
            R_f, R_g, wrist_pred = _mirror_R(R_f), _mirror_R(R_g), _mirror_joints(wrist_pred)
        J0 = self.hands[side].rest_joints(betas)[..., 0, :]
        return {
            "global_orient": matrix_to_axis_angle(R_g),
            "hand_pose": matrix_to_axis_angle(R_f),
            "betas": betas,
            "transl": wrist_pred - J0,
        }

    def joints(self, params: dict, side: str = "right") -> torch.Tensor:
        """Params dict (B, ...) -> joints (B,21,3) [m] of the side's hand model; with ``params["offsets"]``
        (21,3) [m] (from :meth:`refine` with adaptation) the adapted skeleton's points."""
        with torch.no_grad():
            off = params.get("offsets")
            return JointsOnly(self.hands[_check_side(side)])(
                params["global_orient"], params["hand_pose"], params["betas"], params["transl"], fmt="axis_angle",
                offsets=None if off is None else off.to(self.device, self.dtype))

    # -- refinement
    def refine(self, params: dict, joints: torch.Tensor, mask: torch.Tensor | None = None, side: str = "right",
               steps: int | None = None, frame_ids=None, smooth: float | None = None,
               adapt: bool | None = None) -> dict:
        """Per-sequence refinement, optionally with skeleton adaptation.

        Adam on per-frame 6D rotations and translation with one betas for the sequence, minimising
        the joint error + ``smooth`` x joint acceleration + a Gaussian betas prior, starting from the
        network output. Smoothing lowers the fit to noisy joints (it removes jitter), so frames whose
        error exceeds the network's are weighted up (``guard``), and the network output is returned
        unchanged when the refined sequence still fits worse on average: the refinement never makes
        the network's mean fit of a sequence worse.

        With ``adapt``: also one offset per point (21,3) [m], constant over the sequence and expressed
        in its bone's frame (:func:`bone_frames`; MoSh-style marker offsets), under a Gaussian prior
        (``offset_prior``); betas then start at 0 under the stronger ``adapt_beta_prior``, so that a
        foreign skeleton (knuckles elsewhere, other bone lengths) is absorbed by the offsets, not by
        absurd betas.

        Args:
            params: dict of (T, ...) from :meth:`predict` (the start).
            joints: (T,21,3) target joints [m] of one sequence, in time order.
            mask: (T,21) bool of observed joints (default all).
            frame_ids: (T,) int frame numbers (default 0..T-1): the smoothness term only couples
                frames k-1, k, k+1 that are consecutive, so gaps (dropped frames) are not smoothed over.
            smooth: weight of the acceleration term (default ``self.smooth``).
            adapt: fit the skeleton offsets (default ``self.adapt``).
        Returns: params dict (T, ...) with one betas for the sequence (start: median of the
            predictions; 0 with ``adapt``), plus ``offsets`` (21,3) [m] (zeros without ``adapt``).
        """
        steps = self.refine_steps if steps is None else steps
        smooth = self.smooth if smooth is None else smooth
        adapt = self.adapt if adapt is None else adapt
        p = {k: v.to(self.device, self.dtype) for k, v in params.items() if k != "offsets"}
        T = p["transl"].shape[0]
        start = {**p, "offsets": torch.zeros(21, 3, device=self.device, dtype=self.dtype)}
        if steps <= 0:
            return start
        fk = JointsOnly(self.hands[_check_side(side)])
        J = torch.nan_to_num(joints.to(self.device, self.dtype))
        mask = torch.ones(J.shape[:2], dtype=torch.bool) if mask is None else mask
        m = mask.to(self.device, self.dtype)[..., None]
        ids = torch.arange(T) if frame_ids is None else torch.as_tensor(np.asarray(frame_ids), dtype=torch.long)
        triple = ((ids[2:] - ids[1:-1]) == 1) & ((ids[1:-1] - ids[:-2]) == 1)  # (T-2,), empty for T <= 2
        triple = triple.to(self.device)
        use_smooth = smooth > 0 and bool(triple.any())
        n_frame = m.sum((1, 2)).clamp(min=1)  # observed joints per frame

        def frame_error(pred):  # (T,) mean squared joint error [dm^2] over observed joints
            return (((pred - J) * 10.0).pow(2) * m).sum((1, 2)) / n_frame

        with torch.no_grad():
            err_start = frame_error(fk(p["global_orient"], p["hand_pose"], p["betas"], p["transl"], fmt="axis_angle"))
        beta_prior = self.adapt_beta_prior if adapt else self.beta_prior
        with torch.enable_grad():
            theta = matrix_to_rot6d(axis_angle_to_matrix(p["hand_pose"])).detach().clone().requires_grad_(True)
            r6d = matrix_to_rot6d(axis_angle_to_matrix(p["global_orient"])).detach().clone().requires_grad_(True)
            beta0 = torch.zeros(10, device=self.device, dtype=self.dtype) if adapt else p["betas"].median(0).values
            beta = beta0.detach().clone().requires_grad_(True)
            transl_dm = (p["transl"] * 10.0).detach().clone().requires_grad_(True)
            off_dm = torch.zeros(21, 3, device=self.device, dtype=self.dtype, requires_grad=adapt)
            groups = [{"params": [theta, r6d, transl_dm]}, {"params": [beta], "lr": self.lr * (self.beta_lr if adapt else 1)}]
            if adapt:
                groups.append({"params": [off_dm]})
            opt = torch.optim.Adam(groups, lr=self.lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - 0.9 * s / steps)
            n_obs = m.sum().clamp(min=1)
            for it in range(steps):
                pred = fk(r6d, theta, beta.expand(T, -1), transl_dm * 0.1, offsets=off_dm * 0.1 if adapt else None)
                loss = (((pred - J) * 10.0).pow(2) * m).sum() / n_obs + beta_prior * beta.pow(2).mean()
                if adapt:
                    loss = loss + self.offset_prior * off_dm.pow(2).sum(-1).mean()
                if use_smooth and it >= self.smooth_start * steps:
                    acc = (pred[2:] - 2 * pred[1:-1] + pred[:-2])[triple]
                    loss = loss + smooth * (acc * 10.0).pow(2).sum(-1).mean()
                    # smoothing trades fit for less jitter, but not beyond the network's fit of a frame:
                    # a frame whose squared error exceeds the network's weighs (1 + guard) times more
                    loss = loss + self.guard * (frame_error(pred) - err_start).clamp(min=0).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        with torch.no_grad():
            off = off_dm.detach() * 0.1
            pred = fk(r6d, theta, beta.expand(T, -1), transl_dm * 0.1, offsets=off if adapt else None)
            if self.guard > 0 and frame_error(pred).sqrt().mean() > err_start.sqrt().mean():
                return start
            return {
                "global_orient": matrix_to_axis_angle(rot6d_to_matrix(r6d)),
                "hand_pose": matrix_to_axis_angle(rot6d_to_matrix(theta)),
                "betas": beta.detach().expand(T, -1).clone(),
                "transl": transl_dm.detach() * 0.1,
                "offsets": off.clone(),
            }

    # -- the converters' entry point
    def fit_sequence(self, joints, order: str = "mano", side: str = "right", unit: str = "auto",
                     adapt: bool | None = None, unobserved=()) -> dict:
        """One hand's joint sequence -> canonical hand params.

        Args:
            joints: (T,J,3) in ``order`` (a name of :data:`megohand.hand.joints.JOINT_ORDERS`: mano,
                openpose, manopth, fpha, holoassist (26 joints); J must match), camera frame;
                NaN/inf marks missing joints.
            side: "right" or "left".
            unit: "m", "cm", "mm" or "auto" (from the median wrist-to-fingertip distance: a hand is
                ~0.1-0.2 m, so m, cm and mm differ by decades).
            adapt: per-sequence skeleton adaptation (:meth:`refine`; default ``self.adapt``) for
                joints of another skeleton than the hand model's (sensors, trackers, landmarks).
            unobserved: names (of ``order``) of points that are stand-ins, not measurements: the
                network reads them (it needs all 21), the refinement does not fit them, and
                ``fit_error_mm`` leaves them out (HOT3D's UmeTrack skeleton has no thumb base).
        Returns:
            dict of float32 numpy: global_orient (T,3), hand_pose (T,15,3) [rad], betas (T,10),
            transl (T,3) [m]; ``valid`` (T,) bool = frames with all 21 joints finite (the others
            hold zeros and the sequence's betas); ``fit_error_mm`` (T,) mean joint error [mm] of the
            fit over the observed points (NaN where not valid; with adaptation, of the adapted skeleton:
            the hand model's joints moved by the offsets); ``offsets`` (21,3) [m] of the adaptation,
            in MANO21 order and bone frames (:func:`bone_frames`; zeros without adaptation).
        Raises:
            ValueError: unknown order/unit/side/unobserved name, wrong shape, or a unit that cannot be inferred.
        """
        from megohand.hand.joints import JOINT_ORDERS, index_map

        _check_side(side)
        if order not in JOINT_ORDERS:
            raise ValueError(f"unknown joint order {order!r}; expected one of {sorted(JOINT_ORDERS)}")
        if unit not in UNITS and unit != "auto":
            raise ValueError(f"unknown unit {unit!r}; expected auto, {', '.join(UNITS)}")
        J = np.asarray(joints, np.float64)
        n_src = len(JOINT_ORDERS[order])
        if J.ndim != 3 or J.shape[1:] != (n_src, 3):
            raise ValueError(f"joint order {order!r} needs (T,{n_src},3) joints, got {J.shape}")
        idx = index_map(order, "mano")
        if (idx < 0).any():
            raise ValueError(f"joint order {order!r} lacks MANO joints "
                             f"{[JOINT_ORDERS['mano'][i] for i in np.flatnonzero(idx < 0)]}")
        J = J[:, idx]
        names = list(JOINT_ORDERS[order])
        bad = [n for n in unobserved if n not in names]
        if bad:
            raise ValueError(f"unobserved points {bad} are not in joint order {order!r}")
        observed = np.ones(21, bool)
        for n in unobserved:
            observed[np.flatnonzero(idx == names.index(n))] = False
        if not observed.any():
            raise ValueError("every point is marked unobserved; nothing to fit")
        finite = np.isfinite(J).all(-1)
        valid = finite.all(-1)
        T = len(J)
        if valid.any():
            J = J * self._unit_scale(J[valid], unit)
        out = {"global_orient": np.zeros((T, 3)), "hand_pose": np.zeros((T, 15, 3)), "betas": np.zeros((T, 10)),
               "transl": np.zeros((T, 3))}
        err = np.full(T, np.nan)
        offsets = np.zeros((21, 3))
        if valid.any():
            Jt = torch.as_tensor(J[valid], dtype=self.dtype, device=self.device)
            mask = torch.as_tensor(observed, device=self.device).expand(len(Jt), 21)
            p = self.refine(self.predict(Jt, side), Jt, mask=mask, side=side, frame_ids=np.flatnonzero(valid),
                            adapt=adapt)
            err[valid] = (self.joints(p, side) - Jt)[:, observed].norm(dim=-1).mean(-1).double().cpu().numpy() * 1000
            for k in out:
                out[k][valid] = p[k].double().cpu().numpy()
            out["betas"][~valid] = out["betas"][valid][0]
            offsets = p["offsets"].double().cpu().numpy()
        res = {k: v.astype(np.float32) for k, v in out.items()}
        res["valid"] = valid
        res["fit_error_mm"] = err.astype(np.float32)
        res["offsets"] = offsets.astype(np.float32)
        return res

    @staticmethod
    def _unit_scale(J: np.ndarray, unit: str) -> float:
        """Metres per input unit; "auto" from the median wrist-to-fingertip distance of J (N,21,3)."""
        if unit != "auto":
            return UNITS[unit]
        d = float(np.median(np.linalg.norm(J[:, 16:] - J[:, :1], axis=-1)))
        for name, s in UNITS.items():
            if 0.04 <= d * s <= 0.4:
                return s
        raise ValueError(f"cannot infer the joints' unit: median wrist-to-fingertip distance {d:g} is not a hand "
                         "size in m, cm or mm; pass unit='m', 'cm' or 'mm'")


# ----------------------------------------------------------------------------- checkpoints


def save_network(net: InverseMANO, path, half: bool = False) -> None:
    """``path/config.json`` + ``path/model.safetensors`` (float32, or float16 with ``half``); each
    file written atomically (``megohand.io``), weights first."""
    from megohand import io

    dt = torch.float16 if half else torch.float32
    io.save_safetensors({k: v.detach().to("cpu", dt) for k, v in net.state_dict().items()}, Path(path) / WEIGHTS_FILE,
                        metadata={"format": "megohand-inverse-mano"})
    io.write_json(Path(path) / CONFIG_FILE, {"type": "inverse_mano", **asdict(net.config)})


def load_network(path) -> InverseMANO:
    """A network written by :func:`save_network` (float32 in memory, also from float16 files).

    Raises:
        FileNotFoundError: folder, config.json or model.safetensors missing (named).
        ValueError: a corrupt or mismatching config.json / model.safetensors (named, with the problem).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such retargeting checkpoint folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{cfg_path}: missing; {path} is not a retargeting checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path}: corrupt JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("type") != "inverse_mano":
        raise ValueError(f"{cfg_path}: not an inverse-MANO network config (needs \"type\": \"inverse_mano\")")
    cfg.pop("type")
    cfg.setdefault("canonical", False)  # configs written before the palm frame existed
    known = {f.name for f in fields(RetargetConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"{cfg_path}: unknown keys {unknown} (known: {sorted(known)})")
    try:
        config = RetargetConfig(**cfg)
        h, b = config.hidden, config.blocks
        if not (isinstance(h, int) and h > 0 and isinstance(b, int) and b >= 0):
            raise ValueError(f"hidden={config.hidden!r}, blocks={config.blocks!r}")
        net = InverseMANO(config)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{cfg_path}: bad values ({e})") from None
    if not w_path.is_file():
        raise FileNotFoundError(f"{w_path}: missing (the weights next to {CONFIG_FILE})")
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{w_path}: unreadable safetensors file ({e})") from None
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        detail = ", ".join(f"{k}: file {got.get(k, 'missing')}, config {want.get(k, 'none')}" for k in bad[:4])
        raise ValueError(f"{w_path}: weights do not match {cfg_path} ({detail}{' ...' if len(bad) > 4 else ''})")
    net.load_state_dict({k: v.float() for k, v in state.items()})
    net.source = str(path)
    return net.eval()


# ----------------------------------------------------------------------------- evaluation


def evaluate(retargeter: Retargeter, n: int = 256, seq_len: int = 32, seed: int = 123,
             refine_steps: int | None = None, side: str = "right") -> dict:
    """Held-out hands sampled from the model (another seed than training), as smooth sequences
    (:func:`sample_sequences`): mean joint error [mm] of the network alone and after refinement,
    and hands/s of each (refinement: one sequence of ``seq_len`` frames at a time)."""
    hand = retargeter.hands[side]
    g = torch.Generator().manual_seed(seed)
    n_seq = max(1, n // seq_len)
    seqs = sample_sequences(retargeter.hands["right"], n_seq, seq_len, g)
    if side == "left":  # mirror the right-hand params into left-hand ones
        s = torch.tensor([1.0, -1.0, -1.0])
        seqs = {**seqs, "global_orient": seqs["global_orient"] * s, "hand_pose": seqs["hand_pose"] * s}
    steps = retargeter.refine_steps if refine_steps is None else refine_steps
    err_net, err_ref, t_net, t_ref = [], [], 0.0, 0.0
    for i in range(n_seq):
        s = {k: v[i].to(retargeter.device, retargeter.dtype) for k, v in seqs.items()}
        with torch.no_grad():
            J = hand(s["global_orient"], s["hand_pose"], s["betas"], s["transl"]).joints
        _sync(retargeter.device)
        t0 = time.perf_counter()
        p = retargeter.predict(J, side)
        _sync(retargeter.device)
        t_net += time.perf_counter() - t0
        err_net.append((retargeter.joints(p, side) - J).norm(dim=-1).mean().item())
        t0 = time.perf_counter()
        q = retargeter.refine(p, J, side=side, steps=steps)
        _sync(retargeter.device)
        t_ref += time.perf_counter() - t0
        err_ref.append((retargeter.joints(q, side) - J).norm(dim=-1).mean().item())
    total = n_seq * seq_len
    return {
        "hands": total,
        "side": side,
        "joint_error_mm_network": float(np.mean(err_net)) * 1000,
        "joint_error_mm_refined": float(np.mean(err_ref)) * 1000,
        "hands_per_s_network": total / max(t_net, 1e-9),
        "hands_per_s_refined": total / max(t_ref + t_net, 1e-9),
        "refine_steps": steps,
        "hand_model": hand.name,
    }


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


__all__ = [
    "InverseMANO", "JointsOnly", "PARENTS21", "PRETRAINED_DIR", "RetargetConfig", "Retargeter", "evaluate",
    "foreign_skeleton", "hand_signature", "load_network", "palm_frame", "sample_params", "sample_sequences",
    "save_network", "scale_bones",
    "train_inverse_mano", "two_stage_loss",
]
