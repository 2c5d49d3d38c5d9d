"""R2D2's learning features: sum tree, prioritized sequence replay, value rescaling, dueling head, previous
action and reward as inputs, and the recurrent-state staleness measure."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter, Logger

from sb3_drqn import PrioritizedRecurrentReplayBuffer, RecurrentDQN, RecurrentReplayBuffer
from sb3_drqn.common.envs import CueMemoryEnv
from sb3_drqn.common.sum_tree import SumTree
from sb3_drqn.common.utils import inverse_value_rescale, value_rescale
from sb3_drqn.common.wrappers import PreviousActionRewardWrapper
from sb3_drqn.drqn.policies import DuelingHead

SMALL = dict(learning_starts=30, buffer_size=200, batch_size=8, sequence_length=4, seed=0)


def small_model(**kwargs) -> RecurrentDQN:
    """A small RecurrentDQN on the cue memory task, with the options under test."""
    return RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(), policy_kwargs=dict(lstm_hidden_size=8), **SMALL, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Sum tree


@pytest.mark.parametrize("capacity", [1, 5, 8, 37])
def test_sum_tree_sums_and_sampling_proportions(capacity):
    rng = np.random.default_rng(0)
    tree = SumTree(capacity)
    values = rng.random(capacity) * (rng.random(capacity) > 0.3)  # some zero leaves
    values[0] = 0.5  # at least one positive
    tree.update(np.arange(capacity), values)
    assert tree.total == pytest.approx(values.sum())
    # Every internal node is the sum of its children
    internal = np.arange(1, tree.size)
    assert np.allclose(tree.nodes[internal], tree.nodes[2 * internal] + tree.nodes[2 * internal + 1])
    draws = 200_000
    found = tree.find(rng.random(draws) * tree.total)
    assert np.all(values[found] > 0)  # zero leaves are never found
    frequencies = np.bincount(found, minlength=capacity) / draws
    assert np.allclose(frequencies, values / values.sum(), atol=0.005)


def test_sum_tree_boundaries_updates_and_bad_values():
    tree = SumTree(4)
    tree.update([0, 1, 2, 3], [1.0, 0.0, 2.0, 0.0])
    # Exact cumulative boundaries: [0, 1) -> leaf 0, [1, 3) -> leaf 2; the top end never reaches an empty leaf
    assert tree.find(np.array([0.0, 0.999, 1.0, 2.999, np.nextafter(3.0, 0)])).tolist() == [0, 0, 2, 2, 2]
    tree.update([2, 2], [5.0, 0.5])  # repeated leaf: the last value is kept
    assert tree[np.array([2])].tolist() == [0.5] and tree.total == pytest.approx(1.5)
    with pytest.raises(ValueError, match="non-negative"):
        tree.update([1], [-1.0])
    with pytest.raises(ValueError, match="non-negative"):
        tree.update([1], [np.nan])


# ---------------------------------------------------------------------------------------------------------
# Prioritized sequence replay


def make_prioritized(rows=8, n_envs=2, alpha=0.9):
    return PrioritizedRecurrentReplayBuffer(
        rows * n_envs,
        spaces.Box(-1e6, 1e6, (1,), np.float32),
        spaces.Discrete(2),
        n_envs=n_envs,
        sequence_length=2,
        burn_in=1,
        priority_exponent=alpha,
    )


def add_step(buffer, t, dones, truncated=None):
    n_envs = buffer.n_envs
    obs = np.full((n_envs, 1), t, dtype=np.float32)
    truncated = [False] * n_envs if truncated is None else truncated
    infos = [{"TimeLimit.truncated": bool(x)} for x in truncated]
    buffer.add(obs, obs + 0.5, np.zeros(n_envs), np.zeros(n_envs), np.asarray(dones, dtype=bool), infos)


def sampleable(buffer):
    """(row, env) of every step with a nonzero priority."""
    leaves = np.flatnonzero(buffer.priorities[np.arange(buffer.buffer_size * buffer.n_envs)] > 0)
    return {(int(leaf // buffer.n_envs), int(leaf % buffer.n_envs)) for leaf in leaves}


def valid_starts(buffer):
    offsets, envs = buffer.valid_window_starts()
    rows = (buffer._oldest_row() + offsets) % buffer.buffer_size
    return {(int(r), int(e)) for r, e in zip(rows, envs, strict=True)}


def test_priorities_follow_the_steps_that_can_start_a_window():
    buffer = make_prioritized(rows=6, n_envs=2)
    add_step(buffer, 0, [False, False])
    assert sampleable(buffer) == set()  # no successor known yet
    add_step(buffer, 1, [False, True])
    assert sampleable(buffer) == {(0, 0), (0, 1), (1, 1)} == valid_starts(buffer)
    buffer.mark_episode_break()  # e.g. the env was reset between two learn() calls
    add_step(buffer, 2, [False, False])
    assert (1, 0) not in sampleable(buffer) and sampleable(buffer) == valid_starts(buffer)
    # New windows enter with the largest priority so far
    buffer.update_priorities(np.array([0 * 2 + 0]), np.array([4.0]))
    add_step(buffer, 3, [False, False])
    assert buffer.priorities[np.array([2 * 2 + 0])][0] == pytest.approx(4.0**0.9)
    # Wrap around several times: overwritten steps lose their priority, the invariant holds at every step
    for t in range(4, 30):
        add_step(buffer, t, [t % 5 == 0, t % 7 == 0])
        assert sampleable(buffer) == valid_starts(buffer)
        assert buffer._n_sampleable == len(valid_starts(buffer))


def test_prioritized_sampling_proportions_and_importance_weights():
    buffer = make_prioritized(rows=8, n_envs=2, alpha=0.5)
    for t in range(8):
        add_step(buffer, t, [t == 7, t == 7])  # every step sampleable: 16 windows
    leaves = np.arange(16)
    priorities = np.linspace(0.1, 3.0, 16)
    buffer.update_priorities(leaves, priorities)
    expected = priorities**0.5 / (priorities**0.5).sum()
    np.random.seed(0)
    counts = np.zeros(16)
    for _ in range(500):
        samples = buffer.sample(64, beta=0.4)
        counts += np.bincount(samples.leaf_indices, minlength=16)
        # The window's first observation is the step the leaf names
        rows, envs = np.divmod(samples.leaf_indices, 2)
        first = samples.observations[buffer.max_burn_in, :, 0].numpy()
        assert np.array_equal(first, buffer.observations[rows, envs, 0])
        weights = (16 * expected[samples.leaf_indices]) ** -0.4
        assert np.allclose(samples.weights.numpy(), weights / weights.max(), rtol=1e-5)
    assert np.allclose(counts / counts.sum(), expected, atol=0.01)


def test_overwritten_windows_are_never_sampled():
    buffer = make_prioritized(rows=5, n_envs=1)
    for t in range(5):
        add_step(buffer, t, [False])
    buffer.update_priorities(np.arange(4), np.full(4, 100.0))  # very high priorities on the oldest steps
    for t in range(5, 9):
        add_step(buffer, t, [False])  # overwrites rows 0..3
    np.random.seed(1)
    for _ in range(50):
        samples = buffer.sample(8)
        first = samples.observations[buffer.max_burn_in, :, 0].numpy()
        assert np.all(first >= 4)  # only steps 4..7 are stored with a successor


def test_priorities_survive_save_and_load(tmp_path):
    model = small_model(prioritized_replay=True, burn_in=2)
    model.learn(300)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    other = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(),
        prioritized_replay=True,
        buffer_size=200,
        sequence_length=4,
        burn_in=2,
        policy_kwargs=dict(lstm_hidden_size=8),
    )
    other.load_replay_buffer(tmp_path / "buffer.pkl")
    original, restored = model.replay_buffer, other.replay_buffer
    assert isinstance(restored, PrioritizedRecurrentReplayBuffer)
    assert np.array_equal(original.priorities.nodes, restored.priorities.nodes)
    assert len(np.unique(original.priorities.nodes)) > 3  # priorities were learned, not all equal
    assert restored.max_priority == original.max_priority and restored._n_sampleable == original._n_sampleable
    other.learn(50, reset_num_timesteps=False)
    # A model without prioritized replay refuses the file, and the reverse
    uniform = RecurrentDQN("MlpLstmPolicy", CueMemoryEnv(), buffer_size=200, sequence_length=4, burn_in=2)
    with pytest.raises(ValueError, match="prioritized_replay=False"):
        uniform.load_replay_buffer(tmp_path / "buffer.pkl")
    assert type(uniform.replay_buffer) is RecurrentReplayBuffer


def test_prioritized_loss_is_weighted_and_priorities_are_the_td_mix():
    model = small_model(prioritized_replay=True, priority_eta=0.75)
    model.learn(100)
    np.random.seed(2)
    batch = model.replay_buffer.sample(8, beta=1.0)
    loss, current, target = model._compute_loss(batch)
    errors = th.nn.functional.smooth_l1_loss(current, target, reduction="none")
    expected = (errors * batch.mask * batch.weights[None]).sum() / batch.mask.sum()
    assert th.allclose(loss, expected)
    td = ((target - current).abs() * batch.mask).detach()
    mean = td.sum(0) / batch.mask.sum(0)
    assert th.allclose(
        model.replay_buffer.window_priorities(current, target, batch.mask), 0.75 * td.max(0).values + 0.25 * mean
    )


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(priority_exponent=-1.0), "priority_exponent"),
        (dict(priority_eta=1.5), "priority_eta"),
        (dict(importance_sampling_exponent=2.0), "importance_sampling_exponent"),
        (dict(importance_sampling_exponent_final=-0.1), "importance_sampling_exponent_final"),
        (dict(prioritized_replay=True, replay_buffer_class=RecurrentReplayBuffer), "replay_buffer_class"),
    ],
)
def test_invalid_prioritized_replay_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RecurrentDQN("MlpLstmPolicy", "CartPole-v1", **kwargs)


def test_importance_sampling_exponent_anneals():
    model = RecurrentDQN(
        "MlpLstmPolicy",
        "CartPole-v1",
        prioritized_replay=True,
        importance_sampling_exponent=0.4,
        importance_sampling_exponent_final=1.0,
    )
    assert model.importance_sampling_schedule(1.0) == pytest.approx(0.4)
    assert model.importance_sampling_schedule(0.5) == pytest.approx(0.7)
    assert model.importance_sampling_schedule(0.0) == pytest.approx(1.0)
    constant = RecurrentDQN("MlpLstmPolicy", "CartPole-v1", prioritized_replay=True)
    assert constant.importance_sampling_schedule(0.3) == pytest.approx(0.6)


# ---------------------------------------------------------------------------------------------------------
# Value rescaling


def test_value_rescaling_and_its_inverse():
    x = th.tensor([0.0, 1e-6, 0.5, 1.0, 3.0, 10.0, 1e3, 1e5, 1e6], dtype=th.float64)
    x = th.cat([x, -x])
    assert th.allclose(inverse_value_rescale(value_rescale(x)), x, rtol=1e-9, atol=1e-9)
    assert th.allclose(value_rescale(inverse_value_rescale(x)), x, rtol=1e-9, atol=1e-9)
    # h(3) = sqrt(4) - 1 + 3e-3, odd, and increasing
    assert value_rescale(th.tensor(3.0, dtype=th.float64)).item() == pytest.approx(1.003)
    assert th.equal(value_rescale(-x), -value_rescale(x))
    assert th.all(th.diff(value_rescale(th.linspace(-100, 100, 1001))) > 0)


def test_value_rescaling_targets():
    model = small_model(value_rescaling=True, gamma=0.9, n_steps=1)
    model.learn(100)
    np.random.seed(0)
    batch = model.replay_buffer.sample(8)
    _, _, target = model._compute_loss(batch)
    # Recompute with the plain targets of h^-1(Q'), then h: the same as the rescaled targets
    model.value_rescaling = False
    original = model._n_step_targets
    captured = {}

    def capture(replay_data, next_q_values):
        captured["next"] = next_q_values
        return original(replay_data, next_q_values)

    model._n_step_targets = capture
    model._compute_loss(batch)
    plain_next = captured["next"]
    expected = value_rescale(original(batch, inverse_value_rescale(plain_next)))
    assert th.allclose(target * batch.mask, expected * batch.mask, atol=1e-6)
    # One hand-checked step: r + gamma * (1 - done) * h^-1(Q'), through h
    k, w = 0, 0
    r, done = batch.rewards[k, w], batch.terminations[k, w]
    hand = value_rescale(r + 0.9 * (1 - done) * inverse_value_rescale(plain_next[k, w]))
    assert batch.mask[k, w] == 1.0  # a window's first step is always valid
    assert target[k, w].item() == pytest.approx(hand.item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Dueling head


def test_dueling_head_subtracts_the_mean_advantage():
    th.manual_seed(0)
    head = DuelingHead(6, 4, [5], th.nn.ReLU)
    x = th.randn(3, 2, 6)
    q = head(x)
    value = head.value_net(x)
    advantages = head.advantage_net(x)
    assert th.allclose(q, value + advantages - advantages.mean(-1, keepdim=True))
    # The mean over actions of Q is the value stream
    assert th.allclose(q.mean(-1, keepdim=True), value, atol=1e-6)


def test_dueling_policy_saves_and_loads(tmp_path):
    model = RecurrentDQN(
        "MlpLstmPolicy", CueMemoryEnv(), buffer_size=100, policy_kwargs=dict(dueling=True, lstm_hidden_size=8), seed=0
    )
    assert isinstance(model.q_net.q_net, DuelingHead) and isinstance(model.q_net_target.q_net, DuelingHead)
    model.save(tmp_path / "model.zip")
    loaded = RecurrentDQN.load(tmp_path / "model.zip")
    obs = np.eye(2, 3, dtype=np.float32)
    q = model.q_net(th.as_tensor(obs), model.q_net.initial_state(2), th.ones(2))[0]
    q_loaded = loaded.q_net(th.as_tensor(obs), loaded.q_net.initial_state(2), th.ones(2))[0]
    assert isinstance(loaded.q_net.q_net, DuelingHead) and th.equal(q, q_loaded)


# ---------------------------------------------------------------------------------------------------------
# Previous action and reward as inputs


def test_previous_action_reward_wrapper():
    env = PreviousActionRewardWrapper(gym.make("CartPole-v1"))
    assert set(env.observation_space.spaces) == {"observation", "prev_action", "prev_reward"}
    obs, _ = env.reset(seed=0)
    assert obs["prev_action"].tolist() == [0.0, 0.0] and obs["prev_reward"].tolist() == [0.0]
    obs, reward, *_ = env.step(1)
    assert obs["prev_action"].tolist() == [0.0, 1.0] and obs["prev_reward"].tolist() == [reward]
    assert env.observation_space.contains(obs)
    # Dict observations keep their entries
    dict_env = PreviousActionRewardWrapper(
        gym.wrappers.TransformObservation(
            gym.make("CartPole-v1"), lambda o: {"x": o}, spaces.Dict({"x": gym.make("CartPole-v1").observation_space})
        )
    )
    assert set(dict_env.observation_space.spaces) == {"x", "prev_action", "prev_reward"}
    with pytest.raises(ValueError, match="Discrete action space"):
        PreviousActionRewardWrapper(gym.make("Pendulum-v1"))


# ---------------------------------------------------------------------------------------------------------
# Staleness


def test_recurrent_staleness_measure_and_logging():
    model = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(delay=6),
        learning_starts=50,
        buffer_size=500,
        batch_size=8,
        sequence_length=3,
        burn_in=2,
        train_freq=1,
        learning_rate=3e-3,
        # 0.1.0's defaults, with which the bounds below were set
        gamma=0.99,
        n_steps=1,
        target_update_interval=10_000,
        policy_kwargs=dict(lstm_hidden_size=8, net_arch=[]),
        seed=0,
    )
    model.learn(400, log_interval=10)
    staleness = model.recurrent_staleness(32)
    assert staleness is not None and 0.0 < staleness < 1.0
    # Freshly stored states: the current network stored them, so stored and recomputed states agree
    fresh = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(delay=6),
        learning_starts=10_000,
        buffer_size=500,
        sequence_length=3,
        burn_in=2,
        policy_kwargs=dict(lstm_hidden_size=8),
        seed=0,
    )
    fresh.learn(200)
    assert fresh.recurrent_staleness(32) == pytest.approx(0.0, abs=1e-5)
    # With burn-in 0 and zero states the windows start from zeros: stale wherever the episode started before
    zero = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(delay=6),
        learning_starts=10_000,
        buffer_size=500,
        sequence_length=3,
        burn_in=0,
        recurrent_init="zero",
        policy_kwargs=dict(lstm_hidden_size=8),
        seed=0,
    )
    zero.learn(200)
    assert zero.recurrent_staleness(32) > 1e-3


class Recorder(KVWriter):
    """Keeps every dumped set of key-values."""

    def __init__(self) -> None:
        self.dumps: list[dict] = []

    def write(self, key_values, key_excluded, step=0) -> None:
        self.dumps.append(dict(key_values))


def test_staleness_is_logged_and_does_not_change_training():
    def run(log_interval):
        model = RecurrentDQN(
            "MlpLstmPolicy",
            CueMemoryEnv(),
            learning_starts=30,
            buffer_size=300,
            batch_size=4,
            sequence_length=3,
            policy_kwargs=dict(lstm_hidden_size=8),
            seed=0,
        )
        recorder = Recorder()
        model.set_logger(Logger(folder=None, output_formats=[recorder]))
        model.learn(200, log_interval=log_interval)
        return recorder.dumps, [p.detach().clone() for p in model.policy.parameters()]

    dumps, params_a = run(log_interval=2)
    staleness = [dump["train/recurrent_staleness"] for dump in dumps if "train/recurrent_staleness" in dump]
    assert len(staleness) >= 5 and all(0.0 <= value < 1.0 for value in staleness)
    # Measuring uses its own random generator: logging more often does not change training
    _, params_b = run(log_interval=1000)
    assert all(th.equal(a, b) for a, b in zip(params_a, params_b, strict=True))


# ---------------------------------------------------------------------------------------------------------
# Everything on


@pytest.mark.slow
def test_learns_the_memory_task_with_every_r2d2_option():
    env = PreviousActionRewardWrapper(CueMemoryEnv(delay=8))
    model = RecurrentDQN(
        "MultiInputLstmPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=20_000,
        learning_starts=500,
        batch_size=32,
        train_freq=1,
        target_update_interval=500,
        exploration_fraction=0.3,
        exploration_final_eps=0.05,
        sequence_length=5,
        burn_in=4,
        n_steps=3,
        prioritized_replay=True,
        importance_sampling_exponent_final=1.0,
        value_rescaling=True,
        policy_kwargs=dict(lstm_hidden_size=32, dueling=True),
        seed=0,
    )
    model.learn(8_000)
    eval_env = PreviousActionRewardWrapper(CueMemoryEnv(delay=8))
    rewards, _ = evaluate_policy(model, eval_env, n_eval_episodes=200, return_episode_rewards=True)
    assert np.mean(np.array(rewards) > 0) >= 0.95
