"""Store round trips, atomic/resumable writes, and every bad input that validate must find."""

from __future__ import annotations

import numpy as np
import pytest

from megohand.data.store import (
    EpisodeMeta,
    Store,
    StoreError,
    StoreWriter,
    episode_dirname,
    episode_from_dirname,
)

K = [[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]]


def smooth_rgb(T, H=48, W=64, seed=0):
    """Smooth images (JPEG-friendly) that differ per frame."""
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(seed)
    out = []
    for t in range(T):
        a, b, c = rng.uniform(0, 2 * np.pi, 3)
        img = np.stack([np.sin(xx / 9 + a), np.cos(yy / 7 + b), np.sin((xx + yy) / 13 + c)], -1)
        out.append(((img + 1) * 127.5).astype(np.uint8))
    return np.stack(out)


def make_hands(T, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "global_orient": rng.normal(size=(T, 3)) * 0.5,
        "hand_pose": rng.normal(size=(T, 15, 3)) * 0.3,
        "betas": rng.normal(size=(T, 10)),
        "transl": rng.normal(size=(T, 3)) * 0.1 + [0, 0, 0.5],
        "valid": np.ones(T, bool),
    }


def write(root, episode="s01/box_use_02", T=12, depth=True, dataset="arctic", **kw):
    rng = np.random.default_rng(1)
    hands = {"right": make_hands(T), "left": make_hands(T, seed=5)}
    rgb = smooth_rgb(T)
    d = rng.uniform(0.1, 2.0, (T, 48, 64)).astype(np.float32) if depth else None
    meta = EpisodeMeta(dataset, episode, "open the box", K=K, depth_source="sensor" if depth else "none", **kw)
    StoreWriter(root).write_episode(meta, hands, iter(rgb), depth=d, T_cam_from_world=np.tile(np.eye(4), (T, 1, 1)))
    return hands, rgb, d


@pytest.mark.parametrize("ep", ["s01/box_use_02", "(dust, roller, pan)/20230927_032", ".x", "..", "a%2Fb", "é/ü ~"])
def test_dirname_reversible(ep):
    name = episode_dirname(ep)
    assert "/" not in name and not name.startswith(".")
    assert episode_from_dirname(name) == ep


def test_round_trip(tmp_path):
    hands, rgb, depth = write(tmp_path, T=12)
    store = Store(tmp_path)
    assert store.datasets() == ["arctic"]
    [ref] = store.episodes()
    assert (ref.episode, ref.num_frames, ref.split, ref.has_depth) == ("s01/box_use_02", 12, "train", True)
    assert store.index("arctic")["splits"] == {"train": {"episodes": 1, "frames": 12}}
    ep = store.open("arctic", "s01/box_use_02")
    assert ep.meta.instruction == "open the box" and ep.meta.width == 64 and ep.meta.height == 48
    for side in ("right", "left"):
        h = ep.hands(side)
        for name in ("global_orient", "hand_pose", "betas", "transl"):
            np.testing.assert_allclose(h[name], hands[side][name], atol=1e-6)  # float32 storage
        assert h["valid"].all()
    for k in (0, 5, 11):
        assert ep.rgb(k).shape == (48, 64, 3)
        assert np.abs(ep.rgb(k).astype(float) - rgb[k]).mean() < 3.0  # JPEG q90 on smooth images
        np.testing.assert_allclose(ep.depth(k), np.round(depth[k] * 1000) / 1000, atol=1e-6)  # exact mm
    np.testing.assert_allclose(ep.timestamps, np.arange(12) / 30.0)
    np.testing.assert_array_equal(ep.T_cam_from_world, np.tile(np.eye(4), (12, 1, 1)))


def test_missing_side_and_no_depth(tmp_path):
    T = 5
    meta = EpisodeMeta("h2o", "subject1/o1/7/cam4", "flip a book", K=K)
    StoreWriter(tmp_path).write_episode(meta, {"right": make_hands(T)}, smooth_rgb(T))
    ep = Store(tmp_path).open("h2o", "subject1/o1/7/cam4")
    assert ep.depth(0) is None and ep.T_cam_from_world is None
    assert not ep.hands("left")["valid"].any() and ep.hands("right")["valid"].all()


def test_resume_and_no_overwrite(tmp_path):
    write(tmp_path, T=4)
    w = StoreWriter(tmp_path)
    assert w.has_episode("arctic", "s01/box_use_02") and not w.has_episode("arctic", "s01/other")
    with pytest.raises(FileExistsError):
        write(tmp_path, T=4)


