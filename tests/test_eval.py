"""Evaluation protocol on a tiny store: window selection, frame-0 exclusion, pooling, groups, tables.

Oracles: hand-computed errors of the static baseline (numpy on the hand model's joints) and the
exactness of the constant-velocity baseline on constant-velocity motion.
"""

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from megohand.data.store import EpisodeMeta, Store, StoreWriter
from megohand.evaluate.evaluator import EvalConfig, baseline_factories, evaluate_store, group_of
from megohand.errors import UserError
from megohand.evaluate.tables import results_markdown
from megohand.hand.model import HandModel
from megohand.hand.vector import HandParams
from conftest import cli_error

torch.set_num_threads(1)


def tiny_hand(V=40, seed=0) -> HandModel:
    """A random MANO-format hand (16 joints, MANO parents) small enough for fast tests."""
    rng = np.random.default_rng(seed)
    parents = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    w = rng.random((V, 16)) ** 4
    asset = {
        "name": "tiny-test-hand",
        "is_mano": False,
        "side": "right",
        "v_template": rng.normal(0, 0.05, (V, 3)),
        "shapedirs": rng.normal(0, 1e-3, (V, 3, 10)),
        "posedirs": rng.normal(0, 1e-3, (V, 3, 135)),
        "J_regressor": np.eye(16, V)[:, rng.permutation(V)] * 0.5 + 0.5 / V,
        "parents": np.array(parents),
        "weights": w / w.sum(1, keepdims=True),
        "hands_mean": np.zeros(45),
        "hands_components": np.eye(45),
        "faces": np.array([[0, 1, 2], [2, 3, 4]]),
        "tip_vertex_ids": np.array([5, 6, 7, 8, 9]),
    }
    return HandModel(asset, dtype=torch.float64)


