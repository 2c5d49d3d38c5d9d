from typing import NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import TensorDict

from sb3_drqn.common.utils import first_array

# Recurrent state of a policy, one tensor per component: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU,
# each of shape ``(n_layers, batch, hidden_size)``.
RecurrentState = tuple[th.Tensor, ...]
# The same, as NumPy arrays (what ``predict`` returns and accepts).
NumpyRecurrentState = tuple[np.ndarray, ...]


class RecurrentReplayBufferSamples(NamedTuple):
    """
    A batch of ``batch_size`` windows sampled from a :class:`~sb3_drqn.common.buffers.RecurrentReplayBuffer`.

    Time comes first (``time, batch, ...``) so that the recurrent layer reads the window in one call.
    With ``B = burn_in`` and ``L = sequence_length``, the time axis of ``observations`` holds:

    - ``[0, B)``: the burn-in steps, left-aligned: window ``i`` uses the first ``burn_in_lengths[i]``
      of them, the rest is padding (burn-in is clipped at the episode start and at the oldest stored step);
    - ``[B, B + L)``: the learning steps;
    - ``B + L``: the observation after the last learning step (for the bootstrap target).

    Where a learning step ends its episode, the observation that follows it in the window is the real
    final observation of that episode (so time-limit truncations bootstrap correctly); steps after the end
    of an episode are masked out.

    :param observations: ``(B + L + 1, batch, *obs_shape)`` (or a dict of such tensors)
    :param actions: ``(L, batch)`` actions taken at the learning steps
    :param rewards: ``(L, batch)``
    :param terminations: ``(L, batch)`` 1.0 where the step ended the episode by termination
        (no bootstrap); time-limit truncations are 0.0 and bootstrap
    :param mask: ``(L, batch)`` 1.0 for learning steps that belong to the window's episode
        and whose successor has been stored
    :param burn_in_lengths: ``(batch,)`` number of valid burn-in steps of each window (on the CPU)
    :param recurrent_states: the recurrent state at the first burn-in step of each window,
        each component ``(n_layers, batch, hidden_size)``
    :param weights: ``(batch,)`` importance-sampling weights (prioritized replay only, else ``None``)
    :param leaf_indices: ``(batch,)`` where each window's priority lives, for
        :meth:`~sb3_drqn.common.buffers.PrioritizedRecurrentReplayBuffer.update_priorities` (prioritized replay only)
    :param burn_in_steps: ``B``, the number of burn-in rows of ``observations`` (the buffer sets it; ``None``, for
        hand-built batches: every row that is neither a learning step nor the step after them)
    """

    observations: th.Tensor | TensorDict
    actions: th.Tensor
    rewards: th.Tensor
    terminations: th.Tensor
    mask: th.Tensor
    burn_in_lengths: th.Tensor
    recurrent_states: RecurrentState
    weights: th.Tensor | None = None
    leaf_indices: np.ndarray | None = None
    burn_in_steps: int | None = None

    @property
    def n_burn_in_rows(self) -> int:
        """``B``: the number of burn-in rows at the start of ``observations``."""
        if self.burn_in_steps is not None:
            return self.burn_in_steps
        observations = self.observations
        n_rows = first_array(observations).shape[0]
        return n_rows - self.actions.shape[0] - 1

    def burn_in_observations(self) -> th.Tensor | TensorDict:
        """The burn-in rows of ``observations``: ``(B, batch, ...)``."""
        return _slice_time(self.observations, 0, self.n_burn_in_rows)

    def learning_observations(self) -> th.Tensor | TensorDict:
        """The learning steps and the step after them: ``(L + 1, batch, ...)``."""
        return _slice_time(self.observations, self.n_burn_in_rows, None)


def _slice_time(observations: th.Tensor | TensorDict, start: int, end: int | None) -> th.Tensor | TensorDict:
    """Time-major observations (or a dict of them) from row ``start`` to row ``end``."""
    if isinstance(observations, dict):
        return {key: value[start:end] for key, value in observations.items()}
    return observations[start:end]
