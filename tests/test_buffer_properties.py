"""Property tests of the sequence replay buffer against a plain-Python history of every step, and of its priorities."""

import numpy as np
from gymnasium import spaces
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_buffers import FINAL, Recorder, make_buffer, state_code

from sb3_drqn import PrioritizedRecurrentReplayBuffer

EVENTS = st.sampled_from(["", "", "", "", "term", "trunc"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_envs=st.integers(1, 3),
    rows=st.integers(3, 16),
    sequence_length=st.integers(1, 5),
    burn_in=st.integers(0, 4),
    state_stride=st.integers(1, 4),
    data=st.data(),
)
def test_sampled_windows_match_the_history(n_envs, rows, sequence_length, burn_in, state_stride, data):
    assume(rows >= sequence_length + burn_in + 1)  # the buffer's minimum size
    n_steps = data.draw(st.integers(1, 3 * rows), label="n_steps")
    events = data.draw(st.lists(st.lists(EVENTS, min_size=n_envs, max_size=n_envs), min_size=n_steps, max_size=n_steps))
    breaks = set(data.draw(st.lists(st.integers(0, n_steps - 1), max_size=2), label="breaks"))
    buffer = make_buffer(rows, n_envs, sequence_length, burn_in, state_stride=state_stride, state_dtype="float32")
    recorder = Recorder(buffer, n_envs)
    # history[env][episode] = list of (step, done, terminated); the step count of each env's written rows
    history: list[dict[int, list[tuple[bool, bool]]]] = [{} for _ in range(n_envs)]
    for time, step_events in enumerate(events):
        if time in breaks:
            buffer.mark_episode_break()
            recorder.episode += 1
            recorder.step[:] = 0
        for env, event in enumerate(step_events):
            history[env].setdefault(int(recorder.episode[env]), []).append((event != "", event == "term"))
        recorder.add([e == "term" for e in step_events], [e == "trunc" for e in step_events])

    offsets, envs = buffer.valid_window_starts()
    if len(offsets) == 0:
        return
    sample = buffer._get_samples(offsets, env_indices=envs)
    obs = sample.observations.numpy()
    start_position = buffer.max_burn_in
    for i in range(len(offsets)):
        env, episode, start = obs[start_position, i].astype(int)
        assert env == envs[i]
        records = history[env][episode]
        # burn-in: consecutive steps of the same episode, ending right before the start
        b = int(sample.burn_in_lengths[i])
        assert 0 <= b <= buffer.max_burn_in and b <= start
        for j in range(b):
            assert obs[j, i].tolist() == [env, episode, start - b + j]
        first_step = start - b
        exact = state_code(env, episode, first_step)
        near_oldest = offsets[i] < burn_in + state_stride and start > offsets[i]
        if not near_oldest:
            assert b >= min(burn_in, start, int(offsets[i]))
            assert sample.recurrent_states[0][0, i, 0].item() == exact
        # learning steps: valid exactly where the step is stored and its successor is known
        for k in range(sequence_length):
            step = start + k
            expected_valid = step < len(records) and (records[step][0] or step + 1 < len(records))
            assert sample.mask[k, i].item() == float(expected_valid)
            if not expected_valid:
                # nothing after an invalid step is valid
                assert sample.mask[k:, i].sum().item() == 0
                break
            assert obs[start_position + k, i].tolist() == [env, episode, step]
            successor = obs[start_position + k + 1, i].tolist()
            done, terminated = records[step]
            assert successor == ([env, episode, FINAL] if done else [env, episode, step + 1])
            assert sample.terminations[k, i].item() == float(terminated)
    # windows are drawn only among valid starts
    np.random.seed(0)
    drawn = buffer.sample(32)
    assert drawn.mask[0].sum().item() == 32


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_envs=st.integers(1, 3), rows=st.integers(3, 12), sequence_length=st.integers(1, 4), data=st.data())
def test_priorities_stay_consistent(n_envs, rows, sequence_length, data):
    assume(rows >= sequence_length + 2)  # the buffer's minimum size with burn_in=1
    n_steps = data.draw(st.integers(1, 3 * rows), label="n_steps")
    buffer = PrioritizedRecurrentReplayBuffer(
        rows * n_envs,
        spaces.Box(-10, 1000, (3,), np.float32),
        spaces.Discrete(1000),
        n_envs=n_envs,
        sequence_length=sequence_length,
        burn_in=1,
        recurrent_state_shape=(2, 1, 2),
    )
    recorder = Recorder(buffer, n_envs)
    leaves = np.arange(rows * n_envs)
    for _ in range(n_steps):
        if data.draw(st.integers(0, 9), label="break") == 0:
            buffer.mark_episode_break()
            recorder.episode += 1
            recorder.step[:] = 0
        step_events = data.draw(st.lists(EVENTS, min_size=n_envs, max_size=n_envs))
        recorder.add([e == "term" for e in step_events], [e == "trunc" for e in step_events])
        # Exactly the steps that can start a window have a priority (valid starts are checked against the
        # history above)
        offsets, envs = buffer.valid_window_starts()
        valid_leaves = ((buffer._oldest_row() + offsets) % buffer.buffer_size) * n_envs + envs
        assert set(np.flatnonzero(buffer.priorities[leaves] > 0)) == set(valid_leaves.tolist())
        assert buffer._n_sampleable == len(valid_leaves)
        if len(valid_leaves) > 0:
            # Sampling and updating keep the tree's sums exact and never reach an invalid start
            drawn = buffer.sample(4)
            assert drawn.mask[0].sum().item() == 4 and set(drawn.leaf_indices.tolist()) <= set(valid_leaves.tolist())
            new = data.draw(st.lists(st.floats(0, 100), min_size=4, max_size=4), label="priorities")
            buffer.update_priorities(drawn.leaf_indices, np.array(new))
            nodes = np.arange(1, buffer.priorities.size)
            tree = buffer.priorities.nodes
            assert np.allclose(tree[nodes], tree[2 * nodes] + tree[2 * nodes + 1])
