"""Miniature datasets in their exact native layouts, written from known hand parameters.

Every writer returns ``expected``: side -> (T,21,3) joints in the RGB camera frame [m], computed
with the dataset's *own* semantics (its MANO options fed straight to forward kinematics, then the
released rigid transforms), independently of the converters' parameter conversions.
Rotations for the files are made with scipy (an oracle independent of the project's code).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

# ----------------------------------------------------------------------------- a test hand model


def write_test_hand(folder: Path, seed=0) -> Path:
    """A small MANO-format hand (MANO_RIGHT.npz + mirrored MANO_LEFT.npz) with non-trivial
    ``hands_mean``, PCA ``hands_components``, shape and pose blend shapes, so that every convention
    rule (flat mean, PCA, J0 shift) changes the result. Loaded through ``load_hand_model(folder)``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    V = 800
    parents = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
    J = np.zeros((16, 3))
    J[0] = [0.095, 0.006, 0.006]
    for s, d in {1: [-1, -0.2, 0], 4: [-1, 0, 0], 7: [-0.9, 0.2, 0], 10: [-0.9, 0.1, 0], 13: [-0.5, -0.4, -0.2]}.items():
        d = np.array(d) / np.linalg.norm(d)
        J[s] = J[0] + 0.08 * d
        J[s + 1] = J[s] + 0.03 * d
        J[s + 2] = J[s + 1] + 0.025 * d
    owner = rng.integers(0, 16, V)
    vt = J[owner] + rng.normal(scale=0.008, size=(V, 3))
    W = np.zeros((V, 16))
    W[np.arange(V), owner] = 0.7
    W[np.arange(V), parents[owner].clip(0)] += 0.3
    Jreg = np.zeros((16, V))
    for j in range(16):
        idx = np.flatnonzero(owner == j)
        Jreg[j, idx] = 1.0 / len(idx)
    sd = rng.normal(scale=0.003, size=(V, 3, 10))
    pdirs = rng.normal(scale=0.002, size=(V, 3, 135))
    comps = np.linalg.qr(rng.normal(size=(45, 45)))[0].T
    mean = rng.normal(scale=0.2, size=45)
    faces = rng.integers(0, V, (1200, 3))
    kt = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(16)]).astype(np.int64)
    common = dict(J_regressor=Jreg, weights=W, kintree_table=kt, f=faces, hands_components=comps, is_mano=False,
                  tip_vertex_ids=np.array([744, 320, 443, 554, 671]), posedirs=pdirs)
    np.savez(folder / "MANO_RIGHT.npz", v_template=vt, shapedirs=sd, hands_mean=mean, name="test hand right", **common)
    flip = np.array([-1.0, 1.0, 1.0])
    mirror_mean = (mean.reshape(15, 3) * np.array([1.0, -1.0, -1.0])).reshape(45)
    np.savez(folder / "MANO_LEFT.npz", v_template=vt * flip, shapedirs=sd * flip[:, None], hands_mean=mirror_mean,
             name="test hand left", **common)
    return folder


# ----------------------------------------------------------------------------- generic helpers


def random_rotvecs(rng, n) -> np.ndarray:
    return Rotation.random(n, random_state=int(rng.integers(1 << 31))).as_rotvec()


def random_rigid(rng, n, dist=0.5) -> np.ndarray:
    """(n,4,4) rigid transforms with random rotations and translations of size ~dist [m]."""
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=int(rng.integers(1 << 31))).as_matrix()
    T[:, :3, 3] = rng.normal(scale=dist, size=(n, 3))
    return T


