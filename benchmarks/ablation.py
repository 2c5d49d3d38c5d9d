"""
Ablation of R2D2's learning options of :class:`sb3_drqn.RecurrentDQN`, each added alone to plain DRQN, and all
together, on two POMDPs, with a fixed budget per run and several seeds:

- ``cartpole_novel``: ``CartPoleNoVel-v1`` (velocities masked), the settings of ``benchmarks/cartpole_novel.py``
  (observations normalised) before they were tuned, i.e. without its 5-step returns and with ``gamma=0.99`` and
  32 sequences per batch, so that ``plain`` is plain DRQN; ``--cartpole-timesteps`` env steps (50k by default);
- ``memory``: :class:`sb3_drqn.common.envs.CueMemoryEnv` with ``delay=16`` and 4 cues (a memoryless agent answers
  right 25% of the time), windows of 20 learning steps, ``--memory-timesteps`` env steps (30k by default).

Options (see :class:`~sb3_drqn.RecurrentDQN`): ``n_step`` (``n_steps=5``), ``prioritized``
(``prioritized_replay=True``, alpha = eta = 0.9, beta 0.6 -> 1), ``value_rescaling``, ``dueling``,
``prev_action_reward`` (:class:`~sb3_drqn.common.wrappers.PreviousActionRewardWrapper` with
``MultiInputLstmPolicy``) and ``all``.

Each run is evaluated every ``--eval-freq`` steps (deterministic episodes on a separate env). Reported per task and
option, over seeds: the interquartile mean (IQM: mean of the middle half of the runs) of the final evaluation and of
the mean evaluation over the run (area under the curve), each with a 95% bootstrap confidence interval (resampling
runs, ``--bootstrap`` samples). Outputs: a markdown table, a JSON file with every curve, and a PNG of the curves.

Usage::

    python benchmarks/ablation.py                        # 5 seeds, both tasks, all options (about 2 h on 2 cores)
    python benchmarks/ablation.py --tasks memory --seeds 3 --options plain all
"""

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cartpole_novel import DRQN_KWARGS

# Plain DRQN on CartPoleNoVel-v1: the benchmark's settings without the R2D2 option they were tuned with (n-step
# returns) and with the discount and batch they had before (the committed ablation results used these)
CARTPOLE_KWARGS: dict[str, Any] = {**DRQN_KWARGS, "n_steps": 1, "gamma": 0.99, "batch_size": 32}

RESULTS = Path(__file__).parent / "results"
DOCS_IMAGES = Path(__file__).parent.parent / "docs" / "images"
TASKS = ("cartpole_novel", "memory")
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "n_step": dict(n_steps=5),
    "prioritized": dict(prioritized_replay=True, importance_sampling_exponent=0.6, importance_sampling_exponent_final=1.0),
    "value_rescaling": dict(value_rescaling=True),
    "dueling": dict(dueling=True),
    "prev_action_reward": dict(prev_action_reward=True),
}
OPTIONS["all"] = {key: value for option in OPTIONS.values() for key, value in option.items()}

