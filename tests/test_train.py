"""Training: schedule, data sharding, pickle-free checkpoint state, loss falls on a synthetic store,
and a kill-and-resume run reproduces the uninterrupted run's weights exactly."""

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from megohand.train import checkpoint as ck
from megohand.train.config import TrainConfig
from megohand.train.trainer import cosine_with_warmup, rank_batches, train

from test_models_policy import compact_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from megohand.data.synthetic.build import synthesize
    from megohand.data.synthetic.world import SynthConfig

    root = tmp_path_factory.mktemp("store")
    synthesize(root, 6, SynthConfig(seed=0, width=64, height=48, min_frames=30, max_frames=40), progress=False)
    return root


def tiny_train_cfg(store, out, **kw):
    base = dict(store=store, out=out, model=compact_cfg(), batch_size=8, lr=1e-3, num_workers=0, log_every=5,
                eval_every=0, split_portion=0.75, progress=False, warmup_ratio=0.1)
    base.update(kw)
    return TrainConfig(**base)


def test_cosine_with_warmup_hand_values():
    assert cosine_with_warmup(0, 10, 110) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 110) == pytest.approx(1.0)
    assert cosine_with_warmup(10, 10, 110) == pytest.approx(1.0)
    assert cosine_with_warmup(60, 10, 110) == pytest.approx(0.5)
    assert cosine_with_warmup(110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert cosine_with_warmup(35, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_rank_batches_partition():
    order = list(range(23))
    parts = [rank_batches(order, r, 3, 2) for r in range(3)]
    flat = [i for p in parts for b in p for i in b]
    assert len(set(flat)) == len(flat) == 18 and all(len(p) == 3 for p in parts)
    assert parts[1][0] == [1, 4]


def test_optimizer_state_roundtrip_without_pickles():
    p = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(p.parameters(), lr=0.1, betas=(0.9, 0.99))
    p(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = ck.optimizer_to_flat(opt.state_dict())
    json.dumps(meta)
    back = ck.optimizer_from_flat(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(back)
    ref = opt.state_dict()
    got = opt2.state_dict()
    assert got["param_groups"] == ref["param_groups"]
    for k in ref["state"]:
        for name, v in ref["state"][k].items():
            torch.testing.assert_close(got["state"][k][name], v)


def test_rng_roundtrip(tmp_path):
    torch.manual_seed(3)
    random.seed(4)
    np.random.seed(5)
    ck.save_rng(tmp_path / "rng.safetensors")
    a = (torch.rand(3), random.random(), np.random.rand(2))
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    ck.load_rng(tmp_path / "rng.safetensors")
    b = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_training_on_a_synthetic_store_lowers_the_loss(store, tmp_path):
    out = train(tiny_train_cfg(store, tmp_path / "run", steps=50, lr=3e-3, save_every=25, keep_last=1, eval_every=25,
                               eval_batches=2))
    assert out == tmp_path / "run" / "model" and (out / "model.safetensors").is_file()
    logs = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_loss = [x["train/loss_fm"] for x in logs if "train/loss_fm" in x]
    assert train_loss[-1] < 0.85 * train_loss[0], train_loss
    assert any("eval/loss_fm" in x for x in logs)
    waits = [x["train/data_wait_share"] for x in logs if "train/data_wait_share" in x]
    assert waits and all(0 <= w <= 1 for w in waits)  # num_workers=0: loading is part of the step, so > 0
    assert max(waits) > 0
    assert [p.name for _, p in ck.list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-0000050"]
    from megohand.models import MEgoHandPolicy

    policy = MEgoHandPolicy.from_pretrained(out)
    assert policy.normalizer is not None and policy.config.horizon == 4


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="flock is POSIX")
def test_a_second_trainer_on_a_busy_run_folder_is_refused_and_leaves_it_alone(store, tmp_path, capsys):
    """Two `megohand train` on one --out would interleave their checkpoints and metrics (a benchmark re-run while
    its first run's trainers still live): the second exits with an error naming the first and removes nothing."""
    from test_io import _hold_lock

    from megohand.cli.main import main

    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        (run / "train_config.json").write_text("{}")  # what a live trainer has written first
        with pytest.raises(SystemExit) as e:
            main(["train", "--store", str(store), "--out", str(run), "--steps", "2", "--batch-size", "4",
                  "--num-workers", "0", "--no-progress"])
        assert e.value.code != 0
        assert f"process {holder.pid} is already writing into this folder" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == [".lock", "train_config.json"]
    finally:
        holder.kill()
        holder.wait()


def test_frozen_weights_in_bf16_train_resume_exactly_and_stay_close(store, tmp_path, request):
    """--frozen-bf16 under bf16 autocast: the frozen text encoder's weights become bf16, the trained ones stay fp32;
    the loss stays within bf16 rounding of the fp32-frozen run; a killed and resumed run equals the uninterrupted one."""
    from accelerate.state import AcceleratorState

    from megohand.train.trainer import Trainer

    AcceleratorState._reset_state(True)  # accelerate keeps one mixed-precision setting per process
    request.addfinalizer(lambda: AcceleratorState._reset_state(True))
    cfg = tiny_train_cfg(store, tmp_path / "full", steps=6, save_every=3, mixed_precision="bf16", frozen_bf16=True)
    tr = Trainer(cfg)
    frozen = [p for p in tr.policy.parameters() if not p.requires_grad]
    assert frozen and tr.speed["frozen_bf16"] == len(frozen)
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    assert {p.dtype for p in tr.policy.parameters() if p.requires_grad} == {torch.float32}
    full = tr.run()
    del tr
    part = train(replace(cfg, out=tmp_path / "killed", stop_after=4))
    import shutil

    shutil.rmtree(part)  # resume from step 3
    resumed = train(replace(cfg, out=tmp_path / "killed"))
    a, b = _weights(full), _weights(resumed)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    fp32 = train(replace(cfg, out=tmp_path / "fp32", frozen_bf16=False))
    c = _weights(fp32)
    trained = [k for k in a if a[k].dtype == torch.float32 and not k.startswith("backbone.text.")]
    worst = max(float((a[k] - c[k]).abs().max()) for k in trained)
    assert 0 < worst < 2e-2, worst  # the frozen weights were rounded, so the runs differ, but only by that


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("kw", [{}, {"batch_size": 32, "num_workers": 1}], ids=["in-process", "epochs-and-a-worker"])
def test_kill_and_resume_is_exact(store, tmp_path, kw):
    """Mid-epoch in one process; and with batches of 32 (about 4 per epoch), so the run and its resume cross epochs
    inside one DataLoader with a worker process and augmentation."""
    cfg = tiny_train_cfg(store, tmp_path / "full", steps=12, save_every=6, **kw)
    full = train(cfg)
    part = replace(cfg, out=tmp_path / "killed", stop_after=7)  # dies after step 7: last checkpoint is step 6
    ck_dir = train(part)
    assert ck_dir.name == "step-0000007"
    import shutil

    shutil.rmtree(ck_dir)  # as if killed before the step-7 checkpoint: resume from step 6
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "train/lo')  # ... and mid-way through a log line: the resume drops the torn line
    torch.manual_seed(12345)  # a new process has other RNG states
    random.seed(1)
    np.random.seed(1)
    resumed = train(replace(cfg, out=tmp_path / "killed"))
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert diff == []
    opt_a = load_file(str(tmp_path / "full" / "checkpoints" / "step-0000012" / "optimizer.safetensors"))
    opt_b = load_file(str(tmp_path / "killed" / "checkpoints" / "step-0000012" / "optimizer.safetensors"))
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated log lines after the resume


def test_train_config_weights_and_errors(tmp_path):
    assert TrainConfig(datasets=("a:2", "b")).dataset_weights() == {"a": 2.0, "b": 1.0}
    with pytest.raises(ValueError, match="weight"):
        TrainConfig(datasets=("a:x",)).dataset_weights()
    with pytest.raises(ValueError, match="store folder not found"):
        train(TrainConfig(store=tmp_path / "nope", out=tmp_path / "o", model=compact_cfg(), progress=False))


def test_speed_settings_and_a_given_policy(store, tmp_path):
    from megohand.models import MEgoHandPolicy
    from megohand.train.trainer import Trainer, make_optimizer

    cfg = tiny_train_cfg(store, tmp_path / "o")
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_optimizer(params, cfg, torch.device("cuda")).defaults["fused"] is True
    assert not make_optimizer(params, cfg, torch.device("cpu")).defaults["fused"]  # the CPU keeps torch's default
    assert not make_optimizer(params, replace(cfg, fused_optimizer=False), torch.device("cuda")).defaults["fused"]
    policy = MEgoHandPolicy(cfg.model)
    tr = Trainer(cfg, policy=policy)
    # CPU: no GPU layouts; the frozen MiniLM's cache on, off when asked
    assert tr.policy is policy and tr.speed == {"frozen_bf16": 0, "channels_last": False, "text_cache": True,
                                                "compiled": []}
    assert policy.backbone.text_cache is not None
    assert Trainer(replace(cfg, cache_text=False), policy=policy).speed["text_cache"] is False
    assert policy.backbone.text_cache is None
    assert not tr.opt.optimizer.defaults["fused"]
    other = replace(cfg, model=replace(cfg.model, horizon=cfg.model.horizon + 1))
    with pytest.raises(ValueError, match="another config"):
        Trainer(other, policy=policy)


def test_compile_mode_reaches_torch_compile(store, tmp_path, monkeypatch):
    """--compile-mode goes to every compiled block's torch.compile; the default mode passes no option."""
    from megohand.models import MEgoHandPolicy
    from megohand.train.trainer import apply_speed_settings

    cfg = replace(tiny_train_cfg(store, tmp_path / "o"), compile=True)
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    policy = MEgoHandPolicy(cfg.model)
    assert "head.dit.blocks" in apply_speed_settings(policy, cfg, torch.device("cpu"))["compiled"]
    assert seen and all(kw == {} for kw in seen)
    seen.clear()
    apply_speed_settings(policy, replace(cfg, compile_mode="reduce-overhead"), torch.device("cpu"))
    assert seen and all(kw == {"mode": "reduce-overhead"} for kw in seen)


def test_init_from_a_trained_policy_starts_from_its_weights(store, tmp_path, capsys):
    from megohand.errors import UserError
    from megohand.models.config import GroundingConfig
    from megohand.train.trainer import Trainer

    src = train(tiny_train_cfg(store, tmp_path / "a", steps=2, save_every=2))
    saved = load_file(src / "model.safetensors")
    tr = Trainer(tiny_train_cfg(store, tmp_path / "b", steps=2, init_from=src))
    own = tr.policy.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items())  # every saved weight, unchanged
    assert json.loads((src / "normalizer.json").read_text()) == tr.policy.normalizer.to_dict()
    # a module the checkpoint lacks starts fresh; a weight of another shape is refused, naming the checkpoint
    grounded = replace(compact_cfg(), grounding=GroundingConfig(weight=1.0, tokens=True))
    tr = Trainer(tiny_train_cfg(store, tmp_path / "c", steps=2, init_from=src, model=grounded))
    own = tr.policy.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items())
    assert "new, freshly initialised: grounding_head, grounding_tokens\n" in capsys.readouterr().out
    tr.policy.save_pretrained(tmp_path / "g")  # with grounding tokens; then a LayerNorm on them is all that is new
    normed = replace(grounded, grounding=replace(grounded.grounding, tokens_norm=True))
    Trainer(tiny_train_cfg(store, tmp_path / "e", steps=2, init_from=tmp_path / "g", model=normed))
    assert "new, freshly initialised: grounding_tokens.norm\n" in capsys.readouterr().out
    with pytest.raises(UserError, match="another shape") as e:
        Trainer(tiny_train_cfg(store, tmp_path / "d", init_from=src,
                               model=replace(compact_cfg(), dit=replace(compact_cfg().dit, width=2 * compact_cfg().dit.width))))
    assert str(src) in str(e.value)


def test_compiled_training_step_matches_eager(tmp_path):
    """Regional compilation (aot_eager: dynamo capture + autograd tracing, no code generation, so it runs in
    seconds) gives eager's loss and gradients and keeps the state-dict keys."""
    from megohand.models import MEgoHandPolicy
    from test_models_fixtures import sample_batch

    torch.manual_seed(0)
    policy = MEgoHandPolicy(compact_cfg()).train()
    keys = list(policy.state_dict())
    batch = sample_batch(B=3, L=4, H=32, W=32)

    def loss_and_grads():
        torch.manual_seed(1)
        loss, _ = policy(batch)
        policy.zero_grad()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    for m in policy.modules():  # dropout draws differ between eager and traced graphs: compare without it
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    loss, grads = loss_and_grads()
    from torch._dynamo.utils import counters

    stacks = policy.compile_training(backend="aot_eager")
    assert "head.dit.blocks" in stacks
    graphs = counters["stats"]["unique_graphs"]
    loss_c, grads_c = loss_and_grads()
    assert counters["stats"]["unique_graphs"] - graphs >= 2  # really traced: DiT cross- and self-attention blocks
    assert list(policy.state_dict()) == keys
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads.keys()
    for n in grads:
        torch.testing.assert_close(grads_c[n], grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_train_throughput_benchmark_runs_variants_on_cpu(tmp_path):
    """benchmarks/train_throughput.py --tiny (the CPU smoke run): every variant and batch lands in the JSON."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    import train_throughput as tt

    out = tmp_path / "t.json"
    cmd = [sys.executable, str(root / "benchmarks" / "train_throughput.py"), "--tiny", "--steps", "3", "--warmup", "1",
           "--max-batch", "8", "--profile", "optimized", "--text-lengths", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    runs = [(r["variant"], r["batch"], r["status"]) for r in res["runs"]]
    assert runs == [("baseline", 4, "ok"), ("optimized", 4, "ok"), ("optimized", 8, "ok"), ("baseline", 8, "ok")]
    assert all(r["samples_per_s"] > 0 and r["flops_per_step"] > 0 for r in res["runs"])
    # steps 0 and 2 read the warm-up's texts, step 1 a longer instruction set
    assert all(r["text_lengths"] == 2 and r["first_length_step_ms"] > 0 and r["seen_length_step_ms"] > 0
               for r in res["runs"])
    set_a, set_b = tt.instruction_sets(2, 3)
    assert len(set_a) == len(set_b) == 3 and all(len(b.split()) == len(a.split()) + 2 for a, b in zip(set_a, set_b))
    assert set(res["profile"]["cpu_ms_per_step_by_phase"]) == {"forward", "backward", "optimizer"}
    assert {r["pid"] for r in res["runs"]} == {res["pid"]}


def test_train_throughput_fresh_process_runs_each_variant_in_its_own_process(tmp_path):
    """--fresh-process: every (variant, batch) in a new process; its timing and profile land in the parent's JSON,
    and a compiled run gets the FLOPs an eager process counted at its batch."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "t.json"
    cmd = [sys.executable, str(root / "benchmarks" / "train_throughput.py"), "--tiny", "--steps", "1", "--warmup", "1",
           "--variants", "optimized", "compile", "--max-batch", "8", "--profile", "optimized", "--fresh-process",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [(r["variant"], r["batch"], r["status"]) for r in res["runs"]] == [
        ("optimized", 4, "ok"), ("optimized", 8, "ok"), ("compile", 4, "ok"), ("compile", 8, "ok")]
    assert len({r["pid"] for r in res["runs"]} | {res["pid"]}) == 5  # four processes, none the parent
    flops = {(r["variant"], r["batch"]): r["flops_per_step"] for r in res["runs"]}
    assert flops["compile", 4] == flops["optimized", 4] and flops["compile", 8] == flops["optimized", 8]
    assert all(r["samples_per_s"] > 0 and r["build_seconds"] > 0 for r in res["runs"])
    assert res["fresh_process"] and res["trainable_parameters"] > 0 and res["profile"]["batch"] == 4


def test_train_throughput_counts_flops_for_a_compiled_variant_alone(tmp_path):
    """A compiled variant with no eager run before it (the text-length A/B of gpu_suite.sh) counts its FLOPs on the
    eager policy first: the same count as the eager variant's at that batch."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    flops = {}
    for variant in ("compile", "optimized"):
        out = tmp_path / f"{variant}.json"
        cmd = [sys.executable, str(root / "benchmarks" / "train_throughput.py"), "--tiny", "--steps", "1",
               "--warmup", "1", "--variants", variant, "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run,) = json.loads(out.read_text())["runs"]
        assert run["status"] == "ok", run.get("error")
        flops[variant] = run["flops_per_step"]
    assert flops["compile"] == flops["optimized"] > 0
