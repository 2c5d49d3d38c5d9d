"""
README's quick start, run as written with seeds 0, 1 and 2 (issue 15: each must solve CartPole-v1, a mean of 20
deterministic episodes >= 475, in at most 3 minutes on one CPU core).

The snippet is the first ``python`` block of README.md. It is run unchanged in a fresh interpreter per seed, with
one torch thread; the seed is the only thing added (``RecurrentDQN``'s ``seed`` default, set before the snippet
runs, since the snippet itself passes none). Each run's wall time, from the snippet's first line to its last, and
the mean and spread its ``evaluate_policy`` returns are written, with the commit, to
``results/quick_start/seed<k>.json`` as soon as the run ends; a finished seed is skipped when the script is started
again (unless the snippet changed since, or with ``--rerun``), so seeds can run side by side.

``--settings JSON`` searches instead: it trains ``RecurrentDQN("MlpLstmPolicy", "CartPole-v1", **settings)`` for
``--timesteps`` steps with each seed, evaluates it (20 deterministic episodes on a separate env) every 10k steps,
and writes the curve and the training time (evaluations excluded) to ``results/quick_start_search/``, one file per
settings, seed and budget, skipped when already there (so that seeds can run side by side). A file is named after
the settings in effect (the constructor's defaults updated with ``--settings``, its ``effective_settings``), so the
same ``--settings`` under other defaults is another file.

Usage::

    python benchmarks/quick_start.py                 # seeds 0 1 2
    python benchmarks/quick_start.py --smoke         # the snippet with 500 steps, one seed (checks it runs)
    python benchmarks/quick_start.py --settings '{"learning_rate": 1e-3, "train_freq": 16}' --seeds 1 2
"""

import argparse
import hashlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "quick_start"
SEARCH_DIR = REPO / "benchmarks" / "results" / "quick_start_search"
# What the snippet must reach (issue 15)
SOLVED, TIME_LIMIT_S = 475.0, 180.0

# Runs before the snippet: one thread, the seed as RecurrentDQN's default, and evaluate_policy's result kept
PRELUDE = """
import functools, json, time
import torch
torch.set_num_threads(1)
import stable_baselines3.common.evaluation as evaluation
import sb3_drqn
_evaluate, _returned = evaluation.evaluate_policy, []
def _recording(*args, **kwargs):
    _returned.append(_evaluate(*args, **kwargs))
    return _returned[-1]
evaluation.evaluate_policy = _recording
sb3_drqn.RecurrentDQN = functools.partial(sb3_drqn.RecurrentDQN, seed={seed})
_start = time.perf_counter()
"""
EPILOGUE = """
_wall = time.perf_counter() - _start
print("QUICK_START_RESULT " + json.dumps(dict(wall_time=_wall, mean=float(_returned[-1][0]), std=float(_returned[-1][1]))))
"""


def readme_snippet() -> str:
    """:return: The first ``python`` block of README.md"""
    match = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    if match is None:
        raise ValueError("README.md has no python block")
    return match.group(1)


def git_commit() -> str:
    """:return: The checked-out commit, with ``+changes`` if ``sb3_drqn/`` differs from it (``unknown`` outside git)"""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True)
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "sb3_drqn"], cwd=REPO).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+changes" if changed else "")


def run_snippet(seed: int, total_timesteps: int | None = None) -> dict[str, float]:
    """
    Run README's snippet in a fresh interpreter.

    :param seed: ``RecurrentDQN``'s seed
    :param total_timesteps: Replace the snippet's ``total_timesteps`` (``None``: as written)
    :return: Wall time (s) and ``evaluate_policy``'s mean and standard deviation
    """
    snippet = readme_snippet()
    if total_timesteps is not None:
        snippet, n = re.subn(r"total_timesteps=[\d_]+", f"total_timesteps={total_timesteps}", snippet)
        assert n == 1, "the snippet must call learn(total_timesteps=...) once"
    code = textwrap.dedent(PRELUDE.format(seed=seed)) + snippet + EPILOGUE
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"the quick start failed with seed {seed}:\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("QUICK_START_RESULT "))
    return json.loads(line.split(" ", 1)[1])


