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


# MinAtar's games (their names in minatar, and in the MinAtar/<Game>-v1 ids) and the channels that carry motion,
# removed by the MinAtar/<Game>-NoMotion-v1 variants
MINATAR_GAMES = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
MINATAR_MOTION_CHANNELS = {
    "Asterix": ("trail",),
    "Breakout": ("trail",),
    "Freeway": ("speed1", "speed2", "speed3", "speed4", "speed5"),
    "Seaquest": ("trail",),
    "SpaceInvaders": ("alien_left", "alien_right"),
}


def make_minatar(game: str, drop_channels: tuple[str, ...] = (), flicker_prob: float = 0.0, **kwargs: Any) -> gym.Env:
    """
    A MinAtar game (minimal action set, MinAtar's sticky actions) as channels-first uint8 frames
    (:class:`~sb3_drqn.common.wrappers.MinAtarFrame`), optionally without some channels and flickering
    (:class:`~sb3_drqn.common.wrappers.FlickeringWrapper`). The entry point of the ``MinAtar/<Game>-NoMotion-v1``
    and ``MinAtar/<Game>-Flicker-v1`` ids. Needs ``minatar`` (GPL-3.0): ``pip install "sb3-drqn[minatar]"``.

    :param game: MinAtar's name of the game (``"breakout"``, ...)
    :param drop_channels: Channels to remove
    :param flicker_prob: Probability of blanking each frame (0: none)
    :param kwargs: Passed to ``minatar.gym.BaseEnv`` (e.g. ``sticky_action_prob``, ``render_mode``)
    :return: The env
    """
    from sb3_drqn.common.wrappers import FlickeringWrapper, MinAtarFrame

    try:
        from minatar.gym import BaseEnv
    except ImportError as error:
        raise ImportError('MinAtar is not installed: pip install "sb3-drqn[minatar]" (or pip install minatar)') from error
    env: gym.Env = MinAtarFrame(BaseEnv(game, use_minimal_action_set=True, **kwargs), drop_channels)
    return FlickeringWrapper(env, flicker_prob) if flicker_prob > 0 else env


def register_minatar_envs() -> list[str]:
    """
    Register MinAtar's ids and their partially observable variants (idempotent; nothing if ``minatar`` is not
    installed; ``minatar`` itself is not imported, only looked up):

    - ``MinAtar/<Game>-v1``: MinAtar's own env, as ``minatar.gym.register_envs()`` registers it (boolean
      ``(10, 10, channels)`` states; ``drqn.yml`` converts them with ``MinAtarFrame``);
    - ``MinAtar/<Game>-NoMotion-v1``: frames without the channels that carry motion (``MINATAR_MOTION_CHANNELS``),
      so that one frame does not tell where things move;
    - ``MinAtar/<Game>-Flicker-v1``: every frame blanked with probability 0.5 (the DRQN paper's protocol).

    The variants make channels-first uint8 frames themselves (:func:`make_minatar`).

    :return: The ids registered by this call or before it
    """
    import importlib.util

    if importlib.util.find_spec("minatar") is None:
        return []
    env_ids = []
    for name, game in MINATAR_GAMES.items():
        entries: dict[str, tuple[str, dict[str, Any]]] = {
            f"MinAtar/{name}-v1": ("minatar.gym:BaseEnv", dict(game=game, use_minimal_action_set=True)),
            f"MinAtar/{name}-NoMotion-v1": (
                "sb3_drqn.common.envs:make_minatar",
                dict(game=game, drop_channels=MINATAR_MOTION_CHANNELS[name]),
            ),
            f"MinAtar/{name}-Flicker-v1": ("sb3_drqn.common.envs:make_minatar", dict(game=game, flicker_prob=0.5)),
        }
        for env_id, (entry_point, kwargs) in entries.items():
            if env_id not in gym.envs.registry:
                gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)
            env_ids.append(env_id)
    return env_ids


register_minatar_envs()
