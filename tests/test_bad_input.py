"""
The bad-input matrix: every input RecurrentDQN cannot use raises a clear error naming the problem, before
anything changes, and a model that was already there stays usable (same parameters, same buffer, learns on).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv

SMALL = dict(learning_starts=20, buffer_size=200, batch_size=4, sequence_length=4, burn_in=2, train_freq=2, seed=0)
POLICY_KWARGS = dict(lstm_hidden_size=8)


class SpaceEnv(gym.Env):
    """An env with the given spaces, random observations and no reward."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space | None = None):
        self.observation_space = observation_space
        self.action_space = spaces.Discrete(2) if action_space is None else action_space

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def image_space(shape, dtype=np.uint8, high=255):
    return spaces.Box(0, high, shape, dtype)


# (policy, env factory, message): construction raises ValueError matching the message
BAD_SPACES = {
    "Box actions": ("MlpLstmPolicy", lambda: gym.make("Pendulum-v1"), "Discrete action spaces"),
    "MultiDiscrete actions": (
        "MlpLstmPolicy",
        lambda: SpaceEnv(spaces.Box(0, 1, (3,)), spaces.MultiDiscrete([2, 3])),
        "Discrete action spaces",
    ),
    "MultiBinary actions": (
        "MlpLstmPolicy",
        lambda: SpaceEnv(spaces.Box(0, 1, (3,)), spaces.MultiBinary(2)),
        "Discrete action spaces",
    ),
    "Tuple observations": (
        "MlpLstmPolicy",
        lambda: SpaceEnv(spaces.Tuple((spaces.Box(0, 1, (3,)), spaces.Discrete(2)))),
        "observation space Tuple.*not supported",
    ),
    "Text observations": ("MlpLstmPolicy", lambda: SpaceEnv(spaces.Text(5)), "observation space Text.*not supported"),
    "Sequence observations": (
        "MlpLstmPolicy",
        lambda: SpaceEnv(spaces.Sequence(spaces.Box(0, 1, (3,)))),
        "observation space Sequence.*not supported",
    ),
    "Dict entry not supported": (
        "MultiInputLstmPolicy",
        lambda: SpaceEnv(spaces.Dict({"a": spaces.Box(0, 1, (3,)), "b": spaces.Tuple((spaces.Discrete(2),))})),
        "entry 'b' is a Tuple space",
    ),
    "Dict observations with MlpLstmPolicy": (
        "MlpLstmPolicy",
        lambda: SpaceEnv(spaces.Dict({"a": spaces.Box(0, 1, (3,))})),
        "MlpLstmPolicy cannot handle the Dict observation space.*MultiInputLstmPolicy",
    ),
    "Dict observations with CnnLstmPolicy": (
        "CnnLstmPolicy",
        lambda: SpaceEnv(spaces.Dict({"a": image_space((1, 36, 36))})),
        "CnnLstmPolicy cannot handle the Dict observation space",
    ),
    "Box observations with MultiInputLstmPolicy": (
        "MultiInputLstmPolicy",
        lambda: SpaceEnv(spaces.Box(0, 1, (3,))),
        "MultiInputLstmPolicy needs a Dict observation space",
    ),
    "vector observations with CnnLstmPolicy": (
        "CnnLstmPolicy",
        lambda: SpaceEnv(spaces.Box(0, 1, (4,))),
        "CnnLstmPolicy could not build its features extractor.*only with images",
    ),
    "float image with CnnLstmPolicy": (
        "CnnLstmPolicy",
        lambda: SpaceEnv(image_space((1, 36, 36), np.float32, 1.0)),
        "CnnLstmPolicy could not build its features extractor.*only with images",
    ),
    "image too small for the CNN": (
        "CnnLstmPolicy",
        lambda: SpaceEnv(image_space((1, 16, 16))),
        "could not build its features extractor.*Kernel size",
    ),
    "image with a wrong layout (channels in the middle)": (
        "CnnLstmPolicy",
        lambda: SpaceEnv(image_space((36, 5, 36))),
        "could not build its features extractor",
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_bad_spaces_raise_at_construction(case):
    policy, make_env, message = BAD_SPACES[case]
    with pytest.raises(ValueError, match=message):
        RecurrentDQN(policy, make_env(), **{**SMALL, "policy_kwargs": dict(lstm_hidden_size=8)})


# Each invalid hyper-parameter: (kwargs, the argument the message must name)
BAD_HYPERPARAMETERS = [
    (dict(sequence_length=0), "sequence_length"),
    (dict(sequence_length=2.5), "sequence_length"),
    (dict(burn_in=-1), "burn_in"),
    (dict(burn_in=None), "burn_in"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=True), "batch_size"),
    (dict(recurrent_init="random"), "recurrent_init"),
    (dict(n_steps=0), "n_steps"),
    (dict(optimize_memory_usage=True), "optimize_memory_usage"),
    (dict(buffer_size=0), "buffer_size"),
    (dict(buffer_size=10, sequence_length=10), "buffer_size"),
    (dict(buffer_size=16, sequence_length=8, burn_in=8), "buffer_size"),
    (dict(gamma=1.5), "gamma"),
    (dict(gamma=float("nan")), "gamma"),
    (dict(tau=0.0), "tau"),
    (dict(target_update_interval=0), "target_update_interval"),
    (dict(exploration_fraction=2.0), "exploration_fraction"),
    (dict(exploration_initial_eps=1.5), "exploration_initial_eps"),
    (dict(exploration_final_eps=-0.1), "exploration_final_eps"),
    (dict(replay_buffer_class=dict), "replay_buffer_class"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-1e-3), "learning_rate"),
    (dict(learning_rate="fast"), "learning_rate"),
    (dict(learning_starts=-1), "learning_starts"),
    (dict(gradient_steps=-2), "gradient_steps"),
    (dict(train_freq=0), "train_freq"),
    (dict(train_freq=(4, "epoch")), "train_freq"),
    (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(stats_window_size=0), "stats_window_size"),
    (dict(policy_kwargs=dict(rnn_type="rnn")), "rnn_type"),
    (dict(policy_kwargs=dict(lstm_hidden_size=0)), "lstm_hidden_size"),
    (dict(policy_kwargs=dict(n_lstm_layers=0)), "n_lstm_layers"),
    (dict(policy_kwargs=dict(net_arch=[64, 0])), "net_arch"),
]


