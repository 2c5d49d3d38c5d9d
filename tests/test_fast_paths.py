"""Shortcuts of the learner and of acting give what the general paths give."""

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv
from sb3_drqn.drqn.policies import native_cpu_rnn


class BoxObservationEnv(gym.Env):
    """Observations drawn from any Box, two actions, episodes of 5 steps (only the spaces matter)."""

    def __init__(self, observation_space: spaces.Box) -> None:
        self.observation_space, self.action_space = observation_space, spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), 0.0, False, self.t >= 5, {}


def trained_model(rnn_type: str, **kwargs) -> RecurrentDQN:
    model = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(n_cues=3, delay=6),
        learning_starts=50,
        buffer_size=2000,
        batch_size=8,
        sequence_length=4,
        train_freq=4,
        policy_kwargs=dict(lstm_hidden_size=8, rnn_type=rnn_type),
        seed=0,
        **kwargs,
    )
    return model.learn(600)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
@pytest.mark.parametrize("stride", [1, 3])
def test_one_call_window_q_values_equal_the_general_path(rnn_type, stride):
    model = trained_model(rnn_type, burn_in=4, replay_buffer_kwargs=dict(state_stride=stride))
    buffer, q_net = model.replay_buffer, model.q_net_target
    offsets, envs = buffer.valid_window_starts()
    windows = buffer.windows(offsets, envs)
    lengths = windows.burn_in_lengths
    # Windows of every kind: full burn-in, clipped at the episode start (or extended back to a stored state), none
    assert (
        bool((lengths == 0).any()) and bool((lengths == lengths.max()).any()) and bool(((lengths > 0) & (lengths < 4)).any())
    )
    state = windows.recurrent_states
    # One call for the mixed batch where holding the state before a right-aligned burn-in is exact: a GRU always, an
    # LSTM where the short windows start from a zero state (clipped at an episode start; with a stride, windows
    # extended back to a stored state start from that state, so the LSTM makes two calls there)
    short = lengths < buffer.max_burn_in
    starts_at_zero = all(bool((component[:, short] == 0).all()) for component in state)
    assert starts_at_zero == (stride == 1)
    assert q_net._can_hold_before(short.numpy(), state) == (rnn_type == "gru" or stride == 1)
    calls = []
    right_aligned = q_net._right_aligned_q_values
    q_net._right_aligned_q_values = lambda *args: calls.append(1) or right_aligned(*args)
    with th.no_grad():
        general = q_net.window_q_values(windows, state)
        mixed = q_net.window_q_values(windows, state, one_call=True)
    del q_net._right_aligned_q_values
    assert len(calls) == (1 if rnn_type == "gru" or stride == 1 else 0)
    with th.no_grad():
        full = lengths == buffer.max_burn_in
        full_windows = buffer.windows(offsets[full.numpy()], envs[full.numpy()])
        plain = q_net.window_q_values(full_windows, full_windows.recurrent_states, one_call=True)
    th.testing.assert_close(mixed, general, rtol=1e-5, atol=1e-6)
    th.testing.assert_close(plain, general[:, full], rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError, match="no gradient"):
        q_net.window_q_values(windows, state, one_call=True)


def test_acting_path_equals_predict():
    model = trained_model("lstm", burn_in=2)
    obs = np.random.default_rng(0).random((1, *model.observation_space.shape)).astype(np.float32)
    state = tuple(np.random.default_rng(1).standard_normal((1, 1, 8)).astype(np.float32) for _ in range(2))
    actions, next_state = model.policy.predict(obs, state)
    fast_actions, fast_state = model.policy._act(th.as_tensor(obs), tuple(th.as_tensor(c) for c in state))
    assert np.array_equal(actions, fast_actions)
    for a, b in zip(next_state, fast_state, strict=True):
        np.testing.assert_array_equal(a, b)
    # The kernel called directly gives what nn.LSTM gives on the same kernels: oneDNN's over several steps, the
    # native ones for one step
    zeros = model.q_net.initial_state(3)
    for n_steps in (5, 1):
        features = th.randn(n_steps, 3, model.q_net.features_dim)
        with th.no_grad():
            direct, (h, c) = model.q_net._run_rnn(features, zeros)
            with native_cpu_rnn(th.device("cpu"), n_steps):
                module, (h_module, c_module) = model.q_net.rnn(features, zeros)
        assert th.equal(direct, module) and th.equal(h, h_module) and th.equal(c, c_module)


def test_only_one_step_calls_leave_onednn():
    cpu = th.device("cpu")
    with native_cpu_rnn(cpu, 1):
        assert not th._C._get_mkldnn_enabled()
    assert th._C._get_mkldnn_enabled()
    with native_cpu_rnn(cpu, 2):
        assert th._C._get_mkldnn_enabled()


