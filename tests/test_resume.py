"""Crash safety: an interrupted run can be saved, and a resumed run continues the same training."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv

KWARGS = dict(
    learning_starts=40,
    buffer_size=400,  # wraps around during the run
    batch_size=6,
    sequence_length=4,
    burn_in=3,
    train_freq=3,
    gradient_steps=2,
    target_update_interval=50,
    exploration_fraction=0.8,
    n_steps=2,
    policy_kwargs=dict(lstm_hidden_size=8),
    seed=1,
)
BUFFER_ARRAYS = ("observations", "actions", "rewards", "dones", "timeouts", "episode_steps", "recurrent_states")


def make_env():
    return make_vec_env(CueMemoryEnv, n_envs=2, seed=5)


def parameters(model):
    return [p.detach().clone() for p in model.policy.state_dict().values()]


def counters(model):
    return dict(
        num_timesteps=model.num_timesteps,
        n_updates=model._n_updates,
        n_calls=model._n_calls,
        episode_num=model._episode_num,
        exploration_rate=model.exploration_rate,
        progress=model._current_progress_remaining,
    )


class StopAt(BaseCallback):
    def __init__(self, step, exception):
        super().__init__()
        self.stop_step, self.exception = step, exception

    def _on_step(self):
        if self.num_timesteps == self.stop_step:
            raise self.exception
        return True


def test_resumed_run_continues_the_same_training(tmp_path):
    model = RecurrentDQN("MlpLstmPolicy", make_env(), **KWARGS)
    model.learn(500)  # the buffer (200 steps per env) has wrapped
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")

    # The uninterrupted run: its next gradient steps, then more training
    model.train(gradient_steps=5, batch_size=KWARGS["batch_size"])
    uninterrupted_params = parameters(model)
    np.random.seed(123)  # whatever the process did in between must not matter

    resumed = RecurrentDQN.load(tmp_path / "model.zip", env=make_env())
    resumed.load_replay_buffer(tmp_path / "buffer.pkl")
    buffer, original = resumed.replay_buffer, model.replay_buffer
    assert (buffer.pos, buffer.full) == (original.pos, original.full) and buffer.full
    for name in BUFFER_ARRAYS:
        assert np.array_equal(getattr(buffer, name), getattr(original, name)), name
    assert counters(resumed) == {**counters(model), "n_updates": model._n_updates - 5}
    resumed.set_logger(configure(None, []))  # train() outside learn() needs one
    resumed.train(gradient_steps=5, batch_size=KWARGS["batch_size"])
    # Same batches, same optimizer state (Adam's moments), same target network: the same parameters
    assert all(th.equal(a, b) for a, b in zip(uninterrupted_params, parameters(resumed), strict=True))

    # Training goes on from the same point of the schedules (the envs restart: their state is not saved)
    model.learn(300, reset_num_timesteps=False)
    resumed.learn(300, reset_num_timesteps=False)
    assert counters(resumed) == counters(model)
    assert resumed.num_timesteps >= 800 and resumed.exploration_rate == model.exploration_rate
    assert resumed.learning_rate == model.learning_rate


def test_load_restores_the_random_generators_unless_given_a_seed(tmp_path):
    model = RecurrentDQN("MlpLstmPolicy", make_env(), **KWARGS)
    model.learn(100)
    model.save(tmp_path / "model.zip")
    after_save = (np.random.rand(3), th.rand(3), [model.action_space.sample() for _ in range(8)])
    loaded = RecurrentDQN.load(tmp_path / "model.zip")
    after_load = (np.random.rand(3), th.rand(3), [loaded.action_space.sample() for _ in range(8)])
    assert np.array_equal(after_save[0], after_load[0]) and th.equal(after_save[1], after_load[1])
    assert after_save[2] == after_load[2]
    # A seed given to load wins
    draws = []
    for _ in range(2):
        RecurrentDQN.load(tmp_path / "model.zip", seed=7)
        draws.append(np.random.rand(3))
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], after_save[0])


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), RuntimeError("simulator crashed")])
def test_interrupted_learn_can_be_saved_and_resumed(tmp_path, exception):
    model = RecurrentDQN("MlpLstmPolicy", make_env(), **KWARGS)
    with pytest.raises(type(exception)):
        model.learn(1000, callback=StopAt(300, exception))
    # Interrupted after the env step that reached timestep 300 (150 steps of 2 envs), before it was stored
    assert model.num_timesteps == 300 and model.replay_buffer.size() == 149
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    # Resuming in the same process...
    model.learn(100, reset_num_timesteps=False)
    assert model.num_timesteps >= 400  # train_freq=3 steps of 2 envs: it stops at a multiple of 6
    # ...or from the files
    resumed = RecurrentDQN.load(tmp_path / "model.zip", env=make_env())
    resumed.load_replay_buffer(tmp_path / "buffer.pkl")
    updates = resumed._n_updates
    resumed.learn(100, reset_num_timesteps=False)
    assert resumed.num_timesteps == model.num_timesteps and resumed._n_updates > updates
    obs = resumed.env.reset()
    actions, state = resumed.predict(obs, deterministic=True)
    assert actions.shape == (2,) and state[0].shape == (1, 2, 8)
