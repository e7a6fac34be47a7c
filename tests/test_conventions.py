"""Dataset conventions: round trips and independent oracles (numpy, scipy, roma, hand-written tables)."""

from __future__ import annotations

import numpy as np
import pytest
import roma
import torch
from scipy.spatial.transform import Rotation

from megohand.hand import joints as J
from megohand.hand import load_hand_model
from megohand.hand.conventions import (
    flat_to_mean_relative,
    full_to_pca,
    mean_relative_to_flat,
    pca_to_full,
    quat_wxyz_to_axis_angle,
    remap_joints,
    transl_to_wrist,
    wrist_to_transl,
)
from megohand.hand.mano_io import write_synthetic_mano
from test_hand_model import random_params

torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)


def test_flat_hand_mean_round_trip():
    mean = torch.randn(45, generator=g, dtype=torch.float64)
    pose = torch.randn(4, 15, 3, generator=g, dtype=torch.float64)
    rel = flat_to_mean_relative(pose, mean)
    assert rel.shape == (4, 15, 3)
    np.testing.assert_allclose(rel.numpy().reshape(4, 45), pose.numpy().reshape(4, 45) - mean.numpy())
    torch.testing.assert_close(mean_relative_to_flat(rel, mean), pose)
    torch.testing.assert_close(mean_relative_to_flat(flat_to_mean_relative(pose.flatten(-2), mean), mean), pose.flatten(-2))
    with pytest.raises(ValueError):
        flat_to_mean_relative(torch.zeros(4, 44), mean)


def test_pca_to_full_and_back():
    comps = torch.as_tensor(np.linalg.qr(np.random.default_rng(1).normal(size=(45, 45)))[0].T)
    mean = torch.randn(45, generator=g, dtype=torch.float64)
    for n in (6, 15, 45):
        pca = torch.randn(3, n, generator=g, dtype=torch.float64)
        full = pca_to_full(pca, None, comps)
        np.testing.assert_allclose(full.numpy(), np.einsum("bi,ij->bj", pca.numpy(), comps[:n].numpy()), atol=1e-12)
        torch.testing.assert_close(pca_to_full(pca, None, comps, mean), full + mean)
        torch.testing.assert_close(full_to_pca(full, n, comps), pca)
        torch.testing.assert_close(full_to_pca(pca_to_full(pca, n, comps, mean), n, comps, hands_mean=mean), pca)


def test_quaternion_wxyz_to_axis_angle_against_scipy():
    rots = Rotation.random(3 * 16, random_state=2)
    q_xyzw = rots.as_quat().reshape(3, 16, 4)  # scipy is xyzw
    q_wxyz = torch.as_tensor(np.concatenate([q_xyzw[..., 3:], q_xyzw[..., :3]], -1))
    go, hp = quat_wxyz_to_axis_angle(q_wxyz)
    assert go.shape == (3, 3) and hp.shape == (3, 15, 3)
    R_ours = roma.rotvec_to_rotmat(torch.cat([go[:, None], hp], 1)).numpy().reshape(-1, 3, 3)
    np.testing.assert_allclose(R_ours, rots.as_matrix(), atol=1e-10)
    # back to wxyz quaternions (roma is xyzw) and round trip, sign-invariant
    q_back = roma.rotvec_to_unitquat(torch.cat([go[:, None], hp], 1))
    q_back_wxyz = torch.cat([q_back[..., 3:], q_back[..., :3]], -1)
    dots = (q_back_wxyz * q_wxyz).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots))
    with pytest.raises(ValueError):
        quat_wxyz_to_axis_angle(torch.zeros(15, 4))


def test_wrist_translation_round_trip_with_hand(tmp_path):
    write_synthetic_mano(tmp_path)
    hand = load_hand_model(tmp_path, dtype=torch.float64)
    go, hp, be, _ = random_params(5, seed=3)
    tsl = torch.randn(5, 3, generator=g, dtype=torch.float64)  # TACO / OakInk2 posed wrist position
    J0 = hand.rest_joints(be)[:, 0]
    transl = wrist_to_transl(tsl, J0)
    out = hand(go, hp, be, transl)
    np.testing.assert_allclose(out.joints[:, 0].numpy(), tsl.numpy(), atol=1e-12)  # wrist lands on tsl
    torch.testing.assert_close(transl_to_wrist(transl, J0), tsl)


