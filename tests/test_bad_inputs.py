"""The bad-input corpus: every verb, the converters, the store and the loaders fed broken input.

Each case runs ``megohand ...`` in process on tiny generated inputs and asserts what a user gets: a
non-zero exit status, ONE line on stderr (``megohand <verb>: error: ...``) that names the culprit
(the option, file or field), no traceback, and no partial output (nothing new under the case's
folder, no temporary file left behind). Validate cases also check that the listed problem (stdout)
names the culprit.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from fixtures_native import HOI4D_TASK, save_png, tiny_frames, write_h2o, write_hoi4d, write_taco, write_test_hand

torch.set_num_threads(1)

TACO = "(dust, roller, pan)/20230927_032"
H2O = "subject1/o1/7/cam4"


# ----------------------------------------------------------------------------- shared tiny inputs
@dataclass
class Ctx:
    root: Path
    hand: Path  # MANO-format test hand folder
    store: Path  # 2 test + 1 train episodes of "synthetic", 32 x 32 frames, 40 frames each
    ckpt: Path  # a tiny random policy (save_pretrained)
    taco: Path  # native TACO layout, one sequence
    h2o: Path  # native H2O layout, one sequence
    hoi4d: Path  # native HOI4D layout, one sequence (RGB as a video)
    joints: Path  # (6, 21, 3) joints .npy

    def copy(self, name: str, tmp: Path) -> Path:
        dst = tmp / name
        shutil.copytree(getattr(self, name), dst)
        return dst


def smooth_hand(T: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, T)[:, None]
    return {"global_orient": 0.3 * np.sin(t + rng.normal(size=3)), "hand_pose": np.tile(rng.normal(0, 0.2, (1, 15, 3)), (T, 1, 1)),
            "betas": np.tile(rng.normal(0, 0.5, 10), (T, 1)), "transl": np.array([0.0, 0.0, 0.5]) + 0.1 * t * rng.normal(size=3),
            "valid": np.ones(T, bool)}


def write_store(root: Path, size: int = 32, T: int = 40) -> Path:
    from megohand.data.store import EpisodeMeta, StoreWriter

    w = StoreWriter(root)
    K = [[30.0, 0, size / 2], [0, 30.0, size / 2], [0, 0, 1]]
    for i, split in enumerate(("test", "test", "train")):
        meta = EpisodeMeta(dataset="synthetic", episode=f"ep{i}", instruction="pick up the cup", fps=30.0, K=K,
                           split=split, hand_source="synthetic", hand_model="test hand right")
        rgb = np.random.default_rng(i).integers(0, 255, (T, size, size, 3), dtype=np.uint8)
        w.write_episode(meta, {"right": smooth_hand(T, i)}, rgb)
    return root


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    from megohand.cli.demo import tiny_random_policy
    from megohand.data.sources.pipeline import HandModels

    root = tmp_path_factory.mktemp("corpus")
    hand = write_test_hand(root / "hand")
    hands = HandModels(hand)
    write_taco(root / "taco", hands, task=TACO)
    write_h2o(root / "h2o", hands, task=H2O)
    write_hoi4d(root / "hoi4d", hands)
    tiny_random_policy().save_pretrained(root / "ckpt")
    np.save(root / "joints.npy", np.random.default_rng(0).normal(0, 0.05, (6, 21, 3)) + [0, 0, 0.5])
    return Ctx(root, hand, write_store(root / "store"), root / "ckpt", root / "taco", root / "h2o", root / "hoi4d",
               root / "joints.npy")


# ----------------------------------------------------------------------------- damage helpers
def episode_dir(store: Path, i: int = 0) -> Path:
    return store / "synthetic" / "episodes" / f"ep{i}"


def rewrite_parquet(store: Path, change: Callable) -> Path:
    """Rewrite episode 0's frames.parquet as ``change(table)``."""
    import pyarrow.parquet as pq

    p = episode_dir(store) / "frames.parquet"
    pq.write_table(change(pq.read_table(p)), p)
    return store


def nan_transl(table):
    import pyarrow as pa

    a = np.stack(table.column("right_transl").to_numpy(zero_copy_only=False)).astype(np.float32)
    a[5, 0] = np.nan
    i = table.column_names.index("right_transl")
    return table.set_column(i, "right_transl", pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), 3))


def edit_meta(store: Path, change: Callable) -> Path:
    p = episode_dir(store) / "meta.json"
    d = json.loads(p.read_text())
    change(d)
    p.write_text(json.dumps(d))
    return store


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def scale_taco_transl(src: Path, factor: float) -> Path:
    import torch as th

    for side in ("left", "right"):
        p = src / "Hand_Poses" / TACO / f"{side}_hand.pkl"
        frames = pickle.loads(p.read_bytes())
        for rec in frames.values():
            rec["hand_trans"] = rec["hand_trans"] * factor
        p.write_bytes(pickle.dumps(frames))
    # the camera moves with them, or the check would only see the camera offset
    e = src / "Egocentric_Camera_Parameters" / TACO / "egocentric_frame_extrinsic.npy"
    T = np.load(e)
    T[:, :3, 3] *= factor
    np.save(e, T)
    del th
    return src


