"""
The experiment harness shared by ``examples/`` and ``benchmarks/``: settings, one run, summary, plot.

- **Settings** are entries of the RL Zoo's hyper-parameter files (sb3-drqn's ``drqn.yml``, the installed zoo's
  ``dqn.yml``, ``ppo_lstm.yml``, ...), converted by the zoo's own code (``ExperimentManager``: schedules,
  ``policy_kwargs``, ``normalize``, ``frame_stack``, ``env_wrapper``). Overrides (``--hyperparams``, parsed by the
  zoo's ``StoreDict``) are applied to the entry as the zoo applies them, and recorded with every run.
- **A run** (:func:`run_one`) trains one agent on one task with one seed, evaluates it deterministically (by
  default) on a separate env every ``eval_freq`` env steps and at the end, and writes its own JSON file at once;
  a run whose file exists is read back instead of rerun, so every script is resumable.
- **Summaries** (:func:`summarize`): per task and agent, mean and spread over seeds, and IQM with stratified
  bootstrap confidence intervals (``rliable``). **Plots** (:func:`plot_curves`): one panel per task.
"""

import argparse
import contextlib
import copy
import dataclasses
import functools
import inspect
import io
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm

# Keys of a zoo entry that the zoo itself consumes (not constructor arguments)
ZOO_KEYS = ("n_timesteps", "policy", "normalize", "frame_stack", "env_wrapper", "n_envs", "vec_env_wrapper", "callback")
# What --smoke sets (the shared convention: one seed, a few hundred steps, 2-episode evaluations, one process)
SMOKE = dict(seeds=[0], timesteps=300, eval_freq=150, eval_episodes=2, n_procs=1)
SMOKE_OVERRIDES = dict(learning_starts=100, buffer_size=1000)
# Folder of the per-run files inside a script's --out-dir (not "runs/": .gitignore keeps the zoo's runs/ out of git)
RUN_FILES = "run_results"
# README's and the docs' figures (the benchmarks' plots with their default --out-dir)
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def hyperparams_file(algo: str) -> Path:
    """
    :param algo: ``drqn`` (sb3-drqn's file) or an algorithm of the zoo (``dqn``, ``ppo_lstm``, ...)
    :return: The ``<algo>.yml`` the zoo's own commands read
    """
    if algo == "drqn":
        from sb3_drqn.zoo import hyperparams_path

        return hyperparams_path()
    import rl_zoo3

    return Path(rl_zoo3.__file__).resolve().parent / "hyperparams" / f"{algo}.yml"


def zoo_algos() -> dict[str, type[BaseAlgorithm]]:
    """:return: The zoo's algorithms by name, drqn included even where the import hook is off"""
    from rl_zoo3.utils import ALGOS

    from sb3_drqn.zoo import register

    register()
    return ALGOS


@dataclasses.dataclass
class Settings:
    """
    One agent's settings: a zoo entry with overrides, converted by the zoo.

    :param algo: The zoo's name of the algorithm (a key of ``rl_zoo3.utils.ALGOS``)
    :param source: Where the entry comes from (``<file>:<entry>``, or a description)
    :param raw: The entry with the overrides applied, as written (recorded in the results)
    :param overrides: The overrides alone
    :param policy: Policy name
    :param kwargs: Constructor arguments (schedules and ``policy_kwargs`` converted)
    :param n_envs: Number of training envs
    :param normalize: ``VecNormalize`` arguments, or ``None``
    :param frame_stack: Frames stacked by ``VecFrameStack``, or ``None``
    """

    algo: str
    source: str
    raw: dict[str, Any]
    overrides: dict[str, Any]
    policy: str
    kwargs: dict[str, Any]
    n_envs: int
    normalize: dict[str, Any] | None
    frame_stack: int | None


