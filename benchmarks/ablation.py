"""
Ablation of R2D2's learning options of :class:`sb3_drqn.RecurrentDQN`, each added alone to plain DRQN, and all
together, on two POMDPs, with a fixed budget per run and several seeds:

- ``cartpole_novel``: ``CartPoleNoVel-v1`` (velocities masked), its ``drqn.yml`` entry (observations normalised)
  as it was before tuning, i.e. with ``CARTPOLE_OVERRIDES`` (one-step returns, ``gamma=0.99``, 32 sequences per
  batch), so that ``plain`` is plain DRQN; ``--cartpole-timesteps`` env steps (50k by default);
- ``memory``: :class:`sb3_drqn.common.envs.CueMemoryEnv` with ``delay=16`` and 4 cues (a memoryless agent answers
  right 25% of the time), ``drqn.yml``'s ``default`` entry with ``MEMORY_OVERRIDES`` (windows of 20 learning
  steps), ``--memory-timesteps`` env steps (30k by default).

Options (see :class:`~sb3_drqn.RecurrentDQN`): ``n_step`` (``n_steps=5``), ``prioritized``
(``prioritized_replay=True``, alpha = eta = 0.9, beta 0.6 -> 1), ``value_rescaling``, ``dueling``,
``prev_action_reward`` (:class:`~sb3_drqn.common.wrappers.PreviousActionRewardWrapper` with
``MultiInputLstmPolicy``) and ``all``. Every run records its full settings.

Each run is evaluated every ``--eval-freq`` steps (deterministic episodes on a separate env). Reported per task and
option, over seeds: the interquartile mean (IQM) of the final evaluation and of the mean evaluation over the run
(area under the curve), each with a 95% stratified bootstrap confidence interval (``rliable``).
Outputs: one JSON per run under ``<out-dir>/run_results/`` (finished runs are skipped on restart), ``ablation.{json,md}``
in ``--out-dir`` and a PNG of the curves.

Usage::

    python benchmarks/ablation.py                        # 5 seeds, both tasks, all options (about 70 min on 2 cores)
    python benchmarks/ablation.py --tasks memory --seeds 0 1 2 --options plain all
"""

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import harness
import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)

from sb3_drqn.common.envs import CueMemoryEnv
from sb3_drqn.common.wrappers import PreviousActionRewardWrapper

REPO = Path(__file__).resolve().parents[1]
TASKS = ("cartpole_novel", "memory")
# Plain DRQN on CartPoleNoVel-v1: its drqn.yml entry without the R2D2 option it was tuned with (n-step returns),
# with the discount and batch it had before (the committed ablation results used these)
CARTPOLE_OVERRIDES: dict[str, Any] = dict(n_steps=1, gamma=0.99, batch_size=32)
MEMORY_ENV = dict(delay=16, n_cues=4)
MEMORY_OVERRIDES: dict[str, Any] = dict(
    learning_rate=1e-3,
    buffer_size=30_000,
    learning_starts=1000,
    batch_size=32,
    train_freq=4,
    target_update_interval=1000,
    exploration_fraction=0.3,
    exploration_final_eps=0.05,
    sequence_length=20,
    burn_in=10,
    policy_kwargs=dict(lstm_hidden_size=32),
)
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "n_step": dict(n_steps=5),
    "prioritized": dict(prioritized_replay=True, importance_sampling_exponent=0.6, importance_sampling_exponent_final=1.0),
    "value_rescaling": dict(value_rescaling=True),
    "dueling": dict(dueling=True),
    "prev_action_reward": dict(prev_action_reward=True),
}
OPTIONS["all"] = {key: value for option in OPTIONS.values() for key, value in option.items()}


def make_run(task: str, option: str, seed: int, args: Any) -> harness.Run:
    """One run: the task's entry and overrides, then the option's."""
    overrides = {**(CARTPOLE_OVERRIDES if task == "cartpole_novel" else MEMORY_OVERRIDES), **args.hyperparams}
    option_settings = dict(OPTIONS[option])
    prev_action_reward = option_settings.pop("prev_action_reward", False)
    dueling = option_settings.pop("dueling", False)
    entry = "CartPoleNoVel-v1" if task == "cartpole_novel" else "default"
    base = harness.load_settings("drqn", entry)
    policy_kwargs = overrides.get("policy_kwargs", base.kwargs.get("policy_kwargs", {}))
    overrides.update(option_settings, policy_kwargs=dict(policy_kwargs, dueling=dueling))
    if prev_action_reward:
        overrides["policy"] = "MultiInputLstmPolicy"
    settings = harness.load_settings("drqn", entry, overrides)
    env = "CartPoleNoVel-v1" if task == "cartpole_novel" else CueMemoryEnv
    timesteps = args.timesteps or (args.cartpole_timesteps if task == "cartpole_novel" else args.memory_timesteps)
    return harness.Run(
        task,
        option,
        seed,
        env,
        settings,
        timesteps,
        args.eval_freq,
        args.eval_episodes,
        env_kwargs={} if task == "cartpole_novel" else MEMORY_ENV,
        wrapper=PreviousActionRewardWrapper if prev_action_reward else None,
        device=args.device,
    )


def main(argv: list[str] | None = None) -> None:
    parser = harness.make_parser(
        __doc__,
        REPO / "benchmarks" / "results" / "ablation",
        list(OPTIONS),
        "--options",
        plot="ablation.png",
        timesteps=None,
        seeds=[0, 1, 2, 3, 4],
        eval_freq=5000,
        eval_episodes=10,
        n_procs=2,
        script=__file__,
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--cartpole-timesteps", type=int, default=50_000, help="(--timesteps: the same for both tasks)")
    parser.add_argument("--memory-timesteps", type=int, default=30_000)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples of the confidence intervals")
    args = harness.parse_args(parser, argv)
    runs = [make_run(task, option, seed, args) for task in args.tasks for seed in args.seeds for option in args.algos]
    results = harness.run_all(runs, args.out_dir, args.n_procs, args.summary_only)
    summary = harness.summarize(results, args.bootstrap)
    lines = [
        "| task | option | final return, IQM [95% CI] | mean return over the run, IQM [95% CI] | final per seed | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for task, options in summary.items():
        for option, s in options.items():
            aucs = np.array([np.mean(r["eval_means"]) for r in results if r["task"] == task and r["agent"] == option])
            auc_iqm, auc_low, auc_high = harness.iqm_with_ci(aucs[:, None], args.bootstrap)
            s.update(auc_per_seed=aucs.tolist(), auc_iqm=auc_iqm, auc_ci=[auc_low, auc_high])
            lines.append(
                f"| {task} | {option} | {s['final_iqm']:.2f} [{s['final_ci'][0]:.2f}, {s['final_ci'][1]:.2f}] "
                f"| {auc_iqm:.2f} [{auc_low:.2f}, {auc_high:.2f}] | {', '.join(f'{v:.1f}' for v in s['final_per_seed'])} "
                f"| {s['mean_wall_time']:.0f} |"
            )
    harness.write_results(args.out_dir, "ablation", results, summary, "\n".join(lines), args)
    harness.plot_curves(summary, args.plot, "Ablation of the R2D2 options, deterministic evaluations")


if __name__ == "__main__":
    main()
