"""Property tests of the sequence replay buffer against a plain-Python history of every step."""

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_buffers import FINAL, Recorder, make_buffer, state_code

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
    assume(rows >= sequence_length + 1)
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
