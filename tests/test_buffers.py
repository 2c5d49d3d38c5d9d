"""Sequence replay buffer: exact windows around episode ends and after wrap-around, and invariants."""

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_drqn.common.buffers import RecurrentReplayBuffer

FINAL = -1  # step value that marks a real final observation


class Recorder:
    """
    Feeds a buffer with steps whose observations say where they come from: ``[env, episode, step]``, and
    ``[env, episode, FINAL]`` for the final observation of an episode. The stored recurrent state of a step
    is filled with ``1000 * env + 100 * episode + step`` (h) and its negative (c), except at episode starts,
    where it is zero, as the actor's is.
    """

    def __init__(self, buffer: RecurrentReplayBuffer, n_envs: int):
        self.buffer = buffer
        self.n_envs = n_envs
        self.episode = np.zeros(n_envs, dtype=int)
        self.step = np.zeros(n_envs, dtype=int)

    def add(self, terminated: list[bool], truncated: list[bool]) -> None:
        envs = np.arange(self.n_envs)
        obs = np.stack([envs, self.episode, self.step], axis=1).astype(np.float32)
        final = np.stack([envs, self.episode, np.full(self.n_envs, FINAL)], axis=1).astype(np.float32)
        dones = np.array(terminated) | np.array(truncated)
        infos = [{"TimeLimit.truncated": bool(trunc and not term)} for term, trunc in zip(terminated, truncated, strict=True)]
        code = state_code(envs, self.episode, self.step)
        shape = self.buffer.recurrent_state_shape
        assert shape is not None
        h = np.broadcast_to(code[None, :, None], (shape[1], self.n_envs, shape[2])).copy()
        self.buffer.add(obs, final, np.arange(self.n_envs) + 10 * self.step, code, dones, infos, recurrent_state=(h, -h))
        self.episode = np.where(dones, self.episode + 1, self.episode)
        self.step = np.where(dones, 0, self.step + 1)


def state_code(env, episode, step):
    return np.where(np.asarray(step) > 0, 1000 * env + 100 * episode + step, 0).astype(np.float32)


def make_buffer(rows: int, n_envs: int, sequence_length: int, burn_in: int, **kwargs) -> RecurrentReplayBuffer:
    return RecurrentReplayBuffer(
        rows * n_envs,
        spaces.Box(-10, 1000, (3,), np.float32),
        spaces.Discrete(1000),
        device="cpu",
        n_envs=n_envs,
        sequence_length=sequence_length,
        burn_in=burn_in,
        recurrent_state_shape=(2, 1, 2),
        **kwargs,
    )


def window(buffer: RecurrentReplayBuffer, row: int, env: int):
    """The window that starts at ``row`` (array index) of ``env``."""
    oldest = buffer.pos if buffer.full else 0
    offset = (row - oldest) % buffer.buffer_size
    return buffer._get_samples(np.array([offset]), env_indices=np.array([env]))


def as_rows(tensor) -> list:
    return tensor[:, 0].tolist()


@pytest.fixture
def filled():
    # 8 rows, 2 envs, windows of 3 learning steps with up to 2 burn-in steps.
    # env 0: episode 0 = rows 0-3 (terminated at row 3), episode 1 = rows 4-6 (truncated at row 6), episode 2 from row 7
    # env 1: episode 0 = rows 0-1 (truncated at row 1), episode 1 from row 2
    buffer = make_buffer(rows=8, n_envs=2, sequence_length=3, burn_in=2)
    recorder = Recorder(buffer, 2)
    for row in range(8):
        env0 = {3: (True, False), 6: (False, True)}.get(row, (False, False))
        env1 = {1: (False, True)}.get(row, (False, False))
        recorder.add([env0[0], env1[0]], [env0[1], env1[1]])
    return buffer, recorder


def test_window_ending_in_termination(filled):
    buffer, _ = filled
    sample = window(buffer, row=2, env=0)
    # burn-in rows 0, 1; learning rows 2, 3; row 3 terminates, so the next position holds the final observation
    assert as_rows(sample.observations) == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 0, FINAL], [0, 1, 1]]
    assert sample.burn_in_lengths.tolist() == [2]
    assert as_rows(sample.mask) == [1, 1, 0]
    assert as_rows(sample.terminations) == [0, 1, 0]
    assert as_rows(sample.rewards)[:2] == [2, 3]
    assert as_rows(sample.actions)[:2] == [20, 30]
    # The stored state is the one at the first burn-in step (row 0: episode start)
    assert sample.recurrent_states[0][0, 0].tolist() == [0, 0]
    assert sample.recurrent_states[1][0, 0].tolist() == [0, 0]


