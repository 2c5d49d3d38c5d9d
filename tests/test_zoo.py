"""
rl-zoo3 integration, tested as users run it: the zoo's own commands in subprocesses of the installed package
(``sys.executable -m rl_zoo3.train --algo drqn ...``), with tiny budgets.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import optuna
import pytest
import yaml
from rl_zoo3 import ALGOS
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.wrappers import FlickeringWrapper
from sb3_drqn.zoo import hyperparams_path, register
from sb3_drqn.zoo.hyperparams_opt import convert_drqn_params, sample_drqn_params

# The opt-out variable of the import hook (installed as the top-level module _sb3_drqn_zoo_hook)
DISABLE_ENV_VAR = "SB3_DRQN_NO_ZOO_HOOK"
HOOK_INSTALLED = importlib.util.find_spec("_sb3_drqn_zoo_hook") is not None
needs_hook = pytest.mark.skipif(not HOOK_INSTALLED, reason="the package's import hook (.pth) is not installed")

# A tiny CartPoleNoVel run: learning starts early, evaluation and checkpoints within the budget
TINY = ["-params", "learning_starts:50", "buffer_size:2000", "batch_size:8"]
TINY_ATARI = ["learning_starts:20", "buffer_size:300", "batch_size:2", "sequence_length:4", "burn_in:2"]


def zoo_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != DISABLE_ENV_VAR}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", **extra)
    return env


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 300, **extra_env: str) -> str:
    """Run ``python args...`` in ``cwd`` (not the checkout: the installed package is tested) and return its output."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=zoo_env(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(f"`python {' '.join(args)}` failed ({result.returncode}):\n{result.stdout[-6000:]}")
    return result.stdout


