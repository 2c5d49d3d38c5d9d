"""
Pong: DRQN (one frame, GRU) against DQN (one frame) and DQN (four stacked frames), for the same env steps.

Agents (``--algos``), all on Pong processed by SB3's ``AtariWrapper`` (the DeepMind wrappers: no-op starts, frame
skip 4 with a max over the last two raw frames, 84x84 grayscale, reward clipping, episode end on life loss):

- ``drqn``: RecurrentDQN with ``CnnLstmPolicy`` and a GRU (``policy_kwargs=dict(rnn_type="gru")``) on single
  frames: the recurrent layer replaces frame stacking;
- ``dqn``: SB3's DQN on the same single frames (it cannot tell which way the ball moves);
- ``dqn_stack4``: SB3's DQN on four stacked frames (``VecFrameStack``), the DQN paper's setting.

With ``--flickering``, the DRQN paper's flickering Pong: after ``AtariWrapper``, each frame is blanked with
probability 0.5 (``sb3_drqn.common.wrappers.FlickeringWrapper``), for all three agents.

Settings come from the installed hyper-parameter files the zoo's commands use: the ``atari`` entries of
sb3-drqn's ``drqn.yml`` (512 recurrent units, 10-step windows after a 10-step burn-in) and of the zoo's
``dqn.yml`` (its ``frame_stack: 4`` is used by ``dqn_stack4`` only). They are the zoo's settings for 10M steps;
with a shorter ``--timesteps`` the exploration schedule (10 % of the run) is shorter too. Evaluation: 5
episodes before training, every 100k steps and at the end, epsilon-greedy with the agent's current exploration
rate, as the zoo evaluates Atari; returns are the game's scores (-21 to 21).

Budget: this needs a GPU and many hours. The default is 3 agents x 3 seeds x 2M steps (8M frames per run; the
zoo's own budget is 10M steps), 18M env steps in all. Speed, measured on the CPU of a busy 2-core machine once
learning: drqn about 8 steps/s (an update every 4 steps reads 32 windows of 21 frames through the CNN), dqn
about 120 to 150. On a GPU the updates are cheap and the emulator and the acting steps dominate; estimated, not
measured: a few hundred steps per second, a few hours per run, about a day of GPU time for the default.
Memory: the replay buffers hold 100k steps, about 0.7 GB for drqn (each frame once), 1.4 GB for dqn and 5.6 GB
for dqn_stack4 (SB3's buffer stores each observation and the next one); ``--hyperparams buffer_size:N`` lowers it.

Reproduce (writes ``examples/results/pong/pong.{json,png}``, ``pong_flickering.{json,png}``)::

    python examples/pong.py
    python examples/pong.py --flickering
    python examples/pong.py --algos drqn --seeds 0 --timesteps 500000   # one agent, shorter

The same agents with the zoo's commands (``-n``: env steps; ``--seed``: one seed each)::

    python -m rl_zoo3.train --algo drqn --env PongNoFrameskip-v4 -n 2000000 --seed 0 -tb runs/ \\
        --hyperparams policy_kwargs:"dict(lstm_hidden_size=512, rnn_type='gru')"
    python -m rl_zoo3.train --algo dqn --env PongNoFrameskip-v4 -n 2000000 --seed 0 -tb runs/ --hyperparams frame_stack:None
    python -m rl_zoo3.train --algo dqn --env PongNoFrameskip-v4 -n 2000000 --seed 0 -tb runs/
    python -m rl_zoo3.train --algo drqn --env FlickeringPongNoFrameskip-v4 -n 2000000 --seed 0 -tb runs/ \\
        --hyperparams policy_kwargs:"dict(lstm_hidden_size=512, rnn_type='gru')"

(the zoo's ``dqn.yml`` has no flickering entry: for DQN on flickering Pong add
``env_wrapper:"['stable_baselines3.common.atari_wrappers.AtariWrapper', {'sb3_drqn.common.wrappers.FlickeringWrapper':
{'flicker_prob': 0.5}}]"`` to its ``--hyperparams``).
"""

from typing import Any

import ale_py
import gymnasium as gym
from common import load_zoo_settings, make_model, make_parser, parse_overrides, run_experiments, zoo_hyperparams_path
from stable_baselines3 import DQN
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecTransposeImage

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.wrappers import FlickeringWrapper

gym.register_envs(ale_py)

NAME = "pong"
ALGOS: dict[str, type[OffPolicyAlgorithm]] = {"drqn": RecurrentDQN, "dqn": DQN, "dqn_stack4": DQN}
MAX_EVAL_ENVS = 5


