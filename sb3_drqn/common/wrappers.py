from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Games of the DRQN paper's flickering experiments (Pong, and the ten games of its Table 2) plus Breakout
FLICKERING_ATARI_GAMES = (
    "Asteroids",
    "BeamRider",
    "Bowling",
    "Breakout",
    "Centipede",
    "ChopperCommand",
    "DoubleDunk",
    "Frostbite",
    "IceHockey",
    "MsPacman",
    "Pong",
)


class FlickeringWrapper(gym.ObservationWrapper[np.ndarray, Any, np.ndarray]):
    """
    Flickering screen of the DRQN paper: each observation is replaced by a blank one (all zeros) with
    probability ``flicker_prob``, so a single observation may hide the whole state and the agent has to
    integrate information over time.

    For Atari, apply it **after** :class:`~stable_baselines3.common.atari_wrappers.AtariWrapper`, on the
    processed (84x84) screens, as the paper does (it blanks the frames the agent sees). Inside
    ``AtariWrapper``, blanking raw frames would be largely undone by its max over the last two raw frames of
    every skipped step (a blank frame maxed with a visible one is the visible one), and a blank frame would be
    seen only when both were blanked.

    The blanking draws come from the wrapper's own generator, seeded from the seed passed to ``reset()``
    (unseeded, from fresh entropy), so they are reproducible with a seed and leave the wrapped env's own
    random stream (e.g. the no-op starts of ``AtariWrapper``) unchanged.

    Paper: https://arxiv.org/abs/1507.06527

    :param env: Environment to wrap, with a ``Box`` observation space whose bounds contain zero
    :param flicker_prob: Probability of blanking each observation (the reset one included)
    """

    def __init__(self, env: gym.Env, flicker_prob: float = 0.5) -> None:
        if not 0.0 <= flicker_prob <= 1.0:
            raise ValueError(f"flicker_prob must be in [0, 1], got {flicker_prob}.")
        space = env.observation_space
        if not isinstance(space, spaces.Box):
            raise ValueError(f"FlickeringWrapper needs a Box observation space, got {space}.")
        if np.any(space.low > 0) or np.any(space.high < 0):
            raise ValueError(f"A blank (zero) observation is outside the observation space {space}.")
        super().__init__(env)
        self.flicker_prob = flicker_prob
        self._flicker_rng: np.random.Generator | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None or self._flicker_rng is None:
            # A seed sequence distinct from the env's own (same seed, different entropy pool)
            self._flicker_rng = np.random.default_rng(None if seed is None else [seed, 0x464C4B52])
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._flicker_rng is None:
            raise gym.error.ResetNeeded("Cannot call env.step() before calling env.reset()")
        return super().step(action)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        assert self._flicker_rng is not None
        if self._flicker_rng.random() < self.flicker_prob:
            return np.zeros_like(observation)
        return observation


