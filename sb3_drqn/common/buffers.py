import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import get_obs_shape
from stable_baselines3.common.vec_env import VecNormalize

from sb3_drqn.common.sum_tree import SumTree
from sb3_drqn.common.type_aliases import NumpyRecurrentState, RecurrentReplayBufferSamples, RecurrentState
from sb3_drqn.common.utils import check_argument, first_array, is_finite_number, is_integer

ObsArray = np.ndarray | dict[str, np.ndarray]


def _map_obs(fn: Callable[[np.ndarray], np.ndarray], obs: ObsArray) -> ObsArray:
    """Apply ``fn`` to an observation array, or to every entry of a dict of them."""
    if isinstance(obs, dict):
        return {key: fn(value) for key, value in obs.items()}
    return fn(obs)


def _checksum(value: Any, crc: int = 0) -> int:
    """CRC-32 of every NumPy array in ``value`` (arrays, and dicts, lists and tuples of them), in a fixed order."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        # A byte view of the array, without copying it
        return zlib.crc32(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data, crc)
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            crc = _checksum(value[key], zlib.crc32(str(key).encode(), crc))
    elif isinstance(value, list | tuple):
        for item in value:
            crc = _checksum(item, crc)
    elif isinstance(value, SumTree):
        crc = _checksum(value.nodes, crc)
    return crc


def _write_obs(store: ObsArray, index: Any, value: ObsArray) -> None:
    """``store[index] = value`` for an observation array, or entry by entry for a dict of them."""
    if isinstance(store, dict):
        assert isinstance(value, dict)
        for key, array in store.items():
            array[index] = value[key]
    else:
        store[index] = value


class RecurrentReplayBuffer(ReplayBuffer):
    """
    Sequence replay buffer for recurrent off-policy algorithms (DRQN, R2D2).

    Like SB3's :class:`~stable_baselines3.common.buffers.ReplayBuffer`, the data lives in per-env columns of
    ``buffer_size // n_envs`` rows, but each observation is stored once: the observation that follows a step
    is the next row of the same column. Only where an episode ends is the real final observation
    (``infos[i]["terminal_observation"]``) kept, in a compact side store, so that time-limit truncations can
    bootstrap from it. Box, Discrete, MultiDiscrete, MultiBinary and Dict observation spaces are handled by
    this one class. The recurrent state the actor had *before* each step is stored with it (R2D2's "stored
    state"), unless ``recurrent_state_shape`` is ``None``.

    Sampling returns windows: a window is named by its first learning step ``t`` (any stored step whose
    successor is known); its learning steps are ``t .. t + sequence_length - 1`` and its burn-in the
    ``burn_in`` steps before ``t``, clipped at the start of the episode and at the oldest stored step. A window
    never crosses an episode start after its first step: steps past the end of the episode, past the newest
    stored step, or whose successor is unknown are masked out. Overwritten rows are never read.

    :param buffer_size: Max number of transitions in the buffer (over all envs)
    :param observation_space: Observation space
    :param action_space: Action space (``Discrete``)
    :param device: PyTorch device to which the sampled tensors are moved
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: Not applicable: frames are always stored once. Must be ``False``.
    :param handle_timeout_termination: Treat time-limit truncations (``infos[i]["TimeLimit.truncated"]``)
        as non-terminal: their targets bootstrap from the final observation.
    :param sequence_length: Number of learning steps per sampled window
    :param burn_in: Number of steps before the learning steps that only warm the recurrent state
    :param recurrent_state_shape: ``(n_components, n_layers, hidden_size)`` of the actor's recurrent state
        (``n_components`` is 2 for an LSTM, 1 for a GRU), or ``None`` not to store states (sampled windows
        then start from zeros, the DRQN paper's setting)
    :param state_stride: Store the recurrent state only at every ``state_stride``-th row of each column, to save
        memory (a 512-unit LSTM state is 4 KiB in float32, more than half an 84x84 frame). ``"auto"`` (default):
        for observations of at least 4 KiB (images) whose float32 state would cost more than 1/16 of an
        observation, the smallest power of two (up to 16) that brings the float16 state under 1/16 of an
        observation (8 for Atari frames with a 512-unit LSTM: 256 B per step); otherwise 1. The burn-in of a window
        is then extended, by up to ``state_stride - 1`` steps, back to the nearest stored state (or to the
        episode start, where the state is exactly zero), so the state it starts from stays the actor's. Only in
        a long episode whose start has been overwritten, a window among the ``burn_in + state_stride - 1`` oldest
        steps may find no stored state at or before its desired burn-in start: it then starts from the next stored
        state (a shorter burn-in), or from zeros if there is none before the window.
    :param state_dtype: ``"float32"`` (exact) or ``"float16"`` (half the memory) for the stored states;
        ``"auto"`` (default): float16 where ``"auto"`` makes the state storage sparse (see above), else float32
    """

    observations: ObsArray  # type: ignore[assignment]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    timeouts: np.ndarray
    episode_steps: np.ndarray
    final_observations: ObsArray
    final_observation_slots: np.ndarray
    recurrent_states: np.ndarray | None

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        sequence_length: int = 10,
        burn_in: int = 0,
        recurrent_state_shape: tuple[int, int, int] | None = None,
        state_stride: int | str = "auto",
        state_dtype: str = "auto",
    ):
        self.check_arguments(sequence_length, burn_in, optimize_memory_usage)
        self.check_action_space(action_space)
        self.check_size(buffer_size, n_envs, sequence_length, burn_in)
        check_argument(
            state_stride == "auto" or (is_integer(state_stride) and int(state_stride) >= 1),
            "state_stride",
            state_stride,
            "'auto' or an integer >= 1",
        )
        check_argument(
            state_dtype in ("auto", "float32", "float16"), "state_dtype", state_dtype, "'auto', 'float32' or 'float16'"
        )
        # Skip ReplayBuffer.__init__, which would allocate next_observations
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = buffer_size // n_envs
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.sequence_length = sequence_length
        self.burn_in = burn_in
        self.recurrent_state_shape = recurrent_state_shape
        auto_stride, auto_dtype = self._compact_state_storage(observation_space, recurrent_state_shape)
        self.state_stride = auto_stride if state_stride == "auto" else int(state_stride)
        self.state_dtype = auto_dtype if state_dtype == "auto" else state_dtype

        rows = (self.buffer_size, self.n_envs)
        # np.zeros maps pages lazily: memory is only used once rows are written
        self.observations = self._allocate_obs(rows)
        # The smallest integer type that holds every action (the space is Discrete: check_action_space)
        n_actions = int(action_space.n)  # type: ignore[attr-defined]
        self.actions = np.zeros(rows, dtype=np.min_scalar_type(max(n_actions - 1, 0)))
        self.rewards = np.zeros(rows, dtype=np.float32)
        self.dones = np.zeros(rows, dtype=bool)
        self.timeouts = np.zeros(rows, dtype=bool)
        # Index of each step inside its episode: 0 marks an episode start
        self.episode_steps = np.zeros(rows, dtype=np.int32)
        # The real final observations of the episodes that end in the buffer, in a ring sized for what it holds
        # (see _store_final_observations); the slot of each, read only where the row ended an episode
        self.final_observations = self._allocate_obs((min(self.buffer_size, 4) * self.n_envs,))
        slot_dtype = np.int32 if self.buffer_size * self.n_envs < np.iinfo(np.int32).max else np.int64
        self.final_observation_slots = np.zeros(rows, dtype=slot_dtype)
        self._next_final_slot = 0
        self._n_final_observations = 0
        self.recurrent_states = None
        if recurrent_state_shape is not None:
            n_state_rows = -(-self.buffer_size // self.state_stride)
            state_shape = (n_state_rows, self.n_envs, *recurrent_state_shape)
            self.recurrent_states = np.zeros(state_shape, dtype=np.dtype(self.state_dtype))
        self._next_episode_steps = np.zeros(self.n_envs, dtype=np.int32)

    @staticmethod
    def check_arguments(sequence_length: int, burn_in: int, optimize_memory_usage: bool = False) -> None:
        """
        Check the window settings (raises a ValueError naming the first invalid one). :class:`RecurrentDQN` calls
        this before anything else is built, so the message comes as early as possible.
        """
        check_argument(
            is_integer(sequence_length) and sequence_length >= 1, "sequence_length", sequence_length, "an integer >= 1"
        )
        check_argument(is_integer(burn_in) and burn_in >= 0, "burn_in", burn_in, "an integer >= 0")
        if optimize_memory_usage:
            raise ValueError(
                "optimize_memory_usage=True is not supported and not needed: the sequence replay buffer always stores "
                "each frame once."
            )

    @staticmethod
    def check_action_space(action_space: spaces.Space) -> None:
        """Only Discrete action spaces are supported (raises a ValueError otherwise)."""
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"RecurrentDQN supports only Discrete action spaces (the env's action space), got {action_space}."
            )

    def mismatches(self, settings: dict[str, Any]) -> list[str]:
        """
        How this buffer differs from one built with ``settings`` (its constructor's arguments; ``buffer_size`` is
        the least it must hold), e.g. before a loaded buffer replaces a model's.

        :param settings: Constructor arguments
        :return: One phrase per difference (empty when it fits)
        """
        problems = []
        for name, value in settings.items():
            if name == "buffer_size":
                if self.buffer_size * self.n_envs < value:
                    problems.append(f"its {self.buffer_size} steps per env cannot hold a window of {value // self.n_envs}")
            elif getattr(self, name, value) != value:
                problems.append(f"{name} {getattr(self, name)} != {value}")
        return problems

    @staticmethod
    def min_buffer_size(n_envs: int, sequence_length: int, burn_in: int) -> int:
        """The smallest ``buffer_size`` whose env columns each hold one window: burn-in, learning steps, successor."""
        return n_envs * (sequence_length + burn_in + 1)

    @classmethod
    def check_size(cls, buffer_size: int, n_envs: int, sequence_length: int, burn_in: int) -> None:
        """``buffer_size`` must be an integer of at least :meth:`min_buffer_size` (raises a ValueError otherwise)."""
        check_argument(is_integer(buffer_size) and buffer_size >= 1, "buffer_size", buffer_size, "an integer >= 1")
        if buffer_size < cls.min_buffer_size(n_envs, sequence_length, burn_in):
            raise ValueError(
                f"buffer_size={buffer_size} is too small to hold one window: with n_envs={n_envs}, each env column keeps "
                f"{buffer_size // n_envs} steps, fewer than burn_in + sequence_length + 1 = {sequence_length + burn_in + 1}."
            )

    def __getstate__(self) -> dict[str, Any]:
        # A checksum of the stored data travels with it (save_replay_buffer pickles the buffer): a corrupted file
        # is refused when loaded instead of being trained on
        state = self.__dict__.copy()
        state["_data_checksum"] = _checksum(state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        expected = state.pop("_data_checksum", None)
        if expected is not None and _checksum(state) != expected:
            raise ValueError("the replay buffer's data is corrupted (its checksum does not match).")
        self.__dict__.update(state)
        if "_n_final_observations" not in state:  # saved by 0.1.0: a ring with one slot per row
            self._n_final_observations = int(np.count_nonzero(self.dones[: self._n_stored()]))

    @staticmethod
    def _compact_state_storage(
        observation_space: spaces.Space, recurrent_state_shape: tuple[int, int, int] | None
    ) -> tuple[int, str]:
        """The ``(state_stride, state_dtype)`` that ``"auto"`` stands for (see the class docstring)."""
        is_dict = isinstance(observation_space, spaces.Dict)
        subspaces = list(observation_space.spaces.values()) if is_dict else [observation_space]  # type: ignore[attr-defined]
        obs_bytes = 0
        for sub in subspaces:
            obs_bytes += int(np.prod(get_obs_shape(sub))) * np.dtype(sub.dtype).itemsize  # type: ignore[arg-type]
        if recurrent_state_shape is None or obs_bytes < 4096:
            return 1, "float32"
        budget = obs_bytes / 16
        if np.prod(recurrent_state_shape) * 4 <= budget:
            return 1, "float32"
        half_precision_bytes = np.prod(recurrent_state_shape) * 2
        stride = 1
        while half_precision_bytes / stride > budget and stride < 16:
            stride *= 2
        return stride, "float16"

    def _allocate_obs(self, leading_shape: tuple[int, ...]) -> ObsArray:
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return {key: np.zeros((*leading_shape, *get_obs_shape(sub)), dtype=sub.dtype) for key, sub in space.spaces.items()}
        return np.zeros((*leading_shape, *get_obs_shape(space)), dtype=space.dtype)  # type: ignore[misc]

    def _reshape_obs(self, obs: ObsArray) -> ObsArray:
        """Reshape a batch of ``n_envs`` observations to ``(n_envs, *obs_shape)`` (e.g. Discrete spaces)."""
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            assert isinstance(obs, dict)
            return {key: np.asarray(obs[key]).reshape((self.n_envs, *get_obs_shape(sub))) for key, sub in space.spaces.items()}
        return np.asarray(obs).reshape((self.n_envs, *get_obs_shape(space)))  # type: ignore[misc]

    def reset(self) -> None:
        super().reset()
        self._next_episode_steps[:] = 0
        self._next_final_slot = 0
        self._n_final_observations = 0

    def mark_episode_break(self) -> None:
        """
        Declare that the next step added for every env starts a new episode, without the last one having
        ended (e.g. the environment was reset between two calls to ``learn``). The last stored step of each
        env then has no known successor and is never used as a learning step.
        """
        self._next_episode_steps[:] = 0

    def _check_finite(self, obs: ObsArray, reward: np.ndarray) -> None:
        """Refuse NaN or infinite rewards and (float) observations before anything is stored."""
        reward = np.asarray(reward)
        if not np.isfinite(reward).all():
            envs = np.flatnonzero(~np.isfinite(reward.reshape(-1))).tolist()
            raise ValueError(
                f"Non-finite reward(s) {reward.reshape(-1)[envs].tolist()} from env(s) {envs}: nothing was stored."
            )
        for key, array in obs.items() if isinstance(obs, dict) else [("", obs)]:
            array = np.asarray(array)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                envs = np.flatnonzero(~np.isfinite(array.reshape(self.n_envs, -1)).all(axis=1)).tolist()
                where = f" (key {key!r})" if key else ""
                raise ValueError(f"Non-finite observation{where} from env(s) {envs}: nothing was stored.")

    def add(  # type: ignore[override]
        self,
        obs: ObsArray,
        next_obs: ObsArray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
        recurrent_state: NumpyRecurrentState | None = None,
    ) -> None:
        """
        Store one step of every env.

        :param obs: Observations the actions were taken in, ``(n_envs, *obs_shape)``
        :param next_obs: Observations after the step; only read where ``done`` (the real final observation)
        :param action: Actions taken, ``(n_envs,)``
        :param reward: Rewards, ``(n_envs,)``
        :param done: Whether the step ended the episode (termination or truncation), ``(n_envs,)``
        :param infos: Per-env infos; ``"TimeLimit.truncated"`` marks truncations
        :param recurrent_state: The actor's recurrent state before the step, each component
            ``(n_layers, n_envs, hidden_size)``; required when the buffer stores states
        """
        row = self.pos
        done = np.asarray(done, dtype=bool).reshape(self.n_envs)
        self._check_finite(obs, reward)
        if self.recurrent_states is not None:
            if recurrent_state is None:
                raise ValueError("This buffer stores recurrent states: pass the actor's `recurrent_state` to add().")
            n_components, n_layers, hidden_size = self.recurrent_states.shape[2:]
            expected = (n_layers, self.n_envs, hidden_size)
            if len(recurrent_state) != n_components or any(np.shape(component) != expected for component in recurrent_state):
                raise ValueError(
                    f"recurrent_state must hold {n_components} component(s) of shape (n_layers, n_envs, hidden) = "
                    f"{expected}, got {[np.shape(component) for component in recurrent_state]}."
                )
            if row % self.state_stride == 0:
                for index, component in enumerate(recurrent_state):
                    # (n_layers, n_envs, hidden) -> (n_envs, n_layers, hidden)
                    self.recurrent_states[row // self.state_stride, :, index] = np.swapaxes(component, 0, 1)

        _write_obs(self.observations, row, self._reshape_obs(obs))
        self.actions[row] = np.asarray(action).reshape(self.n_envs)
        self.rewards[row] = np.asarray(reward).reshape(self.n_envs)
        if self.full:  # the final observations of the episodes that ended in the overwritten row are gone
            self._n_final_observations -= int(np.count_nonzero(self.dones[row]))
        self.dones[row] = done
        if self.handle_timeout_termination:
            self.timeouts[row] = [bool(info.get("TimeLimit.truncated", False)) for info in infos]
        else:
            self.timeouts[row] = False
        self.episode_steps[row] = self._next_episode_steps

        self._next_episode_steps += 1
        if done.any():
            self._store_final_observations(row, np.flatnonzero(done), next_obs)
            self._next_episode_steps[done] = 0
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def _store_final_observations(self, row: int, done_envs: np.ndarray, next_obs: ObsArray) -> None:
        """
        Keep the real final observations of the envs whose episode ended at ``row``. They go into a ring, in the
        order they come; rows are overwritten in the same order, so the live final observations are always the
        newest ``_n_final_observations`` slots before ``_next_final_slot``. When the ring is too small for them,
        it doubles (up to one slot per row), the live slots moved to its start in the same order.
        """
        capacity = len(first_array(self.final_observations))
        needed = self._n_final_observations + len(done_envs)
        if needed > capacity:
            first_live = self.first_live_final_slot()
            live_slots = self.live_final_observation_slots()
            new_capacity = min(max(2 * capacity, needed), self.buffer_size * self.n_envs)
            grown = self._allocate_obs((new_capacity,))
            _write_obs(grown, slice(0, len(live_slots)), _map_obs(lambda array: array[live_slots], self.final_observations))
            self.final_observations = grown
            # Only the live rows' slots are ever read: remap them all the same way
            self.final_observation_slots = ((self.final_observation_slots - first_live) % capacity).astype(
                self.final_observation_slots.dtype
            )
            self._next_final_slot, capacity = self._n_final_observations, new_capacity
        slots = (self._next_final_slot + np.arange(len(done_envs))) % capacity
        self._next_final_slot = int((self._next_final_slot + len(done_envs)) % capacity)
        self._n_final_observations = needed
        self.final_observation_slots[row, done_envs] = slots
        _write_obs(self.final_observations, slots, _map_obs(lambda array: array[done_envs], self._reshape_obs(next_obs)))

    def first_live_final_slot(self) -> int:
        """The ring slot of the oldest final observation that a stored row still refers to."""
        return (self._next_final_slot - self._n_final_observations) % len(first_array(self.final_observations))

    def live_final_observation_slots(self) -> np.ndarray:
        """The slots of the final observations that stored rows still refer to, oldest first."""
        capacity = len(first_array(self.final_observations))
        return (self.first_live_final_slot() + np.arange(self._n_final_observations)) % capacity

    def load_final_observations(self, final_observations: ObsArray) -> None:
        """
        Replace the final-observation store with the live final observations given oldest first (as a buffer file
        holds them, ``final_observation_slots`` numbered from 0 in the same order).

        :param final_observations: ``(n_live, *obs_shape)`` (or a dict of them)
        """
        n_live = len(first_array(final_observations))
        capacity = max(n_live, min(self.buffer_size, 4) * self.n_envs)
        self.final_observations = self._allocate_obs((capacity,))
        _write_obs(self.final_observations, slice(0, n_live), final_observations)
        self._n_final_observations, self._next_final_slot = n_live, n_live % capacity

    # ----------------------------------------------------------------------------------------------
    # Sampling

    @property
    def max_burn_in(self) -> int:
        """Length of the burn-in part of sampled windows: ``burn_in``, plus ``state_stride - 1`` with a stride."""
        if self.recurrent_states is None:
            return self.burn_in
        return self.burn_in + self.state_stride - 1

    def _burn_in_starts(
        self, start_offsets: np.ndarray, start_episode_steps: np.ndarray, target_offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Where each window's burn-in starts, given the desired starts ``target_offsets``: the latest step at or
        before it whose recurrent state is known exactly (a stored state, or the episode start).

        :return: ``(first_offsets, use_stored)``: offsets of the first burn-in steps, and whether to take the
            stored state there (else zeros)
        """
        oldest = self._oldest_row()
        if self.recurrent_states is None or self.state_stride == 1:
            return target_offsets, np.full(len(target_offsets), self.recurrent_states is not None)
        target_rows = (oldest + target_offsets) % self.buffer_size
        # Latest stored-state row at or before the target (stored rows are physical multiples of the stride)
        stored_offsets = target_offsets - target_rows % self.state_stride
        episode_start_offsets = start_offsets - start_episode_steps
        first_offsets = np.maximum(stored_offsets, episode_start_offsets)
        # Both overwritten: the next stored state after the target if it is not after the window start, else zeros
        stored_rows = target_rows - target_rows % self.state_stride
        next_stored_offsets = stored_offsets + np.minimum(self.state_stride, self.buffer_size - stored_rows)
        fallback = np.where(next_stored_offsets <= start_offsets, next_stored_offsets, target_offsets)
        first_offsets = np.where(first_offsets >= 0, first_offsets, fallback)
        first_rows = (oldest + first_offsets) % self.buffer_size
        return first_offsets, first_rows % self.state_stride == 0

    def _n_stored(self) -> int:
        """Number of stored (not overwritten) steps in each env column."""
        return self.buffer_size if self.full else self.pos

    def _oldest_row(self) -> int:
        return self.pos if self.full else 0

    def _has_successor(self, offsets: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        """
        Whether the steps at ``offsets`` (age order: 0 is the oldest stored step) of the given envs have a
        known successor: they ended their episode (the final observation is kept), or the next stored step
        continues the same episode.
        """
        n_stored = self._n_stored()
        rows = (self._oldest_row() + offsets) % self.buffer_size
        has_next = offsets + 1 < n_stored
        next_rows = (rows + 1) % self.buffer_size
        continues = self.episode_steps[next_rows, env_indices] == self.episode_steps[rows, env_indices] + 1
        return self.dones[rows, env_indices] | (has_next & continues)

    def valid_window_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """
        :return: ``(offsets, env_indices)`` of every step a window can start at, where ``offsets`` counts
            from the oldest stored step of the column.
        """
        n_stored = self._n_stored()
        offsets = np.repeat(np.arange(n_stored), self.n_envs)
        env_indices = np.tile(np.arange(self.n_envs), n_stored)
        valid = self._has_successor(offsets, env_indices)
        return offsets[valid], env_indices[valid]

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> RecurrentReplayBufferSamples:  # type: ignore[override]
        """
        Sample ``batch_size`` windows uniformly over the steps they can start at.

        :param batch_size: Number of windows
        :param env: Associated VecNormalize wrapper, to normalize observations and rewards when sampling
        :return: The windows, time-major
        """
        offsets, env_indices = self.sample_window_starts(batch_size)
        return self.windows(offsets, env_indices, env=env)

    def sample_window_starts(self, batch_size: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """
        Draw ``batch_size`` window starts uniformly over the steps a window can start at.

        :param batch_size: Number of windows
        :param rng: Random generator to draw from (NumPy's global one by default)
        :return: ``(offsets, env_indices)``, offsets counted from the oldest stored step of the column
        """
        randint = np.random.randint if rng is None else rng.integers
        n_stored = self._n_stored()
        if n_stored == 0:
            raise RuntimeError("Cannot sample from an empty RecurrentReplayBuffer.")
        # Rejection sampling: only steps without a known successor (at most one per env and per episode
        # break) are rejected, so a couple of rounds are enough; fall back to enumerating the valid starts.
        offsets: np.ndarray = randint(0, n_stored, size=batch_size)
        env_indices: np.ndarray = randint(0, self.n_envs, size=batch_size)
        for _ in range(8):
            invalid = np.flatnonzero(~self._has_successor(offsets, env_indices))
            if len(invalid) == 0:
                break
            offsets[invalid] = randint(0, n_stored, size=len(invalid))
            env_indices[invalid] = randint(0, self.n_envs, size=len(invalid))
        else:
            valid_offsets, valid_envs = self.valid_window_starts()
            if len(valid_offsets) == 0:
                raise RuntimeError("No window can be sampled yet: no stored step has a known successor.")
            choice = randint(0, len(valid_offsets), size=batch_size)
            offsets, env_indices = valid_offsets[choice].reshape(-1), valid_envs[choice].reshape(-1)
        return offsets, env_indices

    def episode_prefixes(
        self, start_offsets: np.ndarray, env_indices: np.ndarray, max_length: int, env: VecNormalize | None = None
    ) -> tuple[th.Tensor | dict[str, th.Tensor], th.Tensor, np.ndarray]:
        """
        The observations from the start of each window's episode up to its first learning step (excluded), for
        windows whose episode start is still stored and at most ``max_length`` steps back.

        :param start_offsets: Offsets of the windows' first learning steps (0 is the oldest stored step)
        :param env_indices: The windows' env columns
        :param max_length: Longest prefix returned
        :param env: Associated VecNormalize wrapper, to normalize observations
        :return: ``(observations, lengths, available)``: time-major observations ``(T, batch, ...)``, left-aligned
            (window ``i`` uses its first ``lengths[i]`` steps; ``lengths`` on the CPU, 0 where not available),
            and whether each window's prefix is available
        """
        oldest = self._oldest_row()
        start_rows = (oldest + start_offsets) % self.buffer_size
        lengths = self.episode_steps[start_rows, env_indices].astype(np.int64)
        available = (start_offsets - lengths >= 0) & (lengths <= max_length)
        lengths = np.where(available, lengths, 0)
        steps = np.arange(max(int(lengths.max(initial=0)), 1))[:, None]
        offsets = np.maximum(start_offsets - lengths + np.minimum(steps, np.maximum(lengths - 1, 0)), 0)
        rows = (oldest + offsets) % self.buffer_size
        envs = np.broadcast_to(env_indices, rows.shape)
        observations = _map_obs(lambda array: array[rows, envs], self.observations)
        return self._obs_to_torch(self._normalize_obs(observations, env)), th.as_tensor(lengths), available

    def _get_samples(  # type: ignore[override]
        self,
        batch_inds: np.ndarray,
        env: VecNormalize | None = None,
        env_indices: np.ndarray | None = None,
    ) -> RecurrentReplayBufferSamples:
        """SB3's name for :meth:`windows`."""
        return self.windows(batch_inds, env_indices, env=env)

    def windows(
        self, start_offsets: np.ndarray, env_indices: np.ndarray | None = None, env: VecNormalize | None = None
    ) -> RecurrentReplayBufferSamples:
        """
        Build the windows that start at the given steps.

        :param start_offsets: Offsets of the first learning step of each window, counted from the oldest
            stored step of its column (0 is the oldest)
        :param env_indices: Env column of each window (all zeros if ``None``)
        :param env: Associated VecNormalize wrapper, to normalize observations and rewards
        :return: The windows, time-major
        """
        start_offsets = np.asarray(start_offsets, dtype=np.int64)
        env_indices = np.zeros(len(start_offsets), dtype=np.int64) if env_indices is None else env_indices
        n_stored, oldest = self._n_stored(), self._oldest_row()
        burn_in, seq_len = self.max_burn_in, self.sequence_length

        start_rows = (oldest + start_offsets) % self.buffer_size
        start_episode_steps = self.episode_steps[start_rows, env_indices].astype(np.int64)
        # Burn-in clipped at the episode start and at the oldest stored step, then extended back to a known state
        desired_lengths = np.minimum(np.minimum(self.burn_in, start_episode_steps), start_offsets)
        first_offsets, use_stored = self._burn_in_starts(start_offsets, start_episode_steps, start_offsets - desired_lengths)
        burn_in_lengths = start_offsets - first_offsets
        # Offsets of every position of the window, time-major: (burn_in + seq_len + 1, batch)
        steps = np.arange(burn_in + seq_len + 1)[:, None]
        burn_in_offsets = first_offsets + np.minimum(steps[:burn_in], np.maximum(burn_in_lengths - 1, 0))
        learning_offsets = start_offsets + steps[: seq_len + 1]
        offsets = np.concatenate([burn_in_offsets, np.minimum(learning_offsets, n_stored - 1)])
        rows = (oldest + offsets) % self.buffer_size
        envs = np.broadcast_to(env_indices, rows.shape)

        # Learning steps: in the window's episode, stored, and with a known successor
        step_rows, step_envs = rows[burn_in : burn_in + seq_len], envs[burn_in : burn_in + seq_len]
        in_episode = self.episode_steps[step_rows, step_envs] == start_episode_steps + steps[:seq_len]
        successor = self._has_successor(np.minimum(learning_offsets[:seq_len], n_stored - 1), step_envs)
        mask = (learning_offsets[:seq_len] < n_stored) & in_episode & successor

        observations = _map_obs(lambda array: array[rows, envs], self.observations)
        # After the last step of an episode comes its real final observation
        end_steps, end_windows = np.nonzero(mask & self.dones[step_rows, step_envs])
        if len(end_steps) > 0:
            slots = self.final_observation_slots[step_rows[end_steps, end_windows], env_indices[end_windows]]
            final_obs = _map_obs(lambda array: array[slots], self.final_observations)
            _write_obs(observations, (burn_in + end_steps + 1, end_windows), final_obs)
        terminations = self.dones[step_rows, step_envs] & ~self.timeouts[step_rows, step_envs]
        rewards = self._normalize_reward(self.rewards[step_rows, step_envs], env)

        actions, rewards_tensor, terminations_tensor, mask_tensor = self._per_step_tensors(
            self.actions[step_rows, step_envs], rewards, terminations, mask
        )
        return RecurrentReplayBufferSamples(
            observations=self._obs_to_torch(self._normalize_obs(observations, env)),
            actions=actions,
            rewards=rewards_tensor,
            terminations=terminations_tensor,
            mask=mask_tensor,
            burn_in_lengths=th.as_tensor(burn_in_lengths),
            recurrent_states=self._stored_states((oldest + first_offsets) % self.buffer_size, env_indices, use_stored),
            burn_in_steps=burn_in,
        )

    def _per_step_tensors(self, *arrays: np.ndarray) -> tuple[th.Tensor, ...]:
        """
        Actions (``int64``), then the other per-step arrays (``float32``) of a sample, as tensors: on the CPU they
        share the memory of the fresh copies made from the arrays; on CUDA they go to the device in one copy.
        """
        if self.device.type == "cpu":
            actions, *others = arrays
            return th.from_numpy(actions.astype(np.int64)), *(th.from_numpy(array.astype(np.float32)) for array in others)
        actions_float, *tensors = self.to_torch(np.stack(arrays).astype(np.float32))
        return actions_float.long(), *tensors

    def _stored_states(self, rows: np.ndarray, env_indices: np.ndarray, use_stored: np.ndarray) -> RecurrentState:
        """The stored states at ``(rows, env_indices)``, zeros where ``use_stored`` is False (none if not stored)."""
        if self.recurrent_states is None:
            return ()
        stored = self.recurrent_states[rows // self.state_stride, env_indices].astype(np.float32)
        stored *= use_stored[:, None, None, None]
        # (batch, n_components, n_layers, hidden) -> n_components x (n_layers, batch, hidden)
        return tuple(self.to_torch(stored.transpose(1, 2, 0, 3)))

    def _obs_to_torch(self, observations: ObsArray) -> th.Tensor | dict[str, th.Tensor]:
        if isinstance(observations, dict):
            return {key: self.to_torch(value) for key, value in observations.items()}
        return self.to_torch(observations)

    def to_torch(self, array: np.ndarray, copy: bool = True) -> th.Tensor:
        """
        Move a sampled array to the device: it is already a fresh copy, so no second copy is made; on CUDA
        the transfer goes through pinned memory without blocking.
        """
        tensor = th.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)


class PrioritizedRecurrentReplayBuffer(RecurrentReplayBuffer):
    """
    :class:`RecurrentReplayBuffer` with R2D2's prioritized sequence replay: every step a window can start at has
    a priority, and windows are sampled in proportion to ``priority ** priority_exponent`` (stratified over
    ``batch_size`` equal segments of the total), with a vectorised NumPy sum tree: ``O(log N)`` per window.

    - A step enters with the largest priority seen so far as soon as it can start a window (its successor is
      known); until then, and after it is overwritten, its priority is 0 and it cannot be sampled.
    - After each gradient step, :meth:`update_priorities` sets a window's priority to R2D2's mix of its absolute
      TD errors: ``priority_eta * max + (1 - priority_eta) * mean`` over its learning steps.
    - Samples carry importance-sampling weights ``(N * P(i)) ** -beta``, divided by their maximum over the batch
      (``N``: the number of steps a window can start at).
    - Priorities are part of the buffer: they survive ``save_replay_buffer`` / ``load_replay_buffer``.

    The other arguments are :class:`RecurrentReplayBuffer`'s, passed on as they are.

    :param priority_exponent: ``alpha``, how much prioritization is used (0: uniform; R2D2: 0.9)
    :param priority_eta: Weight of the max in the max/mean mix of a window's absolute TD errors (R2D2: 0.9)
    :param min_priority: Smallest priority given to a window, so that every window stays sampleable
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        *args: Any,
        priority_exponent: float = 0.9,
        priority_eta: float = 0.9,
        min_priority: float = 1e-6,
        **kwargs: Any,
    ):
        self.check_priority_arguments(priority_exponent, priority_eta)
        check_argument(is_finite_number(min_priority) and min_priority > 0, "min_priority", min_priority, "> 0")
        super().__init__(buffer_size, observation_space, action_space, *args, **kwargs)
        self.priority_exponent = priority_exponent
        self.priority_eta = priority_eta
        self.min_priority = min_priority
        self._reset_priorities()

    @staticmethod
    def check_priority_arguments(priority_exponent: float, priority_eta: float) -> None:
        """Check ``priority_exponent`` (>= 0) and ``priority_eta`` (in [0, 1]): a ValueError names the first invalid."""
        check_argument(
            is_finite_number(priority_exponent) and priority_exponent >= 0, "priority_exponent", priority_exponent, ">= 0"
        )
        check_argument(is_finite_number(priority_eta) and 0 <= priority_eta <= 1, "priority_eta", priority_eta, "in [0, 1]")

    def _reset_priorities(self) -> None:
        # Leaf of the window that starts at (row, env): row * n_envs + env
        self.priorities = SumTree(self.buffer_size * self.n_envs)
        self.max_priority = 1.0
        # Envs whose newest step waits for its successor to become sampleable
        self._waiting = np.zeros(self.n_envs, dtype=bool)
        self._n_sampleable = 0

    def reset(self) -> None:
        super().reset()
        self._reset_priorities()

    def mark_episode_break(self) -> None:
        super().mark_episode_break()
        # The newest steps will have no successor: they stay unsampleable
        self._waiting[:] = False

    def _set_leaves(self, leaves: np.ndarray, values: np.ndarray) -> None:
        self._n_sampleable += int(np.count_nonzero(values > 0)) - int(np.count_nonzero(self.priorities[leaves] > 0))
        self.priorities.update(leaves, values)

    def add(  # type: ignore[override]
        self,
        obs: ObsArray,
        next_obs: ObsArray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
        recurrent_state: NumpyRecurrentState | None = None,
    ) -> None:
        row = self.pos
        previous_row = (row - 1) % self.buffer_size
        super().add(obs, next_obs, action, reward, done, infos, recurrent_state=recurrent_state)
        envs = np.arange(self.n_envs)
        new_priority = self.max_priority**self.priority_exponent
        # The new steps replace what was there; a step that ends its episode can start a window at once
        ended = self.dones[row]
        # The previous steps that waited for a successor have one if the new step continues their episode
        waiting = np.flatnonzero(self._waiting)
        continues = self.episode_steps[row, waiting] == self.episode_steps[previous_row, waiting] + 1
        waited = waiting[continues]
        leaves = np.concatenate([row * self.n_envs + envs, previous_row * self.n_envs + waited])
        values = np.concatenate([np.where(ended, new_priority, 0.0), np.full(len(waited), new_priority)])
        self._set_leaves(leaves, values)
        self._waiting = ~ended

    def sample(  # type: ignore[override]
        self, batch_size: int, env: VecNormalize | None = None, beta: float = 1.0
    ) -> RecurrentReplayBufferSamples:
        """
        Sample ``batch_size`` windows in proportion to their priorities, with importance-sampling weights.

        :param batch_size: Number of windows
        :param env: Associated VecNormalize wrapper, to normalize observations and rewards when sampling
        :param beta: Importance-sampling exponent (0: no correction, 1: full correction)
        :return: The windows, time-major, with ``weights`` and ``leaf_indices``
        """
        total = self.priorities.total
        if self._n_sampleable == 0 or total <= 0:
            raise RuntimeError("No window can be sampled yet: no stored step has a known successor.")
        segment = total / batch_size
        values = (np.arange(batch_size) + np.random.rand(batch_size)) * segment
        leaves = self.priorities.find(np.minimum(values, np.nextafter(total, 0)))
        rows, env_indices = np.divmod(leaves, self.n_envs)
        offsets = (rows - self._oldest_row()) % self.buffer_size
        probabilities = self.priorities[leaves] / total
        weights = (self._n_sampleable * probabilities) ** (-beta)
        weights /= weights.max()
        samples = self.windows(offsets, env_indices, env=env)
        return samples._replace(weights=self.to_torch(weights.astype(np.float32)), leaf_indices=leaves)

    def window_priorities(self, current_q_values: th.Tensor, target: th.Tensor, mask: th.Tensor) -> th.Tensor:
        """
        R2D2's priority of each window: ``priority_eta * max + (1 - priority_eta) * mean`` of the absolute TD errors
        of its valid learning steps, all ``(L, batch)``.

        :param current_q_values: Q-values of the taken actions
        :param target: Their targets
        :param mask: 1 on the valid learning steps
        :return: ``(batch,)`` priorities, for :meth:`update_priorities`
        """
        td_errors = (target - current_q_values).detach().abs() * mask
        mean = td_errors.sum(dim=0) / mask.sum(dim=0).clamp(min=1.0)
        return self.priority_eta * td_errors.max(dim=0).values + (1.0 - self.priority_eta) * mean

    def update_priorities(self, leaf_indices: np.ndarray, priorities: np.ndarray) -> None:
        """
        Set the priorities of sampled windows (before the exponent), e.g. from their TD errors.

        :param leaf_indices: The ``leaf_indices`` of the sampled windows
        :param priorities: ``(batch,)`` non-negative priorities
        """
        priorities = np.maximum(np.asarray(priorities, dtype=np.float64).reshape(-1), self.min_priority)
        if not np.all(np.isfinite(priorities)):
            raise ValueError("Priorities must be finite (non-finite TD errors?).")
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self._set_leaves(np.asarray(leaf_indices), priorities**self.priority_exponent)