def test_downscale_scales_K(tmp_path):
    T = 3
    meta = EpisodeMeta("taco", "(a, b, c)/1", "roll", K=K, depth_source="rendered")
    d = np.full((T, 48, 64), 0.5, np.float32)
    StoreWriter(tmp_path, max_short_side=24).write_episode(meta, {"right": make_hands(T)}, smooth_rgb(T), depth=d)
    ep = Store(tmp_path).open("taco", "(a, b, c)/1")
    assert ep.rgb(0).shape == (24, 32, 3) and ep.depth(0).shape == (24, 32)
    # a point projects to the same relative image position before and after
    X = np.array([0.05, -0.02, 0.5])
    u0 = np.array(K) @ X / X[2]
    u1 = ep.K @ X / X[2]
    np.testing.assert_allclose((u1[:2] + 0.5) / [32, 24], (u0[:2] + 0.5) / [64, 48], atol=1e-9)


# ---------------------------------------------------------------- bad input

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from megohand.data.validate import validate_store  # noqa: E402
from megohand.data.video import Pack, PackWriter  # noqa: E402

EP = "s01/box_use_02"


def ep_dir(root, ep=EP, ds="arctic"):
    return root / ds / "episodes" / episode_dirname(ep)


def set_column(root, name, fn, ep=EP):
    p = ep_dir(root, ep) / "frames.parquet"
    t = pq.read_table(p)
    col = t.column(name).combine_chunks()
    a = col.flatten().to_numpy().reshape(len(col), col.type.list_size).copy()
    fn(a)
    new = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), col.type.list_size)
    pq.write_table(t.set_column(t.column_names.index(name), name, new), p)


def rewrite_pack(path, keep):
    """Rewrite a pack keeping payloads through ``keep(k, payload) -> payload | None`` (None drops the frame)."""
    old = Pack(path)
    payloads = [old.read(k) for k in range(len(old))]
    old.close()
    w = PackWriter(path, "jpeg" if path.name.startswith("rgb") else "zdepth16")
    for k, b in enumerate(payloads):
        b = keep(k, b)
        if b is not None:
            w.append(b)
    w.close()


def fields(problems, episode=EP):
    return {p.field for p in problems if p.episode == episode}


def test_clean_store_validates(tmp_path):
    write(tmp_path)
    write(tmp_path, episode="(dust, roller, pan)/20230927_032", depth=False)
    assert validate_store(tmp_path, deep=True) == []


def test_missing_frame(tmp_path):
    write(tmp_path)
    rewrite_pack(ep_dir(tmp_path) / "rgb.pack", lambda k, b: b"" if k == 3 else b)
    probs = validate_store(tmp_path)
    assert any(p.field == "rgb" and "missing frames" in p.message and "[3]" in p.message for p in probs)
    ep = Store(tmp_path).open("arctic", EP)
    ep.rgb(2)
    with pytest.raises(StoreError, match=r"arctic/s01/box_use_02 \[rgb\].*frame 3 missing"):
        ep.rgb(3)


def test_truncated_video(tmp_path):
    write(tmp_path)
    p = ep_dir(tmp_path) / "rgb.pack"
    # fewer frames than meta says
    rewrite_pack(p, lambda k, b: b if k < 9 else None)
    probs = validate_store(tmp_path)
    assert any(p.field == "rgb" and "truncated video" in p.message and "9 frames" in p.message for p in probs)
    with pytest.raises(StoreError, match=r"s01/box_use_02 \[rgb\].*9 frames, meta says 12"):
        Store(tmp_path).open("arctic", EP).rgb(0)
    # a file cut short (no footer)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    probs = validate_store(tmp_path)
    assert any(p.field == "rgb" and "truncated" in p.message for p in probs)
    with pytest.raises(StoreError, match=r"s01/box_use_02 \[rgb\].*truncated"):
        Store(tmp_path).open("arctic", EP).rgb(0)


def test_nan_hand_parameters(tmp_path):
    write(tmp_path)
    set_column(tmp_path, "right_transl", lambda a: a.__setitem__((4, 1), np.nan))
    set_column(tmp_path, "left_hand_pose", lambda a: a.__setitem__((7, 0), np.inf))
    probs = validate_store(tmp_path)
    msgs = {p.field: p.message for p in probs}
    assert "[4]" in msgs["right_transl"] and "[7]" in msgs["left_hand_pose"]
    with pytest.raises(StoreError, match=r"s01/box_use_02 \[right_transl\]: NaN/inf in valid frames \[4\]"):
        Store(tmp_path).open("arctic", EP).hands("right")