def cv_episode(T, seed):
    """Constant-velocity hand: translation linear, every rotation at constant angular velocity (scipy)."""
    rng = np.random.default_rng(seed)
    R0 = Rotation.random(16, random_state=seed)
    w = rng.normal(0, 0.05, (16, 3))
    t0, v = np.array([0.0, 0.0, 0.5]) + rng.normal(0, 0.05, 3), rng.normal(0, 0.01, 3)
    rv = np.stack([(R0 * Rotation.from_rotvec(i * w)).as_rotvec() for i in range(T)])  # (T, 16, 3)
    return {
        "global_orient": rv[:, 0],
        "hand_pose": rv[:, 1:],
        "betas": np.tile(rng.normal(0, 1, 10), (T, 1)),
        "transl": t0 + np.arange(T)[:, None] * v,
        "valid": np.ones(T, bool),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    w = StoreWriter(root)
    K = [[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]
    for ds, n in (("synthetic", 2), ("taco", 1), ("h2o", 1)):
        for i in range(n):
            T = 40
            for split in ("test", "train"):
                meta = EpisodeMeta(dataset=ds, episode=f"{split}/ep{i}", instruction="pick up the cup", fps=30.0,
                                   K=K, split=split, hand_source="synthetic")
                rgb = np.zeros((T, 8, 8, 3), np.uint8)
                w.write_episode(meta, {"right": cv_episode(T, seed=10 * i + len(ds))}, rgb)
    return Store(root)


def _joints(hand, h):
    p = HandParams(*(torch.tensor(np.asarray(h[k], dtype=np.float64)) for k in ("global_orient", "hand_pose", "betas", "transl")))
    return hand.forward_params(p).joints.numpy()  # (T, 21, 3)


def test_groups():
    assert group_of("taco") == "in-domain" and group_of("OakInk2") == "in-domain"
    assert group_of("arctic") == "cross-domain" and group_of("holo") == "cross-domain"
    assert group_of("synthetic") == "synthetic"
    assert group_of("mydata") == "mydata"


def test_static_and_const_vel_against_hand_computed_errors(store, tmp_path):
    hand = tiny_hand()
    cfg = EvalConfig(horizon=8, window_stride=8, rollout_frames=20, stride=2)
    rep = evaluate_store(store, baseline_factories(8), hand, cfg, log=lambda *a: None)
    res = rep["results"]
    assert rep["datasets"]["synthetic"] == {"group": "synthetic", "episodes": 2, "windows": 8}

    # oracle, static baseline, window protocol: windows k = 0, 8, 16, 24 (k + L < T = 40), frames k+1..k+8
    per_ds = {}
    for ds in ("synthetic", "taco", "h2o"):
        errs, roll = [], []
        for ref in store.episodes(ds, split="test"):
            J = _joints(hand, store.open(ref).hands("right"))
            for k in range(0, 32, 8):
                errs.append(np.linalg.norm(J[k + 1 : k + 9] - J[k], axis=-1).mean(-1))
            roll.append(np.linalg.norm(J[2:22] - J[1], axis=-1).mean(-1))  # rollout from frame 1, 20 frames
        per_ds[ds] = (np.mean(np.concatenate(errs)) * 100, np.mean(np.concatenate(roll)) * 100)
        assert math.isclose(res["window"]["static"][ds]["mpjpe_cm"], per_ds[ds][0], rel_tol=1e-6)
        for proto in ("rollout-tof", "rollout-raw"):
            assert math.isclose(res[proto]["static"][ds]["mpjpe_cm"], per_ds[ds][1], rel_tol=1e-6)
    # group = unweighted mean of dataset means
    grp = (per_ds["taco"][0] + per_ds["h2o"][0]) / 2
    assert math.isclose(res["window"]["static"]["[in-domain]"]["mpjpe_cm"], grp, rel_tol=1e-6)

    # const-vel is exact once it has one frame of history: every window but k = 0 (which is static)
    for ds in ("taco", "h2o"):
        ref = store.episodes(ds, split="test")[0]
        J = _joints(hand, store.open(ref).hands("right"))
        first = np.linalg.norm(J[1:9] - J[0], axis=-1).mean() * 100 / 4  # 1 of 4 windows is static
        assert math.isclose(res["window"]["const-vel"][ds]["mpjpe_cm"], first, rel_tol=1e-4, abs_tol=1e-5)
        for proto in ("rollout-tof", "rollout-raw"):
            assert res[proto]["const-vel"][ds]["mpjpe_cm"] < 1e-4
            assert res[proto]["const-vel"][ds]["mre_rad"] < 1e-4
    assert res["rollout-tof"]["static"]["synthetic"]["mpjpe_cm"] > 0.1

    md = results_markdown(rep)
    assert "Group in-domain" in md and "static · window" in md and "const-vel · rollout-tof" in md
    json.dumps(rep)  # JSON-able


# ----------------------------------------------------------------------------- CLI: generate, demo, checkpoints


def tiny_hand_file(path):
    """The tiny random hand as a MANO-format .npz (what load_hand_model reads from a file)."""
    rng = np.random.default_rng(0)
    V = 60
    parents = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]) % (2**32)
    w = rng.random((V, 16)) ** 4
    J = np.eye(16, V)[:, rng.permutation(V)] * 0.5 + 0.5 / V
    np.savez(path, v_template=rng.normal(0, 0.03, (V, 3)), shapedirs=rng.normal(0, 1e-3, (V, 3, 10)),
             posedirs=rng.normal(0, 1e-4, (V, 3, 135)), J_regressor=J, weights=w / w.sum(1, keepdims=True),
             kintree_table=np.stack([parents, np.arange(16)]), f=rng.integers(0, V, (80, 3)),
             hands_components=np.eye(45), hands_mean=np.zeros(45), tip_vertex_ids=np.arange(5), is_mano=False,
             name="tiny-test-hand")
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from megohand.cli.demo import tiny_random_policy

    d = tmp_path_factory.mktemp("ckpt")
    model = tiny_random_policy()
    model.save_pretrained(d / "full")
    return model, d / "full"


