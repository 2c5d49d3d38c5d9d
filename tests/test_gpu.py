"""CUDA: the whole update runs on the device. Skipped where CUDA is absent (as on CI)."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.envs import FakeImageEnv

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA is not available")]


@pytest.mark.parametrize(
    "policy,env", [("MlpLstmPolicy", CueMemoryEnv), ("CnnLstmPolicy", lambda: FakeImageEnv(discrete=True))]
)
def test_update_on_cuda(policy, env):
    model = RecurrentDQN(
        policy,
        env(),
        device="cuda",
        learning_starts=50,
        buffer_size=1000,
        batch_size=8,
        sequence_length=4,
        burn_in=2,
        policy_kwargs=dict(lstm_hidden_size=16),
        seed=0,
    )
    model.learn(200)
    assert model._n_updates > 0
    sample = model.replay_buffer.sample(8)
    observations = sample.observations
    assert observations.device.type == "cuda" and sample.mask.device.type == "cuda"
    assert all(component.device.type == "cuda" for component in sample.recurrent_states)
    assert sample.burn_in_lengths.device.type == "cpu"  # needed on the host by pack_padded_sequence
    loss, _, _ = model._compute_loss(sample)
    assert loss.device.type == "cuda" and th.isfinite(loss)
    action, state = model.predict(model.get_env().reset(), deterministic=True)
    assert isinstance(action, np.ndarray) and isinstance(state[0], np.ndarray)
