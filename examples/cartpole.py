"""
DQN-style CartPole: RecurrentDQN (``MlpLstmPolicy``) beside SB3's DQN on ``CartPole-v1`` and ``CartPoleNoVel-v1``.

``CartPoleNoVel-v1`` (registered by the RL Zoo, ``rl_zoo3.import_envs``) is CartPole with the cart and pole
velocities masked out of the observation: one observation no longer tells where the pole is going, so a
memoryless agent is stuck far below the maximum return of 500, while a recurrent one can infer the velocities.
On ``CartPole-v1`` (full state) both kinds of agent should reach 500.

Settings come from the installed hyper-parameter files that the zoo's own commands use:

- ``drqn``: the ``CartPoleNoVel-v1`` / ``CartPole-v1`` entry of sb3-drqn's ``drqn.yml`` (observations normalised
  with ``VecNormalize`` where the entry says so: CartPoleNoVel-v1's does, CartPole-v1's does not);
- ``dqn``: the RL Zoo's tuned ``CartPole-v1`` entry of its ``dqn.yml``, on both envs (the zoo has no DQN entry
  for ``CartPoleNoVel-v1``).

Every agent gets the same number of env steps, ``--timesteps`` (100k by default, drqn.yml's budget; dqn.yml's
own budget is 50k, over which its exploration schedule is stretched). Evaluation: 10 greedy episodes every 5,000
steps and at the end.

Budget: 2 envs x 2 agents x 3 seeds = 12 runs of 100k steps, one after the other on one core: about 45 minutes
(measured on a busy 2-core machine: drqn about 300 and dqn about 1,000 env steps per second with the current
entries' 64 sequences per batch, so a drqn run takes about 5 to 6 minutes and a dqn run under 2, evaluations
included).

Reproduce (writes ``examples/results/cartpole/cartpole.{json,md,png}`` and one JSON per run under ``run_results/``)::

    python examples/cartpole.py
    python examples/cartpole.py --envs CartPoleNoVel-v1 --seeds 0 --timesteps 30000   # a quick look

The same agents with the zoo's commands (one seed each)::

    python -m rl_zoo3.train --algo drqn --env CartPoleNoVel-v1 --seed 0 -tb runs/
    python -m rl_zoo3.train --algo dqn --env CartPole-v1 --seed 0 -tb runs/
"""

from pathlib import Path

import harness
import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)

NAME = "cartpole"
ENV_IDS = ("CartPole-v1", "CartPoleNoVel-v1")
ALGOS = ("drqn", "dqn")
# The zoo's DQN settings for CartPole-v1 are used on both envs
DQN_ENTRY = "CartPole-v1"


def main(argv: list[str] | None = None) -> None:
    parser = harness.make_parser(
        __doc__,
        Path(__file__).resolve().parent / "results" / NAME,
        ALGOS,
        timesteps=100_000,
        seeds=[0, 1, 2],
        eval_freq=5000,
        eval_episodes=10,
        script=__file__,
    )
    parser.add_argument("--envs", nargs="+", choices=ENV_IDS, default=list(ENV_IDS), help="envs (default: both)")
    args = harness.parse_args(parser, argv)
    runs = []
    for env_id in args.envs:
        settings = dict(
            drqn=harness.load_settings("drqn", env_id, args.hyperparams),
            dqn=harness.load_settings("dqn", DQN_ENTRY, args.hyperparams),
        )
        runs += [
            harness.Run(
                env_id,
                agent,
                seed,
                env_id,
                settings[agent],
                args.timesteps,
                args.eval_freq,
                args.eval_episodes,
                device=args.device,
                tensorboard_log=str(args.out_dir / "tb"),
            )
            for agent in args.algos
            for seed in args.seeds
        ]
    results = harness.run_all(runs, args.out_dir, args.n_procs, args.summary_only)
    summary = harness.summarize(results)
    harness.write_results(args.out_dir, NAME, results, summary, harness.results_table(summary, solved=475.0), args)
    title = "DRQN (MlpLstmPolicy, drqn.yml) vs DQN (zoo's tuned CartPole-v1 settings)"
    harness.plot_curves(summary, args.out_dir / f"{NAME}.png", title, reference=475.0)


if __name__ == "__main__":
    main()
