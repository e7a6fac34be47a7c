"""Training windows: values against a scipy/numpy float64 oracle, padding, segments, crops, mixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from megohand.data.store import EpisodeMeta, Store, StoreWriter
from megohand.data.windows import DatasetWeightedSampler, WindowDataset, load_cascaded_dataset, make_sampler

torch.set_num_threads(1)
K = [[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]]


def hands(T, seed=0, valid=None):
    rng = np.random.default_rng(seed)
    return {
        "global_orient": rng.normal(size=(T, 3)),
        "hand_pose": rng.normal(size=(T, 15, 3)) * 0.4,
        "betas": rng.normal(size=(T, 10)),
        "transl": rng.normal(size=(T, 3)) * 0.1,
        "valid": np.ones(T, bool) if valid is None else valid,
    }


def rot6d(aa):
    R = Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix()
    return np.concatenate([R[:, :, 0], R[:, :, 1]], -1).reshape(*aa.shape[:-1], 6)


def oracle_state(h, k):
    return np.concatenate([rot6d(h["hand_pose"][k]).reshape(-1), h["betas"][k], rot6d(h["global_orient"][k]),
                           h["transl"][k]])


def oracle_action(h, k, j):
    Rk = Rotation.from_rotvec(h["global_orient"][k]).as_matrix()
    Rj = Rotation.from_rotvec(h["global_orient"][j]).as_matrix()
    rel = Rk.T @ Rj
    return np.concatenate([rot6d(h["hand_pose"][j]).reshape(-1), rel[:, 0], rel[:, 1], h["transl"][j] - h["transl"][k]])


def frames(T, H=48, W=64):
    """Frame t: left half dark, right half bright, a per-frame gray level in the centre column band."""
    out = np.zeros((T, H, W, 3), np.uint8)
    out[:, :, W // 2:] = 200
    for t in range(T):
        out[t, :, W // 2 - 4:W // 2 + 4] = 10 * t
    return out


def depth_frames(T, H=48, W=64):
    d = np.full((T, H, W), 1.5, np.float32)
    d[:, :, : W // 2] = 0.75
    return d


def write(root, dataset, episode, T, split="train", segments=(), depth=True, h=None, instruction="do the task"):
    meta = EpisodeMeta(dataset, episode, instruction, segments=list(segments), K=K, split=split,
                       depth_source="rendered" if depth else "none")
    h = hands(T) if h is None else h
    StoreWriter(root).write_episode(meta, {"right": h}, frames(T), depth=depth_frames(T) if depth else None)
    return h


def test_values_against_oracle(tmp_path):
    h = write(tmp_path, "arctic", "s01/box_use_02", T=24)
    ds = WindowDataset(tmp_path, horizon=16, image_size=32)
    assert len(ds) == 23  # starts 0..22 (the last frame has no future)
    for i in (0, 7, 22):
        s = ds[i]
        k = s["meta"]["k"]
        assert k == i
        np.testing.assert_allclose(s["state"].numpy(), oracle_state(h, k), atol=2e-5)
        for j in range(16):
            f = min(k + 1 + j, 23)  # padded with the last frame
            np.testing.assert_allclose(s["action"][j].numpy(), oracle_action(h, k, f), atol=5e-5)
        expected_mask = (np.arange(k + 1, k + 17) <= 23).astype(np.float32)
        np.testing.assert_array_equal(s["action_mask"].numpy(), expected_mask)
        assert s["instruction"] == "do the task" and s["meta"]["dataset"] == "arctic"


def test_sample_contract_and_image(tmp_path):
    write(tmp_path, "h2o", "subject1/o1/7/cam4", T=5)
    s = WindowDataset(tmp_path, horizon=4, image_size=24)[2]
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 24, 24)
    assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, 24, 24) and s["has_depth"]
    assert s["state"].shape == (109,) and s["action"].shape == (4, 99) and s["action_mask"].shape == (4,)
    img = s["image"].float()
    # centre crop of the 64x48 frame is columns 8..56; left 0..24 -> dark, right 24..48 -> bright, band -> 20
    assert img[:, :, :8].max() < 12 and img[:, :, 16:].min() > 185
    assert abs(img[:, :, 11:13].mean() - 20) < 8
    d = s["depth"][0].numpy()
    assert set(np.unique(d).round(4)) == {0.75, 1.5}  # nearest resize, exact mm values, no mixing
    np.testing.assert_array_equal(d[:, :11], 0.75)
    np.testing.assert_array_equal(d[:, 13:], 1.5)
    # K follows the crop: the principal point stays at the image centre, focal scales by 24/48
    np.testing.assert_allclose(s["K"].numpy(), [[30, 0, 11.5], [0, 30, 11.5], [0, 0, 1]], atol=1e-5)


def test_segments_padding_and_invalid(tmp_path):
    T = 20
    valid = np.ones(T, bool)
    valid[5] = False
    write(tmp_path, "taco", "(dust, roller, pan)/20230927_032", T, h=hands(T, valid=valid),
          segments=[(0, 8, "roll the box"), (10, 20, "put the roller down")])
    ds = WindowDataset(tmp_path, horizon=4, image_size=16)
    ks = [ds.window(i)[1] for i in range(len(ds))]
    assert ks == [0, 1, 2, 3, 4, 6, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # no start at 5 (invalid), 7, 8, 9, 19
    by_k = {ds[i]["meta"]["k"]: ds[i] for i in range(len(ds))}
    assert by_k[3]["instruction"] == "roll the box" and by_k[12]["instruction"] == "put the roller down"
    np.testing.assert_array_equal(by_k[3]["action_mask"], [1, 0, 1, 1])  # frame 5 invalid
    np.testing.assert_array_equal(by_k[6]["action_mask"], [1, 0, 0, 0])  # segment ends at 8
    np.testing.assert_array_equal(by_k[6]["action"][1:], by_k[6]["action"][:1].expand(3, -1))  # padded with frame 7
    stride = WindowDataset(tmp_path, horizon=4, image_size=16, stride=3)
    assert [stride.window(i)[1] for i in range(len(stride))] == [0, 3, 6, 10, 13, 16]



def test_task_and_segment_text(tmp_path):
    """text_context="task+segment": every window reads the episode's instruction, then its segment's text; the
    instruction alone where no segment covers the frame; "segment" (default) is the paper's text."""
    from megohand.data.windows import window_text

    assert window_text("reach for the red cube", "push the red cube to the blue mat", "task+segment") == \
        "push the red cube to the blue mat: reach for the red cube"
    assert window_text("reach for the red cube", "push the red cube", "segment") == "reach for the red cube"
    assert window_text("", "push the red cube", "task+segment") == "push the red cube"
    assert window_text("push the red cube", "push the red cube", "task+segment") == "push the red cube"
    with pytest.raises(ValueError, match="text context"):
        window_text("a", "b", "both")
    T = 20
    write(tmp_path, "taco", "(dust, roller, pan)/20230927_032", T, instruction="tidy the pan",
          segments=[(0, 8, "roll the box"), (10, 20, "put the roller down")])
    ds = WindowDataset(tmp_path, horizon=4, image_size=16, window_scope="episode", text_context="task+segment")
    by_k = {ds[i]["meta"]["k"]: ds[i] for i in range(len(ds))}
    assert by_k[3]["instruction"] == "tidy the pan: roll the box"
    assert by_k[12]["instruction"] == "tidy the pan: put the roller down"
    plain = WindowDataset(tmp_path, horizon=4, image_size=16, window_scope="episode")
    assert {plain[i]["instruction"] for i in range(len(plain))} == {"roll the box", "put the roller down"}
    with pytest.raises(ValueError, match="text context"):
        WindowDataset(tmp_path, horizon=4, image_size=16, text_context="both")


