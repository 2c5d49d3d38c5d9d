"""Recurrent Q-policies: state handling, resets, and one-call sequences equal to step-by-step processing."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import LinearSchedule

from sb3_drqn import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy

BOX = spaces.Box(-1, 1, (4,), np.float32)
IMAGE = spaces.Box(0, 255, (1, 36, 36), np.uint8)
DICT = spaces.Dict({"image": IMAGE, "vec": BOX})


def make_policy(policy_class, observation_space, rnn_type="lstm", **kwargs):
    th.manual_seed(0)
    return policy_class(
        observation_space, spaces.Discrete(3), LinearSchedule(1e-3, 1e-3, 1.0), lstm_hidden_size=8, rnn_type=rnn_type, **kwargs
    )


def random_obs(space, shape, gen):
    if isinstance(space, spaces.Dict):
        return {key: random_obs(sub, shape, gen) for key, sub in space.spaces.items()}
    if space.dtype == np.uint8:
        return th.randint(0, 256, (*shape, *space.shape), generator=gen, dtype=th.uint8)
    return th.rand(*shape, *space.shape, generator=gen)


def index_obs(obs, index):
    return {key: value[index] for key, value in obs.items()} if isinstance(obs, dict) else obs[index]


CASES = [(MlpLstmPolicy, BOX), (CnnLstmPolicy, IMAGE), (MultiInputLstmPolicy, DICT)]


@pytest.mark.parametrize("policy_class,space", CASES)
@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_sequence_in_one_call_equals_step_by_step_with_resets(policy_class, space, rnn_type):
    policy = make_policy(policy_class, space, rnn_type)
    gen = th.Generator().manual_seed(0)
    n_steps, n_envs = 7, 3
    obs = random_obs(space, (n_steps, n_envs), gen)
    starts = th.zeros(n_steps, n_envs)
    starts[0, 1] = starts[3, 0] = starts[5, 2] = starts[5, 0] = 1.0
    state = tuple(th.randn(1, n_envs, 8, generator=gen) for _ in range(2 if rnn_type == "lstm" else 1))
    with th.no_grad():
        q_sequence, final_state = policy.q_net(obs, state, starts)
        step_state, q_steps = state, []
        for t in range(n_steps):
            q, step_state = policy.q_net(index_obs(obs, t), step_state, starts[t])
            q_steps.append(q)
    assert q_sequence.shape == (n_steps, n_envs, 3)
    assert th.allclose(q_sequence, th.stack(q_steps), atol=1e-5)
    for a, b in zip(final_state, step_state, strict=True):
        assert th.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_state_changes_with_input_and_resets_per_env(rnn_type):
    policy = make_policy(MlpLstmPolicy, BOX, rnn_type)
    n_components = 2 if rnn_type == "lstm" else 1
    obs = np.random.default_rng(0).uniform(-1, 1, (2, 4)).astype(np.float32)
    _, state = policy.predict(obs)
    assert len(state) == n_components and all(c.shape == (1, 2, 8) for c in state)
    assert all(np.abs(c).sum() > 0 for c in state)
    _, state_other_input = policy.predict(-obs)
    assert not np.allclose(state[0], state_other_input[0])
    # The state advances with the same input
    actions, state2 = policy.predict(obs, state)
    assert not np.allclose(state[0], state2[0])
    # episode_start resets only the envs where it is set: env 1 restarts from zeros, env 0 continues
    _, fresh = policy.predict(obs)
    _, partly_reset = policy.predict(obs, state, episode_start=np.array([False, True]))
    for c_reset, c_cont, c_fresh in zip(partly_reset, state2, fresh, strict=True):
        assert np.allclose(c_reset[:, 0], c_cont[:, 0])
        assert np.allclose(c_reset[:, 1], c_fresh[:, 1])
    assert actions.shape == (2,)


def test_predict_single_observation_and_bad_state():
    policy = make_policy(MlpLstmPolicy, BOX)
    action, state = policy.predict(np.zeros(4, dtype=np.float32))
    assert np.shape(action) == () and state[0].shape == (1, 1, 8)
    with pytest.raises(ValueError, match="state must be a tuple of 2"):
        policy.predict(np.zeros((2, 4), dtype=np.float32), state=state)
    with pytest.raises(ValueError, match="state must be a tuple of 2"):
        policy.predict(np.zeros(4, dtype=np.float32), state=(state[0],))
    with pytest.raises(ValueError, match="episode_start has 3 entries"):
        policy.predict(np.zeros((2, 4), dtype=np.float32), episode_start=np.zeros(3))


@pytest.mark.parametrize(("rnn_type", "n_layers"), [("lstm", 1), ("gru", 1), ("lstm", 2), ("gru", 2)])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_burn_in_with_different_lengths_in_one_call(rnn_type, n_layers, scale):
    # One layer: a plain call over the padding (an LSTM's cell state held by saturated gates); two: a packed call.
    # scale 30: saturated gates everywhere, where holding the cell state must still be exact
    policy = make_policy(MlpLstmPolicy, BOX, rnn_type=rnn_type, n_lstm_layers=n_layers)
    with th.no_grad():
        for weight in policy.q_net.rnn.parameters():
            weight.mul_(scale)
    gen = th.Generator().manual_seed(3)
    features = th.randn(5, 4, 4, generator=gen)
    state = tuple(th.randn(n_layers, 4, 8, generator=gen) for _ in range(policy.q_net.n_state_components))
    lengths = th.tensor([5, 0, 2, 1])
    with th.no_grad():
        warmed = policy.q_net.burn_in(features, state, lengths)
        for i, length in enumerate(lengths.tolist()):
            expected = tuple(c[:, i : i + 1] for c in state)
            for t in range(length):
                _, expected = policy.q_net._run_rnn(features[t : t + 1, i : i + 1], expected)
            for a, b in zip(warmed, expected, strict=True):
                th.testing.assert_close(a[:, i : i + 1], b, rtol=1e-5, atol=1e-6)


def test_policy_options():
    policy = make_policy(MlpLstmPolicy, BOX, rnn_type="gru", n_lstm_layers=2, net_arch=[16, 16])
    assert isinstance(policy.q_net.rnn, th.nn.GRU) and policy.q_net.rnn.num_layers == 2
    assert policy.recurrent_state_shape == (1, 2, 8)
    assert [m.out_features for m in policy.q_net.q_net if isinstance(m, th.nn.Linear)] == [16, 16, 3]
    assert policy.q_net.features_extractor is not policy.q_net_target.features_extractor
    with pytest.raises(ValueError, match="rnn_type"):
        make_policy(MlpLstmPolicy, BOX, rnn_type="transformer")
    with pytest.raises(ValueError, match="lstm_hidden_size"):
        MlpLstmPolicy(BOX, spaces.Discrete(2), LinearSchedule(1e-3, 1e-3, 1.0), lstm_hidden_size=0)


def test_policy_defaults_and_multidiscrete_observations():
    # None stands for each policy's default extractor and recurrent size
    assert CnnLstmPolicy(IMAGE, spaces.Discrete(3), LinearSchedule(1e-3, 1e-3, 1.0)).lstm_hidden_size == 512
    assert make_policy(MultiInputLstmPolicy, DICT).features_extractor_class.__name__ == "CombinedExtractor"
    # MultiDiscrete observations (one-hot encoded by SB3): SB3's features size is a NumPy integer
    policy = make_policy(MlpLstmPolicy, spaces.MultiDiscrete([3, 4]))
    actions, state = policy.predict(np.array([[0, 3], [2, 1]]))
    assert actions.shape == (2,) and state[0].shape == (1, 2, 8)


def test_adam_is_fused_by_default_and_steps_like_pytorchs_default():
    fused, plain = make_policy(MlpLstmPolicy, BOX), make_policy(MlpLstmPolicy, BOX, optimizer_kwargs=dict(fused=False))
    assert fused.optimizer.defaults["fused"] and not plain.optimizer.defaults["fused"]
    assert fused.optimizer_kwargs == {"fused": True}  # saved with the model, so a loaded one steps alike
    rmsprop = make_policy(MlpLstmPolicy, BOX, optimizer_class=th.optim.RMSprop)
    assert "fused" not in rmsprop.optimizer_kwargs
    assert not make_policy(MlpLstmPolicy, BOX, optimizer_kwargs=dict(foreach=True)).optimizer.defaults["fused"]
    gen = th.Generator().manual_seed(0)
    obs = th.rand(6, 3, 4, generator=gen)
    for _ in range(5):
        for policy in (fused, plain):
            q_values, _ = policy.q_net(obs, policy.q_net.initial_state(3), th.zeros(6, 3))
            policy.optimizer.zero_grad()
            (q_values**2).mean().backward()
            policy.optimizer.step()
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        th.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("policy_class", "space", "kwargs"),
    [
        (MlpLstmPolicy, BOX, {}),
        (CnnLstmPolicy, IMAGE, {}),
        (CnnLstmPolicy, IMAGE, dict(normalize_images=False)),
        (MultiInputLstmPolicy, DICT, {}),
        (MlpLstmPolicy, spaces.Discrete(5), {}),
    ],
)
def test_features_are_sb3s(policy_class, space, kwargs):
    # The image test made once at construction gives what SB3's preprocessing gives on every call
    policy = make_policy(policy_class, space, **kwargs)
    obs = random_obs(space, (3,), th.Generator().manual_seed(0)) if not isinstance(space, spaces.Discrete) else th.arange(3)
    q_net = policy.q_net
    expected = BasePolicy.extract_features(q_net, obs, q_net.features_extractor)
    assert th.equal(q_net.extract_features(obs, q_net.features_extractor), expected)


@pytest.mark.parametrize("policy_class,space", CASES)
def test_normalized_features_reach_the_recurrent_layer_on_every_path(policy_class, space, tmp_path):
    from sb3_drqn import RecurrentDQN

    policy = make_policy(policy_class, space, normalize_features=True)
    assert (
        isinstance(policy.q_net.features_norm, th.nn.LayerNorm)
        and make_policy(policy_class, space).q_net.features_norm is None
    )
    gen = th.Generator().manual_seed(1)
    obs = random_obs(space, (4, 3), gen)
    with th.no_grad():
        features = policy.q_net.extract_sequence_features(obs)
        # The norm's gain and bias start at 1 and 0: each step's features have mean 0 and variance 1 (less its eps)
        th.testing.assert_close(features.mean(-1), th.zeros(4, 3), atol=1e-5, rtol=0)
        th.testing.assert_close(features.var(-1, unbiased=False), th.ones(4, 3), atol=1e-2, rtol=0)  # eps=1e-5
        # Burn-in features of the valid steps only (a CNN's steps are selected) are the same features
        lengths = th.tensor([4, 1, 0])
        burn_in = policy.q_net.burn_in_features(obs, lengths)
        for i, length in enumerate(lengths.tolist()):
            th.testing.assert_close(burn_in[:length, i], features[:length, i])
        # Acting step by step gives the sequence's Q-values
        state = policy.q_net.initial_state(3)
        q_sequence, _ = policy.q_net(obs, state, th.zeros(4, 3))
        q_steps = []
        for t in range(4):
            q, state = policy.q_net(index_obs(obs, t), state, th.zeros(3))
            q_steps.append(q)
        th.testing.assert_close(q_sequence, th.stack(q_steps), atol=1e-5, rtol=1e-5)
    # The option is saved with the model, and the norm's parameters with the weights
    if policy_class is MlpLstmPolicy:
        from sb3_drqn.common.envs import CueMemoryEnv

        model = RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(), policy_kwargs=dict(normalize_features=True), seed=0)
        with th.no_grad():
            model.q_net.features_norm.weight.mul_(3.0)
        model.save(tmp_path / "model")
        loaded = RecurrentDQN.load(tmp_path / "model")
        assert isinstance(loaded.q_net.features_norm, th.nn.LayerNorm)
        th.testing.assert_close(loaded.q_net.features_norm.weight, model.q_net.features_norm.weight)
        observation = np.random.default_rng(0).random((5, *CueMemoryEnv().observation_space.shape)).astype(np.float32)
        np.testing.assert_array_equal(
            model.predict(observation, deterministic=True)[0], loaded.predict(observation, deterministic=True)[0]
        )
