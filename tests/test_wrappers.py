import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_drqn.common.wrappers import FLICKERING_ATARI_GAMES, FlickeringWrapper, register_flickering_atari_envs


class ImageEnv(gym.Env[np.ndarray, np.integer]):
    """Never-ending env whose observations are never blank (all ones)."""

    def __init__(self, shape: tuple[int, ...] = (84, 84, 1), dtype: type = np.uint8) -> None:
        high = 255 if dtype == np.uint8 else 1.0
        self.observation_space = spaces.Box(low=0, high=high, shape=shape, dtype=dtype)  # type: ignore[arg-type]
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(self.observation_space.shape, dtype=self.observation_space.dtype), {}

    def step(self, action):
        obs = np.ones(self.observation_space.shape, dtype=self.observation_space.dtype)
        return obs, 0.0, False, False, {}


def blank_mask(env: gym.Env, n_steps: int, seed: int | None = 0) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    blanks = [not obs.any()]
    for _ in range(n_steps - 1):
        obs, *_ = env.step(0)
        blanks.append(not obs.any())
    return np.array(blanks)


@pytest.mark.parametrize("flicker_prob", [0.0, 0.2, 0.5, 1.0])
def test_blank_fraction(flicker_prob):
    n_steps = 4000
    blanks = blank_mask(FlickeringWrapper(ImageEnv(), flicker_prob=flicker_prob), n_steps)
    # Binomial: 4 standard deviations at most 0.032
    assert abs(blanks.mean() - flicker_prob) < 0.035


@pytest.mark.parametrize("shape, dtype", [((84, 84, 1), np.uint8), ((3, 16, 16), np.uint8), ((5,), np.float32)])
def test_shapes_and_dtypes_kept(shape, dtype):
    env = FlickeringWrapper(ImageEnv(shape, dtype), flicker_prob=0.5)
    assert env.observation_space == ImageEnv(shape, dtype).observation_space
    obs, _ = env.reset(seed=1)
    seen_blank = seen_visible = False
    for _ in range(50):
        obs, *_ = env.step(0)
        assert obs.shape == shape and obs.dtype == dtype
        assert env.observation_space.contains(obs)
        seen_blank |= not obs.any()
        seen_visible |= bool(obs.all())
    assert seen_blank and seen_visible


def test_deterministic_with_seed():
    env = FlickeringWrapper(ImageEnv(), flicker_prob=0.5)
    first = blank_mask(env, 200, seed=3)
    assert np.array_equal(first, blank_mask(env, 200, seed=3))
    assert np.array_equal(first, blank_mask(FlickeringWrapper(ImageEnv(), flicker_prob=0.5), 200, seed=3))
    assert not np.array_equal(first, blank_mask(env, 200, seed=4))
    # Later resets without a seed go on with the same generator (a new episode, new draws)
    env.reset(seed=3)
    assert not np.array_equal(blank_mask(env, 200, seed=None), first)


def test_env_random_stream_untouched():
    # Blanking must not consume the wrapped env's generator (AtariWrapper's no-op starts draw from it)
    plain, wrapped = ImageEnv(), FlickeringWrapper(ImageEnv(), flicker_prob=0.5)
    plain.reset(seed=5)
    wrapped.reset(seed=5)
    for _ in range(10):
        wrapped.step(0)
    assert plain.np_random.integers(1 << 30) == wrapped.unwrapped.np_random.integers(1 << 30)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="flicker_prob"):
        FlickeringWrapper(ImageEnv(), flicker_prob=1.5)
    with pytest.raises(ValueError, match="Box"):
        FlickeringWrapper(gym.make("FrozenLake-v1"))
    env = ImageEnv()
    env.observation_space = spaces.Box(low=1.0, high=2.0, shape=(3,), dtype=np.float32)
    with pytest.raises(ValueError, match="outside"):
        FlickeringWrapper(env)
    with pytest.raises(gym.error.ResetNeeded):
        FlickeringWrapper(ImageEnv()).step(0)


def test_flickering_atari_ids():
    pytest.importorskip("ale_py")
    env_ids = register_flickering_atari_envs()
    assert env_ids == register_flickering_atari_envs()
    assert len(env_ids) == len(FLICKERING_ATARI_GAMES)
    assert "FlickeringPongNoFrameskip-v4" in env_ids
    for env_id in env_ids:
        spec, base_spec = gym.spec(env_id), gym.spec(env_id.removeprefix("Flickering"))
        # rl-zoo3 treats an env as Atari when its entry point names AtariEnv
        assert "AtariEnv" in str(spec.entry_point)
        assert spec.kwargs == base_spec.kwargs


def test_flickering_after_atari_wrapper():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    register_flickering_atari_envs()
    env = FlickeringWrapper(AtariWrapper(gym.make("FlickeringPongNoFrameskip-v4")), flicker_prob=0.5)
    assert env.observation_space.shape == (84, 84, 1)
    blanks = blank_mask(env, 60, seed=0)
    assert 0 < blanks.sum() < len(blanks)
    env.close()
