"""
Helpers shared by the examples: command line, RL Zoo hyper-parameters, learning curves, JSON and plot.

Every example trains one or more agents (``--algos``) on one or more envs over several seeds (``--seeds``),
evaluates each agent on a separate env before training, every ``--eval-freq`` env steps and at the end
(SB3's :class:`~stable_baselines3.common.callbacks.EvalCallback`), and writes into ``--out-dir``:

- ``<name>.json``: the settings, every run's curve and, per env and algorithm, the mean and spread over seeds;
- ``<name>.png``: evaluation return against env steps, mean over seeds with the min-max band over seeds;
- ``evaluations/<run>/evaluations.npz``: SB3's own evaluation log of each run;
- ``tb/<run>_1/``: TensorBoard logs (``tensorboard --logdir <out-dir>/tb``).
"""

import argparse
import ast
import dataclasses
import inspect
import json
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.vec_env import VecEnv

EXAMPLES_DIR = Path(__file__).resolve().parent

# Keys of an RL Zoo entry that describe the env or the run rather than the algorithm's constructor
ZOO_ENV_KEYS = ("n_timesteps", "policy", "normalize", "frame_stack", "env_wrapper", "n_envs")


@dataclasses.dataclass
class ZooSettings:
    """
    One entry of an RL Zoo hyper-parameter file, split into what the algorithm's constructor takes and the rest.

    :param entry: Name of the entry that was used (the env id, ``atari`` or ``default``)
    :param policy: Policy name
    :param n_timesteps: Training budget of the entry, in env steps
    :param kwargs: Constructor arguments of the algorithm (schedules and ``policy_kwargs`` already evaluated)
    :param normalize: ``VecNormalize`` arguments, or ``None`` when the entry does not normalise
    :param frame_stack: Number of stacked frames, or ``None``
    :param raw: The entry as written in the file (for the JSON output)
    """

    entry: str
    policy: str
    n_timesteps: int
    kwargs: dict[str, Any]
    normalize: dict[str, Any] | None
    frame_stack: int | None
    raw: dict[str, Any]


@dataclasses.dataclass
class RunResult:
    """
    Learning curve of one training run.

    :param algo: Name of the agent, as given to ``--algos``
    :param env_id: Env the agent was trained on
    :param seed: Seed of the run
    :param eval_timesteps: Env steps at each evaluation
    :param eval_mean_returns: Mean return of the evaluation episodes at each evaluation
    :param eval_std_returns: Standard deviation over those episodes
    :param wall_time_s: Time spent in ``learn()``, evaluations included
    :param eval_time_s: Part of it spent evaluating
    :param train_steps_per_s: Env steps per second of training, evaluations excluded
    """

    algo: str
    env_id: str
    seed: int
    eval_timesteps: list[int]
    eval_mean_returns: list[float]
    eval_std_returns: list[float]
    wall_time_s: float
    eval_time_s: float
    train_steps_per_s: float


class CurveEvalCallback(EvalCallback):
    """
    :class:`~stable_baselines3.common.callbacks.EvalCallback` that also evaluates before the first step and after
    the last one (when that step is not a multiple of ``eval_freq``), and measures the time spent evaluating.
    Its ``evaluations_timesteps`` and ``evaluations_results`` are the learning curve (so ``log_path`` is required).

    :param eval_env: The environment used for evaluation, wrapped like the training env
    :param log_path: Folder where ``evaluations.npz`` is written
    :param kwargs: Other arguments of ``EvalCallback`` (``eval_freq`` counts calls, i.e. steps of the vec env)
    """

    def __init__(self, eval_env: VecEnv, log_path: str, **kwargs: Any) -> None:
        super().__init__(eval_env, log_path=log_path, **kwargs)
        self.eval_time = 0.0

    def _on_training_start(self) -> None:
        # n_calls is 0 here, a multiple of eval_freq: the parent evaluates at step 0
        self._on_step()

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        start = time.perf_counter()
        continue_training = super()._on_step()
        self.eval_time += time.perf_counter() - start
        return continue_training

    def _on_training_end(self) -> None:
        if self.evaluations_timesteps and self.evaluations_timesteps[-1] != self.num_timesteps:
            # Evaluate once more at the last step: every call is a multiple of 1
            eval_freq, self.eval_freq = self.eval_freq, 1
            try:
                self._on_step()
            finally:
                self.eval_freq = eval_freq