def nan_taco_shape(src: Path) -> Path:
    p = src / "Hand_Poses" / TACO / "right_hand_shape.pkl"
    d = pickle.loads(p.read_bytes())
    d["hand_shape"] = d["hand_shape"].clone()
    d["hand_shape"][3] = float("nan")
    p.write_bytes(pickle.dumps(d))
    return src


def h2o_scale_transl(src: Path, factor: float) -> Path:
    for p in sorted((src / H2O / "hand_pose_MANO").glob("*.txt")):
        v = np.array(p.read_text().split(), float)
        for off in (0, 62):
            v[off + 1: off + 4] *= factor
        p.write_text(" ".join(f"{x:.17g}" for x in v))
    return src


def add_copy_then(store: Path, damage: Callable[[Path], object]) -> Path:
    """Add a 16 px training-size copy to the first episode, then damage it (``damage(episode folder)``)."""
    from megohand.data.store import add_episode_copies

    add_episode_copies(episode_dir(store), [16])
    damage(episode_dir(store))
    return store


def make_file(tmp: Path, name: str = "file", text: str = "x") -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def make_full(tmp: Path, name: str = "full") -> Path:
    (tmp / name).mkdir()
    (tmp / name / "notes.txt").write_text("mine")
    return tmp / name


def ckpt_with(ctx: Ctx, tmp: Path, damage: Callable[[Path], object]) -> Path:
    c = ctx.copy("ckpt", tmp)
    damage(c)
    return c


# ----------------------------------------------------------------------------- the corpus
@dataclass
class Case:
    id: str
    argv: Callable[[Ctx, Path], list]  # (ctx, case folder) -> command line after "megohand"
    expect: str  # regex the one-line message must match (the culprit)
    code: int = 1
    stdout: str | None = None  # regex the standard output must match (validate's problem list)
    caches: str | None = None  # regex of files the verb may legitimately add before failing (store statistics)
    skip: Callable[[], str | None] = field(default=lambda: None)


def rerun_installed() -> str | None:
    import importlib.util

    return "rerun-sdk is installed" if importlib.util.find_spec("rerun") else None


S = lambda c, t: str(c.store)  # noqa: E731
CASES: list[Case] = []


def case(id, argv, expect, **kw):
    CASES.append(Case(id, argv, expect, **kw))


# --- the command line itself (status 2)
case("cli-unknown-verb", lambda c, t: ["trian"], r"megohand trian: error: unknown verb; did you mean train", code=2)
case("cli-not-an-int", lambda c, t: ["train", "--batch-size", "abc"], r"--batch-size.*abc", code=2)
case("cli-missing-required", lambda c, t: ["validate"], r"PATH", code=2)
case("cli-bad-choice", lambda c, t: ["convert", "--dataset", "nope", "--src", "x", "--out", "y"],
     r"invalid choice 'nope' for argument '--dataset'", code=2)
case("cli-stats-normalizer", lambda c, t: ["stats", "--root", S(c, t), "--normalizer", "q98"], r"invalid choice 'q98'", code=2)
case("cli-unknown-option", lambda c, t: ["stats", "--root", S(c, t), "--mode", "q99"], r"unrecognized options: .*--mode", code=2)
case("cli-hand-side", lambda c, t: ["hand-info", "--side", "middle"], r"--side", code=2)
case("cli-eval-float", lambda c, t: ["eval", "--root", S(c, t), "--protocol.horizon", "1.5"], r"--protocol.horizon", code=2)
case("cli-synth-fps-text", lambda c, t: ["synth", "--out", str(t / "o"), "--fps", "fast"], r"--fps", code=2)

# --- train: sizes, ranges, inputs, outputs
TRAIN = lambda c, t: ["train", "--store", S(c, t), "--out", str(t / "run"), "--no-progress"]  # noqa: E731
for opt, val, exp in (("--batch-size", "0", r"--batch-size: got 0; expected an integer >= 1"),
                      ("--save-every", "0", r"--save-every: got 0"), ("--grad-accum", "0", r"--grad-accum: got 0"),
                      ("--steps", "0", r"--steps: got 0"), ("--steps", "-5", r"--steps: got -5"),
                      ("--lr", "0", r"--lr: got 0"), ("--lr", "-1e-4", r"--lr: got -0.0001"),
                      ("--num-workers", "-1", r"--num-workers: got -1"), ("--split-portion", "0", r"--split-portion"),
                      ("--split-portion", "1.5", r"--split-portion"), ("--warmup-ratio", "2", r"--warmup-ratio"),
                      ("--keep-last", "0", r"--keep-last"), ("--stride", "0", r"--stride"),
                      ("--log-every", "0", r"--log-every"), ("--eval-batches", "0", r"--eval-batches"),
                      ("--eval-every", "-1", r"--eval-every"), ("--stop-after", "0", r"--stop-after"),
                      ("--datasets", "synthetic:x", r"--datasets: got 'synthetic:x'"),
                      ("--datasets", "synthetic:-1", r"--datasets: got 'synthetic:-1'")):
    case(f"train{opt}={val}", lambda c, t, o=opt, v=val: TRAIN(c, t) + [o, v], "^megohand train: error: " + exp, code=2)
