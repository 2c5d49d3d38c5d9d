"""RecurrentDQN: every policy learns, acting state, persistence, determinism and SB3 tools (bad input: test_bad_input)."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_drqn import RecurrentDQN, RecurrentReplayBuffer
from sb3_drqn.common.envs import CueMemoryEnv

SMALL = dict(learning_starts=50, buffer_size=1000, batch_size=8, sequence_length=4, burn_in=2, train_freq=2, seed=0)


def image_env():
    return FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)


ENVS = {
    "MlpLstmPolicy": lambda: gym.make("CartPole-v1"),
    "CnnLstmPolicy": image_env,
    "MultiInputLstmPolicy": lambda: SimpleMultiObsEnv(random_start=False),
}


@pytest.mark.parametrize("policy", list(ENVS))
@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
@pytest.mark.parametrize("recurrent_init", ["stored", "zero"])
def test_every_policy_learns(policy, rnn_type, recurrent_init):
    model = RecurrentDQN(
        policy,
        ENVS[policy](),
        recurrent_init=recurrent_init,
        policy_kwargs=dict(lstm_hidden_size=16, rnn_type=rnn_type),
        **SMALL,
    )
    model.learn(300)
    assert model.num_timesteps == 300
    assert model._n_updates > 0
    assert np.isfinite(model.logger.name_to_value.get("train/loss", 0.0))


def test_learns_with_sparse_half_precision_state_storage():
    model = RecurrentDQN(
        "CnnLstmPolicy",
        image_env(),
        replay_buffer_kwargs=dict(state_stride=4, state_dtype="float16"),
        policy_kwargs=dict(lstm_hidden_size=16),
        **SMALL,
    )
    model.learn(200)
    assert model._n_updates > 0
    buffer = model.replay_buffer
    assert buffer.recurrent_states.dtype == np.float16 and buffer.recurrent_states.shape[0] == 1000 // 4
    sample = buffer.sample(8)
    assert sample.observations.shape[0] == SMALL["burn_in"] + 3 + SMALL["sequence_length"] + 1
    assert int(sample.burn_in_lengths.max()) <= SMALL["burn_in"] + 3


def test_vec_env_evaluate_policy_and_eval_callback():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    eval_env = make_vec_env("CartPole-v1", n_envs=2, seed=1)
    callback = EvalCallback(eval_env, n_eval_episodes=4, eval_freq=100, warn=False, verbose=0)
    model = RecurrentDQN("MlpLstmPolicy", env, policy_kwargs=dict(lstm_hidden_size=16), **SMALL)
    model.learn(400, callback=callback)
    assert callback.n_calls > 0 and np.isfinite(callback.last_mean_reward)
    mean_reward, _ = evaluate_policy(model, eval_env, n_eval_episodes=4)
    assert mean_reward > 0
    # Evaluation during learning never touched the training state
    assert model._last_recurrent_state[0].shape == (1, 2, 16)


class InterruptAt(BaseCallback):
    def __init__(self, step: int):
        super().__init__()
        self.interrupt_step = step

    def _on_step(self) -> bool:
        if self.num_timesteps == self.interrupt_step:
            raise KeyboardInterrupt
        return True


@pytest.mark.parametrize("interrupted", [False, True])
def test_stored_states_are_the_states_the_actor_had(interrupted):
    # No learning happens (learning_starts > steps), so the weights stay fixed and the states can be recomputed
    env = make_vec_env(CueMemoryEnv, n_envs=2, seed=0, env_kwargs=dict(delay=4))
    model = RecurrentDQN(
        "MlpLstmPolicy", env, learning_starts=10_000, buffer_size=200, policy_kwargs=dict(lstm_hidden_size=6), seed=0
    )
    model.exploration_rate = 0.5
    if interrupted:
        # Interrupted after the env stepped but before the step was stored: resuming stays consistent
        with pytest.raises(KeyboardInterrupt):
            model.learn(60, callback=InterruptAt(24))
        model.learn(36, reset_num_timesteps=False)
    else:
        model.learn(60)
    buffer = model.replay_buffer
    for env_idx in range(2):
        state = model.policy.q_net.initial_state(1)
        for row in range(buffer.pos):
            if buffer.episode_steps[row, env_idx] == 0:
                state = model.policy.q_net.initial_state(1)
            stored = buffer.recurrent_states[row, env_idx]
            assert np.allclose(stored[0, 0], state[0][0, 0].numpy(), atol=1e-6)
            assert np.allclose(stored[1, 0], state[1][0, 0].numpy(), atol=1e-6)
            obs = th.as_tensor(buffer.observations[row, env_idx][None])
            with th.no_grad():
                _, state = model.q_net(obs, state, th.zeros(1))
    # Episodes of CueMemoryEnv last delay + 1 = 5 steps
    assert set(np.unique(buffer.episode_steps[: buffer.pos])) == {0, 1, 2, 3, 4}
    if not interrupted:
        assert buffer.dones[: buffer.pos].sum() == 2 * (60 // 2 // 5)


def test_epsilon_is_drawn_per_env():
    env = make_vec_env(CueMemoryEnv, n_envs=8, seed=0, env_kwargs=dict(n_cues=50))
    model = RecurrentDQN("MlpLstmPolicy", env, learning_starts=0, buffer_size=800, seed=0)
    model._last_obs = env.reset()
    model.exploration_rate = 0.5
    np.random.seed(0)
    greedy, _ = model.policy.predict(model._last_obs, model._last_recurrent_state)
    mixes = [np.mean(model._sample_action(0, None, 8)[0] == greedy) for _ in range(20)]
    # Some envs explore while others act greedily in the same step
    assert any(0.0 < fraction < 1.0 for fraction in mixes)


def test_predict_is_epsilon_greedy_unless_deterministic():
    model = RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(n_cues=20), buffer_size=100, seed=0)
    obs = np.zeros((64, 21), dtype=np.float32)
    model.exploration_rate = 1.0
    greedy, state = model.predict(obs, deterministic=True)
    random_actions, random_state = model.predict(obs, deterministic=False)
    assert np.mean(random_actions != greedy) > 0.5
    # The state advances the same way whichever action is taken
    assert all(np.allclose(a, b) for a, b in zip(state, random_state, strict=True))


def rollout_actions(model, obs_sequence, starts):
    state, actions = None, []
    for obs, start in zip(obs_sequence, starts, strict=True):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        actions.append(action)
    return np.array(actions), state


@pytest.mark.parametrize("policy", list(ENVS))
def test_save_load_same_actions_and_states(tmp_path, policy):
    model = RecurrentDQN(policy, ENVS[policy](), policy_kwargs=dict(lstm_hidden_size=16), **SMALL)
    model.learn(120)
    env = model.get_env()
    obs_sequence = [env.reset()]
    for _ in range(9):
        obs_sequence.append(env.step(np.array([env.action_space.sample()]))[0])
    starts = [np.array([t in (0, 5)]) for t in range(10)]
    actions, state = rollout_actions(model, obs_sequence, starts)
    model.save(tmp_path / "model.zip")
    loaded = RecurrentDQN.load(tmp_path / "model.zip", env=ENVS[policy]())
    loaded_actions, loaded_state = rollout_actions(loaded, obs_sequence, starts)
    assert np.array_equal(actions, loaded_actions)
    assert all(np.allclose(a, b) for a, b in zip(state, loaded_state, strict=True))
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        assert th.equal(a, b)
    assert loaded.sequence_length == 4 and loaded.burn_in == 2 and loaded.recurrent_init == "stored"
    loaded.learn(60)


def test_replay_buffer_round_trip(tmp_path):
    env = make_vec_env(CueMemoryEnv, n_envs=2, seed=0)
    model = RecurrentDQN("MlpLstmPolicy", env, policy_kwargs=dict(lstm_hidden_size=8), **SMALL)
    model.learn(200)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    other = RecurrentDQN(
        "MlpLstmPolicy", make_vec_env(CueMemoryEnv, n_envs=2), policy_kwargs=dict(lstm_hidden_size=8), **SMALL
    )
    other.load_replay_buffer(tmp_path / "buffer.pkl")
    original, restored = model.replay_buffer, other.replay_buffer
    assert restored is not original and restored.pos == original.pos and restored.full == original.full
    for name in ("observations", "actions", "rewards", "dones", "timeouts", "episode_steps", "recurrent_states"):
        assert np.array_equal(getattr(original, name), getattr(restored, name)), name
    np.random.seed(3)
    sample_a = original.sample(16)
    np.random.seed(3)
    sample_b = restored.sample(16)
    for a, b in zip(sample_a, sample_b, strict=True):
        if isinstance(a, tuple):
            assert all(th.equal(x, y) for x, y in zip(a, b, strict=True))
        elif a is None or isinstance(a, int):  # prioritized replay's fields, the burn-in row count
            assert a == b
        else:
            assert th.equal(a, b)
    # Learning continues from the loaded buffer
    other.learn(100, reset_num_timesteps=False)


def test_determinism_with_seed():
    params = []
    for _ in range(2):
        model = RecurrentDQN("MlpLstmPolicy", "CartPole-v1", policy_kwargs=dict(lstm_hidden_size=16), **SMALL)
        model.learn(300)
        params.append([p.detach().clone() for p in model.policy.parameters()])
    assert all(th.equal(a, b) for a, b in zip(*params, strict=True))


def test_learn_continues_and_set_env():
    model = RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(), policy_kwargs=dict(lstm_hidden_size=8), **SMALL)
    model.learn(100)
    updates = model._n_updates
    model.learn(100, reset_num_timesteps=False)
    assert model.num_timesteps == 200 and model._n_updates > updates
    model.set_env(DummyVecEnv([CueMemoryEnv]))
    model.learn(50, reset_num_timesteps=False)
    assert model.num_timesteps == 250
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        model.set_env(DummyVecEnv([lambda: CueMemoryEnv(n_cues=3)]))
    with pytest.raises(ValueError, match="n_envs"):
        model.set_env(make_vec_env(CueMemoryEnv, n_envs=2))


def test_continuing_learn_keeps_episodes_joined_and_reset_breaks_them():
    model = RecurrentDQN(
        "MlpLstmPolicy", CueMemoryEnv(delay=50), learning_starts=10_000, train_freq=1, buffer_size=500, seed=0
    )
    model.learn(10)
    model.learn(10, reset_num_timesteps=False)
    # Same episode across the two calls: step indices go on
    assert model.replay_buffer.episode_steps[:20, 0].tolist() == list(range(20))
    model.learn(10)  # resets the env: a new episode starts, the last step before it has no successor
    assert model.replay_buffer.episode_steps[20:30, 0].tolist() == list(range(10))
    assert not model.replay_buffer._has_successor(np.array([19]), np.array([0]))[0]


def test_load_for_prediction_with_a_tiny_buffer(tmp_path):
    model = RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(), policy_kwargs=dict(lstm_hidden_size=8), **SMALL)
    model.save(tmp_path / "model.zip")
    with pytest.warns(UserWarning, match="cannot hold one sequence"):
        loaded = RecurrentDQN.load(tmp_path / "model.zip", buffer_size=1)
    assert loaded.replay_buffer.buffer_size == SMALL["sequence_length"] + SMALL["burn_in"] + 1
    obs = np.eye(3, dtype=np.float32)[:2]
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_vec_normalize_stores_raw_and_normalizes_at_sampling():
    # CueMemoryEnv's observations are exactly 0 or 1: normalized ones are not
    env = VecNormalize(make_vec_env(CueMemoryEnv, n_envs=2, seed=0), norm_reward=True, gamma=0.9)
    model = RecurrentDQN("MlpLstmPolicy", env, policy_kwargs=dict(lstm_hidden_size=8), **SMALL)
    model.learn(300)
    buffer = model.replay_buffer
    raw = buffer.observations[: buffer.pos]
    assert set(np.unique(raw)) == {0.0, 1.0}
    assert set(np.unique(buffer.rewards[: buffer.pos])) <= {-1.0, 0.0, 1.0}
    np.random.seed(0)
    sample = buffer.sample(16, env=env)
    np.random.seed(0)
    raw_sample = buffer.sample(16)
    expected = env.normalize_obs(raw_sample.observations.numpy())
    assert np.allclose(sample.observations.numpy(), expected, atol=1e-5)
    assert not np.allclose(sample.observations.numpy(), raw_sample.observations.numpy())
    assert np.allclose(sample.rewards.numpy(), env.normalize_reward(raw_sample.rewards.numpy()), atol=1e-5)


def test_predict_and_evaluation_never_touch_the_training_state():
    env = make_vec_env(CueMemoryEnv, n_envs=2, seed=0)
    model = RecurrentDQN("MlpLstmPolicy", env, policy_kwargs=dict(lstm_hidden_size=8), **SMALL)
    model.learn(103)
    training_state = tuple(component.copy() for component in model._last_recurrent_state)
    assert any(np.abs(component).sum() > 0 for component in training_state)
    evaluate_policy(model, make_vec_env(CueMemoryEnv, n_envs=3, seed=1), n_eval_episodes=6)
    model.predict(np.ones((2, 3), dtype=np.float32), deterministic=False)
    for before, after in zip(training_state, model._last_recurrent_state, strict=True):
        assert np.array_equal(before, after)


def test_buffer_is_allocated_lazily():
    # A large buffer costs (almost) nothing until it is written: constructing it must be instant and cheap
    model = RecurrentDQN("CnnLstmPolicy", image_env(), buffer_size=200_000, policy_kwargs=dict(lstm_hidden_size=16))
    assert isinstance(model.replay_buffer, RecurrentReplayBuffer)
    assert model.replay_buffer.observations.nbytes >= 200_000 * 36 * 36


def test_a_setting_given_twice_must_agree():
    env = CueMemoryEnv()
    kwargs = dict(prioritized_replay=True, priority_eta=0.5, buffer_size=500, learning_starts=10, burn_in=6)
    # The same value twice works; the buffer holds the model's value and uses it for the priorities
    model = RecurrentDQN("MlpLstmPolicy", env, replay_buffer_kwargs=dict(priority_eta=0.5, burn_in=6), **kwargs)
    assert model.replay_buffer.priority_eta == 0.5
    current, target, mask = th.zeros(2, 1), th.tensor([[1.0], [3.0]]), th.ones(2, 1)
    assert model.replay_buffer.window_priorities(current, target, mask).item() == pytest.approx(0.5 * 3 + 0.5 * 2)
    # Different values are refused, naming the setting
    for name, value in (("priority_eta", 0.9), ("sequence_length", 3), ("burn_in", 4), ("priority_exponent", 0.1)):
        with pytest.raises(ValueError, match=f"replay_buffer_kwargs sets .*{name}"):
            RecurrentDQN("MlpLstmPolicy", env, replay_buffer_kwargs={name: value}, **kwargs)