def test_window_ending_in_truncation_bootstraps(filled):
    buffer, _ = filled
    sample = window(buffer, row=5, env=0)
    # burn-in clipped at the episode start (row 4): one step, then padding
    assert sample.burn_in_lengths.tolist() == [1]
    assert as_rows(sample.observations)[0] == [0, 1, 0]
    assert as_rows(sample.observations)[2:5] == [[0, 1, 1], [0, 1, 2], [0, 1, FINAL]]
    assert as_rows(sample.mask) == [1, 1, 0]
    # A truncation is not a termination: its target bootstraps from the final observation
    assert as_rows(sample.terminations) == [0, 0, 0]
    assert sample.recurrent_states[0][0, 0].tolist() == [0, 0]  # episode start


def test_window_that_starts_at_a_truncation(filled):
    buffer, _ = filled
    later = window(buffer, row=5, env=1)  # burn-in from row 3, episode 1's second step: h and c stored
    assert later.recurrent_states[0][0, 0].tolist() == [1101, 1101]
    assert later.recurrent_states[1][0, 0].tolist() == [-1101, -1101]
    sample = window(buffer, row=1, env=1)
    assert sample.burn_in_lengths.tolist() == [1]
    assert sample.recurrent_states[1][0, 0].tolist() == [0, 0]
    assert as_rows(sample.observations)[0] == [1, 0, 0]
    assert as_rows(sample.observations)[2:4] == [[1, 0, 1], [1, 0, FINAL]]
    assert as_rows(sample.mask) == [1, 0, 0]
    assert as_rows(sample.terminations) == [0, 0, 0]
    assert sample.recurrent_states[0][0, 0].tolist() == [0, 0]


def test_window_inside_an_episode_and_at_the_newest_step(filled):
    buffer, _ = filled
    sample = window(buffer, row=4, env=1)
    assert sample.burn_in_lengths.tolist() == [2]
    assert as_rows(sample.observations) == [[1, 1, 0], [1, 1, 1], [1, 1, 2], [1, 1, 3], [1, 1, 4], [1, 1, 5]]
    assert as_rows(sample.mask) == [1, 1, 1]
    assert sample.recurrent_states[0][0, 0].tolist() == [0, 0]
    # Row 7 is the newest step and its successor is not stored yet: masked, as is everything after it
    sample = window(buffer, row=6, env=1)
    assert as_rows(sample.mask) == [1, 0, 0]
    assert as_rows(sample.observations)[2:4] == [[1, 1, 4], [1, 1, 5]]
    # ... and it cannot start a window
    assert not buffer._has_successor(np.array([7]), np.array([1]))[0]
    assert not buffer._has_successor(np.array([7]), np.array([0]))[0]


def test_windows_after_wrap_around(filled):
    buffer, recorder = filled
    for _ in range(3):  # overwrite rows 0, 1, 2; env 0 continues episode 2, env 1 episode 1
        recorder.add([False, False], [False, False])
    assert buffer.full and buffer.pos == 3
    # The oldest stored step (row 3) cannot burn in over overwritten rows: its own stored state is used
    sample = window(buffer, row=3, env=0)
    assert sample.burn_in_lengths.tolist() == [0]
    assert as_rows(sample.observations)[2:4] == [[0, 0, 3], [0, 0, FINAL]]
    assert as_rows(sample.mask) == [1, 0, 0]
    assert as_rows(sample.terminations) == [1, 0, 0]
    assert sample.recurrent_states[0][0, 0].tolist() == [3, 3]
    sample = window(buffer, row=3, env=1)
    assert sample.burn_in_lengths.tolist() == [0]
    assert sample.recurrent_states[0][0, 0].tolist() == [1101, 1101]
    # A window across the physical end of the array: burn-in rows 7, 0, learning rows 1, 2 (newest)
    sample = window(buffer, row=1, env=0)
    assert sample.burn_in_lengths.tolist() == [2]
    assert as_rows(sample.observations)[:4] == [[0, 2, 0], [0, 2, 1], [0, 2, 2], [0, 2, 3]]
    assert as_rows(sample.mask) == [1, 0, 0]
    assert sample.recurrent_states[0][0, 0].tolist() == [0, 0]
    # Burn-in is clipped at the oldest stored step
    sample = window(buffer, row=4, env=1)
    assert sample.burn_in_lengths.tolist() == [1]
    assert as_rows(sample.observations)[0] == [1, 1, 1]


