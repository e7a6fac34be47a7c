"""Hand estimation from images: placement against rendered hands of known pose, the side decision, intrinsics
and depth inputs, a local depth model, and (with MediaPipe installed) labelling and generate without --init."""

import json
import re

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from megohand.hand.joints import MANO_TO_OPENPOSE
from megohand.perception import (
    check_intrinsics,
    default_intrinsics,
    place_depth,
    place_pnp,
    read_intrinsics,
    side_from_geometry,
    smooth_joints,
)

W, H = 320, 240


@pytest.fixture(scope="module")
def rendered_hand():
    """The open hand at a known pose 0.45 m in front of the camera: OpenPose-order joints (21, 3), vertices,
    its rendered depth (H, W) [m] and the intrinsics."""
    from megohand.hand import load_hand_model
    from megohand.render import Renderer
    from megohand.render.overlay import hand_mesh

    hand = load_hand_model(None, side="right")
    g = torch.Generator().manual_seed(3)
    pose = 0.3 * torch.rand(15, 3, generator=g)
    orient = torch.tensor([2.2, 0.3, -0.4])  # back of the hand towards the camera, fingers away, as seen from the head
    out = hand(orient, pose, torch.zeros(10), torch.zeros(3))
    shift = torch.tensor([0.03, 0.02, 0.45]) - out.joints[0]
    J = (out.joints + shift).double().numpy()[MANO_TO_OPENPOSE]
    V = (out.vertices + shift).numpy()
    K = default_intrinsics(W, H)
    depth = Renderer(W, H, background_depth=2.0).render(K.astype(np.float32), [hand_mesh(V, hand.faces)]).depth
    return J, np.asarray(depth), K


def project(X, K):
    uv = X @ K.T
    return uv[:, :2] / uv[:, 2:]


def test_pnp_recovers_a_hand_in_any_frame(rendered_hand):
    J, _, K = rendered_hand
    R = Rotation.random(random_state=1).as_matrix()  # the estimator's own (unknown) axes
    shape = (J - J.mean(0)) @ R.T
    uv = project(J, K) + np.random.default_rng(0).normal(0, 0.3, (21, 2))
    p = place_pnp(shape, uv, K)
    assert np.linalg.norm(p.joints - J, axis=-1).max() < 0.006
    assert p.reprojection_px < 1.0
    rigid = place_pnp(shape, uv, K, snap=False)
    np.testing.assert_allclose(rigid.joints, shape @ rigid.R.T + rigid.t, atol=1e-12)


def test_depth_places_a_wrongly_sized_hand(rendered_hand):
    J, depth, K = rendered_hand
    uv = project(J, K)
    R = Rotation.random(random_state=2).as_matrix()
    big = 1.25 * (J - J.mean(0)) @ R.T  # the estimator believes in a 25 % larger hand, in its own axes
    p = place_pnp(big, uv, K)
    assert abs(p.joints[0, 2] - 1.25 * J[0, 2]) < 0.02  # without depth it is 25 % too far
    d = place_depth(big, uv, depth, K)
    assert d.depth_points >= 6 and 0.7 < d.scale < 0.9  # 1 / 1.25 = 0.8
    assert np.linalg.norm(d.joints[0] - J[0]) < 0.015  # wrist within 1.5 cm with depth
    assert np.linalg.norm(d.joints - J, axis=-1).mean() < 0.015
    np.testing.assert_allclose(project(d.joints, K), uv, atol=1e-6)  # snapped onto the landmarks' rays
    assert place_depth(big, uv, np.zeros_like(depth), K) is None  # no depth anywhere


def test_depth_corrects_the_fingers_of_a_wrong_shape(rendered_hand):
    J, depth, K = rendered_hand
    uv = project(J, K)
    wrong = J.copy()
    wrong[[3, 4, 7, 8, 11, 12, 15, 16, 19, 20], 2] += 0.025  # a monocular shape with the fingers 2.5 cm off in depth
    shape = (wrong - wrong.mean(0)) @ Rotation.random(random_state=4).as_matrix().T
    err = lambda p: np.linalg.norm(p.joints - J, axis=-1)  # noqa: E731
    shape_only = err(place_depth(shape, uv, depth, K, own_depth_tolerance=0))
    own = err(place_depth(shape, uv, depth, K))
    assert own.mean() < 0.75 * shape_only.mean()
    assert own.mean() < 0.010  # the rendered depth + 1 cm of thickness puts the joints within about a centimetre


