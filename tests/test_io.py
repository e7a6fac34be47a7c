"""megohand.io (atomic writes, checkpoint folders, safe reads) and megohand.errors (one-line messages)."""

import json
import os

import pytest
import torch

from megohand import io
from megohand.errors import UserError, one_line


def test_user_error_message_names_file_field_expectation_and_hint(tmp_path):
    e = UserError("is -5", path=tmp_path / "a.json", field="fps", expected="a number > 0", hint="fix the file")
    assert str(e) == f"{tmp_path / 'a.json'}: fps: is -5; expected a number > 0 (fix the file)"
    assert isinstance(e, ValueError) and e.field == "fps"
    assert one_line(e) == str(e)
    assert one_line(ZeroDivisionError("division by zero")) == "ZeroDivisionError: division by zero"
    err = FileNotFoundError(2, "No such file or directory", str(tmp_path / "x"))
    assert one_line(err) == f"{tmp_path / 'x'}: No such file or directory"
    assert "\n" not in one_line(ValueError("two\nlines")) and len(one_line(ValueError("x" * 2000))) == 600


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    io.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            assert tmp.suffix == ".txt" and tmp.parent == target.parent
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_json_round_trip_and_errors_name_the_file(tmp_path):
    import numpy as np

    p = io.write_json(tmp_path / "a.json", {"x": np.float32(1.5), "v": np.arange(3), "p": tmp_path})
    assert json.loads(p.read_text()) == {"x": 1.5, "v": [0, 1, 2], "p": str(tmp_path)}
    with pytest.raises(ValueError):  # NaN is refused unless asked for
        io.write_json(tmp_path / "b.json", {"x": float("nan")})
    assert not (tmp_path / "b.json").exists()
    with pytest.raises(UserError, match="b.json: config not found"):
        io.read_json(tmp_path / "b.json", "config")
    (tmp_path / "c.json").write_text("{torn")
    with pytest.raises(UserError, match=r"c.json: config is not valid JSON"):
        io.read_json(tmp_path / "c.json", "config")


def test_jsonl_reader_skips_a_torn_last_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    io.append_jsonl(p, {"step": 1})
    io.append_jsonl(p, {"step": 2})
    with open(p, "a") as f:
        f.write('{"step": 3, "lo')  # killed mid-write
    assert io.read_jsonl(p) == [{"step": 1}, {"step": 2}]
    assert io.read_jsonl(tmp_path / "none.jsonl") == []


def test_safetensors_round_trip_shared_storage_and_corrupt_file(tmp_path):
    w = torch.arange(6.0).reshape(2, 3)
    io.save_safetensors({"a": w, "b": w, "t": w.t()}, tmp_path / "w.safetensors", metadata={"k": "v"})
    got, meta = io.load_safetensors(tmp_path / "w.safetensors", with_metadata=True)
    assert torch.equal(got["a"], w) and torch.equal(got["t"], w.t()) and meta == {"k": "v"}
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.safetensors: not a readable safetensors file"):
        io.load_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 40)
    with pytest.raises(UserError, match="junk.safetensors"):
        io.load_safetensors(tmp_path / "junk.safetensors")


def test_checkpoint_folder_is_replaced_whole_or_not_at_all(tmp_path):
    d = tmp_path / "ckpt"
    io.write_checkpoint(d, {"w": torch.ones(2)}, {"kind": "a"}, None, export_aux=lambda aux: (aux / "t.txt").write_text("x"))
    assert io.read_checkpoint(d) == ({"kind": "a"}, None) and (d / "aux" / "t.txt").is_file()

    def broken(aux):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        io.write_checkpoint(d, {"w": torch.zeros(2)}, {"kind": "b"}, {"n": 1}, export_aux=broken)
    assert io.read_checkpoint(d) == ({"kind": "a"}, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    os.remove(d / io.NORMALIZER)
    with pytest.raises(UserError, match="normalizer.json is missing"):
        io.read_checkpoint(d)
    with pytest.raises(UserError, match="checkpoint folder not found"):
        io.read_checkpoint(tmp_path / "nope")


def test_output_checks(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        io.check_output_dir(tmp_path / "full", overwrite=False)
    io.check_output_dir(tmp_path / "full", overwrite=True)
    io.check_output_dir(tmp_path / "full", overwrite=False, accept=lambda p: (p / "x").exists())
    with pytest.raises(UserError, match="not a folder"):
        io.check_output_dir(tmp_path / "file", overwrite=False)
    with pytest.raises(UserError, match="is a file, not a folder"):
        io.check_output_dir(tmp_path / "file" / "sub", overwrite=False)
    with pytest.raises(UserError, match="already exists"):
        io.check_output_file(tmp_path / "file", overwrite=False)
    with pytest.raises(UserError, match="is a folder"):
        io.check_output_file(tmp_path / "full", overwrite=True)
    io.check_output_file(tmp_path / "new" / "deeper" / "f.mp4", overwrite=False)


def test_atomic_files_land_together_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    (out / "a.json").write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_files(out) as tmp:
            io.write_text(tmp / "a.json", "new")
            raise RuntimeError("the second output failed")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "mine.txt"] and (out / "a.json").read_text() == "old"
    with io.atomic_files(out) as tmp:
        io.write_text(tmp / "a.json", "new")
        (tmp / "b.bin").write_bytes(b"\0")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.bin", "mine.txt"]
    assert (out / "a.json").read_text() == "new" and (out / "mine.txt").read_text() == "user file"


def _hold_lock(folder) -> "subprocess.Popen":
    """Another process that takes io.folder_lock(folder) and sleeps until killed."""
    import subprocess
    import sys

    code = ("import sys, time; from megohand import io\n"
            "with io.folder_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")
def test_folder_lock_refuses_a_second_process_until_the_first_dies(tmp_path):
    folder = tmp_path / "run"
    holder = _hold_lock(folder)
    try:
        with pytest.raises(UserError, match=rf"process {holder.pid} is already writing into this folder") as e:
            with io.folder_lock(folder):
                pass
        assert str(folder) in str(e.value) and "--out" in str(e.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock with the process
        holder.wait()
    assert (folder / io.LOCK).is_file()  # a stale lock file does not block
    with io.folder_lock(folder):
        assert (folder / io.LOCK).read_text() == f"process {os.getpid()}"
        with pytest.raises(UserError):  # a second open file description of the same process is refused too
            with io.folder_lock(folder):
                pass
    with io.folder_lock(folder):  # released at the end of the block
        pass
