"""
DRQN on CartPole from pixels: one rendered frame per step, against SB3's DQN on the same frames.

The observation is the rendered CartPole screen only (no state vector), grayscale, one frame per step: by default
the band of rows where the cart and the pole can be, resized 5x smaller to 36x120 (``--frame band``), or the
whole screen resized to ``--frame-size`` pixels square (``--frame full``). A single frame shows where the cart and
the pole are but not how fast they move, so the task is partially observable. ``drqn`` (``CnnLstmPolicy``) can
integrate the frames over time; ``dqn`` (``CnnPolicy``, no frame stacking) cannot. The band is the default because
the whole screen resized hides the pole's angle: the pole, 10 pixels wide on the 600-pixel screen, becomes
thinner than a pixel. The example's CNN, trained to read the true state from single frames, explains none of the
angle's variance at 48x48 (R^2 -0.04) and a quarter at 84x84 (0.25), against 0.92 from the band
(``benchmarks/pixel_probe.py``, results in ``benchmarks/results/pixel_probe/``).

The pixel env is built from gymnasium's own wrappers: ``AddRenderObservation`` (the observation becomes the
``rgb_array`` render), ``TransformObservation`` (the band's rows), ``ResizeObservation`` then
``GrayscaleObservation`` (resizing first is the same image and several times cheaper than converting the full
frame).

Settings: drqn uses the ``CartPole-v1`` entry of sb3-drqn's ``drqn.yml`` with a small CNN in front of the LSTM
(two convolutions and a 128-unit layer, see :class:`SmallCNN`: the Nature CNN would cost several times more per
update on a CPU), a 50k-step replay buffer, and 32 windows per update every 8 steps instead of 64 every 4
(``PIXEL_OVERRIDES``: chosen for CPU cost before any run), and a LayerNorm on the CNN's features before the LSTM
(``PIXEL_POLICY_KWARGS``: ``normalize_features=True``, tuned on this example: see docs/examples.md), and, for both
agents, a learning rate falling linearly from 5e-4 to 0 over the run (``PIXEL_TUNED``: ``lin_5e-4``, tuned on this
example; ``--hyperparams learning_rate:5e-4`` gives the entry's constant rate); dqn uses the same settings where
they apply, with the same CNN (ending with the same LayerNorm), a dense layer as wide as
drqn's LSTM in place of the LSTM, and batches of ``batch_size x sequence_length`` transitions so that both learn
from as many steps per update. Evaluation: 5 greedy episodes every 10,000 steps
(``--eval-freq``) and at the end.

Budget: 300k steps per run by default, the budget in which drqn learns to balance (it reached 195 in every seed by
110k steps and ended at 405.4, 500.0 and 500.0; dqn ended at 30.8, 30.6 and 36.8:
``examples/results/cartpole_pixels_300k_lrdecay``). On a 2-core machine a drqn run took 6,430 s and a dqn run
4,590 s with three runs sharing the two cores (rendering alone takes about 2.5 ms per step).

Reproduce (writes ``examples/results/cartpole_pixels/cartpole_pixels.{json,md,png}`` and ``run_results/``)::

    python examples/cartpole_pixels.py
    python examples/cartpole_pixels.py --out-dir examples/results/cartpole_pixels_300k_lrdecay
"""

from pathlib import Path
from typing import Any

import gymnasium as gym
import harness
import numpy as np
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import AddRenderObservation, GrayscaleObservation, ResizeObservation, TransformObservation
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

NAME = "cartpole_pixels"
ENV_ID = "CartPole-v1"
ALGOS = ("drqn", "dqn")
BUFFER_SIZE = 50_000
FRAMES = ("band", "full")
# Rows of the 400-row screen where the cart and the pole can be, and the band's size once resized (5x smaller)
BAND_ROWS = (150, 330)
BAND_SHAPE = (36, 120)
# Changes to drqn.yml's CartPole-v1 entry for frames, chosen for CPU cost before any run (not tuned on results): the
# CNN policy, a smaller buffer, and half the entry's windows per update, half as often (an update of 64 windows of
# 10 steps after a 10-step burn-in puts about 2,700 frames through the CNNs: about 0.23 s on one core at 36x120)
PIXEL_OVERRIDES = dict(policy="CnnLstmPolicy", buffer_size=BUFFER_SIZE, batch_size=32, train_freq=8)
# Tuned on this example (docs/examples.md): a LayerNorm on the CNN's features before the LSTM. Without it, on
# CartPole's white frames the features grew large and alike and saturated the LSTM's gates (every run collapsed to
# one action); with it, white frames learn and inverted ones learn faster
PIXEL_POLICY_KWARGS = dict(normalize_features=True)
# Tuned on this example (docs/examples.md), for both agents: drqn.yml's learning rate, 5e-4, falling linearly to 0
# over the run (the zoo's lin_ schedule). At the constant rate drqn reached 195 in every seed but did not hold it;
# decaying, it held it
PIXEL_TUNED = dict(learning_rate="lin_5e-4")