def test_slim_checkpoint_matches_full(tiny_ckpt, tmp_path):
    from megohand.inference.policy import load_model, save_slim

    model, full = tiny_ckpt
    save_slim(model, tmp_path / "slim")
    assert (tmp_path / "slim" / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size / 3
    a, b = load_model(full), load_model(tmp_path / "slim")
    img = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    st = torch.randn(2, 109)
    pa = a.predict_chunk(img, ["pick up the red box"] * 2, st, None, generator=torch.Generator().manual_seed(1))
    pb = b.predict_chunk(img, ["pick up the red box"] * 2, st, None, generator=torch.Generator().manual_seed(1))
    scale = pa.abs().max()
    assert (pa - pb).abs().max() < 0.02 * scale  # float16 weights


def test_read_init_errors(tmp_path):
    from megohand.cli.generate import read_init

    p = tmp_path / "init.json"
    p.write_text(json.dumps({"global_orient": [0, 0, 0], "hand_pose": [0] * 45, "transl": [0, 0, 0.5]}))
    params, K = read_init(p, 64, 48)
    assert params.hand_pose.shape == (15, 3) and params.betas.shape == (10,)
    np.testing.assert_allclose(K, [[64, 0, 32], [0, 64, 24], [0, 0, 1]])
    for bad, msg in (({"global_orient": [0, 0], "hand_pose": [0] * 45, "transl": [0, 0, 1]}, "global_orient"),
                     ({"global_orient": [0, 0, 0], "transl": [0, 0, 1]}, "hand_pose"),
                     ({"global_orient": [0, 0, 0], "hand_pose": [0] * 45, "transl": [0, 0, 1], "K": [1, 2]}, "'K'")):
        p.write_text(json.dumps(bad))
        with pytest.raises(SystemExit, match=msg):
            read_init(p, 64, 48)
    p.write_text("{not json")
    with pytest.raises(SystemExit, match="init.json"):
        read_init(p, 64, 48)


def test_generate_image_and_video(tiny_ckpt, tmp_path):
    import av
    from PIL import Image

    from megohand.cli.generate import Generate
    from megohand.viz.video import write_mp4

    _, ckpt = tiny_ckpt
    hand = tiny_hand_file(tmp_path / "hand.npz")
    init = {"global_orient": [0.1, -0.2, 0.3], "hand_pose": (np.ones(45) * 0.05).tolist(), "betas": [0.1] * 10,
            "transl": [0.01, 0.02, 0.4]}
    (tmp_path / "init.json").write_text(json.dumps(init))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "frame.png")
    write_mp4([rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)], tmp_path / "clip.mp4", 15)
    for src, frames, expect in (("frame.png", 7, 8), ("clip.mp4", None, 6)):
        out = tmp_path / f"out_{src}"
        Generate(image=tmp_path / src, text="pick up the red box", init=tmp_path / "init.json", out=out, ckpt=ckpt,
                 frames=frames, stride=2, mano_dir=hand).run()
        d = json.loads((out / "hands.json").read_text())
        assert len(d["hand_frames"]) == expect and d["side"] == "right"
        for k, v in init.items():  # frame 0 is INIT
            np.testing.assert_allclose(np.ravel(d["hand_frames"][0][k]), np.ravel(v), atol=1e-5)
        z = np.load(out / "hands.npz")
        assert z["hand_pose"].shape == (expect, 15, 3) and z["transl"].shape == (expect, 3)
        with av.open(str(out / "overlay.mp4")) as c:
            assert sum(1 for _ in c.decode(video=0)) == expect
        assert (out / "overlay.png").stat().st_size > 0
        assert sorted(p.name for p in out.iterdir()) == ["hands.json", "hands.npz", "overlay.mp4", "overlay.png"]
    # existing outputs are refused before any work, replaced with --overwrite
    again = dict(image=tmp_path / "frame.png", text="x", init=tmp_path / "init.json", out=out, ckpt=ckpt, frames=2,
                 mano_dir=hand)
    with pytest.raises(UserError, match="already exists"):
        Generate(**again).run()
    Generate(**again, overwrite=True).run()
    assert len(json.loads((out / "hands.json").read_text())["hand_frames"]) == 3
    with pytest.raises(SystemExit, match="cannot generate"):
        Generate(image=tmp_path / "clip.mp4", text="x", init=tmp_path / "init.json", out=tmp_path / "o", ckpt=ckpt,
                 frames=10, mano_dir=hand).run()


def test_generate_passes_the_sampler_settings(tiny_ckpt, tmp_path):
    """σ = 0 makes the motion independent of the seed (the settings reach the sampler); guidance on a grounded state
    the checkpoint does not have is refused with the flag that would train one."""
    from PIL import Image

    from megohand.cli.generate import Generate

    _, ckpt = tiny_ckpt
    init = {"global_orient": [0.1, -0.2, 0.3], "hand_pose": [0.05] * 45, "betas": [0.1] * 10, "transl": [0, 0, 0.4]}
    (tmp_path / "init.json").write_text(json.dumps(init))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "f.png")
    common = dict(image=tmp_path / "f.png", text="pick up the red box", init=tmp_path / "init.json", ckpt=ckpt,
                  frames=5, mano_dir=tiny_hand_file(tmp_path / "hand.npz"))

    def motion(name: str, **kw) -> np.ndarray:
        Generate(out=tmp_path / name, **common, **kw).run()
        assert json.loads((tmp_path / name / "hands.json").read_text())["noise_scale"] == kw.get("noise_scale")
        return np.load(tmp_path / name / "hands.npz")["transl"]

    np.testing.assert_array_equal(motion("a", noise_scale=0.0, seed=0), motion("b", noise_scale=0.0, seed=1))
    # the text the policy reads: the step's where given (a policy trained on segment texts), else the instruction
    Generate(out=tmp_path / "s", step="reach for the red box", **common).run()
    assert json.loads((tmp_path / "s" / "hands.json").read_text())["text_read"] == "reach for the red box"
    assert json.loads((tmp_path / "a" / "hands.json").read_text())["text_read"] == "pick up the red box"
    assert not np.allclose(motion("c", seed=0), motion("d", seed=1))
    with pytest.raises(UserError, match="--model.grounding.state"):
        Generate(out=tmp_path / "e", ground_guidance=1.5, **common).run()
    with pytest.raises(SystemExit, match="--noise-scale must be >= 0"):
        Generate(out=tmp_path / "f", noise_scale=-1.0, **common).run()


