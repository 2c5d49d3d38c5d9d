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
    run_benchmark("cartpole_novel.py", "--smoke", "--out-dir", str(tmp_path), "--plot", str(tmp_path / "curves.png"))
    result = json.loads((tmp_path / "cartpole_novel.json").read_text())
    assert sorted(result["summary"]) == sorted(("drqn", "dqn", "dqn_stack4", "ppo_lstm"))
    sources = {run["agent"]: run["settings"]["source"] for run in result["runs"]}
    assert sources["drqn"] == "drqn.yml:CartPoleNoVel-v1" and sources["ppo_lstm"] == "ppo_lstm.yml:CartPoleNoVel-v1"
    assert result["runs"][0]["settings"]["hyperparams"]["learning_starts"] == 100  # --smoke's override, recorded
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4 and (tmp_path / "curves.png").stat().st_size > 0


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
    run_benchmark(
        "ablation.py",
        *("--smoke", "--seeds", "0", "1", "--options", "plain", "all", "--bootstrap", "20"),
        *("--out-dir", str(tmp_path), "--plot", str(tmp_path / "ablation.png")),
    )
    summary = json.loads((tmp_path / "ablation.json").read_text())["summary"]
    assert set(summary) == {"cartpole_novel", "memory"} and set(summary["memory"]) == {"plain", "all"}
    for option in summary["memory"].values():
        low, high = option["final_ci"]
        assert len(option["final_per_seed"]) == 2 and low <= option["final_iqm"] <= high