def convert(algo: str, raw: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> Settings:
    """
    Convert a zoo entry with the zoo's ``ExperimentManager`` (as ``python -m rl_zoo3.train`` does).

    :param algo: The zoo's name of the algorithm
    :param raw: The entry (``n_timesteps`` and ``policy`` required)
    :param source: Where it comes from
    :param overrides: Settings replacing the entry's (``None``: none); those the algorithm does not take are dropped
    :return: The settings
    """
    from rl_zoo3.exp_manager import ExperimentManager

    accepted = set(inspect.signature(zoo_algos()[algo].__init__).parameters) | set(ZOO_KEYS)
    overrides = {key: value for key, value in (overrides or {}).items() if key in accepted}
    raw = {**raw, **overrides}
    # The env id only names the zoo's log folder, which is not created
    manager = ExperimentManager(argparse.Namespace(), algo, "CartPole-v1", tempfile.gettempdir(), verbose=0)
    with contextlib.redirect_stdout(io.StringIO()):
        kwargs, _, _, _ = manager._preprocess_hyperparams(copy.deepcopy(raw))
    policy = kwargs.pop("policy")
    return Settings(
        algo=algo,
        source=source,
        raw=raw,
        overrides=overrides,
        policy=policy,
        kwargs=kwargs,
        n_envs=manager.n_envs,
        normalize=dict(manager.normalize_kwargs) if manager.normalize else None,
        frame_stack=manager.frame_stack,
    )


def load_settings(algo: str, entry: str, overrides: dict[str, Any] | None = None) -> Settings:
    """
    Settings of ``algo`` for ``entry``, picked as the zoo picks them: the entry itself if the file has it, else
    ``atari`` for an Atari env, else ``default``.

    :param algo: The zoo's name of the algorithm
    :param entry: An env id or an entry name (``default``, ``atari``)
    :param overrides: Settings replacing the entry's
    :return: The settings
    """
    from rl_zoo3.exp_manager import ExperimentManager

    path = hyperparams_file(algo)
    entries = yaml.safe_load(path.read_text())
    if entry not in entries:
        entry = "atari" if entry in gym.registry and ExperimentManager.is_atari(entry) else "default"
    return convert(algo, entries[entry], f"{path.name}:{entry}", overrides)


def matched_dqn_settings(
    drqn: Settings, policy: str = "MlpPolicy", policy_kwargs_overrides: dict[str, Any] | None = None
) -> Settings:
    """
    SB3 DQN with RecurrentDQN's settings where they apply: as many steps per update (``batch_size x
    sequence_length`` transitions) and a dense layer as wide as the recurrent one in its place.

    :param drqn: RecurrentDQN's settings
    :param policy: DQN's policy
    :param policy_kwargs_overrides: Entries of DQN's ``policy_kwargs`` to set after matching (e.g. its
        extractor's counterpart of an option only RecurrentDQN's policy has)
    :return: DQN's settings
    """
    from stable_baselines3 import DQN

    accepted = set(inspect.signature(DQN.__init__).parameters) | {"n_timesteps", "normalize"}
    raw = {key: value for key, value in drqn.raw.items() if key in accepted}
    raw["batch_size"] = drqn.kwargs["batch_size"] * drqn.kwargs["sequence_length"]
    recurrent = drqn.kwargs.get("policy_kwargs", {})
    policy_kwargs = {
        key: value
        for key, value in recurrent.items()
        if key not in ("lstm_hidden_size", "n_lstm_layers", "rnn_type", "normalize_features", "dueling")
    }
    policy_kwargs["net_arch"] = [recurrent.get("lstm_hidden_size", 128), *recurrent.get("net_arch", [])]
    policy_kwargs.update(policy_kwargs_overrides or {})
    raw.update(policy=policy, policy_kwargs=policy_kwargs)
    # RecurrentDQN's overrides are recorded with DQN's too (those DQN takes as they are)
    overrides = {key: value for key, value in drqn.overrides.items() if key not in ("policy", "policy_kwargs", "batch_size")}
    return convert("dqn", raw, f"matched to RecurrentDQN's {drqn.source}", overrides)


def _wrap(env: gym.Env, wrappers: Sequence[Callable[[gym.Env], gym.Env]]) -> gym.Env:
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def make_env(
    env: str | Callable[..., gym.Env],
    settings: Settings,
    n_envs: int,
    seed: int,
    env_kwargs: dict[str, Any],
    wrapper: Any,
    eval_env: bool,
) -> Any:
    """
    A vec env as the zoo builds it: the task's own wrapper, the entry's ``env_wrapper``, ``VecFrameStack``,
    ``VecNormalize`` (for evaluation: frozen, rewards as they are) and ``VecTransposeImage`` for channel-last images
    (channel-first ones are marked as such, so that neither the stack nor the algorithm guesses from the shape).
    Unlike the zoo, frames are stacked inside ``VecNormalize``: SB3's off-policy algorithms store its
    ``get_original_obs()``, which must have the stacked shape.
    """
    from rl_zoo3.utils import get_wrapper_class
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize, VecTransposeImage

    # The zoo's wrapper is built here, not kept in the settings: it is a local function, which runs cannot pickle
    wrappers = [w for w in (wrapper, get_wrapper_class(settings.raw)) if w is not None]
    vec_env = make_vec_env(
        env, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, wrapper_class=functools.partial(_wrap, wrappers=wrappers)
    )
    # Where the channels are is read from one frame: SB3 guesses it from the shape (the smallest dimension), and a
    # stack of channel-first 10x10 frames with more than 10 channels in all (MinAtar's) would be guessed wrong
    space = vec_env.observation_space
    image = is_image_space(space)  # type: ignore[arg-type]
    channels_first = image and is_image_space_channels_first(space)  # type: ignore[arg-type]
    if settings.frame_stack:
        vec_env = VecFrameStack(vec_env, settings.frame_stack, channels_order="first" if channels_first else None)
    if settings.normalize is not None:
        vec_env = VecNormalize(vec_env, **(settings.normalize | (dict(training=False, norm_reward=False) if eval_env else {})))
    if image:
        # skip=True: the frames are channel-first already, and the algorithm must not transpose them on its own guess
        vec_env = VecTransposeImage(vec_env, skip=channels_first)
    return vec_env


@dataclasses.dataclass
class Run:
    """
    One run: ``agent`` on ``task`` with ``seed``.

    :param task: Name of the task (results are grouped by it)
    :param agent: Name of the agent
    :param seed: Seed of the model and the training env (the evaluation env gets ``seed + 10_000``)
    :param env: Env id or env constructor
    :param settings: The agent's settings
    :param timesteps: Env steps to train for
    :param eval_freq: Evaluate every ``eval_freq`` env steps (over all training envs), and at the end
    :param eval_episodes: Episodes per evaluation
    :param final_eval_episodes: ``None``: the last evaluation is the final one; else one more evaluation of this many
        episodes after training, apart from the curve
    :param env_kwargs: Arguments of the env
    :param wrapper: The task's own env wrapper (before the entry's), e.g. to convert spaces
    :param deterministic: Greedy evaluation (``False``: the agent's exploration, e.g. Atari as the zoo evaluates)
    :param device: Torch device
    :param tensorboard_log: TensorBoard folder, or ``None``
    """

    task: str
    agent: str
    seed: int
    env: str | Callable[..., gym.Env]
    settings: Settings
    timesteps: int
    eval_freq: int
    eval_episodes: int
    final_eval_episodes: int | None = None
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    wrapper: Any = None
    deterministic: bool = True
    device: str = "auto"
    tensorboard_log: str | None = None

    @property
    def name(self) -> str:
        return f"{self.task}__{self.agent}__seed{self.seed}"


def run_one(run: Run, path: Path) -> dict[str, Any]:
    """
    Train and evaluate one run and write its result to ``path`` at once; if ``path`` exists, read it instead.
    While it runs, ``<path stem>.progress.json`` holds the evaluations so far (removed when the run ends), so
    that a run stopped before its end still shows how far it got.

    :param run: The run
    :param path: Its JSON file
    :return: Its result: the curve (``eval_steps``, ``eval_means``, ``eval_stds``), the final evaluation and timings
    """
    if path.exists():
        return json.loads(path.read_text())
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    th.set_num_threads(1)
    settings = run.settings
    env = make_env(run.env, settings, settings.n_envs, run.seed, run.env_kwargs, run.wrapper, eval_env=False)
    n_eval_envs = min(run.eval_episodes, 5)
    eval_env = make_env(run.env, settings, n_eval_envs, run.seed + 10_000, run.env_kwargs, run.wrapper, eval_env=True)
    model = zoo_algos()[settings.algo](
        settings.policy, env, seed=run.seed, device=run.device, tensorboard_log=run.tensorboard_log, **settings.kwargs
    )
    curve: list[tuple[int, float, float]] = []
    eval_time = [0.0]

    def evaluate(n_episodes: int) -> tuple[float, float]:
        start = time.perf_counter()
        sync_envs_normalization(env, eval_env)
        mean, std = evaluate_policy(model, eval_env, n_eval_episodes=n_episodes, deterministic=run.deterministic)
        eval_time[0] += time.perf_counter() - start
        return float(mean), float(std)  # type: ignore[arg-type]

    progress = path.with_suffix(".progress.json")

    def curve_fields() -> dict[str, list[float]]:
        return dict(eval_steps=[step for step, _, _ in curve], eval_means=[mean for _, mean, _ in curve],
                    eval_stds=[std for _, _, std in curve])  # fmt: skip

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= (len(curve) + 1) * run.eval_freq:
                curve.append((self.num_timesteps, *evaluate(run.eval_episodes)))
                # The curve so far, for a run stopped before its end (never read back: a restart reruns it)
                elapsed = time.perf_counter() - start
                record = dict(task=run.task, agent=run.agent, seed=run.seed, timesteps=run.timesteps,
                              **curve_fields(), wall_time_so_far=elapsed)  # fmt: skip
                progress.parent.mkdir(parents=True, exist_ok=True)
                progress.write_text(json.dumps(record, indent=1) + "\n")
            return True

    start = time.perf_counter()
    model.learn(run.timesteps, callback=Evaluate(), tb_log_name=run.name)
    wall_time = time.perf_counter() - start
    if run.final_eval_episodes is not None:
        final = evaluate(run.final_eval_episodes)
    else:
        if not curve or curve[-1][0] != model.num_timesteps:
            curve.append((model.num_timesteps, *evaluate(run.eval_episodes)))
        final = curve[-1][1:]
    env.close()
    eval_env.close()
    result = dict(
        task=run.task,
        agent=run.agent,
        seed=run.seed,
        env=run.env if isinstance(run.env, str) else f"{run.env.__module__}.{run.env.__qualname__}",
        env_kwargs=run.env_kwargs,
        settings=dict(algo=settings.algo, source=settings.source, hyperparams=settings.raw, overrides=settings.overrides),
        timesteps=run.timesteps,
        eval_freq=run.eval_freq,
        eval_episodes=run.eval_episodes,
        deterministic_eval=run.deterministic,
        **curve_fields(),
        final_mean=final[0],
        final_std=final[1],
        final_eval_episodes=run.final_eval_episodes or run.eval_episodes,
        num_timesteps=int(model.num_timesteps),
        wall_time=wall_time,
        eval_time=eval_time[0],
        train_time=wall_time - eval_time[0],
        machine=dict(platform=platform.platform(), python=platform.python_version(), torch=th.__version__),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(result, indent=1, default=str) + "\n")
    partial.replace(path)
    progress.unlink(missing_ok=True)
    return result


def finished_runs(out_dir: Path) -> list[dict[str, Any]]:
    """
    Every finished run in ``<out_dir>/run_results/`` (whichever runs the script was asked for), by file name; the
    ``.progress.json`` files of runs still going are not results.

    :param out_dir: Output folder of the script
    :return: The results
    """
    paths = sorted(path for path in (out_dir / RUN_FILES).glob("*.json") if not path.name.endswith(".progress.json"))
    return [json.loads(path.read_text()) for path in paths]


def run_all(runs: Sequence[Run], out_dir: Path, n_procs: int = 1, summary_only: bool = False) -> list[dict[str, Any]]:
    """
    Run every run not yet written to ``<out_dir>/run_results/<task>__<agent>__seed<k>.json``, ``n_procs`` at a time.

    :param runs: The runs, in the order to start them
    :param out_dir: Output folder of the script
    :param n_procs: Runs in parallel (processes); 1 runs them in this process
    :param summary_only: Run nothing: return the finished runs only (``--summary-only``)
    :return: The results, in the order of ``runs`` (with ``summary_only``, of the finished ones)
    """
    runs_dir = out_dir / RUN_FILES
    paths = [runs_dir / f"{run.name}.json" for run in runs]
    results: dict[int, dict[str, Any]] = {i: json.loads(p.read_text()) for i, p in enumerate(paths) if p.exists()}
    for i, result in results.items():
        # A finished run is reused only if it was made with the same settings and budget
        expected = dict(hyperparams=json.loads(json.dumps(runs[i].settings.raw, default=str)), timesteps=runs[i].timesteps,
                        eval_freq=runs[i].eval_freq, eval_episodes=runs[i].eval_episodes,
                        env_kwargs=json.loads(json.dumps(runs[i].env_kwargs, default=str)))  # fmt: skip
        keys = ("timesteps", "eval_freq", "eval_episodes", "env_kwargs")
        found = dict(result["settings"], **{key: result.get(key) for key in keys})
        changed = [key for key, value in expected.items() if found[key] != value]
        if changed:
            raise ValueError(f"{paths[i]} was made with other {', '.join(changed)}: move it away to rerun {runs[i].name}")
    todo = [i for i in range(len(runs)) if i not in results]
    if summary_only:
        print(f"{len(results)} of {len(runs)} runs done in {runs_dir}; summarising those only", flush=True)
        return [results[i] for i in sorted(results)]
    print(f"{len(results)} of {len(runs)} runs already done in {runs_dir}; {len(todo)} to run", flush=True)
    start = time.perf_counter()

    def report(i: int, result: dict[str, Any]) -> None:
        results[i] = result
        curve = " ".join(f"{value:.3g}" for value in result["eval_means"])
        print(
            f"[{time.perf_counter() - start:6.0f}s] {runs[i].name}: final {result['final_mean']:.3g} "
            f"({result['wall_time']:.0f}s) | {curve}",
            flush=True,
        )

    if n_procs <= 1:
        for i in todo:
            report(i, run_one(runs[i], paths[i]))
    else:
        with _stopping_workers(ProcessPoolExecutor(n_procs)) as pool:
            futures = {pool.submit(run_one, runs[i], paths[i]): i for i in todo}
            for future in as_completed(futures):
                report(futures[future], future.result())
    return [results[i] for i in range(len(runs))]


@contextlib.contextmanager
def _stopping_workers(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """
    The pool, whose workers are stopped at once if the script stops early: on an exception, Ctrl-C or ``SIGTERM``
    (e.g. a sitting that ends). ``ProcessPoolExecutor`` would otherwise wait for the runs in progress, or, killed by
    ``SIGTERM``, leave them running on their own. The runs in progress are lost; the finished ones are written.
    """
    main_pid = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:  # a worker (forked with this handler): end as SIGTERM does by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    handler = signal.getsignal(signal.SIGTERM)
    is_main = threading.current_thread() is threading.main_thread()
    if is_main:
        signal.signal(signal.SIGTERM, stop)
    try:
        yield pool
    except BaseException:
        for process in list((pool._processes or {}).values()):  # Python 3.14's kill_workers()
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown()
    finally:
        if is_main:
            signal.signal(signal.SIGTERM, handler)


def iqm_with_ci(scores: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """
    Interquartile mean with a 95% stratified bootstrap confidence interval (``rliable``).

    :param scores: ``(n_runs, n_tasks)`` scores (one task: ``(n_runs, 1)``)
    :param reps: Bootstrap samples
    :param seed: Seed of the bootstrap
    :return: ``(iqm, low, high)``
    """
    from rliable import library, metrics

    with warnings.catch_warnings():
        # rliable hands its RandomState to arch, which warns that it will take a Generator instead
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = library.get_interval_estimates(
            {"x": np.asarray(scores, dtype=float)},
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return float(points["x"][0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


def summarize(results: Sequence[dict[str, Any]], reps: int = 2000) -> dict[str, dict[str, Any]]:
    """
    Per task and agent: the curves' mean, min and max over seeds (on the evaluation steps all runs share), the final
    evaluation's mean, standard deviation and IQM with its bootstrap interval, and the mean wall time.

    :param results: Run results (:func:`run_one`)
    :param reps: Bootstrap samples
    :return: ``{task: {agent: summary}}``
    """
    summary: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(r["task"] for r in results):
        summary[task] = {}
        for agent in dict.fromkeys(r["agent"] for r in results if r["task"] == task):
            group = sorted((r for r in results if r["task"] == task and r["agent"] == agent), key=lambda r: r["seed"])
            n_points = min(len(r["eval_means"]) for r in group)
            curves = np.array([r["eval_means"][:n_points] for r in group]).reshape(len(group), n_points)
            finals = np.array([r["final_mean"] for r in group])
            final_iqm, low, high = iqm_with_ci(finals[:, None], reps)
            summary[task][agent] = dict(
                seeds=[r["seed"] for r in group],
                eval_steps=group[0]["eval_steps"][:n_points],
                mean=curves.mean(axis=0).tolist(),
                min=curves.min(axis=0).tolist(),
                max=curves.max(axis=0).tolist(),
                final_per_seed=finals.tolist(),
                final_mean=float(finals.mean()),
                final_std=float(finals.std()),
                final_iqm=final_iqm,
                final_ci=[low, high],
                mean_wall_time=float(np.mean([r["wall_time"] for r in group])),
            )
    return summary


def results_table(summary: dict[str, dict[str, Any]], solved: float | None = None) -> str:
    """
    Markdown table of the final evaluations: per task and agent, mean ± standard deviation over seeds, each seed's,
    and (with ``solved``) how many runs end at ``solved`` or more.
    """
    lines = [
        "| task | agent | final return (mean ± std over seeds) | per seed | solved at end | wall time (s) |",
        "|" + "---|" * 6,
    ]
    for task, agents in summary.items():
        for agent, s in agents.items():
            n_solved = "-" if solved is None else f"{sum(v >= solved for v in s['final_per_seed'])}/{len(s['seeds'])}"
            lines.append(
                f"| {task} | {agent} | {s['final_mean']:.1f} ± {s['final_std']:.1f} "
                f"| {', '.join(f'{v:.1f}' for v in s['final_per_seed'])} | {n_solved} | {s['mean_wall_time']:.0f} |"
            )
    return "\n".join(lines)


def plot_curves(
    summary: dict[str, dict[str, Any]],
    path: Path,
    title: str,
    reference: float | None = None,
    ylabel: str = "evaluation return",
) -> None:
    """
    One panel per task: each agent's mean over seeds, shaded from min to max over seeds.

    :param summary: Output of :func:`summarize` (or the same shape)
    :param path: PNG file
    :param title: Title of the figure
    :param reference: Optional horizontal dashed line (e.g. the return that counts as solved)
    :param ylabel: Label of the y axis
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = min(len(summary), 4)
    n_rows = -(-len(summary) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.5 * n_cols, 4 * n_rows), squeeze=False)
    # One colour per agent in every panel
    colours = {agent: f"C{i}" for i, agent in enumerate(dict.fromkeys(a for agents in summary.values() for a in agents))}
    for ax, (task, agents) in zip(axes.flat, summary.items(), strict=False):
        for agent, s in agents.items():
            ax.plot(s["eval_steps"], s["mean"], color=colours[agent], label=f"{agent} ({len(s['seeds'])} seeds)")
            ax.fill_between(s["eval_steps"], s["min"], s["max"], color=colours[agent], alpha=0.2)
        if reference is not None:
            ax.axhline(reference, color="black", linestyle="--", linewidth=1)
        ax.set(title=task, xlabel="env steps", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.flat[len(summary) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}\nmean over seeds, shaded: min to max over seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def make_parser(
    doc: str | None,
    out_dir: Path,
    agents: Sequence[str],
    agents_flag: str = "--algos",
    plot: str | None = None,
    script: str | None = None,
    **defaults: Any,
) -> argparse.ArgumentParser:
    """
    The command line every script shares; ``defaults`` sets ``timesteps``, ``seeds``, ``eval_freq``,
    ``eval_episodes``, ``n_procs`` and, where not every agent runs by default, ``algos``.

    :param doc: The script's docstring (``--help``)
    :param out_dir: Default output folder
    :param agents: The agents the script can run (all by default, unless ``defaults`` has ``algos``)
    :param agents_flag: The option that chooses them (``args.algos`` in any case)
    :param plot: File name of the script's plot, if it draws one: ``--plot`` then defaults to it in
        ``docs/images/`` (README's and the docs' figure) with the default ``out_dir``, and in the chosen
        ``--out-dir`` otherwise, so that a run elsewhere (a smoke test, a tuning run) leaves the docs' figure alone
    :param script: The script's path (its ``__file__``), for the command its results record (default: this
        process's, which is pytest's when a test calls the script's ``main``)
    :return: The parser, to which a script adds its own options
    """
    from rl_zoo3.utils import StoreDict

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(**defaults, script=script or sys.argv[0])
    if plot is not None:
        parser.add_argument(
            "--plot",
            type=Path,
            default=None,
            help=f"PNG output (default: docs/images/{plot} with the default --out-dir, else {plot} in --out-dir)",
        )
        parser.set_defaults(plot_name=plot)
    parser.add_argument("--timesteps", type=int, help="env steps per run (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds, one run each (default: %(default)s)")
    parser.add_argument(
        agents_flag,
        dest="algos",
        nargs="+",
        choices=list(agents),
        default=list(defaults.get("algos", agents)),
        help="agents (default: %(default)s)",
    )
    parser.add_argument("--eval-freq", type=int, help="evaluate every N env steps (default: %(default)s)")
    parser.add_argument("--eval-episodes", type=int, help="episodes per evaluation (default: %(default)s)")
    parser.add_argument(
        "--n-procs", type=int, default=defaults.get("n_procs", 1), help="runs in parallel (default: %(default)s)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=out_dir,
        help="outputs; finished runs found in its run_results/ are skipped (default: %(default)s)",
    )
    parser.add_argument(
        "--hyperparams",
        type=str,
        nargs="+",
        action=StoreDict,
        default={},
        metavar="KEY:VALUE",
        help="override settings as the zoo's --hyperparams (values are Python), each for every agent that "
        'takes it, e.g. learning_starts:100 policy_kwargs:"dict(net_arch=[32])"',
    )
    parser.add_argument("--device", default="auto", help="torch device (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help=f"tiny budget to check the script: {SMOKE}, {SMOKE_OVERRIDES}")
    parser.add_argument("--summary-only", action="store_true", help="no run: summarise the finished ones")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    Parse, with ``--smoke``'s values as defaults (options given explicitly win), and set one torch thread.
    ``args.command`` is the command line that :func:`write_results` records: ``python <script> <argv>``, the
    script's path from the current folder when it lies below it.
    """
    import torch as th

    th.set_num_threads(1)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    known = set(ZOO_KEYS).union(*(inspect.signature(algo.__init__).parameters for algo in zoo_algos().values()))
    if set(args.hyperparams) - known:
        parser.error(f"--hyperparams: {', '.join(sorted(set(args.hyperparams) - known))} is no setting of any zoo algorithm")
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args(argv)
        args.hyperparams = {**SMOKE_OVERRIDES, **args.hyperparams}
    if getattr(args, "plot_name", None) is not None and args.plot is None:
        docs_figure = args.out_dir.resolve() == Path(parser.get_default("out_dir")).resolve()
        args.plot = (DOCS_IMAGES if docs_figure else args.out_dir) / args.plot_name
    script = Path(args.script).resolve()
    shown = script.relative_to(Path.cwd()) if script.is_relative_to(Path.cwd()) else Path(script.name)
    args.command = " ".join(["python", shown.as_posix(), *argv])
    return args


def write_results(
    out_dir: Path, name: str, results: Sequence[dict[str, Any]], summary: dict[str, Any], table: str, args: argparse.Namespace
) -> None:
    """
    Write ``<name>.json`` (command, summary, every run) and ``<name>.md`` (the table) into ``out_dir``.

    :param args: The call's arguments (:func:`parse_args`): its ``command`` is recorded; with ``summary_only``
        (``--summary-only``) the call ran nothing, so the table says it summarises the finished runs, whose
        settings are in ``<name>.json``.
    """
    command, summary_only = args.command, args.summary_only
    payload = dict(command=command, summary=summary, runs=list(results))
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if summary_only:
        heading = f"Summary of the finished runs in `run_results/` (`{command}`; each run's settings: `{name}.json`)"
    else:
        heading = f"Command: `{command}`"
    (out_dir / f"{name}.md").write_text(f"{heading}\n\n{table}\n")
    print(f"{table}\nWrote {out_dir / name}.json and .md")