def test_demo_smoke(tmp_path):
    from megohand.cli.demo import Demo
    from megohand.hand import load_hand_model

    try:
        load_hand_model()
    except FileNotFoundError:
        pytest.skip("no bundled hand model asset")
    Demo(out=tmp_path, random_init=True, episodes=2, rollout_frames=8).run()
    rep = json.loads((tmp_path / "demo.json").read_text())
    assert rep["methods"] == ["model", "static", "const-vel"] and rep["reliance"]
    assert set(rep["results"]) == {"window", "rollout-tof", "rollout-raw"}
    assert rep["datasets"]["synthetic"]["episodes"] == 2
    assert rep["results"]["window"]["static"]["[synthetic]"]["mpjpe_cm"] > 0
    for f in ("demo.md", "demo.mp4", "demo.png"):
        assert (tmp_path / f).stat().st_size > 0
    import av
    from PIL import Image

    with av.open(str(tmp_path / "demo.mp4")) as c:  # readable: >= 512 px, long enough to watch
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(video=0))
        assert min(s.width, s.height) >= 512 and n / float(s.average_rate) >= 4.0
    assert min(Image.open(tmp_path / "demo.png").size) >= 2 * 512


def test_demo_draws_the_world_of_its_checkpoint(tmp_path):
    from megohand.cli.demo import synth_config
    from megohand.inference.policy import DEMO_CHECKPOINT

    assert synth_config(DEMO_CHECKPOINT, 5).world == "grounded"  # the shipped checkpoint's synth.json says so
    (tmp_path / "synth.json").write_text(json.dumps({"seed": 0, "width": 64, "height": 48}))
    cfg = synth_config(tmp_path, 5)  # written before there were two worlds: classic
    assert (cfg.world, cfg.seed, cfg.width, cfg.height) == ("classic", 5, 64, 48)
    (tmp_path / "synth.json").write_text(json.dumps({"world": "grounded", "seed": 0}))
    assert synth_config(tmp_path, 5).world == "grounded" and synth_config(None, 5).world == "grounded"


def test_eval_cli_baselines_only(store, tmp_path, capsys):
    from megohand.cli.main import main

    hand = tiny_hand_file(tmp_path / "hand.npz")
    out = tmp_path / "ev"
    main(["eval", "--root", str(store.root), "--out", str(out), "--baselines-only", "--mano-dir", str(hand),
          "--protocol.horizon", "8", "--protocol.rollout-frames", "10"])
    rep = json.loads((out / "eval.json").read_text())
    assert rep["methods"] == ["static", "const-vel"] and rep["hand_model"] == "tiny-test-hand"
    assert set(rep["datasets"]) == {"synthetic", "taco", "h2o"}
    assert "## Group in-domain: h2o, taco" in (out / "eval.md").read_text()
    assert "not found" in cli_error(capsys, ["eval", "--root", tmp_path / "nope", "--baselines-only"])