case("train-adam-betas", lambda c, t: TRAIN(c, t) + ["--adam-betas", "1", "1"], r"--adam-betas", code=2)
case("train-store-missing", lambda c, t: ["train", "--store", str(t / "nope"), "--out", str(t / "run")],
     r"nope: store folder not found.*--store")
case("train-store-is-file", lambda c, t: ["train", "--store", str(make_file(t)), "--out", str(t / "run")],
     r"file: store folder not found: not a folder")
case("train-no-store", lambda c, t: ["train", "--out", str(t / "run")], r"--store: no training data")
case("train-out-is-file", lambda c, t: ["train", "--store", S(c, t), "--out", str(make_file(t))], r"file: --out: exists and is not a folder")
case("train-out-not-empty", lambda c, t: ["train", "--store", S(c, t), "--out", str(make_full(t))], r"full: --out: folder is not empty.*--overwrite")
case("train-batch-too-big", lambda c, t: ["train", "--store", str(c.copy("store", t)), "--out", str(t / "run"), "--no-progress","--batch-size", "100000", "--num-workers", "0",
                                                      "model:compact", "--model.horizon", "4"], r"--batch-size:.*cannot fill one batch",
     caches=r"(normalizer_right|stats_right)_h4\.json$")
case("train-unknown-dataset", lambda c, t: ["train", "--store", str(c.copy("store", t)), "--out", str(t / "run"),
                                            "--datasets", "nosuch"], r"nosuch")

case("train-config-unknown", lambda c, t: ["train", "--config", "nope", "--store", S(c, t), "--out", str(t / "run")],
     r"unknown experiment config 'nope'; known: .*synthetic")

# --- benchmark
BENCH = lambda c, t, *extra: ["benchmark", "--work", str(t / "work"), "--out", str(t / "res"), *extra]  # noqa: E731
case("benchmark-config-unknown", lambda c, t: BENCH(c, t, "--config", "nope"), r"unknown experiment config 'nope'")
case("benchmark-no-world", lambda c, t: BENCH(c, t, "--config", "paper"), r"experiment 'paper' has no synthetic world")
case("benchmark-variant-unknown", lambda c, t: BENCH(c, t, "--variants", "TX"), r"unknown variants or ablations \['TX'\]")
case("benchmark-ablation-unknown", lambda c, t: BENCH(c, t, "--ablations", "no-text"), r"unknown variants or ablations \['no-text'\]")

# --- synth
SYNTH = lambda c, t: ["synth", "--out", str(t / "s"), "--episodes", "1", "--image-size", "32"]  # noqa: E731
for opt, val, exp in (("--fps", "0", r"--fps: got 0.0"), ("--fps", "-30", r"--fps: got -30.0"),
                      ("--episodes", "0", r"--episodes: got 0"), ("--workers", "0", r"--workers: got 0"),
                      ("--test-fraction", "2", r"--test-fraction"), ("--val-fraction", "-0.1", r"--val-fraction"),
                      ("--holdout-fraction", "1.5", r"--holdout-fraction")):
    case(f"synth{opt}={val}", lambda c, t, o=opt, v=val: SYNTH(c, t) + [o, v], exp)
case("synth-image-size-8", lambda c, t: SYNTH(c, t) + ["--image-size", "8"], r"--image-size: got \(8,\)")
case("synth-image-size-3-values", lambda c, t: SYNTH(c, t) + ["--image-size", "32", "32", "32"], r"--image-size")
case("synth-image-size-huge", lambda c, t: SYNTH(c, t) + ["--image-size", "100000"], r"--image-size")
case("synth-fractions-sum", lambda c, t: SYNTH(c, t) + ["--test-fraction", "0.7", "--val-fraction", "0.7"], r"--test-fraction \+ --val-fraction")
case("synth-out-is-file", lambda c, t: ["synth", "--out", str(make_file(t))], r"file: --out: exists and is not a folder")
case("synth-out-not-empty", lambda c, t: ["synth", "--out", str(make_full(t))], r"full: --out: folder is not empty")
case("synth-out-under-file", lambda c, t: ["synth", "--out", str(make_file(t) / "sub")], r"file: --out: is a file, not a folder")
case("synth-mano-dir-missing", lambda c, t: SYNTH(c, t) + ["--mano-dir", str(t / "nomano")], r"--mano-dir")

# --- convert: options and outputs
CONV = lambda c, t, ds="taco", src=None: ["convert", "--dataset", ds, "--src", str(src or getattr(c, ds)), "--out",  # noqa: E731
                                          str(t / "store"), "--mano-dir", str(c.hand), "--depth", "sensor"]
