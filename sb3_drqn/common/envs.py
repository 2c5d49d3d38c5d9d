from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueMemoryEnv(gym.Env[np.ndarray, np.integer]):
    """
    A minimal memory task (a T-maze without the maze). The first observation shows a cue, one of
    ``n_cues`` (one-hot); the next ``delay - 1`` observations are blank; the last one only raises a query
    flag. The action taken at the query step is the answer: ``+1`` if it names the cue, ``-1`` otherwise, and
    the episode ends (``info["is_success"]`` tells whether it was right). Actions before the query do nothing.

    A memoryless agent sees the same observation at every query, so it answers right with probability
    ``1 / n_cues`` at best; an agent with memory can always answer right.

    :param delay: Number of steps from the cue to the query (>= 1)
    :param n_cues: Number of different cues (and actions)
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, delay: int = 5, n_cues: int = 2) -> None:
        if delay < 1:
            raise ValueError(f"delay must be >= 1, got {delay}.")
        if n_cues < 2:
            raise ValueError(f"n_cues must be >= 2, got {n_cues}.")
        self.delay = delay
        self.n_cues = n_cues
        # One-hot cue, then the query flag
        self.observation_space = spaces.Box(low=0.0, high=1.0, shape=(n_cues + 1,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_cues)
        self._cue = 0
        self._step = 0

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.n_cues + 1, dtype=np.float32)
        if self._step == 0:
            obs[self._cue] = 1.0
        elif self._step == self.delay:
            obs[-1] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.n_cues))
        self._step = 0
        return self._observation(), {}

    def step(self, action: np.integer | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._step == self.delay:
            success = int(action) == self._cue
            return self._observation(), 1.0 if success else -1.0, True, False, {"is_success": success}
        self._step += 1
        return self._observation(), 0.0, False, False, {}
