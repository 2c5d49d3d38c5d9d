"""The learner on hand-built batches: targets, masks, termination vs truncation, loss and gradients."""

import numpy as np
import pytest
import torch as th

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv
from sb3_drqn.common.type_aliases import RecurrentReplayBufferSamples

GAMMA = 0.9
BURN_IN, SEQ_LEN, BATCH = 2, 3, 4


def make_model(rnn_type: str, double_q: bool) -> RecurrentDQN:
    model = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(),
        gamma=GAMMA,
        n_steps=1,
        sequence_length=SEQ_LEN,
        burn_in=BURN_IN,
        double_q=double_q,
        buffer_size=100,
        policy_kwargs=dict(lstm_hidden_size=5, rnn_type=rnn_type, net_arch=[7]),
        seed=0,
    )
    # A target network that differs from the online one, so that double-Q and max targets differ
    with th.no_grad():
        for param in model.q_net_target.parameters():
            param.add_(0.3 * th.randn_like(param))
    return model


def hand_built_batch(model: RecurrentDQN) -> RecurrentReplayBufferSamples:
    gen = th.Generator().manual_seed(1)
    n_components = model.q_net.n_state_components
    return RecurrentReplayBufferSamples(
        observations=th.rand(BURN_IN + SEQ_LEN + 1, BATCH, 3, generator=gen),
        actions=th.tensor([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]]),
        rewards=th.tensor([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, 1.0, -0.5], [3.0, 0.0, 0.0, 1.0]]),
        # window 1 terminates at step 1; window 2 is truncated at step 0 (no termination, masked after)
        terminations=th.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
        mask=th.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]),
        burn_in_lengths=th.tensor([2, 1, 0, 2]),
        recurrent_states=tuple(0.5 * th.randn(1, BATCH, 5, generator=gen) for _ in range(n_components)),
    )


def step_by_step_q_values(network, batch: RecurrentReplayBufferSamples, window: int) -> th.Tensor:
    """Q-values at the learning steps and the step after, one step at a time: (SEQ_LEN + 1, n_actions)."""
    state = tuple(component[:, window : window + 1] for component in batch.recurrent_states)
    b = int(batch.burn_in_lengths[window])
    steps = [*range(b), *range(BURN_IN, BURN_IN + SEQ_LEN + 1)]
    q_values = []
    for position in steps:
        q, state = network(batch.observations[position, window : window + 1], state, th.zeros(1))
        q_values.append(q[0])
    return th.stack(q_values[b:])


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
@pytest.mark.parametrize("double_q", [True, False])
def test_targets_and_loss_match_hand_computation(rnn_type, double_q):
    model = make_model(rnn_type, double_q)
    batch = hand_built_batch(model)
    loss, current, target = model._compute_loss(batch)

    expected_losses, n_valid = [], 0
    with th.no_grad():
        for window in range(BATCH):
            online = step_by_step_q_values(model.q_net, batch, window)
            offline = step_by_step_q_values(model.q_net_target, batch, window)
            for k in range(SEQ_LEN):
                if double_q:
                    next_value = offline[k + 1, online[k + 1].argmax()]
                else:
                    next_value = offline[k + 1].max()
                not_terminal = 1.0 - batch.terminations[k, window]
                y = batch.rewards[k, window] + GAMMA * not_terminal * next_value
                q = online[k, batch.actions[k, window]]
                assert current[k, window].item() == pytest.approx(q.item(), abs=1e-5)
                if batch.mask[k, window]:
                    # targets only mean something at valid steps
                    assert target[k, window].item() == pytest.approx(y.item(), abs=1e-5)
                    expected_losses.append(th.nn.functional.smooth_l1_loss(q, y).item())
                    n_valid += 1
    assert loss.item() == pytest.approx(sum(expected_losses) / n_valid, abs=1e-5)
    # A terminated step's target is its reward alone
    assert target[1, 1].item() == pytest.approx(2.0)


def test_masked_steps_do_not_change_the_loss():
    model = make_model("lstm", True)
    batch = hand_built_batch(model)
    loss, _, _ = model._compute_loss(batch)
    rewards = batch.rewards.clone()
    rewards[batch.mask == 0] = 1000.0
    observations = batch.observations.clone()
    observations[BURN_IN + 2, 2] = 50.0  # after window 2's only valid step and its successor
    loss_changed, _, _ = model._compute_loss(batch._replace(rewards=rewards, observations=observations))
    assert loss_changed.item() == pytest.approx(loss.item(), abs=1e-6)