MEMORY_ENV = dict(delay=16, n_cues=4)
MEMORY_KWARGS: dict[str, Any] = dict(
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


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half (``n // 4`` values dropped at each end)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    cut = len(values) // 4
    return float(values[cut : len(values) - cut].mean())


def bootstrap_ci(values: np.ndarray, n_samples: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the IQM, resampling runs with replacement."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=np.float64)
    resampled = [iqm(values[rng.integers(0, len(values), len(values))]) for _ in range(n_samples)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(low), float(high)


def make_envs(task: str, seed: int, prev_action_reward: bool):
    """Training and evaluation envs of a task."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_drqn.common.envs import CueMemoryEnv
    from sb3_drqn.common.wrappers import PreviousActionRewardWrapper

    wrapper = PreviousActionRewardWrapper if prev_action_reward else None
    if task == "memory":
        env = make_vec_env(CueMemoryEnv, seed=seed, env_kwargs=MEMORY_ENV, wrapper_class=wrapper)
        eval_env = make_vec_env(CueMemoryEnv, seed=seed + 10_000, env_kwargs=MEMORY_ENV, wrapper_class=wrapper)
        return env, eval_env
    import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)

    env = VecNormalize(make_vec_env("CartPoleNoVel-v1", seed=seed, wrapper_class=wrapper), norm_obs=True, norm_reward=False)
    eval_env = VecNormalize(
        make_vec_env("CartPoleNoVel-v1", seed=seed + 10_000, wrapper_class=wrapper), training=False, norm_reward=False
    )
    return env, eval_env


def run_one(task: str, option: str, seed: int, timesteps: int, eval_freq: int, eval_episodes: int) -> dict[str, Any]:
    """Train one run and return its evaluation curve."""
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_drqn import RecurrentDQN

    th.set_num_threads(1)
    settings = dict(OPTIONS[option])
    prev_action_reward = settings.pop("prev_action_reward", False)
    dueling = settings.pop("dueling", False)
    kwargs = dict(CARTPOLE_KWARGS if task == "cartpole_novel" else MEMORY_KWARGS)
    kwargs["policy_kwargs"] = dict(kwargs["policy_kwargs"], dueling=dueling)
    kwargs.update(settings)
    env, eval_env = make_envs(task, seed, prev_action_reward)
    policy = "MultiInputLstmPolicy" if prev_action_reward else "MlpLstmPolicy"
    model = RecurrentDQN(policy, env, seed=seed, device="cpu", **kwargs)

    steps: list[int] = []
    returns: list[float] = []

    def evaluate() -> None:
        if isinstance(env, VecNormalize) and isinstance(eval_env, VecNormalize):
            eval_env.obs_rms = env.obs_rms.copy()
        mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes, deterministic=True)
        steps.append(model.num_timesteps)
        returns.append(float(mean_return))

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_freq == 0:
                evaluate()
            return True

    start = time.perf_counter()
    model.learn(timesteps, callback=Evaluate())
    if not steps or steps[-1] != model.num_timesteps:
        evaluate()
    return dict(task=task, option=option, seed=seed, steps=steps, returns=returns, wall_time=time.perf_counter() - start)


def summarize(runs: list[dict[str, Any]], n_bootstrap: int) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(run["task"] for run in runs):
        summary[task] = {}
        for option in dict.fromkeys(run["option"] for run in runs if run["task"] == task):
            group = sorted((r for r in runs if r["task"] == task and r["option"] == option), key=lambda r: r["seed"])
            finals = np.array([r["returns"][-1] for r in group])
            aucs = np.array([np.mean(r["returns"]) for r in group])
            summary[task][option] = dict(
                seeds=[r["seed"] for r in group],
                final_per_seed=finals.tolist(),
                final_iqm=iqm(finals),
                final_ci=bootstrap_ci(finals, n_bootstrap),
                auc_per_seed=aucs.tolist(),
                auc_iqm=iqm(aucs),
                auc_ci=bootstrap_ci(aucs, n_bootstrap),
                mean_wall_time=float(np.mean([r["wall_time"] for r in group])),
            )
    return summary


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| task | option | final return, IQM [95% CI] | mean return over the run, IQM [95% CI] | final per seed | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for task, options in summary.items():
        for option, s in options.items():
            per_seed = ", ".join(f"{value:.1f}" for value in s["final_per_seed"])
            lines.append(
                f"| {task} | {option} | {s['final_iqm']:.2f} [{s['final_ci'][0]:.2f}, {s['final_ci'][1]:.2f}] "
                f"| {s['auc_iqm']:.2f} [{s['auc_ci'][0]:.2f}, {s['auc_ci'][1]:.2f}] | {per_seed} "
                f"| {s['mean_wall_time']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(run["task"] for run in runs))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for option in dict.fromkeys(run["option"] for run in runs if run["task"] == task):
            group = [r for r in runs if r["task"] == task and r["option"] == option]
            length = min(len(r["returns"]) for r in group)
            curves = np.array([r["returns"][:length] for r in group])
            steps = group[0]["steps"][:length]
            median = np.median(curves, axis=0)
            low, high = np.percentile(curves, [25, 75], axis=0)
            (line,) = ax.plot(steps, median, label=option, linewidth=2 if option in ("plain", "all") else 1)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.12)
        ax.set_title(f"{task} (median and interquartile range over {len(group)} seeds)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS), default=list(OPTIONS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cartpole-timesteps", type=int, default=50_000)
    parser.add_argument("--memory-timesteps", type=int, default=30_000)
    parser.add_argument("--eval-freq", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples of the confidence intervals")
    parser.add_argument("--n-procs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "ablation.json")
    parser.add_argument("--plot", type=Path, default=DOCS_IMAGES / "ablation.png")
    args = parser.parse_args(argv)

    timesteps = dict(cartpole_novel=args.cartpole_timesteps, memory=args.memory_timesteps)
    jobs = [(task, option, seed) for task in args.tasks for seed in range(args.seeds) for option in args.options]
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    with ProcessPoolExecutor(args.n_procs) as pool:
        futures = [
            pool.submit(run_one, task, option, seed, timesteps[task], args.eval_freq, args.eval_episodes)
            for task, option, seed in jobs
        ]
        for future in as_completed(futures):
            run = future.result()
            runs.append(run)
            print(
                f"[{time.perf_counter() - start:7.0f}s] {run['task']:>14} {run['option']:>18} seed {run['seed']}: "
                f"final {run['returns'][-1]:.2f} ({run['wall_time']:.0f}s)",
                flush=True,
            )
    summary = summarize(runs, args.bootstrap)
    table = format_table(summary)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {
        **vars(args),
        "out": str(args.out),
        "plot": str(args.plot),
        "memory_env": MEMORY_ENV,
        "cartpole_kwargs": CARTPOLE_KWARGS,
        "memory_kwargs": MEMORY_KWARGS,
    }
    args.out.write_text(json.dumps(dict(config=config, summary=summary, runs=runs), indent=1))
    args.out.with_suffix(".md").write_text(table)
    plot(runs, args.plot)
    print(f"Wrote {args.out}, {args.out.with_suffix('.md')} and {args.plot}")


if __name__ == "__main__":
    main(sys.argv[1:])