def test_joint_index_arrays_match_names_and_sources():
    # as given in datasets.md / HaMeR / EgoForce
    assert J.MANO_TO_OPENPOSE.tolist() == [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    # hot3d/data_loaders/mano_layer.py mano_joint_mapping
    assert J.MANO_TO_HOT3D[:20].tolist() == [16, 17, 18, 19, 20, 0, 14, 15, 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9]
    # every array agrees with the name tables
    for src, dst, arr in [
        ("mano", "openpose", J.MANO_TO_OPENPOSE),
        ("openpose", "mano", J.OPENPOSE_TO_MANO),
        ("mano", "manopth", J.MANO_TO_MANOPTH),
        ("fpha", "openpose", J.FPHA_TO_OPENPOSE),
        ("fpha", "mano", J.FPHA_TO_MANO),
        ("mano", "fpha", J.MANO_TO_FPHA),
        ("mano", "hot3d", J.MANO_TO_HOT3D),
        ("hot3d", "mano", J.HOT3D_TO_MANO),
        ("holoassist", "openpose", J.HOLOASSIST_TO_OPENPOSE),
        ("holoassist", "mano", J.HOLOASSIST_TO_MANO),
    ]:
        assert J.index_map(src, dst).tolist() == arr.tolist(), (src, dst)
    assert len(J.MANO21_NAMES) == 21 and len(J.HOLOASSIST26_NAMES) == 26 and len(J.HOT3D21_NAMES) == 21


def test_joint_remaps_round_trip():
    x = torch.randn(2, 21, 3, generator=g)
    for fwd, back in [
        (J.MANO_TO_OPENPOSE, J.OPENPOSE_TO_MANO),
        (J.MANO_TO_MANOPTH, J.MANOPTH_TO_MANO),
        (J.MANO_TO_FPHA, J.FPHA_TO_MANO),
    ]:
        torch.testing.assert_close(remap_joints(remap_joints(x, fwd), back), x)
    # HOT3D: thumb1 (MANO 13) is not a landmark, the palm center is not a MANO joint
    h = remap_joints(x, J.MANO_TO_HOT3D)
    assert torch.isnan(h[:, 20]).all() and not torch.isnan(h[:, :20]).any()
    back = remap_joints(h, J.HOT3D_TO_MANO)
    keep = [i for i in range(21) if i != 13]
    torch.testing.assert_close(back[:, keep], x[:, keep])
    assert torch.isnan(back[:, 13]).all()
    assert (remap_joints(h, J.HOT3D_TO_MANO, fill=0.0)[:, 13] == 0).all()


def test_fpha_and_holoassist_semantics():
    """Joints tagged by anatomical role, with hand-written tables from each dataset's description."""
    # FPHA skeleton.txt: wrist, TMCP IMCP MMCP RMCP PMCP, then per finger (T I M R P) PIP DIP TIP
    fingers = "TIMRP"
    fpha = ["W"] + [f"{f}0" for f in fingers] + [f"{f}{k}" for f in fingers for k in (1, 2, 3)]
    mano_roles = ["W", "I0", "I1", "I2", "M0", "M1", "M2", "P0", "P1", "P2", "R0", "R1", "R2", "T0", "T1", "T2",
                  "T3", "I3", "M3", "R3", "P3"]  # fmt: skip
    assert [fpha[i] for i in J.FPHA_TO_MANO] == mano_roles
    # HoloLens HandJointKind: Palm, Wrist, Thumb{Metacarpal,Proximal,Distal,Tip},
    # {Index,Middle,Ring,Little}{Metacarpal,Proximal,Intermediate,Distal,Tip}
    holo = ["palm", "W", "T0", "T1", "T2", "T3"] + [
        f"{f}{k}" for f in "IMRP" for k in ("meta", 0, 1, 2, 3)
    ]
    assert len(holo) == 26
    assert [holo[i] for i in J.HOLOASSIST_TO_MANO] == mano_roles
    x = torch.randn(5, 26, 3, generator=g)
    out = remap_joints(x, J.HOLOASSIST_TO_MANO)
    torch.testing.assert_close(out[:, 0], x[:, 1])  # wrist
    torch.testing.assert_close(out[:, 16], x[:, 5])  # thumb tip
    torch.testing.assert_close(out[:, 20], x[:, 25])  # little tip