def test_mismatched_lengths(tmp_path):
    write(tmp_path)
    p = ep_dir(tmp_path) / "frames.parquet"
    pq.write_table(pq.read_table(p).slice(0, 10), p)
    rewrite_pack(ep_dir(tmp_path) / "depth.pack", lambda k, b: b if k < 11 else None)
    probs = validate_store(tmp_path)
    assert any(p.field == "frames.parquet" and "10 rows" in p.message for p in probs)
    assert any(p.field == "depth" and "11 frames" in p.message for p in probs)
    ep = Store(tmp_path).open("arctic", EP)
    with pytest.raises(StoreError, match=r"\[frames.parquet\]: 10 rows, meta says 12"):
        ep.hands("right")
    with pytest.raises(StoreError, match=r"\[depth\].*11 frames, meta says 12"):
        ep.depth(0)


def test_missing_files_and_bad_meta_all_listed(tmp_path):
    import json

    write(tmp_path)
    write(tmp_path, episode="s02/other")
    (ep_dir(tmp_path) / "depth.pack").unlink()
    (ep_dir(tmp_path, "s02/other") / "frames.parquet").unlink()
    with pytest.raises(StoreError, match=r"s01/box_use_02 \[depth\].*missing"):
        Store(tmp_path).open("arctic", EP).depth(0)
    mp = ep_dir(tmp_path) / "meta.json"
    meta = json.loads(mp.read_text())
    meta.update(fps=-1, split="training", K=[[0, 0, 1], [0, 1, 1], [0, 0, 1]], segments=[[5, 40, "too long"]])
    mp.write_text(json.dumps(meta))
    probs = validate_store(tmp_path)
    assert {"depth", "fps", "split", "K", "segments"} <= fields(probs)
    assert "frames.parquet" in fields(probs, "s02/other")
    with pytest.raises(StoreError, match=r"s02/other \[frames.parquet\]: file missing"):
        Store(tmp_path).open("arctic", "s02/other").hands()
    with pytest.raises(StoreError, match=r"s01/box_use_02 \[meta.json\]: .*fps: must be a positive number"):
        Store(tmp_path).open("arctic", EP)
    # an episode folder vanished from under the index
    import shutil

    shutil.rmtree(ep_dir(tmp_path, "s02/other"))
    assert any(p.field == "index.json" and p.episode == "s02/other" for p in validate_store(tmp_path))


def test_invalid_rotations(tmp_path):
    write(tmp_path)
    set_column(tmp_path, "right_global_orient", lambda a: a.__setitem__((2, 0), 90.0))  # degrees, not radians
    set_column(tmp_path, "T_cam_from_world", lambda a: a.__setitem__((5, 0), 2.0))  # scaled, not rigid
    probs = validate_store(tmp_path)
    msgs = {p.field: p.message for p in probs}
    assert "invalid rotation" in msgs["right_global_orient"] and "[2]" in msgs["right_global_orient"]
    assert "invalid rotation" in msgs["T_cam_from_world"] and "[5]" in msgs["T_cam_from_world"]


