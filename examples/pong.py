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
episodes every 100k steps and at the end, epsilon-greedy with the agent's current exploration
rate, as the zoo evaluates Atari; returns are the game's scores (-21 to 21).

Budget: this needs a GPU and many hours. The default is 3 agents x 3 seeds x 2M steps (8M frames per run; the
zoo's own budget is 10M steps), 18M env steps in all. Speed, measured on the CPU of a busy 2-core machine once
learning: drqn about 8 steps/s (an update every 4 steps reads 32 windows of 21 frames through the CNN), dqn
about 120 to 150. On a GPU the updates are cheap and the emulator and the acting steps dominate; estimated, not
measured: a few hundred steps per second, a few hours per run, about a day of GPU time for the default.
Memory: the replay buffers hold 100k steps, about 0.7 GB for drqn (each frame once), 1.4 GB for dqn and 5.6 GB
for dqn_stack4 (SB3's buffer stores each observation and the next one); ``--hyperparams buffer_size:N`` lowers it.

Reproduce (writes ``examples/results/pong/pong.{json,md,png}``, ``pong_flickering.{json,md,png}`` and ``run_results/``)::

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

from pathlib import Path

import ale_py
import gymnasium as gym
import harness

gym.register_envs(ale_py)

NAME = "pong"
ALGOS = ("drqn", "dqn", "dqn_stack4")


def agent_settings(env_label: str, overrides: dict, flicker_prob: float | None) -> dict[str, harness.Settings]:
    """
    :param env_label: Env id whose zoo entry is used (the ``atari`` entry when it has none)
    :param overrides: ``--hyperparams``
    :param flicker_prob: Blanking probability of flickering Atari, or ``None``
    :return: The settings of each agent
    """
    drqn = harness.load_settings("drqn", env_label)
    # As drqn.yml's FlickeringPongNoFrameskip-v4 entry, for every agent (the zoo's dqn.yml has no flickering entry)
    flickering = {"sb3_drqn.common.wrappers.FlickeringWrapper": dict(flicker_prob=flicker_prob)}
    common = (
        {} if flicker_prob is None else dict(env_wrapper=["stable_baselines3.common.atari_wrappers.AtariWrapper", flickering])
    )
    gru = dict(policy_kwargs=dict(drqn.kwargs.get("policy_kwargs", {}), rnn_type="gru"))
    return dict(
        drqn=harness.load_settings("drqn", env_label, {**common, **gru, **overrides}),
        dqn=harness.load_settings("dqn", env_label, {**common, "frame_stack": None, **overrides}),
        dqn_stack4=harness.load_settings("dqn", env_label, {**common, "frame_stack": 4, **overrides}),
    )


def main(argv: list[str] | None = None) -> None:
    parser = harness.make_parser(
        __doc__,
        Path(__file__).resolve().parent / "results" / NAME,
        ALGOS,
        timesteps=2_000_000,
        seeds=[0, 1, 2],
        eval_freq=100_000,
        eval_episodes=5,
        script=__file__,
    )
    parser.add_argument("--env", default="PongNoFrameskip-v4", help="NoFrameskip-v4 Atari env (default: %(default)s)")
    parser.add_argument("--flickering", action="store_true", help="flickering screens (DRQN paper), for every agent")
    parser.add_argument("--flicker-prob", type=float, default=0.5, help="with --flickering (default: %(default)s)")
    parser.add_argument(
        "--max-episode-frames", type=int, default=None, help="cut episodes after N raw frames (quick checks only)"
    )
    args = harness.parse_args(parser, argv)
    if args.smoke:
        # Atari-size updates cost about a second each on a CPU: a few small ones are enough to check the script
        args.hyperparams = {"batch_size": 2, "train_freq": 50, **args.hyperparams}
        if args.max_episode_frames is None:
            args.max_episode_frames = 400
    env_label = f"Flickering{args.env}" if args.flickering else args.env
    settings = agent_settings(env_label, args.hyperparams, args.flicker_prob if args.flickering else None)
    env_kwargs = {} if args.max_episode_frames is None else dict(max_episode_steps=args.max_episode_frames)
    runs = [
        harness.Run(
            env_label,
            agent,
            seed,
            args.env,
            settings[agent],
            args.timesteps,
            args.eval_freq,
            args.eval_episodes,
            env_kwargs=env_kwargs,
            deterministic=False,
            device=args.device,
            tensorboard_log=str(args.out_dir / "tb"),
        )
        for agent in args.algos
        for seed in args.seeds
    ]
    name = f"{NAME}_flickering" if args.flickering else NAME
    results = harness.run_all(runs, args.out_dir, args.n_procs, args.summary_only)
    summary = harness.summarize(results)
    harness.write_results(args.out_dir, name, results, summary, harness.results_table(summary), args)
    title = "DRQN (1 frame, GRU) vs DQN (1 frame) vs DQN (4 frames), AtariWrapper" + (
        f", flickering p={args.flicker_prob}" if args.flickering else ""
    )
    harness.plot_curves(summary, args.out_dir / f"{name}.png", title)


if __name__ == "__main__":
    main()
