"""R2D2's measure of how stale the stored recurrent states are."""

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecNormalize

from sb3_drqn.common.buffers import RecurrentReplayBuffer
from sb3_drqn.drqn.policies import RecurrentQNetwork


def recurrent_staleness(
    q_net: RecurrentQNetwork,
    buffer: RecurrentReplayBuffer | None,
    n_windows: int,
    horizon: int,
    stored_state: bool,
    rng: np.random.Generator,
    env: VecNormalize | None = None,
) -> float | None:
    """
    R2D2's measure of recurrent-state staleness, on windows sampled uniformly from the replay buffer: for each
    window, the Q-values of its valid learning steps computed as in training (from the stored state at the start
    of the burn-in, or zeros when ``stored_state`` is False, then the burn-in) are compared with those computed
    from a state recomputed with the current network from the episode's first step,
    ``||Q_stored - Q_recomputed||_2 / max |Q_recomputed|`` over the window's valid steps and all actions; the mean
    over the windows whose episode start is stored, at most ``horizon`` steps earlier.

    :param q_net: The online network (in evaluation mode)
    :param buffer: The replay buffer
    :param n_windows: Number of windows
    :param horizon: Longest episode prefix recomputed
    :param stored_state: Whether training starts windows from their stored state (else from zeros)
    :param rng: The generator that samples the windows
    :param env: Associated VecNormalize wrapper, to normalize the observations
    :return: The mean relative difference, or ``None`` when no window has its episode start available
    """
    if buffer is None or buffer.size() == 0:
        return None
    try:
        offsets, env_indices = buffer.sample_window_starts(n_windows, rng=rng)
    except RuntimeError:
        return None
    prefixes, lengths, available = buffer.episode_prefixes(offsets, env_indices, horizon, env=env)
    if not available.any():
        return None
    windows = buffer.windows(offsets, env_indices, env=env)
    with th.no_grad():
        initial_state = windows.recurrent_states if stored_state and len(windows.recurrent_states) > 0 else None
        if initial_state is None:
            initial_state = q_net.initial_state(len(offsets))
        q_stored = q_net.window_q_values(windows, initial_state)[:-1]
        # From the episode's first step: the whole prefix as burn-in, then the window without its own burn-in
        recomputed_state = q_net.burn_in_observations(prefixes, q_net.initial_state(len(offsets)), lengths)
        no_burn_in = windows._replace(burn_in_lengths=th.zeros_like(windows.burn_in_lengths))
        q_recomputed = q_net.window_q_values(no_burn_in, recomputed_state)[:-1]
        mask = windows.mask.unsqueeze(-1)
        distance = ((q_stored - q_recomputed) * mask).pow(2).sum(dim=(0, 2)).sqrt()
        scale = (q_recomputed.abs() * mask).amax(dim=(0, 2)).clamp(min=1e-8)
        relative = (distance / scale)[th.as_tensor(available, device=distance.device)]
    return float(relative.mean())
