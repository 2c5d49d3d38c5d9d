"""Smoke tests: every example runs end to end with ``--smoke`` (their real runs are made by hand)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="the examples are not part of this checkout")


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``examples/<script>`` with ``args`` in a fresh interpreter; it must exit cleanly."""
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def check_outputs(out_dir: Path, name: str, env_ids: list[str], algos: list[str]) -> None:
    """Every env and agent has a run file and a curve evaluated every 150 steps, summarised and plotted."""
    result = json.loads((out_dir / f"{name}.json").read_text())
    assert (out_dir / f"{name}.png").stat().st_size > 0
    table_rows = [line for line in (out_dir / f"{name}.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table_rows) == 1 + len(env_ids) * len(algos)
    expected = sorted((env_id, algo) for env_id in env_ids for algo in algos)
    assert sorted((run["task"], run["agent"]) for run in result["runs"]) == expected
    assert len(list((out_dir / "run_results").glob("*.json"))) == len(expected)
    for run in result["runs"]:
        # Every 150 steps and at the end (DQN's train_freq of 256 runs past 300 steps)
        assert run["eval_steps"][:2] == [150, 300] and run["eval_steps"][-1] == run["num_timesteps"] >= 300
        assert len(run["eval_means"]) == len(run["eval_steps"])
        assert run["final_mean"] == run["eval_means"][-1] and run["settings"]["overrides"]["learning_starts"] == 100
    for env_id in env_ids:
        assert sorted(result["summary"][env_id]) == sorted(algos)
    assert any((out_dir / "tb").iterdir())


@pytest.mark.parametrize("script", ["cartpole.py", "cartpole_pixels.py", "pong.py"])
def test_help(script):
    assert "usage:" in run_example(script, "--help").stdout


def test_cartpole(tmp_path):
    run_example("cartpole.py", "--smoke", "--out-dir", str(tmp_path))
    check_outputs(tmp_path, "cartpole", ["CartPole-v1", "CartPoleNoVel-v1"], ["drqn", "dqn"])
    result = json.loads((tmp_path / "cartpole.json").read_text())
    sources = {(run["task"], run["agent"]): run["settings"]["source"] for run in result["runs"]}
    # drqn from drqn.yml's entry of each env; dqn from the zoo's CartPole-v1 entry on both
    assert sources[("CartPoleNoVel-v1", "drqn")] == "drqn.yml:CartPoleNoVel-v1"
    assert sources[("CartPoleNoVel-v1", "dqn")] == "dqn.yml:CartPole-v1"


def test_finished_runs_are_skipped(tmp_path):
    args = ("--smoke", "--envs", "CartPole-v1", "--algos", "dqn", "--out-dir", str(tmp_path))
    run_example("cartpole.py", *args)
    run_file = tmp_path / "run_results" / "CartPole-v1__dqn__seed0.json"
    before = run_file.read_text()
    output = run_example("cartpole.py", *args).stdout
    assert "1 of 1 runs already done" in output and run_file.read_text() == before
    # --summary-only runs nothing: the summary holds the finished run, and seed 1 is not started
    output = run_example("cartpole.py", *args, "--seeds", "0", "1", "--summary-only").stdout
    assert "1 of 2 runs done" in output and not (tmp_path / "run_results" / "CartPole-v1__dqn__seed1.json").exists()
    assert [run["seed"] for run in json.loads((tmp_path / "cartpole.json").read_text())["runs"]] == [0]


@pytest.mark.slow
def test_cartpole_pixels(tmp_path):
    run_example("cartpole_pixels.py", "--smoke", "--out-dir", str(tmp_path))
    check_outputs(tmp_path, "cartpole_pixels", ["CartPole-v1"], ["drqn", "dqn"])


def test_cartpole_pixel_frames():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from cartpole_pixels import make_pixel_cartpole
    finally:
        sys.path.remove(str(EXAMPLES))
    band, full = make_pixel_cartpole(), make_pixel_cartpole(frame="full", frame_size=36)
    band_obs, _ = band.reset(seed=0)
    full_obs, _ = full.reset(seed=0)
    assert band.observation_space.shape == band_obs.shape == (36, 120, 1) and band_obs.dtype == "uint8"
    assert full.observation_space.shape == full_obs.shape == (36, 36, 1)
    # The band holds the cart and the whole pole: bright pixels on black rows above (the pole stays inside)
    assert band_obs.max() > 155 and (band_obs[0] == 0).all()
    # CartPole's own colors: the same frame, not inverted
    original_obs, _ = make_pixel_cartpole(invert=False).reset(seed=0)
    np.testing.assert_array_equal(original_obs, 255 - band_obs)
    with pytest.raises(ValueError, match="frame must be one of"):
        make_pixel_cartpole(frame="crop")


def pixel_agents(monkeypatch, overrides: dict) -> dict:
    """The example's two agents, built from ``agent_settings(overrides)`` on one pixel env (tiny replay buffers)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import cartpole_pixels
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_drqn import RecurrentDQN

    settings = cartpole_pixels.agent_settings(overrides)
    env = make_vec_env(cartpole_pixels.make_pixel_cartpole, n_envs=1, seed=0)
    algos = dict(drqn=RecurrentDQN, dqn=DQN)
    return {
        agent: algo(settings[agent].policy, env, **(settings[agent].kwargs | dict(buffer_size=100)))
        for agent, algo in algos.items()
    }


@pytest.mark.parametrize("normalized", [True, False])
def test_cartpole_pixels_agents_have_the_same_network_in_front(monkeypatch, normalized):
    # drqn's features are normalised (normalize_features) by default; DQN's SmallCNN then ends with the same
    # LayerNorm, and turning the option off turns both off
    overrides = {} if normalized else dict(policy_kwargs=dict(normalize_features=False))
    agents = pixel_agents(monkeypatch, overrides)
    drqn, dqn = agents["drqn"], agents["dqn"]
    obs = th.as_tensor(drqn.env.reset())  # channels first (SB3's VecTransposeImage)
    with th.no_grad():
        drqn_features = drqn.q_net.extract_features(obs, drqn.q_net.features_extractor)
        dqn_features = dqn.q_net.extract_features(obs, dqn.q_net.features_extractor)
    for features in (drqn_features, dqn_features):  # variance below 1 by LayerNorm's eps where the raw spread is small
        assert features.shape == (1, 128)
        if normalized:
            assert abs(float(features.mean())) < 1e-5 and abs(float(features.var(unbiased=False)) - 1) < 0.1
    assert (drqn.q_net.features_norm is not None) == normalized
    assert isinstance(dqn.q_net.features_extractor.norm, th.nn.LayerNorm) == normalized


def test_cartpole_pixels_learning_rate_decays_for_both_agents(monkeypatch):
    # Tuned on the example: both agents' learning rate falls linearly from 5e-4 to 0 over the run;
    # --hyperparams learning_rate:5e-4 gives back drqn.yml's constant rate, for both
    for overrides, expected in (({}, [5e-4, 2.5e-4, 0.0]), (dict(learning_rate=5e-4), [5e-4, 5e-4, 5e-4])):
        for agent, model in pixel_agents(monkeypatch, overrides).items():
            assert [model.lr_schedule(progress) for progress in (1.0, 0.5, 0.0)] == pytest.approx(expected), agent


@pytest.mark.slow
@pytest.mark.parametrize("flickering", [False, True])
def test_pong(tmp_path, flickering):
    # --smoke cuts episodes after 400 frames (100 steps); tiny batches
    options = ["--flickering"] if flickering else []
    run_example("pong.py", "--smoke", *options, "--hyperparams", "batch_size:4", "--out-dir", str(tmp_path))
    name, env_id = ("pong_flickering", "FlickeringPongNoFrameskip-v4") if flickering else ("pong", "PongNoFrameskip-v4")
    check_outputs(tmp_path, name, [env_id], ["drqn", "dqn", "dqn_stack4"])


def test_a_finished_run_with_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import harness

    settings = harness.load_settings("dqn", "CartPole-v1", dict(learning_starts=100))
    assert settings.source == "dqn.yml:CartPole-v1" and settings.kwargs["learning_starts"] == 100
    run = harness.Run("CartPole-v1", "dqn", 0, "CartPole-v1", settings, timesteps=300, eval_freq=150, eval_episodes=2)
    recorded = dict(settings=dict(hyperparams={**settings.raw, "learning_starts": 1000}), timesteps=300, eval_freq=150)
    (tmp_path / "run_results").mkdir()
    (tmp_path / "run_results" / f"{run.name}.json").write_text(json.dumps(dict(recorded, eval_episodes=2, env_kwargs={})))
    with pytest.raises(ValueError, match="was made with other hyperparams: move it away to rerun"):
        harness.run_all([run], tmp_path)
    # The same settings on another env (e.g. frames in other colors)
    recorded = dict(settings=dict(hyperparams=json.loads(json.dumps(settings.raw))), timesteps=300, eval_freq=150)
    (tmp_path / "run_results" / f"{run.name}.json").write_text(
        json.dumps(dict(recorded, eval_episodes=2, env_kwargs=dict(invert=False)))
    )
    with pytest.raises(ValueError, match="was made with other env_kwargs: move it away to rerun"):
        harness.run_all([run], tmp_path)


def test_summaries_read_the_finished_runs_only(tmp_path, monkeypatch):
    # --summary-only of the suites reads every finished run; a run still going has only its .progress.json
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import harness

    runs_dir = tmp_path / harness.RUN_FILES
    runs_dir.mkdir()
    for name, record in [("b__dqn__seed0", dict(final_mean=2.0)), ("a__dqn__seed0", dict(final_mean=1.0))]:
        (runs_dir / f"{name}.json").write_text(json.dumps(record))
    (runs_dir / "c__dqn__seed0.progress.json").write_text(json.dumps(dict(eval_means=[0.5])))
    assert harness.finished_runs(tmp_path) == [dict(final_mean=1.0), dict(final_mean=2.0)]


def test_results_name_the_command_and_a_summary_says_it_ran_nothing(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import harness

    monkeypatch.chdir(tmp_path)
    # The script's own path and the argv its main was given, not this process's (pytest's)
    monkeypatch.setattr(sys, "argv", ["pytest", "-k", "nothing"])
    parser = harness.make_parser(None, tmp_path, ["drqn"], script=str(tmp_path / "benchmarks" / "suite.py"))
    harness.write_results(tmp_path, "suite", [], {}, "| table |", harness.parse_args(parser, ["--seeds", "0"]))
    assert (tmp_path / "suite.md").read_text() == "Command: `python benchmarks/suite.py --seeds 0`\n\n| table |\n"
    assert json.loads((tmp_path / "suite.json").read_text())["command"] == "python benchmarks/suite.py --seeds 0"
    harness.write_results(tmp_path, "suite", [], {}, "| table |", harness.parse_args(parser, ["--summary-only"]))
    summary = "Summary of the finished runs in `run_results/` (`python benchmarks/suite.py --summary-only`; each run's "
    assert (tmp_path / "suite.md").read_text() == summary + "settings: `suite.json`)\n\n| table |\n"
    # Without argv, the command line's; a script outside the current folder is named alone
    monkeypatch.setattr(sys, "argv", ["/elsewhere/suite.py", "--seeds", "1"])
    args = harness.parse_args(harness.make_parser(None, tmp_path, ["drqn"]))
    assert args.command == "python suite.py --seeds 1"


def test_a_stopped_run_leaves_its_curve_so_far(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import harness
    from stable_baselines3.common import evaluation

    evaluate_policy = evaluation.evaluate_policy
    calls = []

    def stop_at_the_second_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate_policy(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_policy", stop_at_the_second_evaluation)
    settings = harness.load_settings("dqn", "CartPole-v1", dict(learning_starts=100))
    run = harness.Run("CartPole-v1", "dqn", 0, "CartPole-v1", settings, timesteps=300, eval_freq=100, eval_episodes=2)
    with pytest.raises(KeyboardInterrupt):
        harness.run_all([run], tmp_path)
    assert not (tmp_path / "run_results" / f"{run.name}.json").exists()
    progress = json.loads((tmp_path / "run_results" / f"{run.name}.progress.json").read_text())
    assert progress["eval_steps"] == [100] and len(progress["eval_means"]) == 1 and progress["timesteps"] == 300
    # A finished run removes it
    monkeypatch.setattr(evaluation, "evaluate_policy", evaluate_policy)
    (result,) = harness.run_all([run], tmp_path)
    assert result["eval_steps"][:3] == [100, 200, 300]  # (DQN's zoo entry collects 256 steps per rollout)
    assert not (tmp_path / "run_results" / f"{run.name}.progress.json").exists()


WORKER_SCRIPT = """
import os, sys, time, types
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import harness

def run_one(run, path):  # a run that never ends, which says where it runs
    (Path(sys.argv[2]) / f"worker_{os.getpid()}").touch()
    time.sleep(600)

harness.run_one = run_one
harness.run_all([types.SimpleNamespace(name=f"run{i}") for i in range(3)], Path(sys.argv[2]), n_procs=2)
"""


def _is_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has stopped (its parent is gone and nobody reaps it here)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and forks workers")
def test_sigterm_stops_the_parallel_runs(tmp_path):
    # A script stopped with SIGTERM (e.g. at the end of a sitting) stops the runs in progress in its worker
    # processes too, instead of leaving them running on their own
    script = tmp_path / "script.py"
    script.write_text(WORKER_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), str(EXAMPLES), str(tmp_path)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("worker_*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(path.name.split("_")[1]) for path in tmp_path.glob("worker_*")]
    assert len(workers) == 2 and all(_is_running(pid) for pid in workers)
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0 and b"stopped by signal 15" in stderr
    deadline = time.monotonic() + 10
    while any(_is_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_is_running(pid) for pid in workers)
    # The third run never started
    assert len(list(tmp_path.glob("worker_*"))) == 2


def test_a_benchmark_plot_goes_to_the_docs_only_with_the_default_out_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import harness

    default_out = tmp_path / "results"
    parser = harness.make_parser(None, default_out, ["drqn"], plot="suite.png")
    assert harness.parse_args(parser, []).plot == harness.DOCS_IMAGES / "suite.png"
    elsewhere = tmp_path / "tuning"
    assert harness.parse_args(parser, ["--out-dir", str(elsewhere)]).plot == elsewhere / "suite.png"
    chosen = tmp_path / "chosen.png"
    assert harness.parse_args(parser, ["--out-dir", str(elsewhere), "--plot", str(chosen)]).plot == chosen
    # A script without a plot has no --plot
    assert not hasattr(harness.parse_args(harness.make_parser(None, default_out, ["drqn"]), []), "plot")
