"""
DRQN on CartPole from pixels: one rendered frame per step, against SB3's DQN on the same frames.

The observation is the rendered CartPole screen only (no state vector), grayscale and downscaled to
``--frame-size`` pixels square, one frame per step: a single frame shows where the cart and the pole are but not
how fast they move, so the task is partially observable. ``drqn`` (``CnnLstmPolicy``) can integrate the frames
over time; ``dqn`` (``CnnPolicy``, no frame stacking) cannot.

The pixel env is built from gymnasium's own wrappers: ``AddRenderObservation`` (the observation becomes the
``rgb_array`` render), ``ResizeObservation`` then ``GrayscaleObservation`` (resizing first is the same image and
several times cheaper than converting the full 600x400 frame).

Settings: drqn uses the ``CartPole-v1`` entry of sb3-drqn's ``drqn.yml`` with a small CNN in front of the LSTM
(two convolutions and a 128-unit layer, see :class:`SmallCNN`: the Nature CNN would cost several times more per
update on a CPU) and a 50k-step replay buffer; dqn uses the same settings where they apply, with the same CNN, a
dense layer as wide as drqn's LSTM in place of it, and batches of ``batch_size x sequence_length`` transitions
so that both learn from as many steps per update. Evaluation: 5 greedy episodes before training, every 5,000
steps and at the end.

Budget: 2 agents x 3 seeds x 50k steps, one after the other on one core: about an hour (measured on a busy
2-core machine: drqn about 80 and dqn about 150 env steps per second once learning, so about 10 and 5 minutes
per run; rendering alone takes about 2.5 ms per step). That is a short budget for learning from pixels: do not
expect CartPole to be solved (return 500) in it; the plot shows how far each agent gets.

Reproduce (writes ``examples/results/cartpole_pixels/cartpole_pixels.{json,png}``)::

    python examples/cartpole_pixels.py
    python examples/cartpole_pixels.py --timesteps 200000   # longer: about 3 to 4 hours
"""

from typing import Any

import gymnasium as gym
import torch as th
from common import load_zoo_settings, make_model, make_parser, parse_overrides, run_experiments, zoo_hyperparams_path
from gymnasium import spaces
from gymnasium.wrappers import AddRenderObservation, GrayscaleObservation, ResizeObservation
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecTransposeImage
from torch import nn

from sb3_drqn import RecurrentDQN

NAME = "cartpole_pixels"
ENV_ID = "CartPole-v1"
ALGOS: dict[str, type[OffPolicyAlgorithm]] = {"drqn": RecurrentDQN, "dqn": DQN}
BUFFER_SIZE = 50_000
MAX_EVAL_ENVS = 5


class SmallCNN(BaseFeaturesExtractor):
    """
    A CNN for small frames: two convolutions (16 and 32 channels) and one fully connected layer; a fraction of
    the Nature CNN's cost at 48x48.

    :param observation_space: Image observation space, channels first
    :param features_dim: Number of features
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        n_channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(n_channels, 16, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            n_flatten = self.cnn(th.as_tensor(observation_space.sample()[None]).float()).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


def make_pixel_cartpole(frame_size: int, env_id: str = ENV_ID, **env_kwargs: Any) -> gym.Env:
    """
    CartPole whose observation is its rendered screen, grayscale, ``frame_size x frame_size``, channel last.

    :param frame_size: Side of the square frame, in pixels
    :param env_id: The CartPole env id
    :param env_kwargs: Other arguments of ``gym.make``
    :return: The env, with a ``Box(0, 255, (frame_size, frame_size, 1), uint8)`` observation space
    """
    env = gym.make(env_id, render_mode="rgb_array", **env_kwargs)
    env = AddRenderObservation(env, render_only=True)
    env = ResizeObservation(env, (frame_size, frame_size))
    return GrayscaleObservation(env, keep_dim=True)


def agent_settings() -> dict[str, tuple[str, dict[str, Any]]]:
    """
    :return: ``{algo: (policy, constructor arguments)}``
    """
    drqn = load_zoo_settings(zoo_hyperparams_path("drqn"), ENV_ID)
    cnn = dict(features_extractor_class=SmallCNN, features_extractor_kwargs=dict(features_dim=128))
    drqn_kwargs = dict(drqn.kwargs, buffer_size=BUFFER_SIZE)
    lstm_hidden_size = drqn_kwargs["policy_kwargs"].get("lstm_hidden_size", 64)
    drqn_kwargs["policy_kwargs"] = dict(drqn_kwargs["policy_kwargs"], **cnn)
    dqn_kwargs = {key: value for key, value in drqn_kwargs.items() if key not in ("sequence_length", "burn_in")}
    # As many learning steps per update; a dense layer as wide as the LSTM in its place
    dqn_kwargs["batch_size"] = drqn_kwargs["batch_size"] * drqn_kwargs["sequence_length"]
    dqn_kwargs["policy_kwargs"] = dict(net_arch=[lstm_hidden_size, *drqn_kwargs["policy_kwargs"].get("net_arch", [])], **cnn)
    return {"drqn": ("CnnLstmPolicy", drqn_kwargs), "dqn": ("CnnPolicy", dqn_kwargs)}


def main() -> None:
    parser = make_parser(__doc__, NAME, algos=list(ALGOS), timesteps=50_000, n_seeds=3, eval_freq=5000, eval_episodes=5)
    parser.add_argument("--frame-size", type=int, default=48, help="side of the square frames (default: %(default)s)")
    args = parser.parse_args()
    overrides = parse_overrides(args.hyperparams, ALGOS.values())
    settings = agent_settings()

    def build(algo: str, env_id: str, seed: int) -> tuple[BaseAlgorithm, VecEnv]:
        env_kwargs = dict(frame_size=args.frame_size, env_id=env_id)
        env = VecTransposeImage(make_vec_env(make_pixel_cartpole, n_envs=1, seed=seed, env_kwargs=env_kwargs))
        n_eval_envs = min(args.eval_episodes, MAX_EVAL_ENVS)
        eval_env = VecTransposeImage(
            make_vec_env(make_pixel_cartpole, n_envs=n_eval_envs, seed=seed + 10_000, env_kwargs=env_kwargs)
        )
        policy, kwargs = settings[algo]
        model = make_model(ALGOS[algo], policy, env, kwargs, overrides, args, seed)
        return model, eval_env

    run_experiments(
        NAME,
        args,
        [ENV_ID],
        build,
        deterministic=True,
        title=f"CartPole from single {args.frame_size}x{args.frame_size} grayscale frames: DRQN (CnnLstmPolicy) vs DQN "
        "(CnnPolicy)",
        config=dict(
            env=f"{ENV_ID} rendered, grayscale, {args.frame_size}x{args.frame_size}, one frame per step", settings=settings
        ),
        reference=(475.0, "475 (solved)"),
    )


if __name__ == "__main__":
    main()
