"""``megohand benchmark``: the synthetic benchmark of a named experiment, end to end.

For the experiment's world (``megohand.train.experiments``): draw the store, compute its statistics once, train
every (variant, seed, ablation) with ``megohand train --config NAME`` (resumable; several at once on one GPU with
``--parallel N``), then evaluate all models and the baselines with ``megohand eval``'s protocols, input-reliance rows
and task metrics, and write ``<out>/<name>.json`` and ``.md`` with the mean and spread over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

VARIANTS = ("TID", "TI", "T", "V")
ABLATIONS: dict[str, tuple[str, ...]] = {
    "no-grounding": ("--model.grounding.weight=0",),
    "no-dropout": ("--model.dropout.text=0", "--model.dropout.image=0", "--model.dropout.depth=0"),
    "grounding-tokens": ("--model.grounding.tokens",),
    "teacher": ("--model.grounding.tokens", "--model.grounding.teacher=0.5"),
    "token-norm": ("--model.grounding.tokens", "--model.grounding.tokens-norm"),
    "ground-state": ("--model.grounding.state",),
    "state-teacher": ("--model.grounding.state", "--model.grounding.teacher=0.5"),
    "state-dropout": ("--model.grounding.state", "--model.grounding.state-dropout=0.2"),
    "film": ("--model.backbone.film",),
    "refer": ("--model.grounding.refer=0.5",),
    "parse": ("--model.grounding.parse=0.5",),
    "query": ("--model.grounding.head=query",),
    "task-text": ("--model.text-context=task+segment",),
    "state-noise": ("--model.state-noise.prob=0.5",),
}
"""Named changes of the recipe (``megohand train`` overrides) for the A/B rows of the benchmark; ``a+b`` applies
both (``refer+parse``)."""


def ablation_args(name: str) -> tuple[str, ...]:
    """The ``megohand train`` overrides of an ablation name, its ``+``-joined parts in order (each override once:
    ``teacher+token-norm`` both turn the grounding tokens on)."""
    return tuple(dict.fromkeys(arg for part in name.split("+") if part for arg in ABLATIONS[part]))


def parse_run(name: str) -> tuple[str, int, str] | None:
    """A run name <variant>_s<seed>[_<ablation>] -> (variant, seed, ablation or ""); None for other names (the
    baselines). The parts are not checked against VARIANTS and ABLATIONS here (``run_args`` does)."""
    variant, _, rest = name.partition("_")
    seed, _, ablation = rest.partition("_")
    return (variant, int(seed[1:]), ablation) if seed[:1] == "s" and seed[1:].isdigit() else None


def run_args(name: str) -> tuple[str, ...]:
    """The ``megohand train`` overrides of a run name <variant>_s<seed>[_<ablation>] (SystemExit naming the bad
    part otherwise): TI_s1 -> --model.modalities TI --seed 1."""
    run = parse_run(name)
    if run is None or run[0] not in VARIANTS or set(run[2].split("+")) - {"", *ABLATIONS}:
        raise SystemExit(f"bad run name {name!r}: want <variant>_s<seed>[_<ablation>], variants {VARIANTS}, "
                         f"ablations {list(ABLATIONS)} (joined by +)")
    variant, seed, ablation = run
    return ("--model.modalities", variant, "--seed", str(seed), *ablation_args(ablation))


@dataclass
class Benchmark:
    """Train and evaluate the variants of a named synthetic experiment (T, V, TI, TID; several seeds; ablations)."""

    config: str = "synthetic"
    """Named experiment (megohand.train.experiments) with a synthetic world."""
    work: Path = Path("runs/benchmark")
    """Folder of the store (work/store) and the training runs (work/<variant>_s<seed>[_<ablation>])."""
    out: Path = Path("benchmarks/results")
    """Where <config>.json and <config>.md go."""
    variants: tuple[str, ...] = VARIANTS
    """Input modalities to train (T, V, TI, TID)."""
    seeds: tuple[int, ...] = (0,)
    """Training seeds of every variant."""
    ablations: tuple[str, ...] = ()
    """A/B rows: TID with a named change of the recipe (no-grounding, no-dropout, grounding-tokens, teacher
    (grounding tokens with teacher forcing), token-norm (grounding tokens with a LayerNorm), ground-state (the
    grounding head's answer added to the state token), state-teacher (that with teacher forcing), state-dropout
    (that dropped for 20 % of the samples: what guidance on it needs), film, refer, parse,
    query, task-text (the episode's instruction before every segment's text: --model.text-context task+segment);
    ``+`` joins several: refer+parse), first seed only."""
    runs: tuple[str, ...] = ()
    """Exactly these runs, named <variant>_s<seed>[_<ablation>] (TI_s1 V_s0 TID_s0_refer+parse), instead of every
    variant x seed and the ablations; a run whose folder already holds a model is evaluated, not trained."""
    episodes: int | None = None
    """Episodes to draw (None: the experiment's)."""
    steps: int | None = None
    """Training steps (None: the experiment's)."""
    train_args: tuple[str, ...] = ()
    """More ``megohand train`` overrides for every run, without their leading dashes (tyro would read them as options
    of this verb): --train-args num-workers=2 save-every=250."""
    parallel: int = 1
    """Training runs at once (one process each, its output in work/logs/<run>.log); 1: one after another. A
    compact-preset step is bound by the CPU that launches its kernels and loads its batches: on one H100 with 16
    cores, batch 256, one run alone made 14.5 steps/s with 15 loader workers, two at once about 10 each with 7 (1.4x
    the total), ten at once about 2 each; six at once with 4 loader workers each waited for data 50-68 % of the
    time. Give each run its share of loader workers (--train-args num-workers=N)."""
    workers: int = 4
    """Processes that draw the world."""
    train_only: bool = False
    """Stop after training (evaluate later)."""
    device: str | None = None
    """Torch device for evaluation (None: cuda if available)."""
    protocol_rollout_frames: int = 64
    """Closed-loop frames per rollout."""
    max_test_episodes: int = 0
    """Cap on test episodes (0 = all)."""

    def run(self) -> None:
        import json
        import sys
        import time

        import torch

        from megohand.data.stats import compute_store_statistics
        from megohand.data.store import Store
        from megohand.data.synthetic import SynthConfig, synthesize
        from megohand.evaluate.evaluator import EvalConfig, baseline_factories, evaluate_store
        from megohand.hand import load_hand_model
        from megohand.inference.policy import load_policy
        from megohand.io import write_text
        from megohand.train.experiments import get_experiment

        exp = get_experiment(self.config)
        if exp.world is None:
            raise SystemExit(f"experiment {self.config!r} has no synthetic world; `megohand benchmark` needs one")
        parts = {p for a in self.ablations for p in a.split("+")}
        unknown = set(self.variants) - set(VARIANTS) or parts - set(ABLATIONS)
        if unknown:
            raise SystemExit(f"unknown variants or ablations {sorted(unknown)}; variants {VARIANTS}, ablations "
                             f"{list(ABLATIONS)}")
        # seed by seed: stopped early, a benchmark has every variant of its first seeds
        names = self.runs or ([f"{v}_s{s}" for s in self.seeds for v in self.variants]
                              + [f"TID_s{self.seeds[0]}_{a}" for a in self.ablations])
        runs = {name: run_args(name) for name in names}
        t0 = time.time()
        store = self.work / "store"
        episodes = self.episodes or exp.episodes
        synthesize(store, episodes, SynthConfig(**exp.world), workers=self.workers)
        tc = exp.train
        compute_store_statistics(store, ["synthetic"], tc.side, tc.model.horizon, split="train", mode=tc.normalizer,
                                 window_scope=tc.window_scope)
        exe = [sys.executable, "-m", "megohand.cli.main", "train", "--config", self.config]
        todo = {name: [*exe, "--store", str(store), "--out", str(self.work / name),
                       *(["--steps", str(self.steps)] if self.steps else []),
                       *(a if a.startswith("-") else f"--{a}" for a in self.train_args), *args]
                for name, args in runs.items() if not (self.work / name / "model" / "config.json").is_file()}
        minutes = run_commands(todo, self.work / "logs", self.parallel)  # logs beside the runs: train wants an empty --out
        if self.train_only:
            return
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        policies = {name: load_policy(self.work / name / "model", device) for name in runs}
        horizon = next(iter(policies.values())).horizon
        methods = {name: (lambda p: lambda prev, s: p)(p) for name, p in policies.items()}
        methods.update(baseline_factories(horizon))
        cfg = EvalConfig(horizon=horizon, window_stride=16, rollout_frames=self.protocol_rollout_frames,
                         batch_size=64, max_episodes=self.max_test_episodes)
        hand = load_hand_model()
        report = evaluate_store(Store(store), methods, hand, cfg)
        report.update(
            experiment=self.config, hand_model=hand.name, runs={k: list(v) for k, v in runs.items()},
            train=next((c for name in runs if (c := run_config(self.work / name))), None),  # as run, with --train-args
            episodes=episodes,
            train_minutes=minutes, train_speed={name: training_speed(self.work / name) for name in runs},
            minutes=(time.time() - t0) / 60,
            device=torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            command="megohand benchmark " + " ".join(sys.argv[2:]),
        )
        self.out.mkdir(parents=True, exist_ok=True)
        md = summary_markdown(report)
        write_text(self.out / f"{self.config}.json", json.dumps(report, indent=1, allow_nan=True))
        write_text(self.out / f"{self.config}.md", md)
        print(md)
        print(f"wrote {self.out / (self.config + '.md')} and .json")


SUMMARY = (("window", "mpjpe_cm", "window MPJPE (cm)"), ("window", "mwte_cm", "window MWTE (cm)"),
           ("window", "mre_rad", "window MRE (rad)"), ("rollout-tof", "mpjpe_cm", "TOF MPJPE (cm)"),
           ("rollout-tof", "target_acc", "TOF target acc."), ("rollout-tof", "dest_cm", "TOF dest. (cm)"),
           ("rollout-tof", "jitter_m_s3", "TOF jitter (m/s³)"), ("rollout-raw", "mpjpe_cm", "no-TOF MPJPE (cm)"),
           ("rollout-raw", "target_acc", "no-TOF target acc."))


class _Stopped(BaseException):
    """SIGTERM while runs train (``kill PID``)."""


def run_commands(commands: dict[str, list[str]], logs: Path, at_once: int = 1) -> dict[str, float]:
    """Run each named command, at most ``at_once`` at a time (1: in order, output to the console; more: output to
    ``logs/<name>.log``). Returns the minutes each took; the first that fails raises SystemExit naming its log (the
    queued runs never start, the running ones finish). Stopped itself (Ctrl-C, or SIGTERM in the main thread), it
    stops the running commands too (SIGTERM, SIGKILL after 30 s; a stopped training run resumes from its last
    checkpoint) instead of leaving them to train on unseen."""
    import signal
    import subprocess
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    if at_once < 1:
        raise SystemExit(f"--parallel must be at least 1, got {at_once}")
    running: dict[str, subprocess.Popen] = {}

    def run(name: str) -> tuple[str, float]:
        log = logs / f"{name}.log"
        print("+", " ".join(commands[name]), flush=True)
        t = time.time()
        out = None
        if at_once > 1:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "a")
        try:
            running[name] = proc = subprocess.Popen(commands[name], stdout=out, stderr=subprocess.STDOUT if out else None)
            rc = proc.wait()
        finally:
            running.pop(name, None)
            if out is not None:
                out.close()
        if rc != 0:
            raise SystemExit(f"training run {name} failed (exit {rc})" + (f": see {log}" if at_once > 1 else ""))
        return name, (time.time() - t) / 60

    def stop(*_):
        raise _Stopped

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    pool = ThreadPoolExecutor(at_once)
    futures = [pool.submit(run, name) for name in commands]
    try:
        return dict(f.result() for f in futures)
    except (KeyboardInterrupt, _Stopped) as e:
        pool.shutdown(wait=False, cancel_futures=True)
        procs = list(running.values())
        for p in procs:
            p.terminate()
        deadline = time.time() + 30
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        print(f"stopped; {len(procs)} running command(s) stopped with it", flush=True)
        if isinstance(e, _Stopped):
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        if main:
            signal.signal(signal.SIGTERM, previous)


def run_config(run: Path) -> dict | None:
    """A run's training config as run: its train_config.json, else (a run given as a slim export in run/model, from
    ``scripts/train_demo.py``) the ``run_config`` of model/train.json; None when neither exists."""
    import json

    for path, key in ((run / "train_config.json", None), (run / "model" / "train.json", "run_config")):
        if path.is_file():
            config = json.loads(path.read_text())
            return config.get(key) if key else config
    return None


def training_speed(run: Path, max_step: int | None = None) -> dict:
    """Median training samples/s and share of wall time waiting for batches over a run's logged intervals (its
    ``metrics.jsonl``, or that file itself; the first interval, with start-up, left out; with ``max_step``, only
    the intervals up to that step: the part during which the same runs trained beside it); empty when the run
    logged neither."""
    import json
    import statistics

    path = run if run.suffix == ".jsonl" else run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [r for r in rows if max_step is None or r.get("step", 0) <= max_step]
    out = {}
    for key, name in (("train/samples_per_s", "samples_per_s"), ("train/data_wait_share", "data_wait_share")):
        values = [r[key] for r in rows if key in r][1:]
        if values:
            out[name] = statistics.median(values)
    return out


def speed_lines(speed: dict[str, dict]) -> list[str]:
    """One markdown line (and a blank one) with each run's median samples/s and data-wait share, if any."""
    parts = [f"{name} {v['samples_per_s']:.0f} samples/s" + (f" (waiting for data {100 * v['data_wait_share']:.0f} %)"
                                                            if "data_wait_share" in v else "")
             for name, v in speed.items() if "samples_per_s" in v]
    return ["Training speed (median over logged intervals): " + "; ".join(parts) + ".", ""] if parts else []


def group_runs(methods: list[str]) -> dict[str, list[str]]:
    """Run names "<variant>_s<seed>[_<ablation>]" grouped by "<variant>[ <ablation>]" (baselines alone)."""
    groups: dict[str, list[str]] = {}
    for m in methods:
        run = parse_run(m)
        key = m if run is None else " ".join(part for part in (run[0], run[2]) if part)
        groups.setdefault(key, []).append(m)
    return groups


def mean_spread(values: list[float]) -> tuple[float, float]:
    """(mean, max - min) of the finite values (NaN, NaN when none)."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    return sum(v) / len(v), max(v) - min(v)


def summary_markdown(report: dict) -> str:
    """The benchmark table: one row per variant (mean over seeds, ± the max-min spread when several), and the
    input-reliance table (window MPJPE change and TOF target accuracy with each input from another episode)."""
    from megohand.evaluate.evaluator import RELIANCE, reliance_name

    res, key = report["results"], "[synthetic]"
    info = report["datasets"]["synthetic"]
    lines = [f"# Benchmark `{report['experiment']}`", "",
             f"{info['episodes']} test episodes, {info['windows']} windows; {report['train']['steps']} steps at batch "
             f"{report['train']['batch_size']}; hand model {report['hand_model']}; {report['device']}.", "",
             *speed_lines(report.get("train_speed", {})),
             "| method | seeds | " + " | ".join(c[2] for c in SUMMARY) + " |", "|---|---|" + "---|" * len(SUMMARY)]

    def cell(names, proto, metric):
        m, s = mean_spread([res.get(proto, {}).get(n, {}).get(key, {}).get(metric, math.nan) for n in names])
        if math.isnan(m):
            return "–"
        return f"{m:.3f}" + (f" ± {s:.3f}" if len(names) > 1 else "") if abs(m) < 100 else f"{m:.0f}"

    groups = group_runs(report["methods"])
    for g, names in groups.items():
        lines.append(f"| {g} | {len(names)} | " + " | ".join(cell(names, p, k) for p, k, _ in SUMMARY) + " |")
    lines += ["", "Input reliance (mean over seeds; the same windows, rollouts and noise, one input from another test "
              "episode):", "", "| method | input | window MPJPE change | TOF target acc. |", "|---|---|---|---|"]
    for g, names in groups.items():
        for swap in RELIANCE:
            rel = [reliance_name(n, swap) for n in names]
            if not any(r in report.get("reliance", []) for r in rel):
                continue
            ch = [100 * (res["window"][r][key]["mpjpe_cm"] / res["window"][n][key]["mpjpe_cm"] - 1)
                  for n, r in zip(names, rel) if r in res.get("window", {})]
            m, s = mean_spread(ch)
            lines.append(f"| {g} | {RELIANCE[swap]} | {m:+.1f} %" + (f" ± {s:.1f}" if len(ch) > 1 else "")
                         + f" | {cell(rel, 'rollout-tof', 'target_acc')} |")
    return "\n".join(lines) + "\n"