def test_staleness_cost_is_bounded_per_env_step():
    model = trained_model("lstm", burn_in=2)
    calls = []
    measure = model.recurrent_staleness
    model.recurrent_staleness = lambda n_windows=None: calls.append(model.num_timesteps) or measure(n_windows)  # type: ignore[method-assign]
    model.staleness_interval = 500
    # Short episodes and log_interval=1: the logs are written every few steps, the measure at most every 500
    model.learn(2000, log_interval=1, reset_num_timesteps=False)
    assert 1 <= len(calls) <= 2000 // 500 + 1
    assert all(b - a >= 500 for a, b in itertools.pairwise(calls))


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_one_step_calls_equal_the_native_kernels(rnn_type, n_layers):
    # One layer: the cell function; two: the kernel; both bit for bit what nn.LSTM / nn.GRU give natively
    th.manual_seed(0)
    q_net = RecurrentDQN(
        "MlpLstmPolicy", CueMemoryEnv(n_cues=3, delay=2), policy_kwargs=dict(rnn_type=rnn_type, n_lstm_layers=n_layers)
    ).q_net
    features = th.randn(1, 5, q_net.features_dim)
    state = tuple(th.randn(n_layers, 5, q_net.lstm_hidden_size) for _ in range(q_net.n_state_components))
    with th.no_grad(), native_cpu_rnn(th.device("cpu"), 1):
        output, new_state = q_net._run_rnn(features, state)
        expected_output, expected_state = q_net.rnn(features, state if rnn_type == "lstm" else state[0])
    expected_state = expected_state if rnn_type == "lstm" else (expected_state,)
    assert th.equal(output, expected_output)
    assert all(th.equal(a, b) for a, b in zip(new_state, expected_state, strict=True))


def test_rnn_weights_stay_the_modules_parameters(tmp_path):
    model = trained_model("lstm")
    model.save(tmp_path / "model.zip")
    loaded = RecurrentDQN.load(tmp_path / "model.zip", device="cpu")
    for q_net in (model.q_net, model.q_net_target, loaded.q_net, loaded.q_net.to("cpu")):
        by_name = [weight for layer in q_net.rnn.all_weights for weight in layer]
        assert all(a is b for a, b in zip(q_net.rnn_weights, by_name, strict=True))
    for a, b in zip(model.q_net.rnn_weights, loaded.q_net.rnn_weights, strict=True):
        assert th.equal(a, b)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_burn_in_features_of_a_cheap_extractor_take_every_step(rnn_type):
    # SB3's FlattenExtractor has no parameters: the burn-in's missing steps go through it too (cheaper than
    # selecting); the Q-values equal those of the selecting path
    model = trained_model(rnn_type, burn_in=4)
    q_net = model.q_net
    assert q_net.features_extractor_is_cheap
    offsets, envs = model.replay_buffer.valid_window_starts()
    windows = model.replay_buffer.windows(offsets, envs)
    assert bool((windows.burn_in_lengths < 4).any())
    with th.no_grad():
        cheap = q_net.window_q_values(windows, windows.recurrent_states)
        q_net.features_extractor_is_cheap = False
        selected = q_net.window_q_values(windows, windows.recurrent_states)
    th.testing.assert_close(cheap, selected, rtol=1e-5, atol=1e-6)
    # A CNN has parameters: only the burn-in steps that exist go through it
    image_env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    image_model = RecurrentDQN("CnnLstmPolicy", image_env, buffer_size=100, policy_kwargs=dict(lstm_hidden_size=8))
    assert not image_model.q_net.features_extractor_is_cheap


@pytest.mark.parametrize("normalize_features", [False, True])
def test_sequence_features_of_a_flatten_extractor_equal_sb3s(normalize_features):
    # SB3's FlattenExtractor on a Box is taken as one flatten of every step, skipping the module: the features equal
    # SB3's own preprocessing and extractor applied to each step (here a 2-D Box and an image Box, scaled by 255)
    for space in (spaces.Box(-1.0, 1.0, (3, 2)), spaces.Box(0, 255, (1, 36, 36), dtype=np.uint8)):
        env = DummyVecEnv([lambda space=space: BoxObservationEnv(space)])
        # The image Box keeps the flatten extractor (an MLP on pixels) to test the scaling
        policy_kwargs = dict(lstm_hidden_size=8, normalize_features=normalize_features)
        q_net = RecurrentDQN("MlpLstmPolicy", env, buffer_size=100, policy_kwargs=policy_kwargs).q_net
        assert q_net._flatten_box
        obs = th.as_tensor(np.stack([[space.sample() for _ in range(4)] for _ in range(3)]))
        fast = q_net.extract_sequence_features(obs)
        features = BasePolicy.extract_features(q_net, obs.flatten(0, 1), q_net.features_extractor)
        if normalize_features:
            features = q_net.features_norm(features)
        th.testing.assert_close(fast, features.reshape(3, 4, -1), rtol=0, atol=0)
