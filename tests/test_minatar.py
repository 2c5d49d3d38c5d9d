"""MinAtar support: the frame wrapper, the registered ids and their variants, the small-frame CNN."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import MINATAR_GAMES, MINATAR_MOTION_CHANNELS, register_minatar_envs
from sb3_drqn.common.torch_layers import SmallFrameCNN
from sb3_drqn.common.wrappers import MinAtarFrame

pytest.importorskip("minatar")


def raw_env(name: str = "Breakout") -> gym.Env:
    register_minatar_envs()
    return gym.make(f"MinAtar/{name}-v1")


def test_frames_are_the_states_channels_first():
    env = raw_env()
    wrapped = MinAtarFrame(raw_env())
    state, _ = env.reset(seed=3)
    frame, _ = wrapped.reset(seed=3)
    assert wrapped.observation_space == spaces.Box(0, 255, (4, 10, 10), np.uint8)
    assert frame.dtype == np.uint8 and frame.flags.c_contiguous
    np.testing.assert_array_equal(frame, np.moveaxis(state, -1, 0).astype(np.uint8) * 255)
    for action in [0, 1, 2, 1, 1]:
        state = env.step(action)[0]
        frame = wrapped.step(action)[0]
        np.testing.assert_array_equal(frame, np.moveaxis(state, -1, 0).astype(np.uint8) * 255)


def test_named_channels_are_dropped():
    # SpaceInvaders: cannon, alien, alien_left, alien_right, friendly_bullet, enemy_bullet
    env, wrapped = raw_env("SpaceInvaders"), MinAtarFrame(raw_env("SpaceInvaders"), ("alien_left", "alien_right"))
    state, frame = env.reset(seed=0)[0], wrapped.reset(seed=0)[0]
    assert frame.shape == (4, 10, 10)
    np.testing.assert_array_equal(frame, np.moveaxis(state[..., [0, 1, 4, 5]], -1, 0).astype(np.uint8) * 255)


def test_bad_channels_and_envs_are_refused():
    with pytest.raises(ValueError, match=r"Unknown MinAtar channels \['speed'\].*'paddle', 'ball', 'trail', 'brick'"):
        MinAtarFrame(raw_env(), ("speed",))
    with pytest.raises(ValueError, match="cannot drop every channel"):
        MinAtarFrame(raw_env(), ("paddle", "ball", "trail", "brick"))
    with pytest.raises(ValueError, match="needs a MinAtar env"):
        MinAtarFrame(gym.make("CartPole-v1"))


@pytest.mark.parametrize("name", list(MINATAR_GAMES))
def test_no_motion_variants_lack_the_motion_channels(name):
    full = MinAtarFrame(raw_env(name))
    variant = gym.make(f"MinAtar/{name}-NoMotion-v1")
    n_channels = full.observation_space.shape[0] - len(MINATAR_MOTION_CHANNELS[name])
    assert variant.observation_space == spaces.Box(0, 255, (n_channels, 10, 10), np.uint8)
    channels = variant.unwrapped.game.env.channels
    dropped = {channels[motion] for motion in MINATAR_MOTION_CHANNELS[name]}
    kept = [channel for channel in range(full.observation_space.shape[0]) if channel not in dropped]
    np.testing.assert_array_equal(variant.reset(seed=1)[0], full.reset(seed=1)[0][kept])


def test_flicker_variant_blanks_half_the_frames_reproducibly():
    def frames(seed: int) -> np.ndarray:
        env = gym.make("MinAtar/Breakout-Flicker-v1")
        out = [env.reset(seed=seed)[0]]
        out += [env.step(0)[0] for _ in range(399)]
        return np.array(out)

    first = frames(0)
    blank = ~first.reshape(len(first), -1).any(axis=1)
    assert 0.4 < blank.mean() < 0.6  # the paddle and bricks are always on screen, so blank means blanked
    np.testing.assert_array_equal(first, frames(0))


def test_registration_is_lazy():
    code = (
        "import sys, gymnasium as gym, rl_zoo3.train, sb3_drqn.zoo as z; z.register(); "
        "assert 'MinAtar/Breakout-NoMotion-v1' in gym.envs.registry; assert 'minatar' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_small_frame_cnn():
    space = spaces.Box(0, 255, (3, 10, 10), np.uint8)
    extractor = SmallFrameCNN(space)
    assert extractor(th.zeros(5, 3, 10, 10)).shape == (5, 128)
    with pytest.raises(ValueError, match="needs an image observation space"):
        SmallFrameCNN(spaces.Box(0.0, 1.0, (3, 10, 10), np.float32))
    with pytest.raises(ValueError, match="at least 3x3"):
        SmallFrameCNN(spaces.Box(0, 255, (3, 2, 10), np.uint8))


@pytest.mark.parametrize("algo", ["drqn", "dqn"])
def test_agents_train_on_minatar_frames(algo):
    env = gym.make("MinAtar/Breakout-NoMotion-v1")
    kwargs = dict(learning_starts=50, buffer_size=500, seed=0, policy_kwargs=dict(features_extractor_class=SmallFrameCNN))
    if algo == "drqn":
        model = RecurrentDQN("CnnLstmPolicy", env, sequence_length=4, batch_size=4, **kwargs)
    else:
        model = DQN("CnnPolicy", env, batch_size=4, **kwargs)
    model.learn(200)
    assert isinstance(model.policy.q_net.features_extractor, SmallFrameCNN)


def test_stacked_frames_keep_their_layout_in_the_benchmark_harness():
    # 4 frames of 3 channels: (12, 10, 10), whose smallest dimension is not the first, so SB3's guess from the
    # shape would call it channel-last and transpose it; the harness marks it channel-first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import harness
    import minatar_suite

    register_minatar_envs()

    def make(agent: str):
        settings = minatar_suite.agent_settings(agent, "Asterix-NoMotion", {})
        return harness.make_env("MinAtar/Asterix-NoMotion-v1", settings, 1, 0, {}, None, False)

    stacked, single = make("dqn_stack4"), make("dqn")
    obs_stacked, obs_single = stacked.reset(), single.reset()
    for action in (0, 1, 3):
        obs_stacked, *_ = stacked.step(np.array([action]))
        obs_single, *_ = single.step(np.array([action]))
    assert obs_stacked.shape == (1, 12, 10, 10)
    np.testing.assert_array_equal(obs_stacked[:, -3:], obs_single)  # the newest frame, as the single-frame env sees it
    model = DQN("CnnPolicy", stacked, policy_kwargs=dict(features_extractor_class=SmallFrameCNN), buffer_size=100)
    assert model.observation_space.shape == (12, 10, 10)  # not transposed by the algorithm either


def test_minatar_suite_optional_agent_differs_from_drqn_only_in_normalize_features():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import harness
    import minatar_suite

    register_minatar_envs()
    drqn = minatar_suite.agent_settings("drqn", "Freeway-NoMotion", {})
    norm = minatar_suite.agent_settings("drqn_norm", "Freeway-NoMotion", {})
    assert norm.algo == "drqn" and norm.source == f"{drqn.source} with normalize_features=True"
    assert norm.kwargs.pop("policy_kwargs") == {**drqn.kwargs.pop("policy_kwargs"), "normalize_features": True}
    assert norm.kwargs.keys() == drqn.kwargs.keys()
    assert {**norm.raw, "policy_kwargs": None} == {**drqn.raw, "policy_kwargs": None}
    # It runs only when asked for
    parser = harness.make_parser(None, Path("."), minatar_suite.AGENTS + minatar_suite.OPTIONAL_AGENTS, algos=["drqn"])
    assert parser.parse_args([]).algos == ["drqn"]
    assert parser.parse_args(["--algos", "drqn_norm"]).algos == ["drqn_norm"]
    with pytest.raises(ValueError, match="normalize_features"):
        minatar_suite.agent_settings(
            "drqn_norm", "Freeway-NoMotion", {"policy_kwargs": "dict(normalize_features=False, lstm_hidden_size=64)"}
        )