def test_eval_val_split_reads_only_val_episodes(tmp_path, capsys):
    """--protocol.split val evaluates the val episodes (here 1 of 24 frames: 1 window) and not the test ones (2 of
    40 frames: 4 windows each); a store without that split gets a one-line error."""
    from megohand.cli.main import main

    w = StoreWriter(tmp_path / "s")
    K = [[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]
    for split, n, T in (("test", 2, 40), ("val", 1, 24)):
        for i in range(n):
            meta = EpisodeMeta(dataset="taco", episode=f"{split}/ep{i}", instruction="pick up the cup", fps=30.0, K=K,
                               split=split, hand_source="synthetic")
            w.write_episode(meta, {"right": cv_episode(T, seed=i)}, np.zeros((T, 8, 8, 3), np.uint8))
    hand = tiny_hand_file(tmp_path / "hand.npz")
    args = ["eval", "--root", str(tmp_path / "s"), "--baselines-only", "--mano-dir", str(hand), "--protocol.horizon",
            "8", "--protocol.window-stride", "8", "--protocol.rollout-frames", "0"]
    for split, episodes, windows in (("test", 2, 8), ("val", 1, 2)):
        main([*args, "--out", str(tmp_path / split), "--protocol.split", split])
        rep = json.loads((tmp_path / split / "eval.json").read_text())
        assert rep["datasets"]["taco"]["episodes"] == episodes and rep["datasets"]["taco"]["windows"] == windows
        assert rep["config"]["split"] == split
    StoreWriter(tmp_path / "t").write_episode(
        EpisodeMeta(dataset="taco", episode="a", instruction="x", fps=30.0, K=K, split="test", hand_source="synthetic"),
        {"right": cv_episode(20, seed=0)}, np.zeros((20, 8, 8, 3), np.uint8))
    err = cli_error(capsys, [*args[:2], str(tmp_path / "t"), *args[3:], "--out", str(tmp_path / "x"),
                             "--protocol.split", "val"])
    assert "no val episodes" in err


def _with_normalizer(model):
    """The tiny policy with a normaliser (min_max bounds of +-1 on state, +-0.1 on action)."""
    from megohand.data.normalize import Normalizer

    model.set_normalizer(Normalizer({"state": (-np.ones(109), np.ones(109)),
                                     "action": (-0.1 * np.ones(99), 0.1 * np.ones(99))}))
    return model


def test_horizon_errors_verb_static_error_is_the_true_offset(store, tiny_ckpt, tmp_path, capsys):
    """The static pose's error at chunk frame i is |t_{k+i} - t_k| = i |v| on constant-velocity episodes."""
    from megohand.cli.main import main

    model, _ = tiny_ckpt
    ck = tmp_path / "ck"
    _with_normalizer(copy.deepcopy(model)).save_pretrained(ck)
    out = tmp_path / "h.json"
    main(["horizon-errors", "--store", str(store.root), "--ckpt", str(ck), "--windows", "1000", "--out", str(out)])
    rep = json.loads(out.read_text())
    L = model.config.horizon
    speeds = [np.linalg.norm(np.diff(store.open(r).hands()["transl"], axis=0), axis=1).mean()
              for r in store.episodes(split="test")]
    expected = [100 * (i + 1) * np.mean(speeds) for i in range(L)]
    np.testing.assert_allclose(rep["static_wrist_offset_error_cm"], expected, rtol=1e-4)
    assert len(rep["model_wrist_offset_error_cm"]) == L and np.all(np.isfinite(rep["model_wrist_offset_error_cm"]))
    assert "already exists" in cli_error(capsys, ["horizon-errors", "--store", store.root, "--ckpt", ck, "--out", out])


def test_curve_verb_evaluates_each_checkpoint_once(store, tiny_ckpt, tmp_path, capsys):
    from megohand.cli.main import main
    from megohand.io import write_json

    model, _ = tiny_ckpt
    hand = tiny_hand_file(tmp_path / "hand.npz")
    run = tmp_path / "run"
    for step in (2, 4):
        d = run / "checkpoints" / f"step-{step:07d}"
        _with_normalizer(copy.deepcopy(model)).save_pretrained(d)
        write_json(d / "trainer_state.json", {"step": step})
    write_json(run / "train_config.json", {"steps": 4})
    (run / "metrics.jsonl").write_text('{"step": 2, "eval/loss_fm": 0.5}\n{"step": 4, "eval/loss_fm": 0.25}\n{"st')
    argv = ["curve", str(run), "--store", str(store.root), "--mano-dir", str(hand), "--group", "[synthetic]"]
    main(argv)
    rep = json.loads((run / "curve.json").read_text())
    assert [(p["step"], p["val_loss_fm"]) for p in rep["points"]] == [(2, 0.5), (4, 0.25)]
    assert rep["val_loss_fm_curve"] == [[2, 0.5], [4, 0.25]]
    # the static baseline agrees with `megohand eval`'s window protocol on the same group
    main(["eval", "--root", str(store.root), "--out", str(tmp_path / "ev"), "--baselines-only", "--mano-dir", str(hand),
          "--protocol.horizon", str(model.config.horizon), "--protocol.rollout-frames", "0"])
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())["results"]["window"]["static"]["[synthetic]"]
    assert rep["baselines"]["static"]["mpjpe_cm"] == pytest.approx(ev["mpjpe_cm"])
    main(argv)  # continued: nothing new to evaluate
    assert len(json.loads((run / "curve.json").read_text())["points"]) == 2
    assert "train_config.json" in cli_error(capsys, ["curve", str(tmp_path), "--store", str(store.root)])