case("convert-src-missing", lambda c, t: CONV(c, t, src=t / "nope"), r"nope: taco source folder not found: nothing there \(check --src\)")
case("convert-src-is-file", lambda c, t: CONV(c, t, src=make_file(t)), r"file: taco source folder not found: not a folder")
for opt, val, exp in (("--workers", "0", r"--workers: got 0"), ("--max-short-side", "-5", r"--max-short-side: got -5; expected an integer >= 16"),
                      ("--max-short-side", "0", r"--max-short-side: got 0"), ("--shard", "2/2", r"--shard: got '2/2'"),
                      ("--shard", "x", r"--shard: got 'x'"), ("--shard", "0/0", r"--shard: got '0/0'"),
                      ("--refine-steps", "-1", r"--refine-steps: got -1"),
                      ("--retarget-model", "/nonexistent/net", r"--retarget-model: got '/nonexistent/net'"),
                      ("--tasks", "(a, b, c)/x", r"--tasks: unknown taco task ids")):
    case(f"convert{opt}={val}", lambda c, t, o=opt, v=val: CONV(c, t) + [o, v], exp)
case("convert-mano-dir-missing", lambda c, t: CONV(c, t)[:-4] + ["--mano-dir", str(t / "nomano")], r"--mano-dir")
case("convert-out-not-empty", lambda c, t: CONV(c, t)[:6] + [str(make_full(t))] + CONV(c, t)[7:], r"full: --out: folder is not empty")
case("convert-out-is-file", lambda c, t: CONV(c, t)[:6] + [str(make_file(t))] + CONV(c, t)[7:], r"file: --out: exists and is not a folder")

# --- convert: broken source files (TACO)
case("taco-hand-not-a-pickle", lambda c, t: CONV(c, t, src=(lambda s: (s / "Hand_Poses" / TACO / "right_hand.pkl").write_bytes(b"junk") and s)(c.copy("taco", t))),
     r"right_hand.pkl")
case("taco-shape-nan", lambda c, t: CONV(c, t, src=nan_taco_shape(c.copy("taco", t))), r"right_hand_shape.pkl: 'hand_shape' holds NaN")
case("taco-transl-mm", lambda c, t: CONV(c, t, src=scale_taco_transl(c.copy("taco", t), 1000.0)),
     r"taco/.*hand translation: median .* m from the camera.*millimetres.*--skip-unit-checks")
case("taco-transl-cm", lambda c, t: CONV(c, t, src=scale_taco_transl(c.copy("taco", t), 100.0)), r"hand translation: median")
case("taco-video-missing", lambda c, t: CONV(c, t, src=(lambda s: (s / "Egocentric_RGB_Videos" / TACO / "color.mp4").unlink() or s)(c.copy("taco", t))),
     r"color.mp4")
case("taco-video-truncated", lambda c, t: CONV(c, t, src=(lambda s: truncate(s / "Egocentric_RGB_Videos" / TACO / "color.mp4", 0.3) and s)(c.copy("taco", t))),
     r"color.mp4")
case("taco-extrinsics-shape", lambda c, t: CONV(c, t, src=(lambda s: np.save(s / "Egocentric_Camera_Parameters" / TACO / "egocentric_frame_extrinsic.npy", np.zeros((4, 3, 4))) or s)(c.copy("taco", t))),
     r"egocentric_frame_extrinsic.npy: expected \(N,4,4\)")
case("taco-intrinsics-count", lambda c, t: CONV(c, t, src=(lambda s: (s / "Egocentric_Camera_Parameters" / TACO / "egocentric_intrinsic.txt").write_text("1 2 3") and s)(c.copy("taco", t))),
     r"egocentric_intrinsic.txt")
# --- convert: broken source files (H2O)
H2OCONV = lambda c, t, s: CONV(c, t, ds="h2o", src=s)  # noqa: E731


def h2o_damage(fn):
    def argv(c, t):
        fn(c.copy("h2o", t))
        return H2OCONV(c, t, t / "h2o")
    return argv


def h2o_far_depth(src: Path) -> None:
    from fixtures_native import save_png16

    for p in sorted((src / H2O / "depth").glob("*.png")):
        save_png16(p, np.full((12, 16), 30000, np.uint16))  # 30 m: millimetres read as metres would look like this


case("h2o-middle-image-deleted", h2o_damage(lambda s: (s / H2O / "rgb" / "000001.png").unlink()), r"missing .*rgb/000001.png")
case("h2o-last-image-deleted", h2o_damage(lambda s: (s / H2O / "rgb" / "000003.png").unlink()), r"missing .*rgb/000003.png")
case("h2o-middle-annotation-deleted", h2o_damage(lambda s: (s / H2O / "hand_pose_MANO" / "000002.txt").unlink()),
     r"missing .*hand_pose_MANO/000002.txt")
case("h2o-last-annotation-deleted", h2o_damage(lambda s: (s / H2O / "hand_pose_MANO" / "000003.txt").unlink()),
     r"missing .*hand_pose_MANO/000003.txt \(rgb/000003.png has no annotation")
case("h2o-annotation-short", h2o_damage(lambda s: (s / H2O / "hand_pose_MANO" / "000002.txt").write_text("1 2 3")),
     r"000002.txt: expected 124 numbers, found 3")