def test_episode_break_masks_the_cut_step():
    buffer = make_buffer(rows=6, n_envs=1, sequence_length=3, burn_in=1)
    recorder = Recorder(buffer, 1)
    recorder.add([False], [False])
    recorder.add([False], [False])
    # The env is reset without the episode ending (e.g. a new call to learn())
    buffer.mark_episode_break()
    recorder.episode[:] += 1
    recorder.step[:] = 0
    recorder.add([False], [False])
    recorder.add([False], [False])
    sample = window(buffer, row=0, env=0)
    assert as_rows(sample.mask) == [1, 0, 0]  # row 1 has no known successor, row 2 is another episode
    assert not buffer._has_successor(np.array([1]), np.array([0]))[0]
    sample = window(buffer, row=2, env=0)
    assert sample.burn_in_lengths.tolist() == [0]


def test_without_timeout_handling_truncations_terminate(filled):
    buffer = make_buffer(rows=4, n_envs=1, sequence_length=2, burn_in=0, handle_timeout_termination=False)
    recorder = Recorder(buffer, 1)
    recorder.add([False], [False])
    recorder.add([False], [True])
    assert as_rows(window(buffer, row=0, env=0).terminations) == [0, 1]


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("sequence_length,burn_in", [(1, 0), (4, 3), (7, 0)])
def test_random_episodes_invariants(n_envs, sequence_length, burn_in):
    rng = np.random.default_rng(n_envs * 100 + sequence_length)
    rows = 23
    buffer = make_buffer(rows=rows, n_envs=n_envs, sequence_length=sequence_length, burn_in=burn_in)
    recorder = Recorder(buffer, n_envs)
    # (episode, step, done, terminated) of every step of each env, "break" where the env was reset mid-episode
    history: list[list[tuple]] = [[] for _ in range(n_envs)]
    np.random.seed(0)
    for time in range(3 * rows + 5):
        terminated = list(rng.random(n_envs) < 0.08)
        truncated = list(rng.random(n_envs) < 0.08)
        if time == 40:
            buffer.mark_episode_break()
            recorder.episode += 1
            recorder.step[:] = 0
            for env in range(n_envs):
                history[env].append(("break", 0, False, False))
        for env in range(n_envs):
            history[env].append(
                (int(recorder.episode[env]), int(recorder.step[env]), terminated[env] or truncated[env], terminated[env])
            )
        recorder.add(terminated, truncated)
        if time < sequence_length + 2:
            continue
        sample = buffer.sample(64)
        obs = sample.observations.numpy()
        for i in range(64):
            env, episode, start = obs[burn_in, i].astype(int)
            # burn-in: consecutive steps of the same episode and env right before the start
            b = int(sample.burn_in_lengths[i])
            assert b <= min(burn_in, start)
            for j in range(b):
                assert obs[j, i].tolist() == [env, episode, start - b + j]
            assert sample.recurrent_states[0][0, i, 0].item() == state_code(env, episode, start - b)
            # learning steps: the oracle says which are in the episode and have a known successor
            records = [r for r in history[env] if r[0] == episode]
            for k in range(sequence_length):
                step = start + k
                # stored, and either the episode ends there or its next step is stored
                expected_valid = step < len(records) and (records[step][2] or step + 1 < len(records))
                assert sample.mask[k, i].item() == float(expected_valid), (env, episode, start, k)
                if expected_valid:
                    assert obs[burn_in + k, i].tolist() == [env, episode, step]
                    nxt = obs[burn_in + k + 1, i].tolist()
                    if records[step][2]:
                        assert nxt == [env, episode, FINAL]
                        assert sample.terminations[k, i].item() == float(records[step][3])
                    else:
                        assert nxt == [env, episode, step + 1]
                        assert sample.terminations[k, i].item() == 0.0