def test_corrupt_payload(tmp_path):
    write(tmp_path)
    rewrite_pack(ep_dir(tmp_path) / "rgb.pack", lambda k, b: b[: len(b) // 2] if k == 6 else b)
    probs = validate_store(tmp_path)
    assert any(p.field == "rgb" and "corrupt" in p.message and "[6]" in p.message for p in probs)


def test_interrupted_write_leaves_nothing(tmp_path):
    write(tmp_path, episode="s01/done")

    def frames_then_crash():
        for k, f in enumerate(smooth_rgb(12)):
            if k == 7:
                raise RuntimeError("camera unplugged")
            yield f

    meta = EpisodeMeta("arctic", EP, "x", K=K)
    with pytest.raises(RuntimeError, match="camera unplugged"):
        StoreWriter(tmp_path).write_episode(meta, {"right": make_hands(12)}, frames_then_crash())
    w = StoreWriter(tmp_path)
    assert not w.has_episode("arctic", EP) and not ep_dir(tmp_path).exists()
    assert list((tmp_path / "arctic" / ".tmp").iterdir()) == []
    assert [r.episode for r in Store(tmp_path).episodes()] == ["s01/done"]
    assert validate_store(tmp_path) == []
    # too few frames for the hands, NaN in a valid frame: refused, nothing written
    with pytest.raises(StoreError, match=r"\[rgb\]: 5 frames, hands have 12"):
        w.write_episode(meta, {"right": make_hands(12)}, smooth_rgb(5))
    h = make_hands(12)
    h["transl"][3, 0] = np.nan
    with pytest.raises(StoreError, match=r"\[right.transl\]: non-finite values \(NaN/inf\) in valid frames \[3\]"):
        w.write_episode(meta, {"right": h}, smooth_rgb(12))
    h["valid"][3] = False  # allowed in an invalid frame, stored as 0
    w.write_episode(meta, {"right": h}, smooth_rgb(12))
    assert Store(tmp_path).open("arctic", EP).hands()["transl"][3, 0] == 0
    assert validate_store(tmp_path) == []


def test_meta_checked_before_frames_and_numpy_extra(tmp_path):
    consumed = []

    def frames():
        for f in smooth_rgb(4):
            consumed.append(1)
            yield f

    bad = EpisodeMeta("arctic", EP, "x", K=K, split="training")
    with pytest.raises(StoreError, match=r"split: must be one of"):
        StoreWriter(tmp_path).write_episode(bad, {"right": make_hands(4)}, frames())
    assert consumed == []  # refused before reading any frame
    meta = EpisodeMeta("arctic", EP, "x", K=np.array(K), extra={"n": np.int64(3), "v": np.zeros(2)},
                       segments=[(np.int64(0), np.int64(4), "all")])
    StoreWriter(tmp_path).write_episode(meta, {"right": make_hands(4)}, smooth_rgb(4))
    m = Store(tmp_path).open("arctic", EP).meta
    assert m.extra == {"n": 3, "v": [0.0, 0.0]} and m.segments == [(0, 4, "all")]


def test_rebuild_index(tmp_path):
    import json

    write(tmp_path)
    write(tmp_path, episode="s02/x", split="test")
    p = tmp_path / "arctic" / "index.json"
    before = json.loads(p.read_text())
    assert before["splits"] == {"test": {"episodes": 1, "frames": 12}, "train": {"episodes": 1, "frames": 12}}
    p.unlink()
    assert [r.episode for r in Store(tmp_path).episodes(split="test")] == ["s02/x"]  # scan fallback
    assert any(q.field == "index.json" for q in validate_store(tmp_path))
    assert StoreWriter(tmp_path).rebuild_index("arctic") == before
    assert validate_store(tmp_path) == []


def test_reopen_skips_checks_until_meta_changes(tmp_path):
    """An episode evicted from the open-reader LRU reopens from its checked metadata; an edited meta.json is read
    and checked again."""
    import json
    import os

    write(tmp_path, episode="a")
    write(tmp_path, episode="b")
    store = Store(tmp_path, cache_episodes=1)
    first = store.open("arctic", "a").meta
    store.open("arctic", "b")  # evicts a
    assert store.open("arctic", "a").meta is first  # no parse: the same checked object
    store.open("arctic", "b")
    path = tmp_path / "arctic" / "episodes" / "a" / "meta.json"
    d = json.loads(path.read_text())
    d["fps"] = -1.0
    path.write_text(json.dumps(d))
    os.utime(path, ns=(1, 1))  # a different stamp even on a coarse clock
    with pytest.raises(StoreError, match="fps: must be a positive number"):
        store.open("arctic", "a")


def test_reopened_pack_skips_its_checks_until_the_file_changes(tmp_path, monkeypatch):
    """A loader reopens evicted episodes all the time: the second opening of an unchanged pack reads only the frame;
    the same file with another mtime (rewritten, here damaged at the same size) is checked again."""
    import os

    from megohand.data.video import PackError

    path = tmp_path / "rgb.pack"
    w = PackWriter(path, "jpeg")
    for b in (b"zero", b"one", b"two"):
        w.append(b)
    w.close()
    assert Pack(path).read(1) == b"one"
    reads = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append(off) or real(fd, n, off))
    assert Pack(path).read(2) == b"two" and len(reads) == 1
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the footer's end magic
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(PackError, match="truncated or corrupt"):
        Pack(path).read(0)