@pytest.mark.parametrize(
    "kwargs,name",
    BAD_HYPERPARAMETERS,
    ids=[",".join(f"{key}={value!r}" for key, value in k.items()) for k, _ in BAD_HYPERPARAMETERS],
)
def test_invalid_hyperparameters_raise_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RecurrentDQN("MlpLstmPolicy", "CartPole-v1", **kwargs)


def test_unknown_policy_and_too_many_envs_for_the_buffer():
    with pytest.raises(ValueError, match="Policy LstmPolicy unknown"):
        RecurrentDQN("LstmPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match=r"buffer_size=40 is too small.*n_envs=4"):
        RecurrentDQN("MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=4), buffer_size=40, sequence_length=10)


# Errors on an existing model: it must stay as it was and keep learning


class NonFiniteAt(gym.Wrapper):
    """Returns a NaN reward or an infinite observation at the given step."""

    def __init__(self, env: gym.Env, step: int, what: str):
        super().__init__(env)
        self.bad_step, self.what, self.count = step, what, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        if self.count == self.bad_step:
            if self.what == "reward":
                reward = np.nan
            else:
                obs = np.full_like(obs, np.inf)
        return obs, reward, terminated, truncated, info


def make_model(env=None) -> RecurrentDQN:
    return RecurrentDQN("MlpLstmPolicy", CueMemoryEnv() if env is None else env, policy_kwargs=POLICY_KWARGS, **SMALL)


def snapshot(model: RecurrentDQN) -> dict:
    buffer = model.replay_buffer
    return dict(
        params=[p.detach().clone() for p in model.policy.parameters()],
        buffer=buffer,
        pos=buffer.pos,
        full=buffer.full,
        observations=buffer.observations.copy(),
        num_timesteps=model.num_timesteps,
        n_updates=model._n_updates,
        state=[c.copy() for c in model._last_recurrent_state],
        env=model.env,
    )


def assert_unchanged_and_usable(model: RecurrentDQN, before: dict) -> None:
    assert all(th.equal(a, b) for a, b in zip(before["params"], model.policy.parameters(), strict=True))
    assert model.replay_buffer is before["buffer"]
    assert (model.replay_buffer.pos, model.replay_buffer.full) == (before["pos"], before["full"])
    assert np.array_equal(model.replay_buffer.observations, before["observations"])
    assert (model.num_timesteps, model._n_updates) == (before["num_timesteps"], before["n_updates"])
    assert all(np.array_equal(a, b) for a, b in zip(before["state"], model._last_recurrent_state, strict=True))
    assert model.env is before["env"]
    model.learn(20, reset_num_timesteps=False)
    assert model.num_timesteps == before["num_timesteps"] + 20 and model._n_updates > before["n_updates"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Files that must be refused: model zips and replay buffers."""
    path = tmp_path_factory.mktemp("bad_files")
    model = make_model()
    model.learn(60)
    model.save(path / "good.zip")
    model.save_replay_buffer(path / "good.pkl")
    for name in ("good.zip", "good.pkl"):
        data = (path / name).read_bytes()
        (path / f"truncated_{name}").write_bytes(data[: len(data) // 3])
        # Same length, bytes flipped in the middle
        middle = len(data) // 2
        (path / f"corrupted_{name}").write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        )
    (path / "garbage.bin").write_bytes(b"not a zip nor a pickle")
    dqn = DQN("MlpPolicy", CueMemoryEnv(), buffer_size=100, learning_starts=10)
    dqn.learn(20)
    dqn.save(path / "dqn.zip")
    dqn.save_replay_buffer(path / "dqn.pkl")
    other = RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(), policy_kwargs=dict(lstm_hidden_size=4), **SMALL)
    other.save_replay_buffer(path / "other_state_shape.pkl")
    other = RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(n_cues=3), policy_kwargs=POLICY_KWARGS, **SMALL)
    other.save_replay_buffer(path / "other_observation_space.pkl")
    other = RecurrentDQN("MlpLstmPolicy", make_vec_env(CueMemoryEnv, n_envs=2), policy_kwargs=POLICY_KWARGS, **SMALL)
    other.save_replay_buffer(path / "other_n_envs.pkl")
    return path


# Errors raised by RecurrentDQN.load: (file, env, message)
BAD_LOADS = {
    "env with another observation space": ("good.zip", lambda: CueMemoryEnv(n_cues=3), "Observation spaces do not match"),
    "env with another observation shape": ("good.zip", lambda: gym.make("CartPole-v1"), "Observation spaces do not match"),
    "env with another action space": (
        "good.zip",
        lambda: SpaceEnv(CueMemoryEnv().observation_space, spaces.Discrete(3)),
        "Action spaces do not match",
    ),
    "truncated model file": ("truncated_good.zip", None, "wasn't a zip-file|Could not"),
    "corrupted model file": ("corrupted_good.zip", None, "wasn't a zip-file|Could not|Bad CRC|corrupt|Error"),
    "not a model file": ("garbage.bin", None, "wasn't a zip-file"),
    "a DQN model": ("dqn.zip", None, "policy must be a RecurrentDQNPolicy"),
}


@pytest.mark.parametrize("case", list(BAD_LOADS))
def test_bad_loads_raise(bad_files, case):
    name, make_env, message = BAD_LOADS[case]
    with pytest.raises((ValueError, KeyError, RuntimeError), match=message) as error:
        RecurrentDQN.load(bad_files / name, env=None if make_env is None else make_env())
    # zip and pickle errors must reach the user wrapped in an error that says what failed
    assert error.type is not KeyError or "observation_space" in str(error.value)


# Errors on an existing model: (action, message)
BAD_CALLS = {
    "load_replay_buffer: truncated file": (lambda m, p: m.load_replay_buffer(p / "truncated_good.pkl"), "Could not read"),
    "load_replay_buffer: corrupted file": (lambda m, p: m.load_replay_buffer(p / "corrupted_good.pkl"), "Could not read"),
    "load_replay_buffer: not a pickle": (lambda m, p: m.load_replay_buffer(p / "garbage.bin"), "Could not read"),
    "load_replay_buffer: a model zip": (lambda m, p: m.load_replay_buffer(p / "good.zip"), "Could not read"),
    "load_replay_buffer: a pickle file": (lambda m, p: m.load_replay_buffer(p / "dqn.pkl"), "pickle file.*allow_pickle"),
    "load_replay_buffer: DQN's buffer": (
        lambda m, p: m.load_replay_buffer(p / "dqn.pkl", allow_pickle=True),
        "not a RecurrentReplayBuffer",
    ),
    "load_replay_buffer: other state shape": (
        lambda m, p: m.load_replay_buffer(p / "other_state_shape.pkl"),
        "recurrent_state_shape",
    ),
    "load_replay_buffer: other observation space": (
        lambda m, p: m.load_replay_buffer(p / "other_observation_space.pkl"),
        "observation_space",
    ),
    "load_replay_buffer: other n_envs": (lambda m, p: m.load_replay_buffer(p / "other_n_envs.pkl"), "n_envs 2 != 1"),
    "predict: state for another number of envs": (
        lambda m, p: m.predict(np.eye(2, 3, dtype=np.float32), state=(np.zeros((1, 3, 8), np.float32),) * 2),
        "state must be a tuple of 2",
    ),
    "predict: state with one component (GRU state for an LSTM)": (
        lambda m, p: m.predict(np.eye(2, 3, dtype=np.float32), state=(np.zeros((1, 2, 8), np.float32),)),
        "state must be a tuple of 2",
    ),
    "predict: state with another hidden size": (
        lambda m, p: m.predict(np.eye(2, 3, dtype=np.float32), state=(np.zeros((1, 2, 5), np.float32),) * 2),
        "state must be a tuple of 2",
    ),
    "predict: episode_start of the wrong length": (
        lambda m, p: m.predict(np.eye(2, 3, dtype=np.float32), episode_start=np.zeros(3, dtype=bool)),
        "episode_start has 3 entries",
    ),
    "predict: observation of the wrong shape": (
        lambda m, p: m.predict(np.zeros((2, 5), dtype=np.float32)),
        "Unexpected observation shape",
    ),
    "set_env: another observation space": (
        lambda m, p: m.set_env(DummyVecEnv([lambda: CueMemoryEnv(n_cues=3)])),
        "Observation spaces do not match",
    ),
    "set_env: another number of envs": (lambda m, p: m.set_env(make_vec_env(CueMemoryEnv, n_envs=2)), "n_envs"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_calls_raise_and_leave_the_model_usable(bad_files, case):
    action, message = BAD_CALLS[case]
    model = make_model()
    model.learn(60)
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        action(model, bad_files)
    assert_unchanged_and_usable(model, before)


@pytest.mark.parametrize("what,message", [("reward", "Non-finite reward"), ("obs", "Non-finite observation")])
def test_non_finite_data_is_refused_and_the_model_stays_usable(what, message, tmp_path):
    model = make_model(NonFiniteAt(CueMemoryEnv(), step=50, what=what))
    with pytest.raises(ValueError, match=message):
        model.learn(100)
    # Nothing bad was stored or trained on: a bad reward is refused with its step (the 50th), a bad observation
    # when it would be stored, as the current observation of the next step (the one after it has no successor)
    stored = model.replay_buffer.size()
    assert stored == (49 if what == "reward" else 50)
    assert np.all(np.isfinite(model.replay_buffer.rewards[:stored]))
    assert np.all(np.isfinite(model.replay_buffer.observations[:stored]))
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    # It can be saved, and learns on with a healthy env
    model.save(tmp_path / "model.zip")
    model.set_env(DummyVecEnv([CueMemoryEnv]))
    model.learn(40, reset_num_timesteps=False)
    assert model.replay_buffer.size() == stored + 40 and all(th.isfinite(p).all() for p in model.policy.parameters())
