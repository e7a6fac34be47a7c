"""HOT3D per-sequence release with a recording: images on the annotation (TIME_CODE) clock, factory calibration.

The VRS readers (projectaria-tools for Aria, pyvrs for Quest 3) are optional packages and no VRS file is
in the fixtures, so a stand-in for projectaria-tools' data provider (and for pyvrs' reader) is handed to
our :class:`AriaRecording` / :class:`QuestRecording`: one RGB stream whose frames carry two clocks, the
device clock (``capture_timestamp_ns``, 56 s off, as in HOT3D's sample) and TIME_CODE (the annotations'
clock, with sub-millisecond jitter), and a factory calibration that differs from the MPS one.
"""

import json

import numpy as np
import pytest

from fixtures_native import FISHEYE16, inv, random_rigid, write_hot3d_sequence
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError
from megohand.data.sources.hot3d import AriaRecording, QuestRecording, match_frames

DEVICE_OFFSET_NS = 56_833_000_000_000  # the device clock runs 56833 s ahead of TIME_CODE here


class _Image:
    def __init__(self, a):
        self.a = a

    def to_numpy_array(self):
        return self.a


class _Record:
    def __init__(self, t):
        self.capture_timestamp_ns = t


class _SE3:
    def __init__(self, T):
        self.T = T

    def to_matrix(self):
        return self.T


class _Camera:
    def __init__(self, params, T, size):
        self.params, self.T, self.size = params, T, size

    def projection_params(self):
        return self.params

    def get_transform_device_camera(self):
        return _SE3(self.T)

    def get_image_size(self):
        return self.size


class StandInAriaProvider:
    """projectaria-tools' VRS data provider in miniature: stream "214-1", two clocks, a factory calibration."""

    def __init__(self, time_code_ns, images, camera):
        self.time_code = np.asarray(time_code_ns, np.int64)
        self.device = self.time_code + DEVICE_OFFSET_NS
        self.images, self.camera = images, camera
        self.asked = []

    def get_timestamps_ns(self, stream_id, time_domain):
        self.asked.append((stream_id, time_domain))
        assert stream_id == "214-1"
        return (self.time_code if time_domain == "TIME_CODE" else self.device).tolist()

    def get_image_data_by_index(self, stream_id, i):
        return _Image(self.images[i]), _Record(int(self.device[i]))

    def get_device_calibration(self):
        cam = self.camera

        class _Calibration:
            def get_camera_calib(self, label):
                return cam if label == "camera-rgb" else None

        return _Calibration()


def _stand_in(seq, drop=None, jitter_ns=300_000):
    """Frames at the annotated times (+ jitter) and between them, in shuffled index order; image i is filled with
    i + 1. Returns the provider and, per annotated frame, the index of its image."""
    ann = np.array(sorted({int(l.split(",")[0]) for l in (seq / "masks" / "mask_hand_pose_available.csv").read_text()
                           .splitlines()[1:] if l.split(",")[1] == "214-1"}), np.int64)
    rng = np.random.default_rng(0)
    times = np.concatenate([ann + rng.integers(-jitter_ns, jitter_ns, len(ann)), ann[:-1] + 16_000_000])
    owner = np.concatenate([np.arange(len(ann)), -np.ones(len(ann) - 1, int)])
    if drop is not None:
        keep = owner != drop
        times, owner = times[keep], owner[keep]
    perm = rng.permutation(len(times))
    times, owner = times[perm], owner[perm]
    images = [np.full((32, 32, 3), i + 1, np.uint8) for i in range(len(times))]
    T_dc = random_rigid(np.random.default_rng(5), 1, dist=0.05)[0]
    params = np.array([FISHEYE16[0] * 1.1, *FISHEYE16[2:]])  # Aria's 15-parameter form, another focal length
    cam = _Camera(params, T_dc, (32, 32))
    expected_index = {int(o): int(np.flatnonzero(owner == o)[0]) for o in owner if o >= 0}
    return StandInAriaProvider(times, images, cam), expected_index, T_dc