case("h2o-annotation-text", h2o_damage(lambda s: (s / H2O / "hand_pose_MANO" / "000002.txt").write_text("one two")), r"000002.txt")
case("h2o-cam-pose-missing", h2o_damage(lambda s: (s / H2O / "cam_pose" / "000001.txt").unlink()), r"missing .*cam_pose/000001.txt")
case("h2o-depth-missing", h2o_damage(lambda s: (s / H2O / "depth" / "000002.png").unlink()), r"missing depth frame .*000002.png")
case("h2o-intrinsics-missing", h2o_damage(lambda s: (s / H2O / "cam_intrinsics.txt").unlink()), r"cam_intrinsics.txt")
case("h2o-transl-mm", h2o_damage(lambda s: h2o_scale_transl(s, 1000.0)), r"h2o/.*hand translation: median.*millimetres")
case("h2o-depth-beyond-range", h2o_damage(h2o_far_depth), r"h2o/.*depth frame 0: median 30 m.*--skip-unit-checks")
case("h2o-image-corrupt", h2o_damage(lambda s: (s / H2O / "rgb" / "000002.png").write_bytes(b"\x89PNG junk")), r"000002.png")

# --- convert: decoded HOI4D frames are numbered; a missing one is an error, never a shift
def hoi4d_jpgs(src: Path, drop: int) -> Path:
    """Replace the RGB video by decoded <frame:05d>.jpg files (as HOI4D's decoding script writes them), less one."""
    rgb = src / HOI4D_TASK / "align_rgb"
    for k, f in enumerate(tiny_frames(4, 16, 24, 5)):
        if k != drop:
            save_png(rgb / f"{k:05d}.png", f)
            (rgb / f"{k:05d}.png").rename(rgb / f"{k:05d}.jpg")
    (rgb / "image.mp4").unlink()
    return src


case("hoi4d-middle-jpg-deleted", lambda c, t: CONV(c, t, ds="hoi4d", src=hoi4d_jpgs(c.copy("hoi4d", t), 1)),
     r"missing .*align_rgb/00001.jpg \(frames must be numbered 0..2 without gaps")
case("hoi4d-first-jpg-deleted", lambda c, t: CONV(c, t, ds="hoi4d", src=hoi4d_jpgs(c.copy("hoi4d", t), 0)),
     r"missing .*align_rgb/00000.jpg")

# --- validate: the store's own checks (problems on stdout, one summary line on stderr)
VAL = lambda store: ["validate", str(store)]  # noqa: E731
case("validate-missing", lambda c, t: VAL(t / "nope"), r"nope: store folder not found")
case("validate-a-file", lambda c, t: VAL(make_file(t)), r"file: store folder not found: not a folder")
for cid, damage, culprit in (
        ("rgb-file-outside", lambda s: edit_meta(s, lambda d: d["store"].update(rgb_file="../../../../etc/passwd")), r"\[rgb_file\]: '../../../../etc/passwd' is not a file name"),
        ("depth-file-absolute", lambda s: edit_meta(s, lambda d: d["store"].update(depth_file="/etc/passwd")), r"\[depth_file\]"),
        ("nan-transl", lambda s: rewrite_parquet(s, nan_transl), r"\[right_transl\]: NaN/inf at \[5\]"),
        ("parquet-missing", lambda s: (episode_dir(s) / "frames.parquet").unlink(), r"\[frames.parquet\]: file missing"),
        ("parquet-truncated", lambda s: truncate(episode_dir(s) / "frames.parquet"), r"\[frames.parquet\]: unreadable"),
        ("parquet-short", lambda s: rewrite_parquet(s, lambda tb: tb.slice(0, 30)), r"30 rows, meta says 40"),
        ("column-missing", lambda s: rewrite_parquet(s, lambda tb: tb.drop(["right_betas"])), r"\[right_betas\]: column missing"),
        ("meta-not-json", lambda s: (episode_dir(s) / "meta.json").write_text("{torn"), r"\[meta.json\]: missing or unreadable"),
        ("meta-fps-negative", lambda s: edit_meta(s, lambda d: d.update(fps=-30)), r"\[fps\]: must be a positive number"),
        ("meta-K-bad", lambda s: edit_meta(s, lambda d: d.update(K=[[0, 0, 0], [0, 0, 0], [0, 0, 0]])), r"\[K\]"),
        ("rgb-pack-truncated", lambda s: truncate(episode_dir(s) / "rgb.pack", 0.6), r"\[rgb\]"),
        ("tiny-frames", lambda s: shutil.rmtree(s) or write_store(s, size=4, T=20), r"smaller than 16 px"),
        ("store-json-torn", lambda s: (s / "store.json").write_text("{"), r"store"),
        ("copy-pack-truncated", lambda s: add_copy_then(s, lambda e: truncate(e / "rgb_16.pack", 0.6)), r"\[copies\[0\] size 16 rgb\]"),
        ("copy-pack-missing", lambda s: add_copy_then(s, lambda e: (e / "rgb_16.pack").unlink()), r"\[copies\[0\] size 16 rgb\]: file missing"),
        ("copy-wrong-size", lambda s: add_copy_then(s, lambda e: edit_meta(s, lambda d: d["store"]["copies"][0].update(width=20))), r"\[copies\[0\] size 16 rgb\]: frame 0 is 16x16, meta says 16x20")):
    case(f"validate-{cid}", lambda c, t, d=damage: VAL((lambda s: d(s) and None or s)(c.copy("store", t))),
         r"problem\(s\), listed above; the first:", stdout=culprit)

