"""
The learner and the buffer against references made by sb3-drqn 0.1.0 (``make_reference_fixtures.py``): on the
same models and batches, the loss, the Q-values, the targets and the gradients are those 0.1.0 computed, and
0.1.0's replay buffer file gives the same windows.
"""

import numpy as np
import pytest
import torch as th
from make_reference_fixtures import (
    BUFFER_BATCHES,
    BUFFER_FILE,
    FIXTURES,
    LEARNER_CASES,
    LEARNER_REFERENCE,
    SAMPLE_SEEDS,
    batch_arrays,
    buffer_model,
    loss_and_gradients,
)

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.type_aliases import RecurrentReplayBufferSamples


def batch_from_arrays(arrays: dict[str, np.ndarray], prefix: str) -> RecurrentReplayBufferSamples:
    def get(field: str) -> th.Tensor | None:
        key = f"{prefix}/{field}"
        return th.as_tensor(arrays[key]) if key in arrays else None

    n_components = sum(key.startswith(f"{prefix}/recurrent_states/") for key in arrays)
    leaf_indices = arrays.get(f"{prefix}/leaf_indices")
    return RecurrentReplayBufferSamples(
        observations=get("observations"),
        actions=get("actions"),
        rewards=get("rewards"),
        terminations=get("terminations"),
        mask=get("mask"),
        burn_in_lengths=get("burn_in_lengths"),
        recurrent_states=tuple(th.as_tensor(arrays[f"{prefix}/recurrent_states/{i}"]) for i in range(n_components)),
        weights=get("weights"),
        leaf_indices=None if leaf_indices is None else np.asarray(leaf_indices),
    )


@pytest.mark.parametrize("case", list(LEARNER_CASES))
def test_loss_and_gradients_match_the_reference(case):
    reference = dict(np.load(LEARNER_REFERENCE))
    model = RecurrentDQN.load(FIXTURES / f"learner_{case}.zip")
    batch = batch_from_arrays(reference, f"{case}/batch")
    got = loss_and_gradients(model, batch)
    expected = {key[len(case) + 1 :]: value for key, value in reference.items() if key.startswith(f"{case}/")}
    names = [key for key in got]
    assert names == [key for key in expected if not key.startswith("batch/")]
    for key in names:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=f"{case}: {key}")


# The same buffer in the format without pickle (written by tests/test_buffer_file.py's maker from the file above)
BUFFER_FILE_FORMAT_1 = FIXTURES / "replay_buffer_format1.bin"


@pytest.mark.parametrize("path", [BUFFER_FILE, BUFFER_FILE_FORMAT_1], ids=["pickle_v0_1_0", "format1"])
def test_old_replay_buffer_file_gives_the_same_windows(path):
    expected = dict(np.load(BUFFER_BATCHES))
    model = buffer_model()
    if path == BUFFER_FILE:
        # 0.1.0's pickle file: refused unless the user opts in
        with pytest.raises(ValueError, match="pickle file"):
            model.load_replay_buffer(path)
        model.load_replay_buffer(path, allow_pickle=True)
    else:
        model.load_replay_buffer(path)
    for seed in SAMPLE_SEEDS:
        np.random.seed(seed)
        got = batch_arrays(model.replay_buffer.sample(8), f"seed{seed}")
        assert sorted(got) == sorted(key for key in expected if key.startswith(f"seed{seed}/"))
        for key, value in got.items():
            np.testing.assert_array_equal(value, expected[key], err_msg=key)
