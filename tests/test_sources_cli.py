"""`megohand convert` end to end: all tasks, shards, resume, unknown ids, --help layouts."""

import subprocess
import sys

import torch

from fixtures_native import write_taco, write_test_hand
from megohand.cli.main import main
from megohand.data.sources.pipeline import HandModels
from conftest import cli_error

torch.set_num_threads(1)


def test_convert_cli_shards_and_resume(tmp_path, capsys):
    from megohand.data.store import Store

    hand_dir = write_test_hand(tmp_path / "hand")
    hands = HandModels(hand_dir)
    write_taco(tmp_path / "src", hands, task="(dust, roller, pan)/20230927_032", seed=1)
    write_taco(tmp_path / "src", hands, task="(roll, roller, box)/20231001_002", seed=2)
    args = ["convert", "--dataset", "taco", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "store"),
            "--mano-dir", str(hand_dir)]
    main(args + ["--shard", "1/2"])
    eps = [r.episode for r in Store(tmp_path / "store").episodes("taco")]
    assert eps == ["(roll, roller, box)/20231001_002"]
    main(args)  # resumes: converts only the missing one
    store = Store(tmp_path / "store")
    assert sorted(r.episode for r in store.episodes("taco")) == [
        "(dust, roller, pan)/20230927_032", "(roll, roller, box)/20231001_002"]
    assert store.open("taco", "(roll, roller, box)/20231001_002").meta.instruction == "Roll the box with the roller."
    assert "unknown taco task ids" in cli_error(capsys, args + ["--tasks", "(a, b, c)/x"])


def test_convert_help_documents_layouts():
    out = subprocess.run([sys.executable, "-m", "megohand.cli.main", "convert", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for needle in ("Egocentric_RGB_Videos", "mano_hand_pose_trajectory.jsonl", "clip-<id>.tar"):
        assert needle in out.stdout