# --- add-copies: training-size copies of an existing store
case("add-copies-missing", lambda c, t: ["add-copies", str(t / "nope")], r"nope: store folder not found")
case("add-copies-not-a-store", lambda c, t: ["add-copies", str(make_full(t))], r"PATH: got .*; expected a megohand store")
case("add-copies-size-small", lambda c, t: ["add-copies", str(c.copy("store", t)), "--sizes", "8"],
     r"--sizes: got \[8\]; expected sizes in \[16, 4096\] px")

# --- show: a damaged episode fails loudly (no video without its overlay)
SHOW = lambda store, t, *extra: ["show", "-d", "synthetic", "-t", "ep0", "--root", str(store), "--out", str(t / "ep.mp4"), *extra]  # noqa: E731
for cid, damage, culprit in (
        ("parquet-missing", lambda s: (episode_dir(s) / "frames.parquet").unlink(), r"\[frames.parquet\]: file missing"),
        ("parquet-truncated", lambda s: truncate(episode_dir(s) / "frames.parquet"), r"\[frames.parquet\]: unreadable"),
        ("parquet-short", lambda s: rewrite_parquet(s, lambda tb: tb.slice(0, 30)), r"\[frames.parquet\]: 30 rows, meta says 40"),
        ("column-missing", lambda s: rewrite_parquet(s, lambda tb: tb.drop(["right_transl"])), r"\[right_transl\]: column missing"),
        ("nan-transl", lambda s: rewrite_parquet(s, nan_transl), r"\[right_transl\]: NaN/inf in valid frames \[5\]"),
        ("rgb-file-outside", lambda s: edit_meta(s, lambda d: d["store"].update(rgb_file="../../ep1/rgb.pack")), r"\[rgb_file\]: '../../ep1/rgb.pack' is not a file name"),
        ("rgb-pack-missing", lambda s: (episode_dir(s) / "rgb.pack").unlink(), r"rgb.pack"),
        ("meta-not-json", lambda s: (episode_dir(s) / "meta.json").write_text("[1,"), r"meta.json")):
    case(f"show-{cid}", lambda c, t, d=damage: SHOW((lambda s: d(s) and None or s)(c.copy("store", t)), t, "--hand", str(c.hand)), culprit)
case("show-out-exists", lambda c, t: SHOW(c.store, t) if make_file(t, "ep.mp4") else None, r"ep.mp4: --out: already exists.*--overwrite")
case("show-out-not-mp4", lambda c, t: SHOW(c.store, t)[:-1] + [str(t / "ep.avi")], r"--out: got '.*ep.avi'; expected a file name ending in .mp4")
case("show-alpha", lambda c, t: SHOW(c.store, t, "--alpha", "2"), r"--alpha: got 2.0")
case("show-scale", lambda c, t: SHOW(c.store, t, "--scale", "-1"), r"--scale: got -1")
case("show-unknown-episode", lambda c, t: ["show", "-d", "synthetic", "-t", "ep9", "--root", S(c, t), "--out", str(t / "x.mp4")], r"ep9")
case("show-unknown-dataset", lambda c, t: ["show", "-d", "taco", "-t", "ep0", "--root", S(c, t), "--out", str(t / "x.mp4")], r"taco")
case("show-root-missing", lambda c, t: SHOW(t / "nope", t), r"nope: store folder not found")
case("show-strip-exists", lambda c, t: SHOW(c.store, t, "--strip", str(make_file(t, "s.png"))), r"s.png: --strip: already exists")
case("show-hand-missing", lambda c, t: SHOW(c.store, t, "--hand", str(t / "nohand")), r"--hand")
case("show-rerun-missing", lambda c, t: SHOW(c.store, t, "--viewer", "rerun"), r"--viewer rerun: needs the optional rerun-sdk.*pip install",
     skip=rerun_installed)

# --- eval: protocol knobs, checkpoints, outputs
EVAL = lambda c, t, *extra: ["eval", "--root", S(c, t), "--out", str(t / "ev"), "--mano-dir", str(c.hand), *extra]  # noqa: E731
for opt, val in (("horizon", "0"), ("batch-size", "0"), ("window-stride", "0"), ("stride", "0"), ("steps", "0"),
                 ("rollout-frames", "-1"), ("noise-scale", "-1"), ("max-episodes", "-2")):
    case(f"eval-protocol-{opt}={val}", lambda c, t, o=opt, v=val: EVAL(c, t, f"--protocol.{o}", v), rf"--protocol.{opt}: got -?[0-9.]+")
