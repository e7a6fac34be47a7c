"""FPHA converter on a miniature native fixture: joints into the colour camera, depth registration,
retargeting end to end (real Retargeter, tiny network + refinement), text/splits, bad input."""

import numpy as np
import pytest
import torch

from fixtures_native import (
    FPHA_PATCH,
    FPHA_PLANE,
    FPHA_R,
    FPHA_T_MM,
    MANO21_TO_FPHA,
    fk,
    tiny_retargeter,
    write_fpha,
)
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError
from megohand.data.sources.fpha import action_text
from megohand.data.sources.pipeline import HandModels, convert_episode
from megohand.hand.joints import index_map
from conftest import cli_error

torch.set_num_threads(1)
TASK = "Subject_1/charge_cell_phone/1"




def test_reader_joints_in_colour_camera(tmp_path, hands):
    o = write_fpha(tmp_path, hands)
    src = get_source("fpha")(tmp_path)
    assert src.tasks() == [TASK]
    ep = src.load(TASK)
    assert ep.joint_order == "fpha" and set(ep.joints) == {"right"} and not ep.hands
    assert ep.hand_source == "retargeted" and ep.T_cam_from_world is None
    J = ep.joints["right"]
    assert J.shape == (5, 21, 3)
    # the README's joint order, colour camera, metres (the fixture wrote mm at the depth camera)
    assert np.abs(J - o["joints"][:, MANO21_TO_FPHA]).max() < 1e-4
    assert np.abs(J[:, index_map("fpha", "mano")] - o["joints"]).max() < 1e-4
    np.testing.assert_allclose(ep.K, o["K"], atol=1e-9)  # README K scaled to 96x54
    assert (ep.width, ep.height, ep.num_frames, ep.fps) == (96, 54, 5, 30.0)
    assert ep.instruction == "Charge the cell phone." and ep.split == "train"
    assert ep.extra["action_label"] == 0
    frames = list(ep.rgb())
    assert len(frames) == 5 and frames[0].shape == (54, 96, 3) and frames[0].dtype == np.uint8


def test_depth_registered_to_rgb(tmp_path, hands):
    o = write_fpha(tmp_path, hands, T=2)
    ep = get_source("fpha")(tmp_path).load(TASK)
    assert ep.depth_source == "sensor" and ep.extra["depth_registered_to_rgb"]
    d = list(ep.depth())
    assert len(d) == 2 and d[0].shape == (54, 96) and d[0].dtype == np.float32
    K, K_d = o["K"], o["K_depth"]
    # oracle: the depth-camera plane n.X = d moved into the colour camera (X_c = R X_d + t)
    n, dist = FPHA_PLANE
    n_c = FPHA_R @ n
    d_c = dist + n_c @ (FPHA_T_MM / 1000.0)
    u, v = np.meshgrid(np.arange(96), np.arange(54))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1)
    z_plane = d_c / (rays @ n_c)
    # colour pixels whose plane point is seen well inside the depth image, away from the patch
    X_d = (rays * z_plane[..., None] - FPHA_T_MM / 1000.0) @ FPHA_R
    ud = K_d[0, 0] * X_d[..., 0] / X_d[..., 2] + K_d[0, 2]
    vd = K_d[1, 1] * X_d[..., 1] / X_d[..., 2] + K_d[1, 2]
    (r0, r1), (c0, c1), z_patch = FPHA_PATCH
    inside = (ud > 1.5) & (ud < 32 - 2.5) & (vd > 1.5) & (vd < 24 - 2.5)
    inside &= ~((ud > c0 - 3) & (ud < c1 + 2) & (vd > r0 - 3) & (vd < r1 + 2))
    got = d[0][inside]
    assert (got > 0).mean() > 0.97  # forward warp leaves (almost) no holes
    err = np.abs(got[got > 0] - z_plane[inside][got > 0])
    # mm quantisation + up to half a (25 mm wide) depth pixel of footprint on a plane of slope 0.08
    assert err.mean() < 1e-3 and err.max() < 3e-3, (err.mean(), err.max())
    # the nearer patch wins the z-buffer: centre of depth pixel (10, 12) -> colour camera
    X = np.array([(12 - K_d[0, 2]) / K_d[0, 0], (10 - K_d[1, 2]) / K_d[1, 1], 1.0]) * z_patch
    X_c = FPHA_R @ X + FPHA_T_MM / 1000.0
    uc, vc = K[0, 0] * X_c[0] / X_c[2] + K[0, 2], K[1, 1] * X_c[1] / X_c[2] + K[1, 2]
    assert abs(d[0][int(round(vc)), int(round(uc))] - X_c[2]) < 1.5e-3


def test_text_splits_and_layout(tmp_path, hands):
    assert action_text("charge_cell_phone") == "Charge the cell phone."
    assert action_text("close_liquid_soap") == "Close the dish soap."  # README rename
    assert action_text("read_letter") == "Read the paper."
    assert action_text("use_flash") == "Use the spray."
    assert action_text("handshake") == "Shake hands."
    assert action_text("stir") == "Stir."
    write_fpha(tmp_path, hands, T=2)
    write_fpha(tmp_path, hands, task="Subject_2/pour_milk/3", T=2, pose_dir="Hand_pose_annotation_v1_1", split="test")
    write_fpha(tmp_path, hands, task="Subject_2/close_milk/4", T=2)  # faulty per docs/datasets.md: not listed
    src = get_source("fpha")(tmp_path)
    assert src.tasks() == [TASK, "Subject_2/pour_milk/3"]
    ep = src.load("Subject_2/pour_milk/3")
    assert ep.split == "test" and ep.instruction == "Pour the milk."
    assert ep.extra["pose_annotation"] == "Hand_pose_annotation_v1_1"
    from megohand.cli.convert import Convert

    assert "skeleton.txt" in Convert.__doc__ and "Hands/{Left,Right}_sync.txt" in Convert.__doc__