def test_dict_observations_and_final_observations():
    space = spaces.Dict({"image": spaces.Box(0, 255, (1, 2, 2), np.uint8), "vec": spaces.Box(-1, 1, (2,), np.float32)})
    buffer = RecurrentReplayBuffer(
        8, space, spaces.Discrete(2), device="cpu", n_envs=2, sequence_length=2, burn_in=1, recurrent_state_shape=(1, 1, 3)
    )
    for t in range(4):
        obs = {"image": np.full((2, 1, 2, 2), t, np.uint8), "vec": np.full((2, 2), t / 10, np.float32)}
        final = {"image": np.full((2, 1, 2, 2), 99, np.uint8), "vec": np.full((2, 2), -1, np.float32)}
        state = (np.full((1, 2, 3), t, np.float32),)
        buffer.add(obs, final, np.array([0, 1]), np.ones(2), np.array([t == 1, False]), [{}, {}], recurrent_state=state)
    sample = buffer._get_samples(np.array([1, 1]), env_indices=np.array([0, 1]))
    assert isinstance(sample.observations, dict)
    assert sample.observations["image"].dtype.is_floating_point is False  # stored and sent as uint8
    assert sample.observations["image"][:, 0, 0, 0, 0].tolist() == [0, 1, 99, 3]
    assert sample.observations["image"][:, 1, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert sample.mask.tolist() == [[1, 1], [0, 1]]
    assert sample.terminations.tolist() == [[1, 0], [0, 0]]
    assert len(sample.recurrent_states) == 1 and sample.recurrent_states[0].shape == (1, 2, 3)


def test_observations_are_normalized_at_sampling_time():
    buffer = make_buffer(rows=6, n_envs=1, sequence_length=2, burn_in=0)
    recorder = Recorder(buffer, 1)
    for _ in range(4):
        recorder.add([False], [False])
    assert buffer.observations[:4, 0, 2].tolist() == [0, 1, 2, 3]  # stored raw
    venv = VecNormalize(DummyVecEnv([lambda: __import__("gymnasium").make("CartPole-v1")]), norm_reward=False)
    venv.obs_rms.mean = np.array([0.0, 0.0, 1.0])
    venv.obs_rms.var = np.array([1.0, 1.0, 4.0])
    sample = buffer._get_samples(np.array([0]), env=venv)
    assert sample.observations[:, 0, 2].tolist() == pytest.approx([-0.5, 0.0, 0.5], abs=1e-4)


def test_buffer_rejects_bad_configuration():
    box, discrete = spaces.Box(-1, 1, (2,)), spaces.Discrete(2)
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        RecurrentReplayBuffer(100, box, discrete, optimize_memory_usage=True)
    with pytest.raises(ValueError, match="Discrete"):
        RecurrentReplayBuffer(100, box, spaces.Box(-1, 1, (1,)))
    with pytest.raises(ValueError, match="buffer_size"):
        RecurrentReplayBuffer(10, box, discrete, n_envs=2, sequence_length=5)
    buffer = RecurrentReplayBuffer(100, box, discrete, recurrent_state_shape=(2, 1, 4))
    with pytest.raises(ValueError, match="recurrent_state"):
        buffer.add(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1), np.zeros(1), np.zeros(1), [{}])
    with pytest.raises(ValueError, match="recurrent_state"):
        state = (np.zeros((1, 1, 3)), np.zeros((1, 1, 3)))
        buffer.add(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1), np.zeros(1), np.zeros(1), [{}], recurrent_state=state)
    assert buffer.size() == 0
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(4)


def test_final_observation_slots_are_not_reused_while_referenced():
    # Every step ends an episode: the side store is as busy as it can be
    buffer = make_buffer(rows=5, n_envs=2, sequence_length=1, burn_in=0)
    recorder = Recorder(buffer, 2)
    for _ in range(17):
        recorder.add([True, False], [False, True])
    for row in range(5):
        for env in range(2):
            sample = window(buffer, row=row, env=env)
            current = sample.observations[0, 0].tolist()
            assert sample.observations[1, 0].tolist() == [current[0], current[1], FINAL]