case("eval-root-missing", lambda c, t: ["eval", "--root", str(t / "nope"), "--out", str(t / "ev")], r"nope: store folder not found.*--root")
case("eval-ckpt-missing", lambda c, t: EVAL(c, t, "--ckpt", str(t / "nock")), r"nock: checkpoint folder not found.*--ckpt")
case("eval-ckpt-no-config", lambda c, t: EVAL(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: (p / "config.json").unlink()))),
     r"ckpt: not a megohand checkpoint: config.json is missing")
case("eval-ckpt-config-torn", lambda c, t: EVAL(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: (p / "config.json").write_text('{"preset": ')))),
     r"config.json: checkpoint config is not valid JSON")
case("eval-ckpt-config-wrong", lambda c, t: EVAL(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: (p / "config.json").write_text('{"dit": 5}')))),
     r"ckpt: does not describe a megohand policy")
case("eval-ckpt-weights-truncated", lambda c, t: EVAL(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: truncate(p / "model.safetensors")))),
     r"model.safetensors: not a readable safetensors file")
case("eval-ckpt-weights-junk", lambda c, t: EVAL(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: (p / "model.safetensors").write_bytes(b"\0" * 64)))),
     r"model.safetensors: not a readable safetensors file")
case("eval-ckpt-weights-other-model", lambda c, t: EVAL(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: __import__("safetensors.torch").torch.save_file({"w": torch.ones(1)}, str(p / "model.safetensors"))))),
     r"model.safetensors: missing keys")
case("eval-ckpt-normalizer-torn", lambda c, t: EVAL(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: (p / "normalizer.json").write_text("nul")))),
     r"normalizer.json: checkpoint normaliser is not valid JSON")
case("eval-out-exists", lambda c, t: EVAL(c, t, "--baselines-only") if make_full(t, "ev") and make_file(t / "ev", "eval.json") else None,
     r"eval.json: --out: already exists.*--overwrite")
case("eval-no-test-split", lambda c, t: ["eval", "--root", str(edit_split(c.copy("store", t))), "--out", str(t / "ev"),
                                         "--baselines-only", "--mano-dir", str(c.hand)], r"no test episodes")


def edit_split(store: Path) -> Path:
    """Every episode of the store moved to the train split (index rebuilt)."""
    from megohand.data.store import StoreWriter

    for i in range(3):
        edit_meta_i(store, i, lambda d: d.update(split="train"))
    (store / "synthetic" / "index.json").unlink()
    StoreWriter(store).rebuild_index("synthetic")
    return store


def edit_meta_i(store: Path, i: int, change: Callable) -> None:
    p = episode_dir(store, i) / "meta.json"
    d = json.loads(p.read_text())
    change(d)
    p.write_text(json.dumps(d))


# --- demo
DEMO = lambda c, t, *extra: ["demo", "--out", str(t / "demo"), *extra]  # noqa: E731
case("demo-episodes-0", lambda c, t: DEMO(c, t, "--episodes", "0"), r"--episodes: got 0")
case("demo-rollout-frames-1", lambda c, t: DEMO(c, t, "--rollout-frames", "1"), r"--rollout-frames: got 1; expected an integer >= 2")
case("demo-stride-0", lambda c, t: DEMO(c, t, "--stride", "0"), r"--stride: got 0")
case("demo-steps-0", lambda c, t: DEMO(c, t, "--steps", "0"), r"--steps: got 0")
case("demo-threads", lambda c, t: DEMO(c, t, "--threads", "-1"), r"--threads: got -1")
case("demo-ckpt-missing", lambda c, t: DEMO(c, t, "--ckpt", str(t / "nock")), r"nock: checkpoint folder not found")
case("demo-out-not-empty", lambda c, t: ["demo", "--out", str(make_full(t))], r"full: --out: folder is not empty")
case("demo-ckpt-corrupt", lambda c, t: DEMO(c, t, "--ckpt", str(ckpt_with(c, t, lambda p: truncate(p / "model.safetensors", 0.1))),
                                             "--episodes", "1", "--mano-dir", str(c.hand)), r"model.safetensors: not a readable safetensors file")

# --- stats
case("stats-root-missing", lambda c, t: ["stats", "--root", str(t / "nope")], r"nope: store folder not found")
case("stats-horizon-0", lambda c, t: ["stats", "--root", S(c, t), "--horizon", "0"], r"--horizon: got 0")
case("stats-unknown-dataset", lambda c, t: ["stats", "--root", str(c.copy("store", t)), "--datasets", "nosuch"], r"nosuch")

# --- retarget train / apply
RT = lambda c, t, *extra: ["retarget", "train", "--out", str(t / "net"), "--mano-dir", str(c.hand), *extra]  # noqa: E731
for opt, val in (("--steps", "0"), ("--batch-size", "0"), ("--hidden", "0"), ("--blocks", "0"), ("--lr", "0"),
                 ("--switch", "2"), ("--noise", "-0.1"), ("--threads", "0")):
    case(f"retarget-train{opt}={val}", lambda c, t, o=opt, v=val: RT(c, t, o, v), rf"{opt}: got")
case("retarget-train-out-not-empty", lambda c, t: ["retarget", "train", "--out", str(make_full(t)), "--mano-dir", str(c.hand)],
     r"full: --out: folder is not empty")