def test_episode_scope_runs_across_segments(tmp_path):
    """window_scope="episode": starts as in the segments (plus each segment's last frame), the text of the start
    frame's segment, the future up to the episode's end (values = the oracle's, frames between segments too)."""
    T = 20
    valid = np.ones(T, bool)
    valid[5] = False
    h = write(tmp_path, "taco", "(dust, roller, pan)/20230927_032", T, h=hands(T, valid=valid),
              segments=[(0, 8, "roll the box"), (10, 20, "put the roller down")])
    ds = WindowDataset(tmp_path, horizon=4, image_size=16, window_scope="episode")
    ks = [ds.window(i)[1] for i in range(len(ds))]
    assert ks == [0, 1, 2, 3, 4, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # 7 now starts; 19 has no future
    by_k = {ds[i]["meta"]["k"]: ds[i] for i in range(len(ds))}
    assert by_k[7]["instruction"] == "roll the box" and by_k[10]["instruction"] == "put the roller down"
    np.testing.assert_array_equal(by_k[6]["action_mask"], [1, 1, 1, 1])  # frames 7..10 cross the gap 8..9
    np.testing.assert_array_equal(by_k[3]["action_mask"], [1, 0, 1, 1])  # frame 5 invalid
    np.testing.assert_array_equal(by_k[17]["action_mask"], [1, 1, 0, 0])  # the episode ends at 20
    for j, f in enumerate(range(7, 11)):
        np.testing.assert_allclose(by_k[6]["action"][j].numpy(), oracle_action(h, 6, f), atol=5e-5)
    with pytest.raises(ValueError, match="window_scope"):
        WindowDataset(tmp_path, horizon=4, image_size=16, window_scope="clip")

def test_depth_sources(tmp_path):
    write(tmp_path, "h2o", "a", 6, depth=True)
    write(tmp_path, "hot3d", "b", 6, depth=False)
    ds = WindowDataset(tmp_path, horizon=2, image_size=16)
    flags = {ds[i]["meta"]["dataset"]: ds[i]["has_depth"] for i in range(len(ds))}
    assert flags == {"h2o": True, "hot3d": False}
    assert not WindowDataset(tmp_path, horizon=2, image_size=16, stored_depth="none")[0]["has_depth"]
    with pytest.raises(ValueError, match="no depth"):
        WindowDataset(tmp_path, horizon=2, image_size=16, stored_depth="required")
    with pytest.raises(ValueError, match="not in store"):
        WindowDataset(tmp_path, datasets=["nope"])


def test_read_rgb_false_reads_no_frames(tmp_path, monkeypatch):
    """read_rgb=False (a model without image): a black image, every other field as with the frames (augmented: the
    same crop draw, so the same K), and no frame decoded."""
    from megohand.data.store import Episode

    write(tmp_path, "h2o", "a", 6)
    ds = WindowDataset(tmp_path, horizon=2, image_size=16, augment=True)
    want = [ds[i] for i in range(len(ds))]
    ds.read_rgb = False
    monkeypatch.setattr(Episode, "rgb_image", lambda *a, **k: pytest.fail("frame decoded"))
    for i, w in enumerate(want):
        got = ds[i]
        assert got["image"].dtype == torch.uint8 and not got["image"].any() and w["image"].any()
        for key in ("K", "depth", "state", "action", "action_mask"):
            torch.testing.assert_close(got[key], w[key], rtol=0, atol=0)


def test_cascaded_split_and_sampler(tmp_path):
    for i in range(10):
        write(tmp_path, "h2o", f"subject1/o{i}", 6)
    for i in range(4):
        write(tmp_path, "taco", f"t{i}", 6)
    write(tmp_path, "taco", "held_out", 6, split="test")
    train, evald = load_cascaded_dataset(tmp_path, [("h2o", 1.0), ("taco", 3.0)], 0.75, window_size=4, image_size=16)
    tr = {(r.dataset, r.episode) for r in train.refs}
    ev = {(r.dataset, r.episode) for r in evald.refs}
    assert not tr & ev and len(tr) + len(ev) == 14 and ("taco", "held_out") not in tr | ev
    assert sum(d == "h2o" for d, _ in tr) == 8 and sum(d == "taco" for d, _ in tr) == 3
    again, _ = load_cascaded_dataset(tmp_path, ["h2o", "taco"], 0.75, window_size=4, image_size=16)
    assert {(r.dataset, r.episode) for r in again.refs} == tr  # deterministic
    sampler = make_sampler(train, num_samples=4000, seed=1)
    names = np.array(train.dataset_names)[train.window_dataset[list(sampler)]]
    assert abs((names == "taco").mean() - 0.75) < 0.03  # weights 1 : 3
    uniform = DatasetWeightedSampler(train, None, num_samples=4000)
    share = (np.array(train.dataset_names)[train.window_dataset[list(uniform)]] == "taco").mean()
    assert abs(share - 3 / 11) < 0.03  # proportional to window counts (15 of 55)


def test_dataloader_workers(tmp_path):
    write(tmp_path, "h2o", "a", 10)
    ds = WindowDataset(Store(tmp_path), horizon=4, image_size=16)
    dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    ks = torch.cat([b["meta"]["k"] for b in dl]).tolist()
    assert ks == list(range(9))


def test_augment_is_seeded(tmp_path):
    write(tmp_path, "h2o", "a", 6)
    a = WindowDataset(tmp_path, horizon=2, image_size=16, augment=True, seed=3)
    b = WindowDataset(tmp_path, horizon=2, image_size=16, augment=True, seed=3)
    assert torch.equal(a[1]["image"], b[1]["image"]) and torch.equal(a[1]["K"], b[1]["K"])


def test_training_and_inference_see_the_same_picture(tmp_path):
    """One non-square (64 x 48) frame through the training path (WindowDataset) and the inference path (the frame as
    evaluation and generate give it to the policy): identical image and depth tensors, a crop and never a squash."""
    from megohand.evaluate.evaluator import load_episode
    from megohand.models import MEgoHandPolicy, PolicyConfig
    from dataclasses import replace

    write(tmp_path, "arctic", "s01/box_use_02", T=6, split="test")
    S = 32
    ds = WindowDataset(tmp_path, split="test", horizon=4, image_size=S)
    c = PolicyConfig.compact()
    policy = MEgoHandPolicy(replace(c, backbone=c.backbone.replace(image_size=S, width=32, fusion_layers=1)))
    ep = load_episode(Store(tmp_path), "arctic", "s01/box_use_02")
    for i in (0, 3):
        sample = ds[i]
        img, dep = ep.observe([sample["meta"]["k"]])
        assert img.shape[-2:] == (48, 64)  # the full frame reaches the policy
        x, d = policy.preprocess(img, dep)
        assert torch.equal((x[0] * 255).round().to(torch.uint8), sample["image"])
        assert torch.equal(d[0], sample["depth"])
    # a crop: the 48 x 48 centre columns 8..55 of the stored (JPEG) frame, resized (oracle: numpy slicing + PIL)
    from PIL import Image

    centre = Image.fromarray(np.ascontiguousarray(ep.episode_obj.rgb(sample["meta"]["k"])[:, 8:56]))
    expect = np.asarray(centre.resize((S, S), Image.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(sample["image"].numpy(), expect)


def test_bytes_lru_bounds_bytes_and_keeps_none():
    from megohand.data.cache import BytesLRU

    c = BytesLRU(max_bytes=1000)
    calls = []
    make = lambda n: lambda: (calls.append(n), torch.zeros(n, dtype=torch.uint8))[1]  # noqa: E731
    c.get_or_make("a", make(400)), c.get_or_make("b", make(400)), c.get_or_make("a", make(400))
    assert calls == [400, 400] and c.bytes == 800  # "a" came from the cache
    c.get_or_make("c", make(400))  # over budget: "b" (oldest use) leaves
    assert set(c.items) == {"a", "c"} and c.bytes == 800
    assert c.get_or_make("none", lambda: calls.append("none")) is None and "none" in c  # a missing fact stays known
    c.get_or_make("none", lambda: calls.append("again"))
    assert "again" not in calls
    c.put("a", np.zeros(100, np.uint8))  # replacing an entry re-counts its bytes
    assert c.bytes == 500 and c.get("a").nbytes == 100
    assert c.get_or_make("huge", make(2000)).numel() == 2000 and "huge" not in c  # larger than the budget: not kept