def test_side_from_exact_joints_and_their_mirror_image(rendered_hand):
    J = rendered_hand[0]
    for seed in range(5):
        R = Rotation.random(random_state=seed).as_matrix()
        assert side_from_geometry(J @ R.T)[0] == "right"
        assert side_from_geometry((J * [-1, 1, 1]) @ R.T)[0] == "left"


def test_intrinsics_files_and_checks(tmp_path):
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    (tmp_path / "a.json").write_text(json.dumps({"K": K.tolist()}))
    (tmp_path / "b.json").write_text(json.dumps({"fx": 500, "fy": 510, "cx": 320, "cy": 240}))
    (tmp_path / "c.txt").write_text("500 510 320 240")
    np.save(tmp_path / "d.npy", K)
    for name in ("a.json", "b.json", "c.txt", "d.npy"):
        np.testing.assert_allclose(read_intrinsics(tmp_path / name), K)
    np.testing.assert_allclose(check_intrinsics(K, 640, 480, "k.json"), K)
    with pytest.raises(ValueError, match=r"^k\.json: intrinsics do not fit the 640x480 image"):
        check_intrinsics([[1400, 0, 960], [0, 1400, 540], [0, 0, 1]], 640, 480, "k.json")  # made for 1920x1080
    with pytest.raises(ValueError, match=r"k\.json: .*far from its centre"):
        check_intrinsics([[1400, 0, 600], [0, 1400, 400], [0, 0, 1]], 640, 480, "k.json")
    (tmp_path / "e.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="e.txt: intrinsics need 9 numbers"):
        read_intrinsics(tmp_path / "e.txt")


def test_depth_inputs(tmp_path):
    from PIL import Image

    from megohand.perception.depth import iter_depth

    (tmp_path / "d").mkdir()
    mm = np.full((H, W), 450, np.uint16)
    Image.fromarray(mm).save(tmp_path / "d" / "000.png")
    np.save(tmp_path / "d" / "001.npy", np.full((H, W), 0.5, np.float32))
    frames = list(iter_depth(tmp_path / "d", (H, W)))
    np.testing.assert_allclose(frames[0], 0.45)
    np.testing.assert_allclose(frames[1], 0.5)
    with pytest.raises(ValueError, match=r"000\.png: depth is 320x240, the image is 640x480"):
        list(iter_depth(tmp_path / "d", (480, 640)))


def test_smoothing_stays_within_runs():
    J = np.random.default_rng(0).normal(size=(12, 21, 3))
    J[5] = np.nan
    S = smooth_joints(J, 1.0)
    assert np.isnan(S[5]).all() and np.isfinite(np.delete(S, 5, 0)).all()
    np.testing.assert_array_equal(smooth_joints(J[:1], 1.0), J[:1])  # a single frame stays
    np.testing.assert_allclose(smooth_joints(np.ones((6, 21, 3)), 2.0), 1.0)  # constant stays constant
    # frames 0..4 and 6..11 are smoothed separately: changing frame 11 does not move frame 4
    J2 = J.copy()
    J2[11] += 10
    np.testing.assert_array_equal(smooth_joints(J2, 1.0)[:5], S[:5])


def tiny_depth_anything(path, kind="metric"):
    """A tiny random Depth Anything saved with save_pretrained (what a user's local folder holds)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                              fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type=kind, max_depth=20)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(path)
    return path


def test_local_depth_model_through_the_real_loading_code(tmp_path):
    from megohand.perception.depth import DepthModel

    d = DepthModel(tiny_depth_anything(tmp_path / "metric"))(np.zeros((48, 64, 3), np.uint8))
    assert d.shape == (48, 64) and d.dtype == np.float32 and np.isfinite(d).all() and (d >= 0).all()
    with pytest.raises(ValueError, match="relative-depth model"):
        DepthModel(tiny_depth_anything(tmp_path / "relative", "relative"))
    with pytest.raises(ValueError, match="no config.json"):
        DepthModel(tmp_path)


# ----------------------------------------------------------------------------- with MediaPipe


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """30 frames at 640x480 of a synthetic episode in which MediaPipe finds the right hand, as an MP4 with a
    sidecar (text + the true intrinsics), and the episode's true hands."""
    pytest.importorskip("mediapipe", reason="needs the perception extra")
    from megohand.data.synthetic import SynthConfig, generate_episode
    from megohand.data.synthetic.world import make_renderer, render_episode
    from megohand.hand import load_hand_model
    from megohand.viz.video import write_mp4

    d = tmp_path_factory.mktemp("clip")
    hand = load_hand_model(None, side="right")
    ep = generate_episode(SynthConfig(seed=2026, width=640, height=480), 2, hand)
    rgb = render_episode(ep, hand, make_renderer(640, 480))["rgb"][10:40]
    write_mp4(rgb, d / "clip.mp4", 30)
    (d / "clip.json").write_text(json.dumps({"text": ep.instruction, "K": ep.K.tolist()}))
    return d, rgb, ep


def test_label_builds_a_store_that_validate_train_and_eval_accept(clip, tmp_path):
    from megohand.cli.main import main
    from megohand.data.store import Store
    from megohand.data.validate import validate_store
    from megohand.train.trainer import train

    from test_train import tiny_train_cfg

    import shutil

    d, rgb, ep = clip
    videos, store = tmp_path / "videos", tmp_path / "store"
    videos.mkdir()
    side = json.loads((d / "clip.json").read_text())
    for name, split in (("a", "train"), ("b", "test")):  # a folder of videos; the sidecar names the split
        shutil.copy(d / "clip.mp4", videos / f"{name}.mp4")
        (videos / f"{name}.json").write_text(json.dumps({**side, "split": split}))
    main(["label", str(videos), "--out", str(store)])
    main(["label", str(videos), "--out", str(store)])  # resumes: both already there
    assert validate_store(store, progress=False) == []
    assert {r.split for r in Store(store).episodes("labelled")} == {"train", "test"}
    e = Store(store).open("labelled", "a")
    h = e.hands("right")
    valid = h["valid"]
    assert len(valid) == 30 and valid.sum() >= 5  # the detector misses many frames of these renders
    fit = e.fit_error_mm("right")
    assert fit.shape == (30,) and (np.isfinite(fit) == valid).all() and fit[valid].max() <= 20.0
    assert e.meta.instruction == ep.instruction and e.meta.hand_source == "retargeted"
    np.testing.assert_allclose(e.K, ep.K)
    assert np.isfinite(h["transl"][valid]).all() and (h["transl"][valid, 2] > 0.1).all()
    run = train(tiny_train_cfg(store, tmp_path / "run", steps=2, batch_size=4))
    assert run is not None
    main(["eval", "--root", str(store), "--out", str(tmp_path / "ev"), "--baselines-only",
          "--protocol.horizon", "8", "--protocol.rollout-frames", "10"])
    assert "labelled" in json.loads((tmp_path / "ev" / "eval.json").read_text())["datasets"]


def one_line_error(capsys, argv) -> str:
    """megohand ARGV fails with one "megohand ..." line on stderr and no traceback (MediaPipe's own C++ log
    lines aside); returns that line."""
    from megohand.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert e.value.code not in (0, None) and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("megohand ")]
    assert len(lines) == 1, err
    return lines[0]