def flickering_atari_wrapper(env: gym.Env, flicker_prob: float = 0.5) -> gym.Env:
    """
    ``AtariWrapper`` then ``FlickeringWrapper`` (blanking must come after the max over raw frames).

    :param env: The ``NoFrameskip`` Atari env
    :param flicker_prob: Probability of blanking each processed frame
    :return: The wrapped env
    """
    return FlickeringWrapper(AtariWrapper(env), flicker_prob=flicker_prob)


def make_env(
    env_id: str, n_envs: int, seed: int, frame_stack: int | None, flicker_prob: float | None, max_episode_frames: int | None
) -> VecEnv:
    """
    :param env_id: A ``NoFrameskip-v4`` Atari env id
    :param n_envs: Number of envs
    :param seed: Seed of the first env
    :param frame_stack: Number of stacked frames, or ``None`` for single frames
    :param flicker_prob: Blanking probability of flickering Atari, or ``None`` for none
    :param max_episode_frames: Cut episodes after this many raw frames (for quick checks), or ``None``
    :return: The vectorised env, channels first
    """
    env_kwargs = {} if max_episode_frames is None else dict(max_episode_steps=max_episode_frames)
    if flicker_prob is None:
        env = make_atari_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    else:
        env = make_vec_env(
            env_id,
            n_envs=n_envs,
            seed=seed,
            wrapper_class=flickering_atari_wrapper,
            wrapper_kwargs=dict(flicker_prob=flicker_prob),
            env_kwargs=env_kwargs,
        )
    if frame_stack:
        env = VecFrameStack(env, frame_stack)
    return VecTransposeImage(env)


def agent_settings(env_label: str) -> dict[str, tuple[str, dict[str, Any], int | None]]:
    """
    :param env_label: Env id whose zoo entry is used (the ``atari`` entry when it has none)
    :return: ``{algo: (policy, constructor arguments, frame stack)}``
    """
    drqn = load_zoo_settings(zoo_hyperparams_path("drqn"), env_label, is_atari=True)
    dqn = load_zoo_settings(zoo_hyperparams_path("dqn"), env_label, is_atari=True)
    drqn_kwargs = dict(drqn.kwargs)
    drqn_kwargs["policy_kwargs"] = dict(drqn_kwargs.get("policy_kwargs", {}), rnn_type="gru")
    return {
        "drqn": (drqn.policy, drqn_kwargs, None),
        "dqn": (dqn.policy, dqn.kwargs, None),
        "dqn_stack4": (dqn.policy, dqn.kwargs, dqn.frame_stack or 4),
    }


def main() -> None:
    parser = make_parser(__doc__, NAME, algos=list(ALGOS), timesteps=2_000_000, n_seeds=3, eval_freq=100_000, eval_episodes=5)
    parser.add_argument("--env", default="PongNoFrameskip-v4", help="NoFrameskip-v4 Atari env (default: %(default)s)")
    parser.add_argument("--flickering", action="store_true", help="flickering screens (DRQN paper), for every agent")
    parser.add_argument("--flicker-prob", type=float, default=0.5, help="with --flickering (default: %(default)s)")
    parser.add_argument(
        "--max-episode-frames", type=int, default=None, help="cut episodes after N raw frames (quick checks only)"
    )
    args = parser.parse_args()
    overrides = parse_overrides(args.hyperparams, ALGOS.values())
    env_label = f"Flickering{args.env}" if args.flickering else args.env
    flicker_prob = args.flicker_prob if args.flickering else None
    settings = agent_settings(env_label)

    def build(algo: str, env_id: str, seed: int) -> tuple[BaseAlgorithm, VecEnv]:
        policy, kwargs, frame_stack = settings[algo]
        env = make_env(args.env, 1, seed, frame_stack, flicker_prob, args.max_episode_frames)
        n_eval_envs = min(args.eval_episodes, MAX_EVAL_ENVS)
        eval_env = make_env(args.env, n_eval_envs, seed + 10_000, frame_stack, flicker_prob, args.max_episode_frames)
        model = make_model(ALGOS[algo], policy, env, kwargs, overrides, args, seed)
        return model, eval_env

    run_experiments(
        f"{NAME}_flickering" if args.flickering else NAME,
        args,
        [env_label],
        build,
        deterministic=False,
        title="DRQN (1 frame, GRU) vs DQN (1 frame) vs DQN (4 frames), AtariWrapper"
        + (f", flickering p={args.flicker_prob}" if args.flickering else ""),
        config=dict(
            env=env_label,
            flicker_prob=flicker_prob,
            max_episode_frames=args.max_episode_frames,
            settings={
                algo: dict(policy=policy, frame_stack=stack, **kwargs) for algo, (policy, kwargs, stack) in settings.items()
            },
        ),
    )


if __name__ == "__main__":
    main()
