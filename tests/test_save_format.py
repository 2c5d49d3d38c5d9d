"""Save-format stability: a model saved by an earlier version (committed fixture) still loads and acts the same."""

import json
from pathlib import Path

import numpy as np
import pytest
from make_fixtures import FIXTURES, outputs

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv


@pytest.mark.parametrize("with_env", [False, True])
def test_committed_checkpoint_loads_and_acts_the_same(with_env):
    expected = json.loads((FIXTURES / "drqn_cue_memory.json").read_text())
    model = RecurrentDQN.load(FIXTURES / "drqn_cue_memory.zip", env=CueMemoryEnv(delay=3) if with_env else None)
    assert model.sequence_length == 4 and model.burn_in == 2 and model.recurrent_init == "stored"
    got = outputs(model)
    assert got["actions"] == expected["actions"]
    np.testing.assert_allclose(np.array(got["q_values"]), np.array(expected["q_values"]), rtol=1e-5, atol=1e-6)
    if with_env:
        model.learn(60)  # and it can go on training


def test_fixture_is_small():
    assert Path(FIXTURES / "drqn_cue_memory.zip").stat().st_size < 100_000