def test_label_and_generate_refuse_bad_input_with_one_line(clip, tmp_path, capsys):
    from PIL import Image

    d, rgb, _ = clip
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((480, 640, 3), 128, np.uint8)).save(blank)
    out = tmp_path / "gen"
    err = one_line_error(capsys, ["generate", "--image", blank, "--text", "x", "--out", out, "--frames", "2"])
    assert re.search(r"blank\.png: no right hand in the first frame", err)
    assert not out.exists() or not any(out.iterdir())
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "000.npy", np.ones((240, 320), np.float32))
    err = one_line_error(capsys, ["generate", "--image", d / "clip.mp4", "--text", "x", "--out", out, "--depth",
                                  tmp_path / "d"])
    assert re.search(r"000\.npy: depth is 320x240, the image is 640x480", err)
    (tmp_path / "k.json").write_text(json.dumps({"fx": 1400, "fy": 1400, "cx": 960, "cy": 540}))
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "c.mp4").write_bytes((d / "clip.mp4").read_bytes())  # no sidecar: --intrinsics applies
    store = tmp_path / "store"
    err = one_line_error(capsys, ["label", tmp_path / "v" / "c.mp4", "--out", store, "--intrinsics",
                                  tmp_path / "k.json", "--text", "x", "--dataset", "other"])
    assert re.search(r"k\.json: intrinsics do not fit the 640x480 image", err)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    Image.fromarray(np.full((480, 640, 3), 128, np.uint8)).save(frames_dir / "000.png")
    err = one_line_error(capsys, ["label", frames_dir, "--out", store, "--text", "x", "--dataset", "other"])
    assert re.search(r"frames: no right hand found in any of its 1 frames", err)
    assert not (store / "other" / "episodes").exists() or not any((store / "other" / "episodes").iterdir())


