"""Smoke tests: the benchmark scripts run end to end with tiny budgets (their real runs are made by hand)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str) -> None:
    """Run ``benchmarks/<script>`` with ``args`` in a fresh interpreter; it must exit cleanly."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_cartpole_novel_benchmark_runs(tmp_path):
    out = tmp_path / "cartpole_novel.json"
    run_benchmark(
        "cartpole_novel.py",
        *("--seeds", "1", "--timesteps", "1200", "--eval-freq", "600", "--eval-episodes", "2"),
        *("--final-eval-episodes", "2", "--n-procs", "1", "--out", str(out), "--plot", str(tmp_path / "curves.png")),
        *("--algos", "drqn", "dqn", "dqn_stack4", "ppo_lstm"),
    )
    text = json.dumps(json.loads(out.read_text()))
    for algo in ("drqn", "dqn", "dqn_stack4", "ppo_lstm"):
        assert algo in text
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_throughput_benchmark_memory_part_runs(tmp_path):
    out = tmp_path / "throughput.json"
    run_benchmark("throughput.py", "--quick", "--transitions", "20000", "--skip", "speed", "scaling", "--out", str(out))
    memory = json.loads(out.read_text())["memory"]
    # One frame per transition, plus a small fraction for the stored state
    assert memory["drqn_default"]["bytes_per_transition"] < 1.3 * 7056
    assert memory["dqn_stack4_optimized"]["bytes_per_transition"] > 3.5 * 7056


@pytest.mark.slow
def test_soak_benchmark_runs(tmp_path):
    out = tmp_path / "soak.json"
    run_benchmark(
        "soak.py",
        *("--timesteps", "3000", "--buffer-size", "1000", "--sample-every", "500", "--out", str(out)),
        *("--plot", str(tmp_path / "soak.png")),
    )
    result = json.loads(out.read_text())
    assert [s["steps"] for s in result["samples"]][:3] == [0, 500, 1000]
    assert result["summary"]["rss_end_mib"] > 0 and (tmp_path / "soak.png").stat().st_size > 0


@pytest.mark.slow
def test_ablation_benchmark_runs(tmp_path):
    out = tmp_path / "ablation.json"
    run_benchmark(
        "ablation.py",
        *("--seeds", "2", "--options", "plain", "all", "--cartpole-timesteps", "1200", "--memory-timesteps", "1200"),
        *("--eval-freq", "600", "--eval-episodes", "2", "--bootstrap", "20", "--n-procs", "1"),
        *("--out", str(out), "--plot", str(tmp_path / "ablation.png")),
    )
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == {"cartpole_novel", "memory"} and set(summary["memory"]) == {"plain", "all"}
    for option in summary["memory"].values():
        low, high = option["final_ci"]
        assert len(option["final_per_seed"]) == 2 and low <= option["final_iqm"] <= high


def load_cartpole_novel_module():
    """``benchmarks/cartpole_novel.py`` as a module (the benchmarks folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cartpole_novel_benchmark", BENCHMARKS / "cartpole_novel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cartpole_novel_reuses_only_matching_ppo_lstm_runs(tmp_path):
    import argparse

    benchmark = load_cartpole_novel_module()
    settings = dict(env_id="CartPoleNoVel-v1", timesteps=1000, eval_freq=500, eval_episodes=2, final_eval_episodes=3)
    runs = [dict(algo=algo, seed=seed, final_mean=float(seed)) for algo in ("drqn", "ppo_lstm") for seed in range(3)]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(dict(config=settings, runs=runs)))
    args = argparse.Namespace(seeds=2, **{key: value for key, value in settings.items() if key != "env_id"})
    reused = benchmark.load_reusable_runs(earlier, args)
    # Only ppo_lstm runs, only the seeds asked for
    assert [(run["algo"], run["seed"]) for run in reused] == [("ppo_lstm", 0), ("ppo_lstm", 1)]

    with pytest.raises(ValueError, match="timesteps is 1000, this run's is 2000"):
        benchmark.load_reusable_runs(earlier, argparse.Namespace(**{**vars(args), "timesteps": 2000}))
    with pytest.raises(ValueError, match=r"lacks ppo_lstm runs for seeds 0\.\.3"):
        benchmark.load_reusable_runs(earlier, argparse.Namespace(**{**vars(args), "seeds": 4}))
    (tmp_path / "corrupt.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a results file"):
        benchmark.load_reusable_runs(tmp_path / "corrupt.json", args)
