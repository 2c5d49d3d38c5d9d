"""
Benchmark on CartPoleNoVel-v1 (CartPole with the velocities masked: a POMDP).

Compares, over several seeds and the same number of env steps:

- ``drqn``: :class:`sb3_drqn.RecurrentDQN`, the ``CartPoleNoVel-v1`` entry of ``drqn.yml`` (tuned: see README)
- ``dqn``: SB3 ``DQN("MlpPolicy")`` with the same settings where they apply
  (``batch_size = drqn batch_size x sequence_length`` transitions; ``harness.matched_dqn_settings``)
- ``dqn_stack4``: the same DQN on a 4-frame stack (``VecFrameStack(env, 4)``)
- ``ppo_lstm``: sb3-contrib ``RecurrentPPO`` with the RL Zoo's tuned ``CartPoleNoVel-v1`` entry of ``ppo_lstm.yml``

Each run is evaluated every ``--eval-freq`` env steps (mean return of ``--eval-episodes`` deterministic episodes
on a separate eval env) and once more at the end (``--final-eval-episodes`` episodes). ``--hyperparams``
overrides drqn's settings (and so the DQN settings matched to them). Outputs: one JSON per run under
``<out-dir>/run_results/`` (finished runs are skipped on restart), ``cartpole_novel.{json,md}`` in ``--out-dir`` and a
PNG plot.

Example (the full benchmark, about 45 min on two cores)::

    python benchmarks/cartpole_novel.py

Quick check::

    python benchmarks/cartpole_novel.py --seeds 0 --timesteps 10000 --algos drqn dqn --out-dir /tmp/cpnv
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import harness
import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)

ENV_ID = "CartPoleNoVel-v1"
SOLVED = 475.0
ALGOS = ("drqn", "dqn", "dqn_stack4", "ppo_lstm")
REPO = Path(__file__).resolve().parents[1]


def agent_settings(agent: str, overrides: dict) -> harness.Settings:
    """:return: The settings of ``agent`` (``overrides`` apply to drqn, and so to the DQN settings matched to it)"""
    if agent == "ppo_lstm":
        return harness.load_settings("ppo_lstm", ENV_ID)
    drqn = harness.load_settings("drqn", ENV_ID, overrides)
    if agent == "drqn":
        return drqn
    dqn = harness.matched_dqn_settings(drqn)
    return harness.convert("dqn", {**dqn.raw, "frame_stack": 4}, dqn.source) if agent == "dqn_stack4" else dqn


def format_table(summary: dict, results: list[dict]) -> str:
    lines = [
        "| algo | final return (mean ± std over seeds) | final return per seed | reached 475 | median steps to 475 "
        "| solved at end | mean wall time (s) | wall time / dqn |",
        "|" + "---|" * 8,
    ]
    for agent, s in summary.items():
        runs = [r for r in results if r["agent"] == agent]
        to_solved = [
            next((t for t, m in zip(r["eval_steps"], r["eval_means"], strict=True) if m >= SOLVED), None) for r in runs
        ]
        reached = [t for t in to_solved if t is not None]
        median = f"{statistics.median(reached):.0f}" if reached else "-"
        ratio = f"{s['mean_wall_time'] / summary['dqn']['mean_wall_time']:.2f}" if "dqn" in summary else "-"
        lines.append(
            f"| {agent} | {s['final_mean']:.1f} ± {s['final_std']:.1f} | {', '.join(f'{v:.1f}' for v in s['final_per_seed'])} "
            f"| {len(reached)}/{len(runs)} | {median} | {sum(v >= SOLVED for v in s['final_per_seed'])}/{len(runs)} "
            f"| {s['mean_wall_time']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = harness.make_parser(
        __doc__,
        REPO / "benchmarks" / "results" / "cartpole_novel",
        ALGOS,
        plot="cartpole_novel.png",
        timesteps=100_000,
        seeds=[0, 1, 2, 3, 4],
        eval_freq=5000,
        eval_episodes=10,
        n_procs=2,
        script=__file__,
    )
    parser.add_argument("--final-eval-episodes", type=int, default=20, help="episodes of the final evaluation")
    args = harness.parse_args(parser, argv)
    final_eval_episodes = args.eval_episodes if args.smoke else args.final_eval_episodes
    # Slowest agents first so that the pool stays busy
    agents = sorted(args.algos, key=("drqn", "ppo_lstm", "dqn_stack4", "dqn").index)
    runs = [
        harness.Run(
            ENV_ID,
            agent,
            seed,
            ENV_ID,
            agent_settings(agent, args.hyperparams),
            args.timesteps,
            args.eval_freq,
            args.eval_episodes,
            final_eval_episodes,
            device=args.device,
        )
        for agent in agents
        for seed in args.seeds
    ]
    results = harness.run_all(runs, args.out_dir, args.n_procs, args.summary_only)
    summary = harness.summarize(results)[ENV_ID]
    table = format_table(summary, results)
    harness.write_results(args.out_dir, "cartpole_novel", results, summary, table, args)
    harness.plot_curves({ENV_ID: summary}, args.plot, f"{ENV_ID}, deterministic evaluations", reference=SOLVED)


if __name__ == "__main__":
    main()