def test_generate_estimates_the_initial_hand(clip, tmp_path):
    from PIL import Image

    from megohand.cli.main import main
    from megohand.hand import load_hand_model

    d, rgb, ep = clip
    Image.fromarray(rgb[0]).save(tmp_path / "frame.png")  # episode frame 10
    out = tmp_path / "gen"
    main(["generate", "--image", str(tmp_path / "frame.png"), "--text", ep.instruction, "--out", str(out),
          "--frames", "2", "--intrinsics", str(d / "clip.json")])
    init = json.loads((out / "init.json").read_text())
    hand = load_hand_model(None)
    with torch.no_grad():
        est = hand(*(torch.tensor(init[k], dtype=torch.float32) for k in ("global_orient", "hand_pose", "betas",
                                                                            "transl"))).joints.numpy()
        true = hand(*(torch.from_numpy(ep.hands[k][10]) for k in ("global_orient", "hand_pose", "betas",
                                                                  "transl"))).joints.numpy()
    uv_e, uv_t = project(est.astype(np.float64), ep.K), project(true.astype(np.float64), ep.K)
    assert np.median(np.linalg.norm(uv_e - uv_t, axis=-1)) < 25  # the estimated hand lies on the true one
    main(["generate", "--image", str(tmp_path / "frame.png"), "--text", ep.instruction, "--out",
          str(tmp_path / "again"), "--frames", "2", "--init", str(out / "init.json")])  # passed back as --init
    assert (tmp_path / "again" / "overlay.mp4").is_file() and not (tmp_path / "again" / "init.json").exists()


def test_label_with_a_depth_model_stores_the_estimated_depth(clip, tmp_path):
    from megohand.cli.main import main
    from megohand.data.store import Store

    d, rgb, _ = clip
    store = tmp_path / "store"
    model = tiny_depth_anything(tmp_path / "m")  # random weights: any depth, so every fit is accepted
    main(["label", str(d / "clip.mp4"), "--out", str(store), "--depth-estimator", str(model), "--max-fit-error-mm", "1e6"])
    e = Store(store).open("labelled", "clip")
    assert e.meta.depth_source == "estimated" and e.has_depth and e.depth(0).shape == (480, 640)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_process_frees_an_inherited_estimator_without_aborting():
    """A DataLoader worker forked after MediaPipe ran in its parent inherits the estimator; freeing it there must not
    close MediaPipe's graph, whose threads and mutexes live in the parent (closing it aborted the worker)."""
    pytest.importorskip("mediapipe", reason="needs the perception extra")
    import gc
    import os

    from megohand.perception.mediapipe_hands import MediaPipeHands

    est = MediaPipeHands()
    assert est(np.zeros((64, 64, 3), np.uint8)) == []  # builds the graph
    pid = os.fork()
    if pid == 0:  # the child: free the inherited estimator, then leave without running the parent's atexit hooks
        code = 1
        try:
            del est
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    import signal
    import time

    deadline = time.monotonic() + 30  # before the fix the child aborted, or hung on the parent's mutex
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung freeing the inherited estimator")
    status = done[1]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child ended with status {status}"
    assert est(np.zeros((64, 64, 3), np.uint8)) == []  # the parent's graph still works
    est.reset()