def train_args(env_id: str, n_timesteps: int, *extra: str) -> list[str]:
    return [
        "-m",
        "rl_zoo3.train",
        "--algo",
        "drqn",
        "--env",
        env_id,
        "-n",
        str(n_timesteps),
        "-f",
        "logs",
        "--num-threads",
        "1",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained CartPoleNoVel-v1 agent with evaluations, checkpoints, its replay buffer, VecNormalize and tensorboard logs."""
    workdir = tmp_path_factory.mktemp("zoo")
    run(
        train_args(
            "CartPoleNoVel-v1",
            300,
            "--eval-freq",
            "150",
            "--eval-episodes",
            "2",
            "--save-freq",
            "150",
            "--save-replay-buffer",
            "-tb",
            "tb",
            "--seed",
            "1",
            *TINY,
            "normalize:True",
        ),
        workdir,
    )
    return workdir


# Registration and hook


def test_register_idempotent_and_default_config(tmp_path):
    register()
    init = ExperimentManager.__init__
    register()
    assert ExperimentManager.__init__ is init, "register() must not wrap the zoo twice"
    assert ALGOS["drqn"] is RecurrentDQN
    assert HYPERPARAMS_SAMPLER["drqn"] is sample_drqn_params
    assert HYPERPARAMS_CONVERTER["drqn"] is convert_drqn_params
    assert "FlickeringPongNoFrameskip-v4" in gym.envs.registry

    def config(algo: str, **kwargs) -> str:
        return ExperimentManager(argparse.Namespace(), algo, "CartPole-v1", str(tmp_path), **kwargs).config

    assert hyperparams_path().is_file()
    assert config("drqn") == str(hyperparams_path())
    assert config("drqn", config="mine.yml") == "mine.yml"
    assert config("dqn").endswith(os.path.join("hyperparams", "dqn.yml"))


@needs_hook
def test_hook_is_lightweight(tmp_path):
    # Armed at start, but nothing heavy is imported before rl_zoo3 is
    code = (
        "import sys; heavy = [m for m in ('torch', 'stable_baselines3', 'sb3_drqn', 'rl_zoo3') if m in sys.modules]; "
        "armed = any(getattr(f, '_sb3_drqn_zoo_hook', False) for f in sys.meta_path); print(heavy, armed)"
    )
    assert run(["-c", code], tmp_path).split() == ["[]", "True"]


@needs_hook
def test_hook_registers_on_rl_zoo3_import(tmp_path):
    code = (
        "import sys, rl_zoo3, gymnasium as gym; from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER; "
        "from rl_zoo3.exp_manager import ExperimentManager as EM; "
        "print(rl_zoo3.ALGOS['drqn'].__name__, HYPERPARAMS_SAMPLER['drqn'].__name__, "
        "'FlickeringPongNoFrameskip-v4' in gym.envs.registry, "
        "any(getattr(f, '_sb3_drqn_zoo_hook', False) for f in sys.meta_path))"
    )
    assert run(["-c", code], tmp_path).split() == ["RecurrentDQN", "sample_drqn_params", "True", "False"]


@needs_hook
def test_hook_registers_when_sampler_module_is_imported_first(tmp_path):
    # sb3_drqn.zoo.hyperparams_opt is importable on its own, before rl_zoo3; the hook then registers on the
    # zoo's first import (no partially imported sb3_drqn module in the way)
    code = (
        "from sb3_drqn.zoo.hyperparams_opt import convert_drqn_params; import rl_zoo3; "
        "from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER; "
        "print(rl_zoo3.ALGOS['drqn'].__name__, HYPERPARAMS_CONVERTER['drqn'] is convert_drqn_params)"
    )
    output = run(["-c", code], tmp_path, check=False)
    assert output.split() == ["RecurrentDQN", "True"], output


@needs_hook
def test_hook_opt_out(tmp_path):
    code = (
        "import sys, rl_zoo3; print('drqn' in rl_zoo3.ALGOS, "
        "any(getattr(f, '_sb3_drqn_zoo_hook', False) for f in sys.meta_path))"
    )
    assert run(["-c", code], tmp_path, **{DISABLE_ENV_VAR: "1"}).split() == ["False", "False"]
    output = run(train_args("CartPoleNoVel-v1", 100), tmp_path, check=False, **{DISABLE_ENV_VAR: "1"})
    assert "invalid choice: 'drqn'" in output
    # Scripts register explicitly
    script = tmp_path / "train_drqn.py"
    script.write_text("from sb3_drqn.zoo import register\n\nregister()\n\nfrom rl_zoo3.train import train\n\ntrain()\n")
    run([str(script), *train_args("CartPoleNoVel-v1", 100, *TINY)[2:]], tmp_path, **{DISABLE_ENV_VAR: "1"})
    assert (tmp_path / "logs" / "drqn" / "CartPoleNoVel-v1_1" / "CartPoleNoVel-v1.zip").is_file()


# hyperparams/drqn.yml


def drqn_yml() -> dict:
    with open(hyperparams_path()) as file:
        return yaml.safe_load(file)


def test_drqn_yml_entries():
    hyperparams = drqn_yml()
    for env_id in (
        "atari",
        "default",
        "CartPoleNoVel-v1",
        "MountainCarNoVel-v0",
        "LunarLanderNoVel-v3",
        "CartPole-v1",
        "Acrobot-v1",
    ):
        assert env_id in hyperparams
    # Single frame on Atari: the recurrent layer replaces frame stacking
    for env_id, entry in hyperparams.items():
        assert entry.get("frame_stack", 1) == 1, env_id
    atari_wrapper = "stable_baselines3.common.atari_wrappers.AtariWrapper"
    assert hyperparams["atari"]["env_wrapper"] == [atari_wrapper]
    assert hyperparams["atari"]["policy"] == "CnnLstmPolicy"
    flickering = [env_id for env_id in hyperparams if env_id.startswith("Flickering")]
    assert "FlickeringPongNoFrameskip-v4" in flickering
    for env_id in flickering:
        wrappers = hyperparams[env_id]["env_wrapper"]
        # FlickeringWrapper after AtariWrapper
        assert wrappers[0] == atari_wrapper
        assert wrappers[1] == {"sb3_drqn.common.wrappers.FlickeringWrapper": {"flicker_prob": 0.5}}
        assert env_id in gym.envs.registry and ExperimentManager.is_atari(env_id)


def yml_env_ids() -> list[str]:
    # Env ids that pick each entry: the `atari` entry through an Atari game, `default` through an unlisted env
    return [{"atari": "PongNoFrameskip-v4", "default": "MountainCar-v0"}.get(key, key) for key in drqn_yml()]


@pytest.mark.parametrize("env_id", yml_env_ids())
def test_drqn_yml_entry_builds_model(env_id, tmp_path):
    register()
    if ExperimentManager.is_atari(env_id):
        pytest.importorskip("cv2")
    manager = ExperimentManager(argparse.Namespace(), "drqn", env_id, str(tmp_path), verbose=0, seed=0)
    output = manager.setup_experiment()
    assert output is not None
    model, saved_hyperparams = output
    try:
        assert isinstance(model, RecurrentDQN)
        assert isinstance(model.policy, RecurrentDQN.policy_aliases[saved_hyperparams["policy"]])
        if env_id.startswith("Flickering"):
            assert model.get_env().env_is_wrapped(FlickeringWrapper) == [True]  # type: ignore[union-attr]
        # One step of acting
        obs = model.get_env().reset()  # type: ignore[union-attr]
        model.predict(obs, episode_start=np.ones(model.n_envs, dtype=bool))
    finally:
        model.get_env().close()  # type: ignore[union-attr]


# Sampler and converter


def test_sampler_and_converter():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    keys_seen = set()
    for _ in range(5):
        trial = study.ask()
        hyperparams = sample_drqn_params(trial, 0, 1, {"using_her_replay_buffer": False})
        # The converter maps the stored parameters to the same arguments (the zoo's --trial-id path)
        assert convert_drqn_params(trial.params) == hyperparams
        policy_kwargs = hyperparams["policy_kwargs"]
        assert {"net_arch", "lstm_hidden_size", "rnn_type", "dueling"} <= set(policy_kwargs)
        for key in (
            *("sequence_length", "burn_in", "recurrent_init", "gamma", "batch_size", "train_freq", "gradient_steps"),
            *("n_steps", "prioritized_replay", "value_rescaling"),
        ):
            assert key in hyperparams
        # The derived settings are recorded with the trial
        assert {key: trial.user_attrs[key] for key in ("batch_size", "burn_in", "train_freq")} == {
            key: hyperparams[key] for key in ("batch_size", "burn_in", "train_freq")
        }
        keys_seen |= set(hyperparams)
        model = RecurrentDQN("MlpLstmPolicy", "CartPole-v1", buffer_size=500, learning_starts=10, **hyperparams)
        model.learn(40)
        study.tell(trial, 0.0)
    assert not keys_seen & {"one_minus_gamma", "learning_steps", "replay_ratio", "burn_in_fraction"}


def test_sampler_bounds_the_cost_per_env_step():
    """Over many draws: learning steps per update, replay ratio and updates per env step stay in their ranges."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set] = {"learning_steps": set(), "replay_ratio": set(), "updates_interval": set(), "burn_in": set()}
    for _ in range(1000):
        hyperparams = sample_drqn_params(study.ask(), 2, 1, {"using_her_replay_buffer": False})
        batch_size, sequence_length = hyperparams["batch_size"], hyperparams["sequence_length"]
        train_freq, gradient_steps = hyperparams["train_freq"], hyperparams["gradient_steps"]
        learning_steps = batch_size * sequence_length
        replay_ratio = learning_steps * gradient_steps / train_freq
        assert all(isinstance(value, int) for value in (batch_size, sequence_length, train_freq, gradient_steps))
        assert 512 <= learning_steps <= 1024 and 8 <= sequence_length <= 32 and batch_size >= 16
        assert 64 <= replay_ratio <= 256
        # Every trial learns: one update every 2 to 16 env steps
        assert gradient_steps == 1 and 2 <= train_freq <= 16
        assert 0 <= hyperparams["burn_in"] <= sequence_length and 1 <= hyperparams["n_steps"] <= 5
        policy_kwargs = hyperparams["policy_kwargs"]
        assert 32 <= policy_kwargs["lstm_hidden_size"] <= 128
        assert 1 <= len(policy_kwargs["net_arch"]) <= 2 and max(policy_kwargs["net_arch"]) <= 128
        seen["learning_steps"].add(learning_steps)
        seen["replay_ratio"].add(replay_ratio)
        seen["updates_interval"].add(train_freq)
        seen["burn_in"].add(hyperparams["burn_in"] / sequence_length)
    # The bounds are reached
    assert {min(seen["learning_steps"]), max(seen["learning_steps"])} == {512, 1024}
    assert {min(seen["replay_ratio"]), max(seen["replay_ratio"])} == {64, 256}
    assert {min(seen["updates_interval"]), max(seen["updates_interval"])} == {2, 16}
    assert seen["burn_in"] == {0.0, 0.5, 1.0}


def test_converter_reads_the_earlier_samplers_trials():
    """Studies made with the sampler before bounded costs (factors sampled one by one) still convert."""
    params = dict(
        one_minus_gamma=0.005, batch_size_pow=6, learning_rate=5e-4, train_freq=4, subsample_steps=4,
        exploration_final_eps=0.01, exploration_fraction=0.1, target_update_interval=1000, net_arch="small",
        sequence_length=8, burn_in=8, recurrent_init="stored", lstm_hidden_size=64, rnn_type="lstm", n_steps=5,
        prioritized_replay=False, value_rescaling=False, dueling=False,
    )  # fmt: skip
    hyperparams = convert_drqn_params(params)
    assert hyperparams["batch_size"] == 64 and hyperparams["gradient_steps"] == 1 and hyperparams["burn_in"] == 8
    assert hyperparams["policy_kwargs"] == dict(net_arch=[64, 64], lstm_hidden_size=64, rnn_type="lstm", dueling=False)
    assert hyperparams["gamma"] == pytest.approx(0.995)


# The zoo's commands


def test_train_outputs(trained):
    run_dir = trained / "logs" / "drqn" / "CartPoleNoVel-v1_1"
    for name in ("CartPoleNoVel-v1.zip", "best_model.zip", "rl_model_150_steps.zip", "replay_buffer.pkl", "evaluations.npz"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "CartPoleNoVel-v1" / "vecnormalize.pkl").is_file()
    assert any((trained / "tb").rglob("events.out.tfevents*"))
    config = yaml.load((run_dir / "CartPoleNoVel-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert dict(config)["sequence_length"] == drqn_yml()["CartPoleNoVel-v1"]["sequence_length"]
    model = RecurrentDQN.load(run_dir / "CartPoleNoVel-v1.zip")
    assert model.num_timesteps == 300


def test_continue_training_with_replay_buffer(trained):
    run_dir = trained / "logs" / "drqn" / "CartPoleNoVel-v1_1"
    output = run(train_args("CartPoleNoVel-v1", 100, "-i", str(run_dir / "CartPoleNoVel-v1.zip"), *TINY), trained)
    assert "Loading replay buffer" in output
    model = RecurrentDQN.load(trained / "logs" / "drqn" / "CartPoleNoVel-v1_2" / "CartPoleNoVel-v1.zip")
    # The zoo restarts its counters: the second run did its 100 steps with the first run's replay buffer
    assert model.num_timesteps == 100


def test_enjoy(trained):
    args = ["-m", "rl_zoo3.enjoy", "--algo", "drqn", "--env", "CartPoleNoVel-v1", "-f", "logs", "--exp-id", "1"]
    output = run([*args, "--no-render", "-n", "300", "--num-threads", "1"], trained)
    assert "Mean reward" in output or "Episode Reward" in output


@pytest.mark.slow
def test_rl_zoo3_cli_and_plots(tmp_path):
    cli = shutil.which("rl_zoo3", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("no rl_zoo3 console script next to this Python")
    args = train_args("CartPoleNoVel-v1", 200, "--eval-freq", "100", "--eval-episodes", "2", *TINY)[2:]
    result = subprocess.run(
        [cli, "train", *args], cwd=tmp_path, env=zoo_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert (tmp_path / "logs" / "drqn" / "CartPoleNoVel-v1_1" / "CartPoleNoVel-v1.zip").is_file()
    run(["-m", "rl_zoo3.plots.plot_train", "-a", "drqn", "-e", "CartPoleNoVel-v1", "-f", "logs"], tmp_path)
    output = run(
        ["-m", "rl_zoo3.plots.all_plots", "-a", "drqn", "-e", "CartPoleNoVel-v1", "-f", "logs", "--no-display", "-o", "plots"],
        tmp_path,
    )
    assert "CartPoleNoVel-v1" in output and (tmp_path / "plots.pkl").is_file()


@pytest.mark.slow
def test_record_video(trained):
    pytest.importorskip("moviepy")
    pytest.importorskip("pygame")
    args = ["-m", "rl_zoo3.record_video", "--algo", "drqn", "--env", "CartPoleNoVel-v1", "-f", "logs", "--exp-id", "1"]
    run([*args, "-n", "60", "-o", "videos"], trained)
    assert list((trained / "videos").glob("*.mp4"))


@pytest.mark.slow
def test_subproc_vec_env(tmp_path):
    run(train_args("CartPole-v1", 200, "--vec-env", "subproc", *TINY, "n_envs:2"), tmp_path)
    model = RecurrentDQN.load(tmp_path / "logs" / "drqn" / "CartPole-v1_1" / "CartPole-v1.zip")
    assert model.n_envs == 2


@pytest.mark.slow
def test_optimize_with_shared_journal_storage(tmp_path):
    """Two worker processes share one Optuna study through a journal file; each runs one trial."""
    args = train_args(
        "CartPoleNoVel-v1",
        150,
        "-optimize",
        "--n-trials",
        "1",
        "--sampler",
        "tpe",
        "--pruner",
        "median",
        "--n-evaluations",
        "1",
        "--eval-episodes",
        "2",
        "--storage",
        "study.log",
        "--study-name",
        "drqn-test",
        "--no-optim-plots",
        "-params",
        "learning_starts:50",
    )
    workers = [
        subprocess.Popen(
            [sys.executable, *args], cwd=tmp_path, env=zoo_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-6000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.load_study(study_name="drqn-test", storage=storage)
    assert len(study.trials) == 2
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
    for trial in study.trials:
        assert {"sequence_length", "burn_in_fraction", "lstm_hidden_size", "rnn_type", "learning_rate"} <= set(trial.params)
    # Report written at the end of -optimize (needs pandas)
    assert list((tmp_path / "logs" / "drqn").glob("report_CartPoleNoVel-v1_*.csv"))
    # Training from a stored trial (the zoo converts its parameters)
    # (not trial 0: the zoo ignores `--trial-id 0`, it tests the id's truth value)
    trial = study.trials[1]
    args = train_args(
        "CartPoleNoVel-v1", 100, "--storage", "study.log", "--study-name", "drqn-test", "--trial-id", str(trial.number)
    )
    run([*args, "-f", "trial_logs"], tmp_path)
    config_path = tmp_path / "trial_logs" / "drqn" / "CartPoleNoVel-v1_1" / "CartPoleNoVel-v1" / "config.yml"
    config = dict(yaml.load(config_path.read_text(), Loader=yaml.UnsafeLoader))
    # Saved as the string the zoo evaluates
    assert f"'lstm_hidden_size': {trial.params['lstm_hidden_size']}" in str(config["policy_kwargs"])
    assert config["sequence_length"] == trial.params["sequence_length"]


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["PongNoFrameskip-v4", "FlickeringPongNoFrameskip-v4"])
def test_atari(env_id, tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    extra = ["--env-kwargs", "max_num_frames_per_episode:400", "--eval-freq", "-1", "-params", *TINY_ATARI]
    run(train_args(env_id, 60, *extra, "policy_kwargs:dict(lstm_hidden_size=16)"), tmp_path)
    run_dir = tmp_path / "logs" / "drqn" / f"{env_id}_1"
    config = dict(yaml.load((run_dir / env_id / "config.yml").read_text(), Loader=yaml.UnsafeLoader))
    assert config["policy"] == "CnnLstmPolicy" and "frame_stack" not in config
    assert ("FlickeringWrapper" in str(config["env_wrapper"])) == env_id.startswith("Flickering")
    args = ["-m", "rl_zoo3.enjoy", "--algo", "drqn", "--env", env_id, "-f", "logs", "--no-render", "-n", "40"]
    run([*args, "--num-threads", "1", "--env-kwargs", "max_num_frames_per_episode:400"], tmp_path)
