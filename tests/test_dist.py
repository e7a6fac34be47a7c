"""2-process DDP training on CPU (gloo) with the real Trainer, started as ``torchrun`` / ``accelerate launch`` would
(RANK, WORLD_SIZE, MASTER_* in the environment): it checkpoints (rank 0 writes, every rank its RNG file), and a run
stopped early and resumed ends with the uninterrupted run's weights and optimiser state, bit for bit.
benchmarks/dist_check.py does the same through ``accelerate launch`` of the CLI."""

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo")
pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from megohand.data.synthetic.build import synthesize
    from megohand.data.synthetic.world import SynthConfig

    root = tmp_path_factory.mktemp("dist_store")
    synthesize(root, 3, SynthConfig(seed=0, width=64, height=48, min_frames=30, max_frames=40), progress=False)
    return root


def _worker(rank: int, world: int, port: int, store: Path, tmp: Path) -> None:
    """One process of the 2-process job: full run, stopped run, resumed run (the same Trainer as the CLI)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from test_train import tiny_train_cfg

    from megohand.train.trainer import train

    cfg = tiny_train_cfg(store, tmp / "full", steps=4, save_every=2, batch_size=2, log_every=1, keep_last=3)
    train(cfg)
    train(replace(cfg, out=tmp / "killed", stop_after=2))
    torch.manual_seed(1000 + rank)  # a new job has other RNG states
    train(replace(cfg, out=tmp / "killed"))


def test_ddp_two_processes_checkpoint_and_exact_resume(store, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(2, port, store, tmp_path), nprocs=2, join=True)

    ck2 = tmp_path / "killed" / "checkpoints" / "step-0000002"
    state = json.loads((ck2 / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["distributed_type"] == "MULTI_CPU"
    assert (ck2 / "rng-rank0.safetensors").is_file() and (ck2 / "rng-rank1.safetensors").is_file()
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    before = load_file(str(tmp_path / "full" / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert any(not torch.equal(a[k], before[k]) for k in a)  # it did train after step 2
    last = "checkpoints/step-0000004/optimizer.safetensors"
    oa, ob = load_file(str(tmp_path / "full" / last)), load_file(str(tmp_path / "killed" / last))
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # rank 0 alone logs; the resume drops and repeats nothing
    assert len(list((tmp_path / "full" / "tensorboard").iterdir())) == 1  # one writer (rank 0)