def search_run(seed: int, timesteps: int, settings: dict[str, Any], eval_freq: int = 10_000) -> dict[str, Any]:
    """
    Train on CartPole-v1 with ``settings`` and evaluate every ``eval_freq`` steps (20 deterministic episodes).

    :return: The evaluation curve and the training time (evaluations excluded)
    """
    import time

    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_drqn import RecurrentDQN

    th.set_num_threads(1)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=seed + 10_000)
    curve: list[float] = []
    eval_time = [0.0]

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_freq == 0:
                start = time.perf_counter()
                curve.append(float(evaluate_policy(self.model, eval_env, n_eval_episodes=20)[0]))  # type: ignore[arg-type]
                eval_time[0] += time.perf_counter() - start
            return True

    start = time.perf_counter()
    model = RecurrentDQN("MlpLstmPolicy", "CartPole-v1", seed=seed, **settings)
    model.learn(timesteps, callback=Evaluate())
    train_time = time.perf_counter() - start - eval_time[0]
    return dict(settings=settings, seed=seed, timesteps=timesteps, eval_freq=eval_freq, curve=curve, train_time=train_time)


def effective_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """
    :param settings: ``RecurrentDQN``'s arguments given to the search
    :return: Every plain (JSON) argument of ``RecurrentDQN`` with its value in this run: the constructor's defaults
        updated with ``settings``. Search results are named after it, so that a change of the defaults cannot make a
        result made under other defaults look like this run's.
    """
    import inspect

    from sb3_drqn import RecurrentDQN

    skip = {"self", "policy", "env", "verbose", "seed", "device", "tensorboard_log", "_init_setup_model"}
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(RecurrentDQN.__init__).parameters.items()
        if name not in skip and isinstance(parameter.default, bool | int | float | str | type(None))
    }
    return {**defaults, **settings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="500 steps, seed 0, nothing written")
    parser.add_argument("--settings", type=json.loads, default=None, help="search: RecurrentDQN's arguments (JSON)")
    parser.add_argument("--timesteps", type=int, default=100_000, help="search: env steps per run")
    parser.add_argument("--rerun", action="store_true", help="run the snippet again even where a result exists")
    args = parser.parse_args()
    if args.settings is not None:
        effective = effective_settings(args.settings)
        digest = hashlib.sha1(json.dumps(effective, sort_keys=True).encode()).hexdigest()[:10]
        for seed in args.seeds:
            path = SEARCH_DIR / f"{digest}__seed{seed}__{args.timesteps}.json"
            if not path.exists():
                SEARCH_DIR.mkdir(parents=True, exist_ok=True)
                found = dict(search_run(seed, args.timesteps, args.settings), effective_settings=effective)
                found["commit"] = git_commit()
                path.write_text(json.dumps(found, indent=1) + "\n")
            found = json.loads(path.read_text())
            print(f"seed {seed}: every 10k steps {[round(v) for v in found['curve']]}, training {found['train_time']:.0f} s")
        return
    if args.smoke:
        smoke = run_snippet(0, total_timesteps=500)
        print(f"smoke: the snippet ran in {smoke['wall_time']:.1f} s, evaluate_policy gave {smoke['mean']:.1f}")
        return
    snippet = readme_snippet()
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        path = args.out / f"seed{seed}.json"
        run: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
        if run is None or run["snippet"] != snippet or args.rerun:  # a changed snippet makes earlier runs void
            run = {"snippet": snippet, "commit": git_commit(), **run_snippet(seed)}
            path.write_text(json.dumps(run, indent=1) + "\n")
        solved = run["mean"] >= SOLVED and run["wall_time"] <= TIME_LIMIT_S
        verdict = "solved" if solved else "NOT solved"
        print(f"seed {seed}: {run['mean']:.1f} +- {run['std']:.1f} in {run['wall_time']:.0f} s ({verdict})")


if __name__ == "__main__":
    main()
