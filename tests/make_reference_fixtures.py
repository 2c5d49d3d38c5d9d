"""
Writes reference fixtures made by sb3-drqn 0.1.0, BEFORE the buffer layout and the learner changed:

- ``fixtures/replay_buffer_v0_1_0.pkl``: a replay buffer saved by ``save_replay_buffer`` (a pickle, two envs,
  episode ends included, the columns wrapped around), and ``fixtures/replay_buffer_v0_1_0_batches.npz``: the windows that
  buffer gives for fixed seeds, so that later versions can check they load it and sample the same batches.
- ``fixtures/learner_<case>.zip`` and ``fixtures/learner_reference.npz``: small models (their target networks
  perturbed, so that they differ from the online ones) and batches with the loss, Q-values, targets and
  gradients that 0.1.0's learner computed, so that a faster learner can be checked to compute the same thing.

These describe an old version: never regenerate them. ``python tests/make_reference_fixtures.py`` was run once.
"""

from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv

FIXTURES = Path(__file__).parent / "fixtures"
BUFFER_FILE = FIXTURES / "replay_buffer_v0_1_0.pkl"
BUFFER_BATCHES = FIXTURES / "replay_buffer_v0_1_0_batches.npz"
LEARNER_REFERENCE = FIXTURES / "learner_reference.npz"
# Learner reference configurations: (name, model arguments)
LEARNER_CASES: dict[str, dict] = {
    "lstm_double": dict(policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8])),
    "gru_single_nstep": dict(double_q=False, n_steps=3, policy_kwargs=dict(lstm_hidden_size=8, rnn_type="gru", net_arch=[8])),
    "lstm_rescaled_prioritized": dict(
        value_rescaling=True, prioritized_replay=True, n_steps=2, policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8])
    ),
    "lstm_zero_init": dict(recurrent_init="zero", policy_kwargs=dict(lstm_hidden_size=8, net_arch=[8], n_lstm_layers=2)),
}
SAMPLE_SEEDS = (0, 1, 2)


def buffer_model(**kwargs) -> RecurrentDQN:
    env = make_vec_env(lambda: CueMemoryEnv(delay=3), n_envs=2, seed=0)
    defaults = dict(learning_starts=50, buffer_size=400, batch_size=8, sequence_length=4, burn_in=2, seed=0)
    # 0.1.0's defaults where they changed since (the fixtures were made with them)
    defaults |= dict(gamma=0.99, n_steps=1, policy_kwargs=dict(lstm_hidden_size=128, net_arch=[]))
    return RecurrentDQN("MlpLstmPolicy", env, **{**defaults, **kwargs})


def batch_arrays(batch, prefix: str) -> dict[str, np.ndarray]:
    arrays = {}
    for field in ("observations", "actions", "rewards", "terminations", "mask", "burn_in_lengths", "weights"):
        value = getattr(batch, field)
        if value is not None:
            arrays[f"{prefix}/{field}"] = value.cpu().numpy()
    for i, component in enumerate(batch.recurrent_states):
        arrays[f"{prefix}/recurrent_states/{i}"] = component.cpu().numpy()
    if batch.leaf_indices is not None:
        arrays[f"{prefix}/leaf_indices"] = np.asarray(batch.leaf_indices)
    return arrays


def sampled_batches(model: RecurrentDQN) -> dict[str, np.ndarray]:
    arrays = {}
    for seed in SAMPLE_SEEDS:
        np.random.seed(seed)
        arrays.update(batch_arrays(model.replay_buffer.sample(8), f"seed{seed}"))
    return arrays


def make_buffer_fixture() -> None:
    model = buffer_model()
    model.learn(300)  # 600 steps over 2 envs: the 200-row columns wrap around
    model.save_replay_buffer(BUFFER_FILE)
    np.savez_compressed(BUFFER_BATCHES, **sampled_batches(model))


def learner_batch(model: RecurrentDQN):
    np.random.seed(0)
    return model.replay_buffer.sample(8, **({"beta": 0.6} if model.prioritized_replay else {}))


def loss_and_gradients(model: RecurrentDQN, batch) -> dict[str, np.ndarray]:
    loss, current, target = model._compute_loss(batch)
    model.policy.optimizer.zero_grad()
    loss.backward()
    arrays = {"loss": loss.detach().numpy(), "current": current.detach().numpy(), "target": target.detach().numpy()}
    for name, param in model.q_net.named_parameters():
        arrays[f"grad/{name}"] = param.grad.numpy().copy()
    return arrays


def make_learner_reference() -> None:
    arrays = {}
    for name, kwargs in LEARNER_CASES.items():
        model = buffer_model(**kwargs)
        model.learn(300)
        with th.no_grad():  # a target network that differs from the online one
            for param in model.q_net_target.parameters():
                param.add_(0.1 * th.randn_like(param))
        model.save(FIXTURES / f"learner_{name}.zip")
        batch = learner_batch(model)
        arrays.update(batch_arrays(batch, f"{name}/batch"))
        arrays.update({f"{name}/{key}": value for key, value in loss_and_gradients(model, batch).items()})
    np.savez_compressed(LEARNER_REFERENCE, **arrays)


if __name__ == "__main__":
    th.set_num_threads(1)
    FIXTURES.mkdir(exist_ok=True)
    make_buffer_fixture()
    make_learner_reference()