def test_no_gradient_reaches_burn_in_or_target():
    model = make_model("lstm", True)
    batch = hand_built_batch(model)
    observations = batch.observations.clone().requires_grad_(True)
    loss, _, _ = model._compute_loss(batch._replace(observations=observations))
    model.policy.optimizer.zero_grad()
    loss.backward()
    assert observations.grad is not None
    grad_per_position = observations.grad.abs().sum(dim=(1, 2))
    assert th.all(grad_per_position[:BURN_IN] == 0), "burn-in steps must not receive gradient"
    assert th.all(grad_per_position[BURN_IN + SEQ_LEN] == 0), "the bootstrap step must not receive gradient"
    assert th.all(grad_per_position[BURN_IN : BURN_IN + SEQ_LEN] > 0)
    assert all(param.grad is None for param in model.q_net_target.parameters())
    assert any(param.grad is not None and param.grad.abs().sum() > 0 for param in model.q_net.rnn.parameters())


def test_zero_recurrent_init_ignores_stored_state():
    model = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(),
        sequence_length=SEQ_LEN,
        burn_in=BURN_IN,
        recurrent_init="zero",
        buffer_size=100,
        seed=0,
    )
    assert model.replay_buffer.recurrent_states is None
    batch = hand_built_batch(model)
    loss_stored_given, _, _ = model._compute_loss(batch)
    zeros = tuple(th.zeros_like(component) for component in batch.recurrent_states)
    loss_zero, _, _ = model._compute_loss(batch._replace(recurrent_states=zeros))
    loss_empty, _, _ = model._compute_loss(batch._replace(recurrent_states=()))
    assert loss_stored_given.item() == pytest.approx(loss_zero.item())
    assert loss_empty.item() == pytest.approx(loss_zero.item())


def test_train_logs_dqn_keys_and_updates_online_net_only():
    model = RecurrentDQN(
        "MlpLstmPolicy",
        CueMemoryEnv(delay=3),
        learning_starts=50,
        sequence_length=4,
        burn_in=2,
        buffer_size=500,
        target_update_interval=10_000,
        seed=0,
    )
    model.learn(120)
    target_before = [param.clone() for param in model.q_net_target.parameters()]
    online_before = [param.clone() for param in model.q_net.parameters()]
    model.train(gradient_steps=3, batch_size=8)
    assert model._n_updates >= 3
    assert all(th.equal(a, b) for a, b in zip(target_before, model.q_net_target.parameters(), strict=True))
    assert any(not th.equal(a, b) for a, b in zip(online_before, model.q_net.parameters(), strict=True))
    for key in ("train/loss", "train/q_mean", "train/valid_step_fraction", "train/learning_rate", "train/n_updates"):
        assert key in model.logger.name_to_value, key
    assert 0.0 < model.logger.name_to_value["train/valid_step_fraction"] <= 1.0
    assert np.isfinite(model.logger.name_to_value["train/loss"])


@pytest.mark.parametrize("n_steps", [1, 2, 3, 5])
def test_n_step_targets_match_hand_computation(n_steps):
    model = RecurrentDQN(
        "MlpLstmPolicy", CueMemoryEnv(), gamma=GAMMA, n_steps=n_steps, sequence_length=4, buffer_size=100, seed=0
    )
    # Four windows of 4 learning steps: a full run; a termination at step 1; a truncation at step 2 (the episode
    # ends, the successor is the final observation: bootstraps); only the first two steps known (newest step)
    rewards = th.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 0.0, 0.0], [1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 0.0, 0.0]]).T
    terminations = th.tensor([[0.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).T
    mask = th.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]]).T
    next_q = th.tensor([[10.0, 20, 30, 40], [10, 20, 30, 40], [10, 20, 30, 40], [10, 20, 30, 40]]).T
    batch = RecurrentReplayBufferSamples(
        observations=th.zeros(5, 4, 3),
        actions=th.zeros(4, 4, dtype=th.long),
        rewards=rewards,
        terminations=terminations,
        mask=mask,
        burn_in_lengths=th.zeros(4, dtype=th.long),
        recurrent_states=(),
    )
    targets = model._n_step_targets(batch, next_q)
    for window in range(4):
        valid = [bool(mask[k, window]) for k in range(4)]
        for k in range(4):
            if not valid[k]:
                continue
            total, m = 0.0, 0
            while m < n_steps and k + m < 4 and valid[k + m]:
                total += GAMMA**m * rewards[k + m, window].item()
                m += 1
            last = k + m - 1
            total += GAMMA**m * (1 - terminations[last, window].item()) * next_q[last, window].item()
            assert targets[k, window].item() == pytest.approx(total, abs=1e-5), (window, k)
    # spot checks written out: a 3-step return inside the first window, and the terminated one
    if n_steps == 3:
        assert targets[0, 0].item() == pytest.approx(1 + GAMMA * 2 + GAMMA**2 * 3 + GAMMA**3 * 30, abs=1e-5)
        assert targets[0, 1].item() == pytest.approx(1 + GAMMA * 2, abs=1e-5)
        assert targets[1, 2].item() == pytest.approx(2 + GAMMA * 3 + GAMMA**2 * 30, abs=1e-5)
