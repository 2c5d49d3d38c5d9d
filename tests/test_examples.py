"""Smoke tests: every example runs end to end for a few hundred steps (their real runs are made by hand)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="the examples are not part of this checkout")

# A few hundred steps, learning from step 100, two evaluations of short episodes
QUICK = ("--timesteps", "300", "--seeds", "0", "--eval-freq", "150", "--eval-episodes", "2", "--no-progress-bar")


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``examples/<script>`` with ``args`` in a fresh interpreter; it must exit cleanly."""
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def check_outputs(out_dir: Path, name: str, env_ids: list[str], algos: list[str]) -> None:
    """The JSON holds a curve from step 0 to the end for every env and agent, and the PNG was written."""
    result = json.loads((out_dir / f"{name}.json").read_text())
    assert (out_dir / f"{name}.png").stat().st_size > 0
    assert sorted((run["env_id"], run["algo"]) for run in result["runs"]) == sorted((e, a) for e in env_ids for a in algos)
    for run in result["runs"]:
        assert run["eval_timesteps"][0] == 0 and run["eval_timesteps"][-1] >= 300
        assert len(run["eval_mean_returns"]) == len(run["eval_timesteps"]) >= 3
    for env_id in env_ids:
        assert sorted(result["summary"][env_id]) == sorted(algos)
    assert any((out_dir / "tb").iterdir())


@pytest.mark.parametrize("script", ["cartpole.py", "cartpole_pixels.py", "pong.py"])
def test_help(script):
    assert "usage:" in run_example(script, "--help").stdout


def test_cartpole(tmp_path):
    run_example("cartpole.py", *QUICK, "--hyperparams", "learning_starts:100", "--out-dir", str(tmp_path))
    check_outputs(tmp_path, "cartpole", ["CartPole-v1", "CartPoleNoVel-v1"], ["drqn", "dqn"])


@pytest.mark.slow
def test_cartpole_pixels(tmp_path):
    run_example(
        "cartpole_pixels.py",
        *QUICK,
        *("--frame-size", "36", "--hyperparams", "learning_starts:100", "buffer_size:1000", "--out-dir", str(tmp_path)),
    )
    check_outputs(tmp_path, "cartpole_pixels", ["CartPole-v1"], ["drqn", "dqn"])


@pytest.mark.slow
@pytest.mark.parametrize("flickering", [False, True])
def test_pong(tmp_path, flickering):
    # Tiny buffers and batches; episodes cut after 400 frames (100 steps)
    options = ["--flickering"] if flickering else []
    overrides = ("learning_starts:200", "buffer_size:1000", "batch_size:4")
    run_example(
        "pong.py",
        *QUICK,
        *options,
        *("--max-episode-frames", "400", "--hyperparams", *overrides, "--out-dir", str(tmp_path)),
    )
    name, env_id = ("pong_flickering", "FlickeringPongNoFrameskip-v4") if flickering else ("pong", "PongNoFrameskip-v4")
    check_outputs(tmp_path, name, [env_id], ["drqn", "dqn", "dqn_stack4"])
