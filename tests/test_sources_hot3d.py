"""HOT3D converter on miniature native fixtures (Clips tar and per-sequence folder)."""

import io
import tarfile

import numpy as np
import pytest
import torch

from fixtures_native import FISHEYE16, fk, write_hot3d_clip, write_hot3d_sequence
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError, canonical_hands
from megohand.data.sources.distortion import fisheye624_project
from megohand.data.sources.pipeline import convert_episode

torch.set_num_threads(1)



def _camera_joints(ep, hands):
    out = {}
    for side, raw in ep.hands.items():
        c = canonical_hands(raw, ep.convention, hands[side], ep.T_cam_from_world)
        out[side] = fk(hands[side], c["global_orient"], c["hand_pose"], c["betas"], c["transl"]), c
    return out


def test_clip_roundtrip_joints_in_camera_frame(tmp_path, hands):
    expected, T_cw = write_hot3d_clip(tmp_path, hands)
    src = get_source("hot3d")(tmp_path)
    assert src.tasks() == ["train_aria/clip-002832"]
    ep = src.load("train_aria/clip-002832")
    assert ep.num_frames == 4 and ep.split == "train"
    np.testing.assert_allclose(ep.T_cam_from_world, T_cw, atol=1e-9)
    for side, (J, c) in _camera_joints(ep, hands).items():
        assert c["valid"].all()
        assert np.abs(J - expected[side]).max() < 1e-4, side


def test_sequence_roundtrip_joints_in_camera_frame(tmp_path, hands):
    expected, T_cw = write_hot3d_sequence(tmp_path, hands)
    src = get_source("hot3d")(tmp_path)
    ep = src.load("P0001_abcdef12")
    assert ep.num_frames == 5  # only the RGB stream's timestamps, not the SLAM ones
    np.testing.assert_allclose(ep.T_cam_from_world, T_cw, atol=1e-9)
    for side, (J, _) in _camera_joints(ep, hands).items():
        assert np.abs(J - expected[side]).max() < 1e-4, side
    with pytest.raises(SourceError, match="no RGB frames"):
        convert_episode(ep, None, hands)


def test_clip_converts_into_store_with_pinhole_frames(tmp_path, hands):
    from megohand.data.store import Store, StoreWriter

    expected, T_cw = write_hot3d_clip(tmp_path / "src", hands)
    src = get_source("hot3d")(tmp_path / "src")
    ep = src.load("train_aria/clip-002832")
    writer = StoreWriter(tmp_path / "store")
    convert_episode(ep, writer, hands, depth="none")
    e = Store(tmp_path / "store").open("hot3d", "train_aria/clip-002832")
    assert e.num_frames == 4 and e.meta.depth_source == "none" and e.meta.hand_model
    np.testing.assert_allclose(e.K, [[30, 0, 16], [0, 31, 15], [0, 0, 1]])
    for side in ("left", "right"):
        h = e.hands(side)
        J = fk(hands[side], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
        assert np.abs(J - expected[side]).max() < 1e-4  # float32 storage
    assert e.rgb(0).shape == (32, 32, 3)
    assert writer.has_episode("hot3d", "train_aria/clip-002832")


def test_fisheye_resampling_reads_where_the_fisheye_model_projects():
    """Pinhole pixel (u, v) is read from the fisheye image at the FISHEYE624 projection of its ray."""
    from megohand.data.sources.hot3d import FisheyeToPinhole

    conv = FisheyeToPinhole(FISHEYE16, 32, 32)
    conv(np.zeros((32, 32), np.float32))  # builds the sampling map
    for iu, iv in [(16, 15), (3, 28), (30, 2)]:
        ray = np.array([(iu - 16) / 30, (iv - 15) / 31, 1.0]) * 0.7  # any depth along the pixel's ray
        np.testing.assert_allclose(conv._map[iv, iu], fisheye624_project(ray, FISHEYE16), atol=1e-4)
    # a checkerboard survives the resampling at the centre, where the model is nearly pinhole
    img = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    assert conv(img).dtype == np.uint8


def test_bad_input_names_the_file(tmp_path, hands):
    write_hot3d_clip(tmp_path, hands)
    src = get_source("hot3d")(tmp_path)
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("train_aria/clip-999999")
    # corrupt hands.json inside the tar
    bad = tmp_path / "train_aria" / "clip-000007.tar"
    with tarfile.open(tmp_path / "train_aria" / "clip-002832.tar") as tin, tarfile.open(bad, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name == "000001.hands.json":
                data = b"{not json"
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    with pytest.raises(SourceError, match=r"clip-000007.tar: corrupt JSON in 000001.hands.json"):
        src.load("train_aria/clip-000007")
    # a sequence whose hand file is corrupt
    write_hot3d_sequence(tmp_path / "seq", hands)
    p = tmp_path / "seq" / "P0001_abcdef12" / "mano_hand_pose_trajectory.jsonl"
    p.write_text(p.read_text()[:-40])
    with pytest.raises(SourceError, match="mano_hand_pose_trajectory.jsonl"):
        get_source("hot3d")(tmp_path / "seq").load("P0001_abcdef12")
    (tmp_path / "seq" / "P0001_abcdef12" / "mps" / "slam" / "online_calibration.jsonl").unlink()
    with pytest.raises(SourceError, match="missing camera calibration"):
        get_source("hot3d")(tmp_path / "seq").load("P0001_abcdef12")


def test_clip_members_are_read_with_a_size_limit(tmp_path, hands, monkeypatch):
    """A gzip-compressed clip tar is read member by member through common.read_tar_member: a member that
    decompresses beyond the limit is refused with the archive and the member named."""
    from megohand.data.sources import common

    write_hot3d_clip(tmp_path, hands)
    src_tar = tmp_path / "train_aria" / "clip-002832.tar"
    gz = tmp_path / "train_aria" / "clip-000008.tar"
    with tarfile.open(src_tar) as tin, tarfile.open(gz, "w:gz") as tout:
        for m in tin.getmembers():
            tout.addfile(m, io.BytesIO(tin.extractfile(m).read()))
    src = get_source("hot3d")(tmp_path)
    assert src.load("train_aria/clip-000008").num_frames == src.load("train_aria/clip-002832").num_frames
    with tarfile.open(gz) as t:
        biggest = max((m for m in t.getmembers() if m.name.endswith(".json")), key=lambda m: m.size)
    monkeypatch.setattr(common, "MAX_MEMBER_BYTES", biggest.size - 1)
    with pytest.raises(SourceError, match=rf"clip-000008.tar: {biggest.name} is {biggest.size} bytes, more than"):
        src.load("train_aria/clip-000008")