def quat_wxyz(R: np.ndarray) -> np.ndarray:
    q = Rotation.from_matrix(R).as_quat()  # xyzw
    return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def apply(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(T,4,4) x (T,N,3) -> (T,N,3)."""
    return np.einsum("tij,tnj->tni", T[:, :3, :3], X) + T[:, None, :3, 3]


def inv(T: np.ndarray) -> np.ndarray:
    return np.linalg.inv(T)


def fk(hand, go, pose45, betas, transl) -> np.ndarray:
    """Forward kinematics in float64: joints (T,21,3)."""
    f = lambda x: torch.as_tensor(np.asarray(x, np.float64))  # noqa: E731
    with torch.no_grad():
        out = hand(f(go), f(pose45).reshape(-1, 15, 3), f(betas), f(transl))
    return out.joints.double().numpy()


def constants(hand):
    return hand.hands_mean.double().numpy(), hand.hands_components.double().numpy()


def J0(hand, betas) -> np.ndarray:
    with torch.no_grad():
        return hand.rest_joints(torch.as_tensor(np.asarray(betas, np.float64)))[..., 0, :].double().numpy()


def tiny_frames(T, H, W, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(1, H, W, 3))
    return ((base + np.arange(T)[:, None, None, None] * 20) % 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_video(path: Path, frames, fps=30, codec="mpeg4", pix_fmt="yuv420p", fmt="rgb24"):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format=fmt)):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_depth_video(path: Path, depth_u16, fps=30):
    """16-bit depth frames -> lossless FFV1 gray16le video (as decoded by the official scripts)."""
    write_video(path, depth_u16, fps=fps, codec="ffv1", pix_fmt="gray16le", fmt="gray16le")


# ----------------------------------------------------------------------------- HOT3D

FISHEYE16 = [30.0, 31.0, 16.0, 15.0, 0.2, -0.1, 0.01, 0.0, 0.0, 0.0, 1e-3, -1e-3, 1e-3, 0.0, -1e-3, 0.0]


def _hot3d_hands(rng, hands, T):
    """Native world params per side + expected world joints (HOT3D semantics)."""
    betas = rng.normal(scale=0.5, size=10)
    native, world = {}, {}
    for side in ("left", "right"):
        h = hands[side]
        mean, comps = constants(h)
        pca = rng.normal(scale=0.8, size=(T, 15))
        go = random_rotvecs(rng, T)
        transl = rng.normal(scale=0.2, size=(T, 3))
        # smplx MANO(use_pca=True, flat_hand_mean=False): full pose = pca @ comps[:15] + hands_mean
        world[side] = fk(h, go, pca @ comps[:15] + mean, np.tile(betas, (T, 1)), transl)
        native[side] = dict(pca=pca, go=go, transl=transl)
    return betas, native, world


def write_hot3d_clip(root: Path, hands, folder="train_aria", clip_id=2832, T=4, size=32, seed=0):
    """A HOT3D-Clips tar ``root/folder/clip-<id>.tar``; returns expected camera-frame joints."""
    rng = np.random.default_rng(seed)
    betas, native, world = _hot3d_hands(rng, hands, T)
    T_world_cam = random_rigid(rng, T)
    frames = tiny_frames(T, size, size, seed)
    path = root / folder / f"clip-{clip_id:06d}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)

    def add(tar, name, data: bytes):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        for t in range(T):
            key = f"{t:06d}"
            cam = {
                "calibration": {
                    "label": "camera-rgb",
                    "stream_id": "214-1",
                    "serial_number": "x",
                    "image_width": size,
                    "image_height": size,
                    "projection_model_type": "CameraModelType.FISHEYE624",
                    "projection_params": FISHEYE16,
                    "T_device_from_camera": {"translation_xyz": [0, 0, 0], "quaternion_wxyz": [1, 0, 0, 0]},
                    "max_solid_angle": 1.7,
                },
                "T_world_from_camera": {
                    "translation_xyz": T_world_cam[t, :3, 3].tolist(),
                    "quaternion_wxyz": quat_wxyz(T_world_cam[t, :3, :3]).tolist(),
                },
            }
            add(tar, f"{key}.cameras.json", json.dumps({"214-1": cam}).encode())
            hj = {
                side: {
                    "mano_pose": {
                        "thetas": native[side]["pca"][t].tolist(),
                        "wrist_xform": np.concatenate([native[side]["go"][t], native[side]["transl"][t]]).tolist(),
                    },
                    "umetrack_pose": {"joint_angles": [0.0] * 20, "wrist_xform": np.eye(4).tolist()},
                }
                for side in ("left", "right")
            }
            add(tar, f"{key}.hands.json", json.dumps(hj).encode())
            add(tar, f"{key}.objects.json", json.dumps({}).encode())
            add(tar, f"{key}.info.json", json.dumps({"device": "Aria"}).encode())
            add(tar, f"{key}.image_214-1.jpg", jpeg_bytes(frames[t]))
        add(tar, "__hand_shapes.json__", json.dumps({"mano": betas.tolist(), "umetrack": {}}).encode())
    T_cam_world = inv(T_world_cam)
    return {side: apply(T_cam_world, world[side]) for side in world}, T_cam_world


def write_hot3d_sequence(root: Path, hands, name="P0001_abcdef12", T=5, seed=1):
    """A per-sequence HOT3D folder (no recording.vrs); returns expected camera-frame joints (T,21,3)."""
    rng = np.random.default_rng(seed)
    betas, native, world = _hot3d_hands(rng, hands, T)
    seq = root / name
    (seq / "mps" / "slam").mkdir(parents=True, exist_ok=True)
    (seq / "masks").mkdir(parents=True, exist_ok=True)
    ts = 1_000_000_000 + np.arange(T) * 33_333_333
    T_world_device = random_rigid(rng, T)
    T_device_camera = random_rigid(rng, 1, dist=0.05)[0]
    with open(seq / "mano_hand_pose_trajectory.jsonl", "w") as f:
        for t in range(T):
            hp = {}
            for key, side in (("0", "left"), ("1", "right")):
                R = Rotation.from_rotvec(native[side]["go"][t]).as_matrix()
                hp[key] = {
                    "pose": native[side]["pca"][t].tolist(),
                    "wrist_xform": {"t_xyz": native[side]["transl"][t].tolist(), "q_wxyz": quat_wxyz(R).tolist()},
                    "betas": betas.tolist(),
                }
            f.write(json.dumps({"timestamp_ns": int(ts[t]), "hand_poses": hp}) + "\n")
    with open(seq / "headset_trajectory.csv", "w") as f:
        f.write("object_uid,timestamp[ns],t_wo_x[m],t_wo_y[m],t_wo_z[m],q_wo_w,q_wo_x,q_wo_y,q_wo_z\n")
        for t in range(T):
            q = quat_wxyz(T_world_device[t, :3, :3])
            f.write(",".join(map(str, [123, int(ts[t]), *T_world_device[t, :3, 3], *q])) + "\n")
    q = quat_wxyz(T_device_camera[:3, :3])
    calib = {
        "CameraCalibrations": [
            {
                "Label": "camera-rgb",
                "Projection": {"Name": "FisheyeRadTanThinPrism", "Params": [FISHEYE16[0], *FISHEYE16[2:]]},
                "T_Device_Camera": {"Translation": T_device_camera[:3, 3].tolist(), "UnitQuaternion": [q[0], q[1:].tolist()]},
            }
        ]
    }
    (seq / "mps" / "slam" / "online_calibration.jsonl").write_text(json.dumps(calib) + "\n")
    with open(seq / "masks" / "mask_hand_pose_available.csv", "w") as f:
        f.write("timestamp[ns],stream_id,mask\n")
        for t in range(T):
            f.write(f"{int(ts[t])},214-1,True\n{int(ts[t]) + 90000},1201-1,True\n")
    T_cam_world = inv(T_world_device @ T_device_camera)
    return {side: apply(T_cam_world, world[side]) for side in world}, T_cam_world


# ----------------------------------------------------------------------------- TACO


def write_taco(root: Path, hands, task="(dust, roller, pan)/20230927_032", T=4, H=24, W=32, seed=2):
    """TACO layout for one sequence; hand pickles hold torch tensors as the release does."""
    import pickle

    rng = np.random.default_rng(seed)
    T_cw = random_rigid(rng, T)
    K = np.array([[40.0, 0, 16], [0, 41.0, 12], [0, 0, 1]])
    expected = {}
    (root / "Hand_Poses" / task).mkdir(parents=True, exist_ok=True)
    for side in ("left", "right"):
        h = hands[side]
        pose48 = np.concatenate([random_rotvecs(rng, T), rng.normal(scale=0.4, size=(T, 45))], axis=1)
        trans = rng.normal(scale=0.3, size=(T, 3))
        betas = rng.normal(scale=0.5, size=10)
        # manopth center_idx=0 (flat mean): joints centred on the wrist, then + hand_trans (world, m)
        J = fk(h, pose48[:, :3], pose48[:, 3:], np.tile(betas, (T, 1)), np.zeros((T, 3)))
        expected[side] = apply(T_cw, J - J[:, :1] + trans[:, None])
        frames = {f"{t + 1:05d}": {"hand_pose": torch.tensor(pose48[t]), "hand_trans": torch.tensor(trans[t])} for t in range(T)}
        with open(root / "Hand_Poses" / task / f"{side}_hand.pkl", "wb") as f:
            pickle.dump(frames, f)
        with open(root / "Hand_Poses" / task / f"{side}_hand_shape.pkl", "wb") as f:
            pickle.dump({"hand_shape": torch.tensor(betas)}, f)
    cam = root / "Egocentric_Camera_Parameters" / task
    cam.mkdir(parents=True, exist_ok=True)
    np.save(cam / "egocentric_frame_extrinsic.npy", T_cw)
    np.savetxt(cam / "egocentric_intrinsic.txt", K)
    write_video(root / "Egocentric_RGB_Videos" / task / "color.mp4", tiny_frames(T, H, W, seed))
    depth_m = 0.3 + rng.random((T, H, W)) * 1.5
    depth_u16 = np.round(depth_m * 4000).astype(np.uint16)
    write_depth_video(root / "Egocentric_Depth_Videos" / task / "egocentric_depth.avi", depth_u16)
    lists = root / "data_lists"
    lists.mkdir(exist_ok=True)
    (lists / "v1_overall_data_train_test_split.txt").write_text(f"{task.split('/')[1]},test_2\n20230101_001,train\n")
    return expected, depth_u16.astype(np.float32) / 4000.0


# ----------------------------------------------------------------------------- OakInk2

OAKINK2_TASK = "scene_04__A008/seq__ff070467cd91f735acab__2023-04-23-11-28-29"


def write_oakink2(root: Path, hands, task=OAKINK2_TASK, T=5, H=12, W=20, seed=3):
    """OakInk2 layout for one sequence (anno pkl with torch tensors, program json, PNG frames)."""
    import pickle

    rng = np.random.default_rng(seed)
    token = task.replace("/", "++")
    fids = [100 + 4 * t for t in range(T)]  # image frames every 4th mocap frame
    serial = "cam_123"
    T_cw = random_rigid(rng, T)
    K = np.array([[25.0, 0, 10], [0, 26.0, 6], [0, 0, 1]])
    raw_mano, expected = {}, {}
    for prefix, side in (("lh", "left"), ("rh", "right")):
        h = hands[side]
        R = Rotation.random(T * 16, random_state=int(rng.integers(1 << 31))).as_matrix().reshape(T, 16, 3, 3)
        R[:, 1:] = Rotation.from_rotvec(rng.normal(scale=0.3, size=(T * 15, 3))).as_matrix().reshape(T, 15, 3, 3)
        betas = rng.normal(scale=0.5, size=10)
        tsl = rng.normal(scale=0.3, size=(T, 3))
        with torch.no_grad():
            J = h(torch.as_tensor(R[:, 0]), torch.as_tensor(R[:, 1:]), torch.as_tensor(np.tile(betas, (T, 1))),
                  rot="matrix").joints.double().numpy()
        # manotorch center_idx=0: joints centred on the wrist, then + tsl (world)
        expected[side] = apply(T_cw, J - J[:, :1] + tsl[:, None])
        for t, f in enumerate(fids):
            rec = raw_mano.setdefault(f, {})
            rec[f"{prefix}__pose_coeffs"] = torch.tensor(quat_wxyz(R[t])[None])  # (1,16,4) wxyz
            rec[f"{prefix}__tsl"] = torch.tensor(tsl[t][None])
            rec[f"{prefix}__betas"] = torch.tensor(betas[None])
            raw_mano[f + 1] = {}  # mocap-only frames in between
    anno = {
        "cam_def": {serial: "egocentric", "cam_999": "allocentric_top"},
        "cam_selection": ["egocentric"],
        "frame_id_list": fids,
        "cam_intr": {"egocentric": {f: K for f in fids}},
        "cam_extr": {"egocentric": {f: T_cw[t] for t, f in enumerate(fids)}},
        "obj_list": ["O02@0001@00001"],
        "obj_transf": {"O02@0001@00001": {f: np.eye(4) for f in fids}},
        "raw_mano": raw_mano,
    }
    (root / "anno_preview").mkdir(parents=True, exist_ok=True)
    with open(root / "anno_preview" / f"{token}.pkl", "wb") as fh:
        pickle.dump(anno, fh)
    prog = root / "program"
    for d in ("desc_info", "program_info"):
        (prog / d).mkdir(parents=True, exist_ok=True)
    seg_a, seg_b = str(((100, 108), None)), str((None, (108, 116)))
    (prog / "desc_info" / f"{token}.json").write_text(json.dumps({
        seg_a: {"seg_desc": "Position the alcohol lamp beneath the tripod"},
        seg_b: {"seg_desc": "Light the alcohol lamp with the lighter."}}))
    (prog / "program_info" / f"{token}.json").write_text(json.dumps({
        seg_a: {"primitive": "place", "interaction_mode": "lh_main", "obj_list": []},
        seg_b: {"primitive": "ignite", "interaction_mode": "rh_main", "obj_list": []}}))
    (prog / "task_target.json").write_text(json.dumps({task: "heat the water on the tripod"}))
    from PIL import Image

    img_dir = root / "data" / token / serial
    img_dir.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(fids):
        Image.fromarray(tiny_frames(T, H, W, seed)[t]).save(img_dir / f"{f:06d}.png")
    (root / "split").mkdir(exist_ok=True)
    (root / "split" / "val.txt").write_text(task + "\n")
    return expected


# ----------------------------------------------------------------------------- H2O


def save_png16(path: Path, depth_u16: np.ndarray):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth_u16.astype(np.uint16)).save(path)


def save_png(path: Path, img: np.ndarray):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def write_h2o(root: Path, hands, task="subject1/o1/7/cam4", T=4, H=12, W=16, seed=4, labels=(0, 23, 23, 9)):
    """H2O cam4 folder: per-frame txt files, PNG RGB and 16-bit depth (mm)."""
    rng = np.random.default_rng(seed)
    cam = root / task
    T_wc = random_rigid(rng, T)  # camera -> world, as cam_pose stores
    expected, rows = {}, []
    params = {}
    for side in ("left", "right"):
        go, pose = random_rotvecs(rng, T), rng.normal(scale=0.4, size=(T, 45))
        betas, trans = rng.normal(scale=0.5, size=10), rng.normal(scale=0.3, size=(T, 3)) + [0, 0, 0.5]
        # manopth (flat mean, no centring): verts/1000 + trans -> camera frame
        expected[side] = fk(hands[side], go, pose, np.tile(betas, (T, 1)), trans)
        params[side] = (go, pose, betas, trans)
    frames = tiny_frames(T, H, W, seed)
    depth_mm = rng.integers(300, 2000, size=(T, H, W))
    for t in range(T):
        vals = []
        for side in ("left", "right"):
            go, pose, betas, trans = params[side]
            valid = 0.0 if (side == "left" and t == 1) else 1.0
            vals += [valid, *trans[t], *go[t], *pose[t], *betas]
        key = f"{t:06d}"
        for sub, data in (("hand_pose_MANO", vals), ("cam_pose", T_wc[t].reshape(-1)), ("action_label", [labels[t]])):
            (cam / sub).mkdir(parents=True, exist_ok=True)
            (cam / sub / f"{key}.txt").write_text(" ".join(f"{x:.17g}" if isinstance(x, float) else str(x) for x in data))
        save_png(cam / "rgb" / f"{key}.png", frames[t])
        save_png16(cam / "depth" / f"{key}.png", depth_mm[t])
    (cam / "cam_intrinsics.txt").write_text(f"20.0 21.0 8.0 6.0 {W} {H}")
    return expected, inv(T_wc), depth_mm / 1000.0


# ----------------------------------------------------------------------------- HOI4D

HOI4D_TASK = "ZY20210800001/H1/C1/N19/S100/s02/T3"


def write_hoi4d(root: Path, hands, task=HOI4D_TASK, T=4, H=16, W=24, seed=5):
    """HOI4D sequence: image.mp4 (15 fps), FFV1 16-bit depth video (mm), per-frame hand pickles."""
    import pickle

    rng = np.random.default_rng(seed)
    seq = root / task
    write_video(seq / "align_rgb" / "image.mp4", tiny_frames(T, H, W, seed), fps=15)
    depth_mm = rng.integers(200, 3000, size=(T, H, W)).astype(np.uint16)
    write_depth_video(seq / "align_depth" / "depth_video.avi", depth_mm, fps=15)
    K = np.array([[30.0, 0, 12], [0, 31.0, 8], [0, 0, 1]])
    (root / "camera_params" / task.split("/")[0]).mkdir(parents=True, exist_ok=True)
    np.save(root / "camera_params" / task.split("/")[0] / "intrin.npy", K)
    expected = {}
    hand_dir = root / "handpose" / "refinehandpose_right" / task
    hand_dir.mkdir(parents=True, exist_ok=True)
    go, pose = random_rotvecs(rng, T), rng.normal(scale=0.4, size=(T, 45))
    betas, trans = rng.normal(scale=0.5, size=10), rng.normal(scale=0.2, size=(T, 3)) + [0, 0, 0.6]
    expected["right"] = fk(hands["right"], go, pose, np.tile(betas, (T, 1)), trans)  # manopth: joints/1000 + trans
    for t in range(T):
        if t == 2:
            continue  # an unannotated frame
        with open(hand_dir / f"{t}.pickle", "wb") as f:
            pickle.dump({"poseCoeff": np.concatenate([go[t], pose[t]]).astype(np.float32), "beta": betas.astype(np.float32),
                         "trans": trans[t].astype(np.float32), "kps2D": np.zeros((21, 2))}, f, protocol=2)
    (seq / "action").mkdir(parents=True, exist_ok=True)
    (seq / "action" / "color.json").write_text(json.dumps({"events": [
        {"id": 1, "event": "Reachout", "startTime": 0.0, "endTime": 0.1},
        {"id": 2, "event": "Pickup", "startTime": 0.1, "endTime": 0.27}]}))
    (root / "definitions" / "task").mkdir(parents=True, exist_ok=True)
    (root / "definitions" / "task" / "task_definitions.csv").write_text(
        "Category ID,Category,T1,T2,T3,T4,T5,T6\nC1,Toy Car,Pick and place,Push toy car,Put it in the drawer,"
        "Take it out of the drawer,N/A,N/A\n")
    (root / "release.txt").write_text(task + "\n")
    return expected, depth_mm / 1000.0


# ----------------------------------------------------------------------------- ARCTIC

ARCTIC_DIST8 = [0.4, -0.1, 0.002, -0.003, 0.0, 0.0, 0.0, 0.0]


def write_arctic(root: Path, hands, task="s01/box_use_02", T=4, H=20, W=28, seed=6, offset=2):
    """ARCTIC raw_seqs (np.save of pickled dicts, as released), distorted view-0 JPEGs, misc.json."""
    rng = np.random.default_rng(seed)
    sid, seq = task.split("/")
    raw = root / "raw_seqs" / sid
    raw.mkdir(parents=True, exist_ok=True)
    T_cw = random_rigid(rng, T)
    K = np.array([[30.0, 0, 14], [0, 30.0, 10], [0, 0, 1]])
    mano, expected = {}, {}
    for side in ("right", "left"):
        mean, _ = constants(hands[side])
        rot, pose = random_rotvecs(rng, T), rng.normal(scale=0.3, size=(T, 45))
        trans, shape = rng.normal(scale=0.3, size=(T, 3)), rng.normal(scale=0.5, size=10)
        mano[side] = {"rot": rot, "pose": pose, "trans": trans, "shape": shape, "fitting_err": np.zeros(T)}
        # smplx MANO(flat_hand_mean=False): the layer adds hands_mean to `pose`
        expected[side] = apply(T_cw, fk(hands[side], rot, pose + mean, np.tile(shape, (T, 1)), trans))
    np.save(raw / f"{seq}.mano.npy", mano, allow_pickle=True)
    np.save(raw / f"{seq}.egocam.dist.npy", {"R_k_cam_np": T_cw[:, :3, :3], "T_k_cam_np": T_cw[:, :3, 3:4],
                                            "intrinsics": K, "dist8": np.array(ARCTIC_DIST8)}, allow_pickle=True)
    obj = np.zeros((T, 7))
    obj[:, 0] = np.linspace(0, 1.0, T)
    obj[:, 4:7] = [0, 0, 500.0]
    np.save(raw / f"{seq}.object.npy", obj)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "misc.json").write_text(json.dumps({sid: {"ioi_offset": offset, "gender": "male"}}))
    img_dir = root / "images" / sid / seq / "0"
    img_dir.mkdir(parents=True, exist_ok=True)
    frames = tiny_frames(T, H, W, seed)
    for k in range(T):
        save_png(img_dir / f"{k + offset:05d}.jpg", frames[k])  # PIL picks JPEG from the name
    return expected, T_cw, K


# ----------------------------------------------------------------------------- joint-only sources: helpers

_RETARGET_NETS = {}


def tiny_retargeter(hand_dir: Path, refine_steps=150, steps=300, seed=0):
    """A real ``Retargeter``: a small InverseMANO trained for a few hundred steps on the test hand of
    ``write_test_hand(seed=0)`` (cached per process: every such folder holds the same hand), with
    per-sequence refinement on."""
    from megohand.hand import load_hand_model
    from megohand.hand.retarget import RetargetConfig, Retargeter, train_inverse_mano

    if (steps, seed) not in _RETARGET_NETS:
        hand = load_hand_model(hand_dir, side="right")
        cfg = RetargetConfig(hidden=128, blocks=2, hand_model=hand.name)
        _RETARGET_NETS[(steps, seed)] = train_inverse_mano(hand, cfg, steps=steps, batch_size=256, lr=3e-3, seed=seed)
    return Retargeter(_RETARGET_NETS[(steps, seed)], mano_dir=hand_dir, refine_steps=refine_steps)


def smooth_hand_joints(rng, hand, T, wrist=(0.0, 0.0, 0.5)) -> tuple[np.ndarray, dict]:
    """A smooth T-frame sequence as at 30 fps (a random wrist rotation turning by ~0.1 rad over the
    sequence, finger poses near hands_mean drifting slowly, a wrist moving by ~1 cm, one betas; rotations
    composed by scipy) -> joints (T,21,3) [m] of ``hand`` (in the frame the wrist position is given in)
    and the params."""
    mean, _ = constants(hand)
    w = np.linspace(0.0, 1.0, T)
    R0 = Rotation.random(random_state=int(rng.integers(1 << 31)))
    axis = rng.normal(size=3)
    go = (Rotation.from_rotvec(np.outer(w, 0.1 * axis / np.linalg.norm(axis))) * R0).as_rotvec()
    p0 = mean + rng.normal(scale=0.25, size=45)
    pose = p0 + np.outer(w, rng.normal(scale=0.05, size=45))
    betas = np.tile(rng.normal(scale=0.5, size=10), (T, 1))
    wrist_pos = np.asarray(wrist) + rng.normal(scale=0.03, size=3) + np.outer(w, rng.normal(scale=0.006, size=3))
    transl = wrist_pos - J0(hand, betas)
    return fk(hand, go, pose, betas, transl), dict(global_orient=go, hand_pose=pose, betas=betas, transl=transl)


# ----------------------------------------------------------------------------- FPHA

# README "Camera parameters" (guiggh/hand_pose_action), written out here independently of the converter
FPHA_COLOR_K = np.array([[1395.749023, 0, 935.732544], [0, 1395.749268, 540.681030], [0, 0, 1]])
FPHA_DEPTH_K = np.array([[475.065948, 0, 315.944855], [0, 475.065857, 245.287079], [0, 0, 1]])
FPHA_R = np.array([[0.999988496304, -0.00468848412856, 0.000982563360594],
                   [0.00469115935266, 0.999985218048, -0.00273845880292],
                   [-0.000969709653873, 0.00274303671904, 0.99999576807]])
FPHA_T_MM = np.array([25.7, 1.22, 3.902])
# README joint list [Wrist, TMCP, IMCP, MMCP, RMCP, PMCP, TPIP, TDIP, TTIP, IPIP, IDIP, ITIP, MPIP, MDIP, MTIP,
# RPIP, RDIP, RTIP, PPIP, PDIP, PTIP] as indices of our MANO21 (wrist, index1-3, middle1-3, pinky1-3,
# ring1-3, thumb1-3, tips T I M R P)
MANO21_TO_FPHA = [0, 13, 1, 4, 10, 7, 14, 15, 16, 2, 3, 17, 5, 6, 18, 11, 12, 19, 8, 9, 20]


def scaled_K(K, full, size):
    """K of a (W,H) = ``full`` camera for frames resized to ``size`` (pixel centres at integers)."""
    sx, sy = size[0] / full[0], size[1] / full[1]
    return np.array([[K[0, 0] * sx, 0, (K[0, 2] + 0.5) * sx - 0.5], [0, K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5], [0, 0, 1]])


FPHA_PLANE = (np.array([0.08, -0.05, 1.0]), 0.6)  # depth-camera plane n . X = d (|n| != 1 fine)
FPHA_PATCH = ((8, 12), (10, 14), 0.45)  # rows, cols of a nearer square [m]


def write_fpha(root: Path, hands, task="Subject_1/charge_cell_phone/1", T=5, size=(96, 54), depth_size=(32, 24),
               seed=7, pose_dir="Hand_pose_annotation_v1", split="train", depth=True):
    """One FPHA sequence (JPEG colour, 16-bit depth PNG, skeleton.txt in mm at the depth camera) at a
    reduced size (both K scaled from the README's); returns dict(joints=(T,21,3) colour-camera MANO21
    [m], K=colour K, K_depth, depth_mm=(T,h,w))."""
    rng = np.random.default_rng(seed)
    seq = root / "Video_files" / task
    joints, _ = smooth_hand_joints(rng, hands["right"], T)
    X_d = (joints[:, MANO21_TO_FPHA] * 1000.0 - FPHA_T_MM) @ FPHA_R  # X_c = R X_d + t  =>  X_d = R^T (X_c - t)
    lines = [f"{t} " + " ".join(f"{v:.6f}" for v in X_d[t].reshape(-1)) for t in range(T)]
    (root / pose_dir / task).mkdir(parents=True, exist_ok=True)
    (root / pose_dir / task / "skeleton.txt").write_text("\n".join(lines) + "\n")
    frames = tiny_frames(T, size[1], size[0], seed)
    for t in range(T):
        save_png(seq / "color" / f"color_{t:04d}.jpeg", frames[t])  # PIL picks JPEG from the name
    K_d = scaled_K(FPHA_DEPTH_K, (640, 480), depth_size)
    w, h = depth_size
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([(u - K_d[0, 2]) / K_d[0, 0], (v - K_d[1, 2]) / K_d[1, 1], np.ones_like(u, float)], -1)
    n, d = FPHA_PLANE
    z = d / (rays @ n)
    (r0, r1), (c0, c1), zp = FPHA_PATCH
    z[r0:r1, c0:c1] = zp
    depth_mm = np.tile(np.round(z * 1000.0).astype(np.uint16), (T, 1, 1))
    depth_mm[:, 0, 0] = 0  # a hole
    if depth:
        for t in range(T):
            save_png16(seq / "depth" / f"depth_{t:04d}.png", depth_mm[t])
    split_file = root / "data_split_action_recognition.txt"
    entries = {"train": [], "test": []}
    if split_file.exists():
        cur = None
        for line in split_file.read_text().splitlines():
            tok = line.split()
            if tok and tok[0] in ("Training", "Test"):
                cur = "train" if tok[0] == "Training" else "test"
            elif tok:
                entries[cur].append(line)
    entries[split].append(f"{task} {len(entries[split])}")
    split_file.write_text(f"Training {len(entries['train'])}\n" + "".join(x + "\n" for x in entries["train"])
                          + f"Test {len(entries['test'])}\n" + "".join(x + "\n" for x in entries["test"]))
    return dict(joints=joints, K=scaled_K(FPHA_COLOR_K, (1920, 1080), size), K_depth=K_d, depth_mm=depth_mm)


# ----------------------------------------------------------------------------- HoloAssist

# PyHoloAssist hand_eye_project.py: axis_transform = inv([[0,0,1,0],[-1,0,0,0],[0,-1,0,0],[0,0,0,1]]) takes
# \psi camera coordinates (x forward, y left, z up) to OpenCV ones; PSI_FROM_CV is the matrix inside inv()
PSI_FROM_CV = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
TICKS = 10_000_000
HOLO_START = 133_000_000_000_000  # some FILETIME-like tick count


def holo26_from_mano21(m: np.ndarray) -> np.ndarray:
    """(T,21,3) MANO21 -> (T,26,3) in HandJointKind order: palm, wrist, thumb metacarpal/proximal/distal/tip,
    then index/middle/ring/little metacarpal (made up, halfway wrist->knuckle), proximal, intermediate,
    distal, tip."""
    w = m[:, 0]
    out = [(w + m[:, 4]) / 2, w, m[:, 13], m[:, 14], m[:, 15], m[:, 16]]
    for base, tip in ((1, 17), (4, 18), (10, 19), (7, 20)):  # index, middle, ring, little (pinky)
        out += [(w + m[:, base]) / 2, m[:, base], m[:, base + 1], m[:, base + 2], m[:, tip]]
    return np.stack(out, 1)


def write_holoassist(root: Path, hands, task="R0027-12-GoPro", T=6, size=(32, 18), seed=8, rgb="video", fmt="v1",
                     split="val", annotate=True):
    """One HoloAssist recording (Export_py layout). Sync frame k lies 1.2 video frames after video frame k,
    so the nearest video frame is k + 1. The left hand is untracked in frame 2. Returns dict(joints=side ->
    (T,21,3) OpenCV camera MANO21 [m], holo26=side -> (T,26,3), valid=side -> (T,), T_cam_from_world,
    video_index (T,), frames (written RGB frames), K)."""
    rng = np.random.default_rng(seed)
    exp = root / task / "Export_py"
    (exp / "Video").mkdir(parents=True, exist_ok=True)
    (exp / "Hands").mkdir(parents=True, exist_ok=True)
    G = random_rigid(rng, T)  # OpenCV camera -> world
    P = G @ np.linalg.inv(PSI_FROM_CV)  # psi camera -> world, as Pose_sync.txt stores
    period = TICKS / 30.0
    ticks = np.array([HOLO_START + int(round((k + 1.2) * period)) for k in range(T)])
    (exp / "Video" / "Pose_sync.txt").write_text("".join(
        f"{k}\t{ticks[k]}\t" + "\t".join(f"{x:.17g}" for x in P[k].reshape(-1)) + "\n" for k in range(T)))
    W, H = size
    K = np.array([[30.0, 0, W / 2 - 0.5], [0, 30.0, H / 2 - 0.5], [0, 0, 1]])
    (exp / "Video" / "Intrinsics.txt").write_text("\t".join(f"{x:g}" for x in [*K.reshape(-1), W, H]))
    (exp / "Video" / "VideoMp4Timing.txt").write_text(f"{HOLO_START}\n{HOLO_START + int((T + 2) * period)}\n")
    out = dict(joints={}, holo26={}, valid={}, T_cam_from_world=np.linalg.inv(G), K=K)
    for side, fname in (("left", "Left_sync.txt"), ("right", "Right_sync.txt")):
        joints, _ = smooth_hand_joints(rng, hands[side], T, wrist=(0.1 if side == "right" else -0.1, 0.1, 0.45))
        h26 = holo26_from_mano21(joints)
        X_w = apply(G, h26)
        valid = np.ones(T, bool)
        if side == "left":
            valid[2] = False
        rows = []
        for k in range(T):
            M = np.tile(np.eye(4), (26, 1, 1))
            M[:, :3, :3] = Rotation.random(26, random_state=int(rng.integers(1 << 31))).as_matrix()
            M[:, :3, 3] = X_w[k]
            flags = np.full(26, 1.0 if valid[k] else 0.0)
            if not valid[k]:
                M[:] = 0.0
            t_s = (ticks[k] - HOLO_START) / TICKS
            meta = [t_s, ticks[k], float(valid[k])] if fmt == "v1" else [t_s, 0.0, 0.0, float(valid[k]), 1.0]
            rows.append("\t".join(f"{x:.17g}" for x in [*meta, *M.reshape(-1), *flags, *flags]))
        (exp / "Hands" / fname).write_text("\n".join(rows) + "\n")
        out["joints"][side], out["holo26"][side], out["valid"][side] = joints, h26, valid
    ramp = np.linspace(0, 40, W)[None, :, None] + np.array([0, 60, 120])
    frames = np.stack([ramp + 25 * k for k in range(T + 2)]).repeat(H, 1).clip(0, 255).astype(np.uint8)
    if rgb == "video":
        write_video(exp / "Video_pitchshift.mp4", frames, fps=30)
        out["video_index"] = np.arange(T) + 1
    else:
        frames = frames[:T]
        for k in range(T):
            save_png(exp / "Video" / "images_aligned" / f"{k:06d}.png", frames[k])
        out["video_index"] = np.arange(T)
    out["frames"] = frames
    if annotate:
        ann_path = root / "data-annotation-trainval-v1_1.json"
        data = json.loads(ann_path.read_text()) if ann_path.exists() else []
        # sync frame k is at (k + 1.2) / 30 s of video time: 0.04, 0.073, 0.107, 0.14, ...
        data.append({"video_name": task, "taskType": "GoPro", "videoMetadata": {"video": {"fps": 30.0}}, "events": [
            {"id": "c1", "label": "Coarse grained action", "start": 0.0, "end": 1.0,
             "attributes": {"Action sentence": "The student changes the battery for the GoPro."}},
            {"id": "f2", "label": "Fine grained action", "start": 0.1, "end": 1.0,
             "attributes": {"Verb": "grab", "Noun": "battery", "Adjective": "none", "Action Correctness": "Wrong Action"}},
            {"id": "f1", "label": "Fine grained action", "start": 0.0, "end": 0.1,
             "attributes": {"Verb": "Press", "Noun": "screen", "Adjective": "small", "Action Correctness": "Correct Action"}},
            {"id": "n1", "label": "Narration", "start": 0.0, "end": 0.5, "attributes": {}},
        ]})
        ann_path.write_text(json.dumps(data))
    if split:
        (root / "data-splits-v1").mkdir(exist_ok=True)
        p = root / "data-splits-v1" / f"{split}-v1.txt"
        p.write_text((p.read_text() if p.exists() else "") + task + "\n")
    return out