def make_parser(
    doc: str | None,
    name: str,
    *,
    algos: Sequence[str],
    timesteps: int,
    n_seeds: int,
    eval_freq: int,
    eval_episodes: int,
) -> argparse.ArgumentParser:
    """
    Command line shared by the examples.

    :param doc: The example's module docstring (shown by ``--help``)
    :param name: Name of the example: default output folder ``examples/results/<name>``
    :param algos: Agents the example can run (all by default)
    :param timesteps: Default number of env steps per run
    :param n_seeds: Default number of seeds (seeds ``0 .. n_seeds - 1``)
    :param eval_freq: Default evaluation interval, in env steps
    :param eval_episodes: Default number of episodes per evaluation
    :return: The parser, to which an example may add its own options
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=timesteps, help="env steps per run (default: %(default)s)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=list(range(n_seeds)), help="seeds, one run each (default: %(default)s)"
    )
    parser.add_argument("--algos", nargs="+", choices=list(algos), default=list(algos), help="agents to train (default: all)")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=EXAMPLES_DIR / "results" / name,
        help=f"output folder: JSON, PNG, evaluation logs, TensorBoard logs (default: examples/results/{name})",
    )
    parser.add_argument("--eval-freq", type=int, default=eval_freq, help="evaluate every N env steps (default: %(default)s)")
    parser.add_argument(
        "--eval-episodes", type=int, default=eval_episodes, help="episodes per evaluation (default: %(default)s)"
    )
    parser.add_argument(
        "--hyperparams",
        nargs="+",
        default=[],
        metavar="KEY:VALUE",
        help="override settings as the zoo's --hyperparams does, e.g. buffer_size:10000 learning_starts:100; each "
        "one applies to every agent whose constructor takes it",
    )
    parser.add_argument("--device", default="auto", help="torch device (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=0, help="verbosity of the agents (default: %(default)s)")
    parser.add_argument("--no-progress-bar", action="store_true", help="do not show progress bars")
    return parser


def convert_zoo_value(key: str, value: Any) -> Any:
    """
    Evaluate a setting the way the RL Zoo does: ``policy_kwargs`` (and the other ``*_kwargs``) may be Python
    expressions in a string, and a ``lin_<x>`` learning rate or clip range is a schedule decaying linearly to 0.

    :param key: Name of the setting
    :param value: Value as written in the file or on the command line
    :return: The value to pass to the algorithm
    """
    if isinstance(value, str) and key.endswith("_kwargs"):
        # As the zoo: the string may use torch.nn (e.g. activation_fn=nn.ReLU)
        return eval(value, {"nn": th.nn, "th": th, "torch": th})
    if isinstance(value, str) and value.startswith("lin_"):
        from rl_zoo3.utils import linear_schedule

        return linear_schedule(float(value[len("lin_") :]))
    return value


def load_zoo_settings(path: Path, env_id: str, is_atari: bool = False) -> ZooSettings:
    """
    Read the settings of ``env_id`` from an RL Zoo hyper-parameter file, picking the entry as the zoo does: the
    env's own entry, else ``atari`` for an Atari env, else ``default``.

    :param path: The ``<algo>.yml`` file
    :param env_id: The env id
    :param is_atari: Whether the env is an Atari game
    :return: The settings
    """
    with open(path) as file:
        entries = yaml.safe_load(file)
    if env_id in entries:
        entry = env_id
    elif is_atari and "atari" in entries:
        entry = "atari"
    else:
        entry = "default"
    raw = dict(entries[entry])
    kwargs = {key: convert_zoo_value(key, value) for key, value in raw.items() if key not in ZOO_ENV_KEYS}
    normalize = raw.get("normalize", False)
    if isinstance(normalize, str):
        normalize = eval(normalize)
    normalize_kwargs: dict[str, Any] | None = None
    if normalize:
        normalize_kwargs = dict(normalize) if isinstance(normalize, dict) else {}
        if "gamma" in raw:
            normalize_kwargs["gamma"] = raw["gamma"]
    return ZooSettings(
        entry=entry,
        policy=raw["policy"],
        n_timesteps=int(raw["n_timesteps"]),
        kwargs=kwargs,
        normalize=normalize_kwargs,
        frame_stack=raw.get("frame_stack"),
        raw=raw,
    )


def zoo_hyperparams_path(algo: str) -> Path:
    """
    :param algo: ``drqn`` (this package's file) or one of the zoo's algorithms (``dqn``, ...)
    :return: Path of the installed ``<algo>.yml`` the zoo's commands use
    """
    if algo == "drqn":
        from sb3_drqn.zoo import hyperparams_path

        return hyperparams_path()
    import rl_zoo3

    return Path(rl_zoo3.__file__).resolve().parent / "hyperparams" / f"{algo}.yml"


def _constructor_arguments(algo_class: type[BaseAlgorithm]) -> set[str]:
    """Arguments of ``algo_class`` that ``--hyperparams`` may set (the examples set the others)."""
    return set(inspect.signature(algo_class.__init__).parameters) - {
        *("self", "policy", "env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model")
    }


def parse_overrides(pairs: Sequence[str], algo_classes: Iterable[type[BaseAlgorithm]]) -> dict[str, Any]:
    """
    Parse ``KEY:VALUE`` pairs (``--hyperparams``); values are Python literals, else strings (evaluated as in
    :func:`convert_zoo_value`).

    :param pairs: The pairs from the command line
    :param algo_classes: The algorithms of the example: each key must be an argument of one of them
    :return: The settings they override
    """
    accepted = set().union(*(_constructor_arguments(algo_class) for algo_class in algo_classes))
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition(":")
        if not separator:
            raise SystemExit(f"--hyperparams expects KEY:VALUE pairs, got {pair!r}")
        if key not in accepted:
            raise SystemExit(f"--hyperparams: {key!r} is not an argument of any agent here ({', '.join(sorted(accepted))})")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        overrides[key] = convert_zoo_value(key, value)
    return overrides


def apply_overrides(algo_class: type[BaseAlgorithm], kwargs: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """
    :param algo_class: The algorithm the settings are for
    :param kwargs: Its settings
    :param overrides: Settings from ``--hyperparams``
    :return: ``kwargs`` updated with the overrides that ``algo_class`` takes
    """
    accepted = _constructor_arguments(algo_class)
    return {**kwargs, **{key: value for key, value in overrides.items() if key in accepted}}


def train_and_evaluate(
    model: BaseAlgorithm,
    eval_env: VecEnv,
    *,
    algo: str,
    env_id: str,
    seed: int,
    total_timesteps: int,
    eval_freq: int,
    n_eval_episodes: int,
    deterministic: bool,
    out_dir: Path,
    progress_bar: bool,
) -> RunResult:
    """
    Train ``model`` and record its learning curve on ``eval_env``.

    :param model: The agent, with ``tensorboard_log`` set if wanted
    :param eval_env: Evaluation env, wrapped like the training env (``VecNormalize`` statistics are synced)
    :param algo: Name of the agent
    :param env_id: Name of the env
    :param seed: Seed of the run
    :param total_timesteps: Env steps to train for
    :param eval_freq: Evaluate every ``eval_freq`` env steps (over all training envs)
    :param n_eval_episodes: Episodes per evaluation
    :param deterministic: Greedy evaluation (``False``: epsilon-greedy with the agent's current exploration rate)
    :param out_dir: Output folder (``evaluations/<run>/evaluations.npz`` is written there)
    :param progress_bar: Show a progress bar
    :return: The learning curve
    """
    run_name = f"{algo}_{env_id}_seed{seed}"
    callback = CurveEvalCallback(
        eval_env,
        log_path=str(out_dir / "evaluations" / run_name),
        eval_freq=max(eval_freq // model.n_envs, 1),
        n_eval_episodes=n_eval_episodes,
        deterministic=deterministic,
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps, callback=callback, tb_log_name=run_name, progress_bar=progress_bar)
    wall_time = time.perf_counter() - start
    results = np.array(callback.evaluations_results, dtype=float)
    train_time = max(wall_time - callback.eval_time, 1e-9)
    return RunResult(
        algo=algo,
        env_id=env_id,
        seed=seed,
        eval_timesteps=[int(step) for step in callback.evaluations_timesteps],
        eval_mean_returns=results.mean(axis=1).tolist(),
        eval_std_returns=results.std(axis=1).tolist(),
        wall_time_s=wall_time,
        eval_time_s=callback.eval_time,
        train_steps_per_s=model.num_timesteps / train_time,
    )


def summarize(runs: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """
    Mean and spread over seeds of each (env, algorithm) pair's curves, on the evaluation steps all its runs share.

    :param runs: The runs
    :return: ``{env_id: {algo: summary}}``
    """
    summary: dict[str, dict[str, Any]] = {}
    for env_id in dict.fromkeys(run.env_id for run in runs):
        summary[env_id] = {}
        for algo in dict.fromkeys(run.algo for run in runs if run.env_id == env_id):
            group = sorted((run for run in runs if run.env_id == env_id and run.algo == algo), key=lambda run: run.seed)
            n_points = min(len(run.eval_timesteps) for run in group)
            curves = np.array([run.eval_mean_returns[:n_points] for run in group])
            finals = curves[:, -1] if n_points else np.zeros(len(group))
            summary[env_id][algo] = dict(
                seeds=[run.seed for run in group],
                eval_timesteps=group[0].eval_timesteps[:n_points],
                mean=curves.mean(axis=0).tolist(),
                std=curves.std(axis=0).tolist(),
                min=curves.min(axis=0).tolist(),
                max=curves.max(axis=0).tolist(),
                final_mean=float(finals.mean()),
                final_std=float(finals.std()),
                final_per_seed=finals.tolist(),
                best_mean=float(curves.mean(axis=0).max()) if n_points else None,
                mean_wall_time_s=float(np.mean([run.wall_time_s for run in group])),
                mean_train_steps_per_s=float(np.mean([run.train_steps_per_s for run in group])),
            )
    return summary


def plot_curves(
    summary: dict[str, dict[str, Any]],
    path: Path,
    title: str,
    reference: tuple[float, str] | None = None,
) -> None:
    """
    Plot evaluation return against env steps, one panel per env: mean over seeds, shaded from min to max.

    :param summary: Output of :func:`summarize`
    :param path: PNG file to write
    :param title: Title of the figure
    :param reference: Optional horizontal line ``(value, label)``, e.g. the return that counts as solved
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6.5 * len(summary), 4.5), squeeze=False)
    for ax, (env_id, algos) in zip(axes[0], summary.items(), strict=True):
        for algo, curve in algos.items():
            steps = np.array(curve["eval_timesteps"])
            n_seeds = len(curve["seeds"])
            (line,) = ax.plot(steps, curve["mean"], label=f"{algo} ({n_seeds} seed{'s' if n_seeds > 1 else ''})")
            ax.fill_between(steps, curve["min"], curve["max"], color=line.get_color(), alpha=0.2)
        if reference is not None:
            ax.axhline(reference[0], color="black", linestyle="--", linewidth=1, label=reference[1])
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(f"{title}\nmean over seeds, shaded: min to max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_model(
    algo_class: type[BaseAlgorithm],
    policy: str,
    env: VecEnv,
    kwargs: dict[str, Any],
    overrides: dict[str, Any],
    args: argparse.Namespace,
    seed: int,
) -> BaseAlgorithm:
    """
    Build a model the way every example does: settings, then the command line's overrides, logging to
    ``<out_dir>/tb``.

    :param algo_class: ``RecurrentDQN`` or ``DQN``
    :param policy: Policy name
    :param env: Training env
    :param kwargs: The algorithm's settings
    :param overrides: ``--hyperparams`` overrides (see :func:`parse_overrides`)
    :param args: Parsed command line of :func:`make_parser`
    :param seed: Seed of the run
    :return: The model
    """
    return algo_class(
        policy,
        env,
        seed=seed,
        device=args.device,
        verbose=args.verbose,
        tensorboard_log=str(args.out_dir / "tb"),
        **apply_overrides(algo_class, kwargs, overrides),
    )