def test_frames_come_from_the_time_code_clock_and_factory_calibration(tmp_path, hands):
    seq = tmp_path / "P0001_abcdef12"
    write_hot3d_sequence(tmp_path, hands)
    provider, expected_index, T_dc = _stand_in(seq)
    (seq / "recording.vrs").write_bytes(b"")  # opened through the stand-in
    src = get_source("hot3d")(tmp_path)
    T_dc_mps = src.camera_calibration(seq)["T_device_camera"]
    (seq / "recording.vrs").rename(seq / "later.vrs")
    ep_mps = src.load("P0001_abcdef12")
    (seq / "later.vrs").rename(seq / "recording.vrs")
    src.open_recording = lambda path, headset: AriaRecording(path, provider=provider, stream_id=str, time_code="TIME_CODE")
    ep = src.load("P0001_abcdef12")
    assert ("214-1", "TIME_CODE") in provider.asked and all(d == "TIME_CODE" for _, d in provider.asked)
    # the factory calibration (other focal length, other extrinsics) replaces the MPS one
    assert "factory" in ep.extra["calibration"] and ep.extra["clock"].startswith("TIME_CODE")
    assert ep.K[0, 0] == pytest.approx(FISHEYE16[0] * 1.1)
    T_world_device = inv(ep_mps.T_cam_from_world) @ inv(T_dc_mps)  # the headset trajectory, per frame
    np.testing.assert_allclose(ep.T_cam_from_world, inv(T_world_device @ T_dc), atol=1e-9)
    assert np.abs(ep.T_cam_from_world - ep_mps.T_cam_from_world).max() > 1e-3
    frames = list(ep.rgb())
    assert len(frames) == ep.num_frames == 5
    for k, img in enumerate(frames):  # the image whose TIME_CODE is closest, read by its index
        assert img[16, 16, 0] == expected_index[k] + 1, k


def test_device_clock_images_would_not_match(tmp_path, hands):
    """The stand-in's device stamps are 56833 s off: matching them against the annotations must fail loudly."""
    seq = tmp_path / "P0001_abcdef12"
    write_hot3d_sequence(tmp_path, hands)
    provider, _, _ = _stand_in(seq)
    ann = [int(json.loads(l)["timestamp_ns"]) for l in (seq / "mano_hand_pose_trajectory.jsonl").read_text().splitlines()]
    with pytest.raises(SourceError, match=f"annotation time {ann[0]} ns"):
        match_frames(provider.device, ann, 1_000_000, "device clock")


def test_missing_frame_names_the_first_unmatched_time(tmp_path, hands):
    seq = tmp_path / "P0001_abcdef12"
    write_hot3d_sequence(tmp_path, hands)
    provider, _, _ = _stand_in(seq, drop=3)
    (seq / "recording.vrs").write_bytes(b"")
    src = get_source("hot3d")(tmp_path)
    src.open_recording = lambda path, headset: AriaRecording(path, provider=provider, stream_id=str, time_code="TIME_CODE")
    ann = sorted(int(json.loads(l)["timestamp_ns"]) for l in (seq / "mano_hand_pose_trajectory.jsonl").read_text().splitlines())
    with pytest.raises(SourceError, match=rf"recording.vrs stream 214-1: no frame within 1 ms of annotation time {ann[3]} ns \(frame 3 of 5"):
        src.load("P0001_abcdef12")


def test_match_frames_closest_within_tolerance():
    frames = np.array([100, 0, 40, 70])
    np.testing.assert_array_equal(match_frames(frames, [1, 38, 72, 99], 5, "x"), [1, 2, 3, 0])
    with pytest.raises(SourceError, match="annotation time 55 ns"):
        match_frames(frames, [0, 55], 5, "x")


class _QuestRecord:
    def __init__(self, t, img):
        self.timestamp, self.image_blocks = t, [img]