@pytest.mark.parametrize("state_stride,state_dtype", [(3, "float32"), (4, "float16"), (1, "float16")])
@pytest.mark.parametrize("burn_in", [0, 2])
def test_sparse_and_half_precision_states_are_right_for_every_window(state_stride, state_dtype, burn_in):
    rng = np.random.default_rng(state_stride + burn_in)
    rows, n_envs = 22, 2
    buffer = make_buffer(rows, n_envs, sequence_length=3, burn_in=burn_in, state_stride=state_stride, state_dtype=state_dtype)
    n_state_rows = -(-rows // state_stride)
    assert buffer.recurrent_states.shape[0] == n_state_rows and buffer.recurrent_states.dtype == np.dtype(state_dtype)
    assert buffer.max_burn_in == burn_in + state_stride - 1
    recorder = Recorder(buffer, n_envs)
    for time in range(3 * rows + 4):
        # Mostly long episodes, so that some starts are overwritten while their episode goes on
        recorder.add(list(rng.random(n_envs) < 0.04), list(rng.random(n_envs) < 0.04))
        if time < 5:
            continue
        offsets, envs = buffer.valid_window_starts()
        sample = buffer._get_samples(offsets, env_indices=envs)
        obs = sample.observations.numpy()
        for i in range(len(offsets)):
            env, episode, start = obs[buffer.max_burn_in, i].astype(int)
            b = int(sample.burn_in_lengths[i])
            first_step = start - b if b > 0 else start
            if b > 0:
                assert obs[0, i].tolist() == [env, episode, first_step]
                assert [int(o[2]) for o in obs[:b, i]] == list(range(first_step, start))
            assert b <= buffer.max_burn_in
            state = sample.recurrent_states[0][0, i, 0].item()
            exact = float(state_code(env, episode, first_step))
            near_oldest_in_cut_episode = offsets[i] < burn_in + state_stride and start > offsets[i]
            if not near_oldest_in_cut_episode:
                # The desired burn-in is always covered, and the state is the actor's
                assert b >= min(burn_in, start, int(offsets[i]))
                assert state == pytest.approx(exact, rel=2e-3)
            else:
                # The one approximation: no known state before the window, so it starts from zeros
                assert state == pytest.approx(exact, rel=2e-3) or state == 0.0


@pytest.mark.parametrize(
    "space,state_shape,expected",
    [
        (spaces.Box(0, 255, (1, 84, 84), np.uint8), (2, 1, 512), (8, "float16")),  # Atari frame, R2D2-size LSTM
        (spaces.Box(0, 255, (3, 64, 64), np.uint8), (2, 1, 256), (2, "float16")),
        (spaces.Box(0, 255, (1, 84, 84), np.uint8), (1, 1, 16), (1, "float32")),  # small state: exact
        (spaces.Box(-1, 1, (4,), np.float32), (2, 1, 512), (1, "float32")),  # small observations: exact
        (spaces.Dict({"a": spaces.Box(0, 255, (1, 84, 84), np.uint8), "b": spaces.Box(-1, 1)}), (2, 1, 512), (8, "float16")),
    ],
)
def test_automatic_state_storage(space, state_shape, expected):
    buffer = RecurrentReplayBuffer(1000, space, spaces.Discrete(2), recurrent_state_shape=state_shape)
    assert (buffer.state_stride, buffer.state_dtype) == expected
    assert buffer.recurrent_states.dtype == np.dtype(expected[1])
    state_bytes = buffer.recurrent_states.nbytes / 1000
    frame_bytes = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in getattr(space, "spaces", {"": space}).values())
    if frame_bytes >= 4096:
        assert state_bytes <= frame_bytes / 16
    explicit = RecurrentReplayBuffer(
        1000, space, spaces.Discrete(2), recurrent_state_shape=state_shape, state_stride=1, state_dtype="float32"
    )
    assert (explicit.state_stride, explicit.state_dtype) == (1, "float32")


@pytest.mark.parametrize("bad", ["reward", "obs"])
def test_non_finite_data_is_refused_before_anything_is_stored(bad):
    buffer = make_buffer(rows=6, n_envs=2, sequence_length=2, burn_in=0)
    recorder = Recorder(buffer, 2)
    recorder.add([False, False], [False, False])
    obs, reward = np.zeros((2, 3), np.float32), np.zeros(2, np.float32)
    if bad == "reward":
        reward[1] = np.nan
    else:
        obs[1, 2] = np.inf
    state = (np.zeros((1, 2, 2), np.float32),) * 2
    with pytest.raises(ValueError, match=f"Non-finite {'reward' if bad == 'reward' else 'observation'}.*env\\(s\\) \\[1\\]"):
        buffer.add(obs, obs, np.zeros(2), reward, np.zeros(2), [{}, {}], recurrent_state=state)
    assert buffer.pos == 1
    recorder.add([False, False], [False, False])
    assert buffer.pos == 2 and as_rows(window(buffer, 0, 1).mask) == [1, 0]


def test_final_observation_store_is_sized_for_what_it_holds():
    # Long episodes: a handful of final observations, however many rows the buffer has
    buffer = make_buffer(rows=400, n_envs=2, sequence_length=2, burn_in=1)
    recorder = Recorder(buffer, 2)
    for time in range(1000):
        recorder.add([time % 97 == 96, False], [False, time % 151 == 150])
    assert len(buffer.final_observations) <= 8 < buffer.buffer_size * buffer.n_envs
    # Then a burst of one-step episodes makes it grow; every stored episode end still reads its own final observation
    for _ in range(300):
        recorder.add([True, True], [False, False])
    assert len(buffer.final_observations) >= buffer._n_final_observations > 8
    ends = np.argwhere(buffer.dones)
    for row, env in ends:
        sample = window(buffer, row=row, env=env)
        current = sample.observations[buffer.max_burn_in, 0].tolist()
        assert sample.observations[buffer.max_burn_in + 1, 0].tolist() == [current[0], current[1], FINAL]