class MinAtarFrame(gym.ObservationWrapper[np.ndarray, Any, np.ndarray]):
    """
    MinAtar's boolean ``(10, 10, channels)`` states as channels-first ``uint8`` frames (0 or 255), which SB3
    treats as images (``CnnLstmPolicy`` with :class:`~sb3_drqn.common.torch_layers.SmallFrameCNN`), optionally
    without some of the channels: e.g. Breakout without ``trail``, the channel that shows where the ball came
    from, so that a single frame no longer tells its direction.

    :param env: A MinAtar env (``MinAtar/<Game>-v0`` or ``-v1``, from ``minatar.gym``)
    :param drop_channels: Names of the channels to remove (MinAtar's own names, e.g. ``("trail",)``)
    """

    def __init__(self, env: gym.Env, drop_channels: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(env)
        game = getattr(env.unwrapped, "game", None)
        channels: dict[str, int] | None = getattr(getattr(game, "env", None), "channels", None)
        space = env.observation_space
        if channels is None or not isinstance(space, spaces.Box) or len(space.shape) != 3:
            raise ValueError(f"MinAtarFrame needs a MinAtar env (minatar.gym.BaseEnv), got {env.unwrapped}.")
        unknown = sorted(set(drop_channels) - set(channels))
        if unknown:
            raise ValueError(f"Unknown MinAtar channels {unknown}: this game has {list(channels)}.")
        self.kept_channels = np.array([index for name, index in channels.items() if name not in drop_channels])
        if len(self.kept_channels) == 0:
            raise ValueError("MinAtarFrame cannot drop every channel.")
        height, width, _ = space.shape
        self.observation_space = spaces.Box(0, 255, (len(self.kept_channels), height, width), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(observation[..., self.kept_channels], -1, 0), dtype=np.uint8) * 255


class PreviousActionRewardWrapper(gym.Wrapper[dict[str, Any], int, Any, int]):
    """
    Adds the previous action and reward to the observation, as R2D2 feeds them to its LSTM. The observation
    becomes a Dict: ``"observation"`` (the env's observation; the entries of a Dict observation are kept as they
    are), ``"prev_action"`` (one-hot, all zeros at the first step of an episode) and ``"prev_reward"`` (shape
    ``(1,)``, 0 at the first step). Use it with ``MultiInputLstmPolicy``.

    Because they are part of the observation, ``predict``, ``evaluate_policy`` and the RL Zoo, which never pass
    rewards, keep working. In ``drqn.yml``::

        env_wrapper:
          - sb3_drqn.common.wrappers.PreviousActionRewardWrapper
        policy: MultiInputLstmPolicy

    For Atari, list it after ``AtariWrapper``: the previous reward is then the clipped one the agent learns from.

    :param env: Environment with a Discrete action space
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"PreviousActionRewardWrapper needs a Discrete action space, got {env.action_space}.")
        if isinstance(env.observation_space, spaces.Dict):
            entries = dict(env.observation_space.spaces)
            clash = {"prev_action", "prev_reward"} & set(entries)
            if clash:
                raise ValueError(f"The observation space already has the entries {sorted(clash)}.")
        else:
            entries = {"observation": env.observation_space}
        self.n_actions = int(env.action_space.n)
        entries["prev_action"] = spaces.Box(0.0, 1.0, (self.n_actions,), dtype=np.float32)
        entries["prev_reward"] = spaces.Box(-np.inf, np.inf, (1,), dtype=np.float32)
        self.observation_space = spaces.Dict(entries)

    def _observation(self, obs: Any, action: int | None, reward: SupportsFloat) -> dict[str, Any]:
        entries = dict(obs) if isinstance(obs, dict) else {"observation": obs}
        prev_action = np.zeros(self.n_actions, dtype=np.float32)
        if action is not None:
            prev_action[int(action)] = 1.0
        entries["prev_action"] = prev_action
        entries["prev_reward"] = np.array([reward], dtype=np.float32)
        return entries

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observation(obs, None, 0.0), info

    def step(self, action: int) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs, action, reward), reward, terminated, truncated, info


def register_flickering_atari_envs(games: tuple[str, ...] = FLICKERING_ATARI_GAMES) -> list[str]:
    """
    Register ``Flickering{Game}NoFrameskip-v4`` ids for the zoo (idempotent; nothing if ``ale-py`` is absent).

    Each id makes the same env as ``{Game}NoFrameskip-v4`` (same ``ale_py`` ``AtariEnv`` entry point, so that
    rl-zoo3 treats it as Atari: stochastic evaluation, Atari logging). The flickering itself comes from the
    wrappers listed in its ``drqn.yml`` entry, ``AtariWrapper`` then :class:`FlickeringWrapper`, because it must
    be applied after ``AtariWrapper`` (see :class:`FlickeringWrapper`); outside the zoo, apply both yourself.

    :param games: Atari game names, as in ``{Game}NoFrameskip-v4``
    :return: The ids registered by this call or before it
    """
    try:
        import ale_py
    except ImportError:
        return []
    gym.register_envs(ale_py)
    env_ids = []
    for game in games:
        env_id = f"Flickering{game}NoFrameskip-v4"
        if env_id not in gym.envs.registry:
            base_spec = gym.spec(f"{game}NoFrameskip-v4")
            gym.register(
                id=env_id,
                entry_point=base_spec.entry_point,
                max_episode_steps=base_spec.max_episode_steps,
                nondeterministic=base_spec.nondeterministic,
                kwargs=dict(base_spec.kwargs),
            )
        env_ids.append(env_id)
    return env_ids


# Registered on import too: rl-zoo3's env workers (``--vec-env subproc``) import this module when they unpickle
# the wrappers, before they make the env
register_flickering_atari_envs()