class StandInVRSReader:
    """pyvrs' SyncVRSReader in miniature: filtered_by_fields -> records with .timestamp [s] and .image_blocks."""

    def __init__(self, streams):
        self.streams = streams

    def filtered_by_fields(self, stream_ids, record_types):
        assert record_types == {"data"}
        (sid,) = stream_ids
        return self.streams[sid]


def test_quest_recording_uses_record_time_in_ns():
    recs = [_QuestRecord(56752.108188860 + k / 30, np.full((4, 4), k, np.uint8)) for k in range(4)]
    rec = QuestRecording("q.vrs", reader=StandInVRSReader({"1201-1": recs}))
    ts = rec.timestamps("1201-1")
    assert ts.dtype == np.int64 and abs(ts[0] - 56752108188860) < 1000  # float seconds -> ns (HOT3D: int(t * 1e9))
    idx = match_frames(ts, [56752108188860 + 2 * 33_333_333], 1_000_000, "quest")
    assert rec.image("1201-1", int(idx[0]))[0, 0] == 2


def test_without_recording_the_mps_calibration_is_named(tmp_path, hands):
    write_hot3d_sequence(tmp_path, hands)
    ep = get_source("hot3d")(tmp_path).load("P0001_abcdef12")
    assert ep.rgb is None and "MPS online calibration" in ep.extra["calibration"]
    assert ep.K[0, 0] == pytest.approx(FISHEYE16[0])


# ----------------------------------------------------------------------------- units (issue 16)


def _scale_translations(seq, files, s):
    for name in files:
        p = seq / name
        if name.endswith(".jsonl"):
            out = []
            for line in p.read_text().splitlines():
                rec = json.loads(line)
                for h in rec["hand_poses"].values():
                    h["wrist_xform"]["t_xyz"] = [v * s for v in h["wrist_xform"]["t_xyz"]]
                out.append(json.dumps(rec))
            p.write_text("\n".join(out) + "\n")
        else:
            lines = p.read_text().splitlines()
            rows = [lines[0]]
            for line in lines[1:]:
                v = line.split(",")
                v[2:5] = [repr(float(x) * s) for x in v[2:5]]
                rows.append(",".join(v))
            p.write_text("\n".join(rows) + "\n")


def test_millimetre_hands_stop_with_a_clear_error(tmp_path, hands):
    write_hot3d_sequence(tmp_path, hands)
    seq = tmp_path / "P0001_abcdef12"
    _scale_translations(seq, ["mano_hand_pose_trajectory.jsonl"], 1000.0)
    with pytest.raises(SourceError, match=r"mano_hand_pose_trajectory.jsonl.*millimetres\?.*units='mm'"):
        get_source("hot3d")(tmp_path).load("P0001_abcdef12")
    get_source("hot3d")(tmp_path, units="m").load("P0001_abcdef12")  # the explicit override keeps the values


def test_units_mm_converts_millimetre_files(tmp_path, hands):
    write_hot3d_sequence(tmp_path / "m", hands)
    write_hot3d_sequence(tmp_path / "mm", hands)
    _scale_translations(tmp_path / "mm" / "P0001_abcdef12", ["mano_hand_pose_trajectory.jsonl", "headset_trajectory.csv"], 1000.0)
    with pytest.raises(SourceError, match="millimetres"):
        get_source("hot3d")(tmp_path / "mm").load("P0001_abcdef12")
    a = get_source("hot3d")(tmp_path / "m").load("P0001_abcdef12")
    b = get_source("hot3d")(tmp_path / "mm", units="mm").load("P0001_abcdef12")
    np.testing.assert_allclose(b.T_cam_from_world, a.T_cam_from_world, atol=1e-9)
    for side in a.hands:
        np.testing.assert_allclose(b.hands[side].transl, a.hands[side].transl, atol=1e-12)
    with pytest.raises(SourceError, match="units must be"):
        get_source("hot3d")(tmp_path / "m", units="cm")