case("retarget-train-store-missing", lambda c, t: RT(c, t, "--store", str(t / "nope")), r"nope: store folder not found")
AP = lambda c, t, joints, *extra: ["retarget", "apply", "--joints", str(joints), "--out", str(t / "p.npz"),  # noqa: E731
                                   "--mano-dir", str(c.hand), *extra]
case("apply-joints-missing", lambda c, t: AP(c, t, t / "nope.npy"), r"nope.npy: joints file not found.*--joints")
case("apply-joints-txt", lambda c, t: AP(c, t, make_file(t, "j.txt", "1 2 3")), r"j.txt: joints must be .npy, .npz or .json")
case("apply-joints-2d", lambda c, t: AP(c, t, (lambda p: np.save(p, np.zeros((4, 21, 2))) or p)(t / "j.npy")), r"j.npy: joints must be \(T,J,3\)")
case("apply-joints-corrupt", lambda c, t: AP(c, t, truncate((lambda p: np.save(p, np.zeros((4, 21, 3))) or p)(t / "j.npy"), 0.5)),
     r"j.npy: cannot read joints")
case("apply-joints-pickled", lambda c, t: AP(c, t, (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True) or p)(t / "j.npy")),
     r"j.npy: cannot read joints")
case("apply-joints-json-torn", lambda c, t: AP(c, t, make_file(t, "j.json", "[[[0, 0")), r"j.json: cannot read joints")
case("apply-npz-which", lambda c, t: AP(c, t, (lambda p: np.savez(p, a=np.zeros((2, 21, 3)), b=np.zeros(2)) or p)(t / "j.npz")),
     r"j.npz: choose the joints array with --key")
case("apply-out-csv", lambda c, t: AP(c, t, c.joints)[:5] + [str(t / "p.csv")] + AP(c, t, c.joints)[6:], r"--out: got '.*p.csv'")
case("apply-out-exists", lambda c, t: AP(c, t, c.joints) if make_file(t, "p.npz") else None, r"p.npz: --out: already exists")
case("apply-refine-negative", lambda c, t: AP(c, t, c.joints, "--refine-steps", "-1"), r"--refine-steps: got -1")
case("apply-model-missing", lambda c, t: AP(c, t, c.joints, "--model", str(t / "nonet")), r"nonet: retargeting network folder not found")
case("apply-default-net-with-other-hand", lambda c, t: AP(c, t, c.joints, "--order", "openpose"), r"megohand retarget train")

# --- hand models (loaders)
case("hand-info-mano-dir-missing", lambda c, t: ["hand-info", "--mano-dir", str(t / "nomano")], r"nomano")
case("hand-info-mano-corrupt", lambda c, t: ["hand-info", "--mano-dir", str((lambda d: (d.mkdir(), (d / "MANO_RIGHT.pkl").write_bytes(b"\x80\x02junk")) and d)(t / "mano"))],
     r"MANO_RIGHT.pkl")
case("hand-info-mano-npz-corrupt", lambda c, t: ["hand-info", "--mano-dir", str((lambda d: (d.mkdir(), (d / "MANO_RIGHT.npz").write_bytes(b"PK\x03\x04junk")) and d)(t / "mano"))],
     r"MANO_RIGHT.npz")


# ----------------------------------------------------------------------------- the test
def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_corpus_size():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, capsys):
    from megohand.cli.main import main

    reason = case.skip()
    if reason:
        pytest.skip(reason)
    argv = [str(a) for a in case.argv(ctx, tmp_path)]
    before = files_under(tmp_path)
    shared_before = files_under(ctx.root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip() and not re.search(r"\d+%\||it/s\]|ep/s\]|s/it\]", ln)]
    assert e.value.code == case.code, err
    assert "Traceback" not in err and "Traceback" not in out, err
    assert len(lines) == 1, err
    verb = argv[0]
    assert lines[0].startswith(f"megohand {verb}: error: "), lines[0]
    assert re.search(case.expect, lines[0]), lines[0]
    if case.stdout is not None:
        assert re.search(case.stdout, out), out
    new = {p for p in files_under(tmp_path) - before if not (case.caches and re.search(case.caches, str(p)))}
    assert not new, f"partial output: {sorted(map(str, new))}"
    left = [p for p in files_under(tmp_path) if (".tmp" in p.name and p.name != ".tmp") or p.parent.name == ".tmp"]
    assert not left, f"temporary files left behind: {left}"  # (a store's empty .tmp/ staging folder is its own)
    assert files_under(ctx.root) == shared_before, "the shared inputs changed"


def test_debug_shows_the_traceback(ctx, tmp_path, capsys, monkeypatch):
    from megohand.cli.main import main
    from megohand.errors import UserError

    with pytest.raises(UserError, match="store folder not found"):
        main(["train", "--store", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--debug"])
    monkeypatch.setenv("MEGOHAND_DEBUG", "1")
    with pytest.raises(UserError, match="store folder not found"):
        main(["train", "--store", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit):  # a config's own check is a parse error: tyro's full box
        main(["train", "--batch-size", "0"])
    assert "--batch-size: got 0" in capsys.readouterr().err