class SmallCNN(BaseFeaturesExtractor):
    """
    A CNN for small frames: two convolutions (16 and 32 channels) and one fully connected layer; a fraction of
    the Nature CNN's cost at 48x48.

    :param observation_space: Image observation space, channels first
    :param features_dim: Number of features
    :param layer_norm: End with a ``LayerNorm`` of the features (DQN's counterpart of RecurrentDQN's
        ``normalize_features``, so that both agents have the same network in front of their recurrent or dense layer)
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 128, layer_norm: bool = False) -> None:
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
        self.norm = nn.LayerNorm(features_dim) if layer_norm else nn.Identity()

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.norm(self.linear(self.cnn(observations)))


def make_pixel_cartpole(
    frame_size: int = 48, frame: str = "band", invert: bool = True, env_id: str = ENV_ID, **env_kwargs: Any
) -> gym.Env:
    """
    CartPole whose observation is its rendered screen, grayscale, channel last: either the band of rows where the
    cart and the pole can be (``frame="band"``: rows 150-330 of the 600x400 screen, resized to 36x120) or the
    whole screen resized to ``frame_size x frame_size`` (``frame="full"``, where the pole becomes thinner than a
    pixel: ``benchmarks/pixel_probe.py`` shows that a CNN cannot read the pole's angle from it). Inverted by default:
    a black background with a bright cart and pole, as in Atari's and MinAtar's frames. CartPole draws on white
    (98 % of the band's pixels are 255), and on those frames DRQN settled on one action in every setting tried,
    while on the inverted ones it learns (docs/examples.md).

    :param frame_size: Side of the square frame of ``frame="full"``, in pixels
    :param frame: ``"band"`` or ``"full"``
    :param invert: Invert the grayscale frame (``255 - pixel``); ``False``: CartPole's own colors
    :param env_id: The CartPole env id
    :param env_kwargs: Other arguments of ``gym.make``
    :return: The env, with a ``Box(0, 255, (height, width, 1), uint8)`` observation space
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, not {frame!r}")
    env: gym.Env = AddRenderObservation(gym.make(env_id, render_mode="rgb_array", **env_kwargs), render_only=True)
    if frame == "band":
        first, last = BAND_ROWS
        screen_shape = env.observation_space.shape
        assert screen_shape is not None, "CartPole's rendered screen has a shape"
        width, channels = screen_shape[1:]
        band_space: spaces.Box = spaces.Box(0, 255, (last - first, width, channels), dtype=np.uint8)
        env = TransformObservation(env, lambda screen: screen[first:last], band_space)
        env = ResizeObservation(env, BAND_SHAPE)
    else:
        env = ResizeObservation(env, (frame_size, frame_size))
    env = GrayscaleObservation(env, keep_dim=True)
    if invert:
        env = TransformObservation(env, lambda gray: 255 - gray, env.observation_space)
    return env


def agent_settings(overrides: dict[str, Any]) -> dict[str, harness.Settings]:
    """
    :param overrides: ``--hyperparams``; a ``policy_kwargs`` among them is merged into the example's (the small CNN
        stays unless it names another extractor)
    :return: The settings of each agent: drqn.yml's CartPole-v1 entry with the small CNN, ``PIXEL_OVERRIDES`` and
        ``PIXEL_TUNED``, and DQN matched to it
    """
    cnn = dict(features_extractor_class=SmallCNN, features_extractor_kwargs=dict(features_dim=128))
    entry = harness.load_settings("drqn", ENV_ID)
    policy_kwargs = entry.kwargs["policy_kwargs"] | cnn | PIXEL_POLICY_KWARGS | overrides.get("policy_kwargs", {})
    settings = dict(PIXEL_OVERRIDES) | PIXEL_TUNED | overrides | dict(policy_kwargs=policy_kwargs)
    drqn = harness.load_settings("drqn", ENV_ID, settings)
    # DQN gets the same LayerNorm at the end of its CNN
    layer_norm = bool(policy_kwargs.get("normalize_features", False))
    extractor_kwargs = dict(policy_kwargs["features_extractor_kwargs"], layer_norm=layer_norm)
    dqn = harness.matched_dqn_settings(drqn, "CnnPolicy", dict(features_extractor_kwargs=extractor_kwargs))
    return dict(drqn=drqn, dqn=dqn)


def main(argv: list[str] | None = None) -> None:
    parser = harness.make_parser(
        __doc__,
        Path(__file__).resolve().parent / "results" / NAME,
        ALGOS,
        timesteps=300_000,
        seeds=[0, 1, 2],
        eval_freq=10_000,
        eval_episodes=5,
        script=__file__,
    )
    parser.add_argument("--frame", choices=FRAMES, default="band", help="the band of the cart and pole, or the whole screen")
    parser.add_argument("--frame-size", type=int, default=48, help="side of --frame full's frames (default: %(default)s)")
    parser.add_argument("--original-colors", action="store_true", help="CartPole's white background (not inverted)")
    args = harness.parse_args(parser, argv)
    settings = agent_settings(args.hyperparams)
    env_kwargs = dict(frame_size=args.frame_size, frame=args.frame, invert=not args.original_colors, env_id=ENV_ID)
    runs = [
        harness.Run(
            ENV_ID,
            agent,
            seed,
            make_pixel_cartpole,
            settings[agent],
            args.timesteps,
            args.eval_freq,
            args.eval_episodes,
            env_kwargs=env_kwargs,
            device=args.device,
            tensorboard_log=str(args.out_dir / "tb"),
        )
        for agent in args.algos
        for seed in args.seeds
    ]
    results = harness.run_all(runs, args.out_dir, args.n_procs, args.summary_only)
    summary = harness.summarize(results)
    harness.write_results(args.out_dir, NAME, results, summary, harness.results_table(summary, solved=475.0), args)
    size = "x".join(map(str, BAND_SHAPE if args.frame == "band" else (args.frame_size, args.frame_size)))
    title = f"CartPole from single {size} frames ({args.frame}): DRQN vs DQN"
    harness.plot_curves(summary, args.out_dir / f"{NAME}.png", title, reference=475.0)


if __name__ == "__main__":
    main()