def test_end_to_end_retargeted(tmp_path, hand_dir, hands):
    from megohand.data.store import Store, StoreWriter

    o = write_fpha(tmp_path / "src", hands)
    ep = get_source("fpha")(tmp_path / "src").load(TASK)
    with pytest.raises(SourceError, match="retarget"):
        convert_episode(ep, StoreWriter(tmp_path / "store"), hands)
    convert_episode(ep, StoreWriter(tmp_path / "store"), hands, retargeter=tiny_retargeter(hand_dir))
    e = Store(tmp_path / "store").open("fpha", TASK)
    m = e.meta
    assert (m.hand_source, m.depth_source, m.split) == ("retargeted", "sensor", "train")
    assert m.instruction == "Charge the cell phone."
    np.testing.assert_allclose(e.K, o["K"], atol=1e-6)
    h = e.hands("right")
    assert h["valid"].all() and not e.hands("left")["valid"].any()
    J = fk(hands["right"], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
    err = np.linalg.norm(J - o["joints"], axis=-1)
    print(f"FPHA retargeted joint error: mean {err.mean() * 1000:.2f} mm, max {err.max() * 1000:.2f} mm")
    assert err.mean() < 0.010 and err.max() < 0.030
    assert e.depth(1).shape == (54, 96) and np.abs(e.depth(1) - next(iter(ep.depth()))).max() < 1e-3


def test_convert_cli(tmp_path, hand_dir, hands, capsys):
    from megohand.cli.main import main
    from megohand.data.store import Store
    from megohand.hand.retarget import save_network

    write_fpha(tmp_path / "src", hands, T=3)
    save_network(tiny_retargeter(hand_dir).net, tmp_path / "net")
    args = ["convert", "--dataset", "fpha", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "store"),
            "--mano-dir", str(hand_dir)]
    assert "--retarget-model" in cli_error(capsys, args)
    main(args + ["--retarget-model", str(tmp_path / "net"), "--refine-steps", "20"])
    e = Store(tmp_path / "store").open("fpha", TASK)
    assert e.meta.hand_source == "retargeted" and e.hands("right")["valid"].all()


def test_convert_cli_default_network_with_the_open_hand(tmp_path, monkeypatch):
    """No --retarget-model and no MANO: the network shipped for the bundled open hand is used."""
    from megohand.cli.main import main
    from megohand.data.store import Store
    from megohand.hand import load_hand_model

    monkeypatch.delenv("MANO_MODEL_DIR", raising=False)
    open_hands = HandModels(None)
    o = write_fpha(tmp_path / "src", open_hands, T=4)
    main(["convert", "--dataset", "fpha", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "store"),
          "--refine-steps", "30"])
    e = Store(tmp_path / "store").open("fpha", TASK)
    h = e.hands("right")
    assert e.meta.hand_source == "retargeted" and h["valid"].all()
    hand = load_hand_model(None, dtype=torch.float64)
    J = hand(*(torch.tensor(np.asarray(h[k]), dtype=torch.float64)
               for k in ("global_orient", "hand_pose", "betas", "transl"))).joints.numpy()
    err = np.linalg.norm(J - o["joints"], axis=-1)
    assert err.mean() < 0.005, err.mean()  # the shipped network + refinement: about a millimetre


def test_bad_input(tmp_path, hand_dir, hands):
    from megohand.data.store import Store, StoreWriter

    write_fpha(tmp_path, hands)
    src = get_source("fpha")(tmp_path)
    seq = tmp_path / "Video_files" / TASK
    skel = tmp_path / "Hand_pose_annotation_v1" / TASK / "skeleton.txt"
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("Subject_9/charge_cell_phone/1")
    good = skel.read_text()
    lines = good.splitlines()
    skel.write_text("\n".join(lines[:2] + ["2 1 2 3"] + lines[3:]))
    with pytest.raises(SourceError, match=r"skeleton.txt: line 3 has 4 numbers, expected 64"):
        src.load(TASK)
    skel.write_text("\n".join(lines[:4]))  # 4 poses, 5 frames
    with pytest.raises(SourceError, match=r"color: 5 colour frames, but .*skeleton.txt has 4 poses"):
        src.load(TASK)
    skel.unlink()
    with pytest.raises(SourceError, match=r"missing FPHA skeleton.txt: .*v1/Subject_1/charge_cell_phone/1/skeleton.txt"):
        src.load(TASK)
    skel.write_text(good)
    (seq / "depth" / "depth_0003.png").unlink()
    with pytest.raises(SourceError, match=r"depth: 4 depth frames, but .*skeleton.txt has 5 poses"):
        src.load(TASK)
    (seq / "color" / "color_0004.jpeg").rename(seq / "color" / "color_0009.jpeg")
    with pytest.raises(SourceError, match=r"missing .*color_0004.jpeg"):
        src.load(TASK)
    # a corrupt frame is found while streaming: the converter fails and no partial episode exists
    import shutil

    shutil.rmtree(seq / "depth")
    (seq / "color" / "color_0009.jpeg").rename(seq / "color" / "color_0004.jpeg")
    (seq / "color" / "color_0002.jpeg").write_bytes(b"not a jpeg")
    ep = src.load(TASK)
    assert ep.depth is None and ep.depth_source == "none"
    writer = StoreWriter(tmp_path / "store")
    with pytest.raises(SourceError, match=r"cannot read image .*color_0002.jpeg"):
        convert_episode(ep, writer, hands, depth="none", retargeter=tiny_retargeter(hand_dir, refine_steps=0))
    assert not writer.has_episode("fpha", TASK) and Store(tmp_path / "store").episodes("fpha") == []