def run_experiments(
    name: str,
    args: argparse.Namespace,
    env_ids: Sequence[str],
    build: Callable[[str, str, int], tuple[BaseAlgorithm, VecEnv]],
    *,
    deterministic: bool,
    title: str,
    config: dict[str, Any],
    reference: tuple[float, str] | None = None,
) -> dict[str, Any]:
    """
    Train every ``(env, algorithm, seed)`` one after the other, then write ``<name>.json`` and ``<name>.png``
    into ``args.out_dir``.

    :param name: Name of the example (file names)
    :param args: Parsed command line of :func:`make_parser`
    :param env_ids: Envs to train on
    :param build: ``build(algo, env_id, seed) -> (model, eval_env)``; the model logs to ``<out_dir>/tb``
    :param deterministic: Greedy evaluation, or epsilon-greedy with the current exploration rate
    :param title: Title of the plot
    :param config: Settings of the example, stored in the JSON
    :param reference: Optional horizontal line of the plot ``(value, label)``
    :return: The JSON content
    """
    th.set_num_threads(args.threads)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: list[RunResult] = []
    start = time.perf_counter()
    for env_id in env_ids:
        for algo in args.algos:
            for seed in args.seeds:
                model, eval_env = build(algo, env_id, seed)
                run = train_and_evaluate(
                    model,
                    eval_env,
                    algo=algo,
                    env_id=env_id,
                    seed=seed,
                    total_timesteps=args.timesteps,
                    eval_freq=args.eval_freq,
                    n_eval_episodes=args.eval_episodes,
                    deterministic=deterministic,
                    out_dir=out_dir,
                    progress_bar=not args.no_progress_bar,
                )
                model.get_env().close()  # type: ignore[union-attr]
                eval_env.close()
                runs.append(run)
                curve = " ".join(f"{value:.0f}" for value in run.eval_mean_returns)
                print(
                    f"[{time.perf_counter() - start:6.0f}s] {env_id} {algo} seed {seed}: final {run.eval_mean_returns[-1]:.1f}"
                    f" | {run.train_steps_per_s:.0f} steps/s | curve {curve}",
                    flush=True,
                )
    summary = summarize(runs)
    result = dict(
        example=name,
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        config=dict(
            timesteps=args.timesteps,
            seeds=args.seeds,
            algos=args.algos,
            eval_freq=args.eval_freq,
            eval_episodes=args.eval_episodes,
            deterministic_eval=deterministic,
            hyperparams_overrides=args.hyperparams,
            **config,
        ),
        machine=dict(
            platform=platform.platform(),
            python=platform.python_version(),
            torch=th.__version__,
            torch_threads=th.get_num_threads(),
            cuda=th.cuda.get_device_name() if th.cuda.is_available() else None,
        ),
        total_wall_time_s=time.perf_counter() - start,
        summary=summary,
        runs=[dataclasses.asdict(run) for run in runs],
    )
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot_curves(summary, png_path, title, reference)
    print(f"Wrote {json_path} and {png_path}")
    return result
