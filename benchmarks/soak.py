"""
Soak test: resident memory of a long RecurrentDQN run (not part of the test suite; run by hand).

Trains ``MlpLstmPolicy`` on ``CartPole-v1`` for ``--timesteps`` env steps (1M by default) with a replay buffer of
``--buffer-size`` steps (100k: it fills at 10% of the run), logging to CSV every ``--log-interval`` episodes, and
samples the process's resident set size (RSS) every ``--sample-every`` steps, with the sizes of what could grow:
the episode info buffer, the stored steps, the logger's pending values. After the buffer has filled, RSS must stay
flat: no growth from logging, episode statistics, hidden states or final observations.

Training is made cheap (one gradient step every ``--train-freq`` steps) because memory, not learning, is measured.

Usage::

    python benchmarks/soak.py                       # 1M steps (about 15 min on 2 CPU cores)
    python benchmarks/soak.py --timesteps 200000    # shorter
"""

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

from sb3_drqn import RecurrentDQN

RESULTS = Path(__file__).parent / "results"
DOCS_IMAGES = Path(__file__).parent.parent / "docs" / "images"


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


class RssRecorder(BaseCallback):
    """Records RSS and the sizes of the model's growing structures every ``every`` steps."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.samples: list[dict[str, float]] = []
        self.start = time.perf_counter()

    def record(self) -> None:
        model = self.model
        assert isinstance(model, RecurrentDQN)
        self.samples.append(
            dict(
                steps=self.num_timesteps,
                rss_mib=rss_mib(),
                stored_steps=model.replay_buffer.size() * model.replay_buffer.n_envs,
                episodes=model._episode_num,
                ep_info_buffer=len(model.ep_info_buffer or []),
                logger_pending=len(model.logger.name_to_value),
                seconds=time.perf_counter() - self.start,
            )
        )

    def _on_training_start(self) -> None:
        self.record()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every < self.training_env.num_envs:
            self.record()
        return True


def rss_at(samples: list[dict[str, float]], steps: int) -> float:
    """RSS of the first sample at or after ``steps``."""
    return next(s["rss_mib"] for s in samples if s["steps"] >= steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--n-envs", type=int, default=1)
    parser.add_argument("--train-freq", type=int, default=16)
    parser.add_argument("--sample-every", type=int, default=10_000)
    parser.add_argument("--log-interval", type=int, default=10, help="episodes between logger dumps (CSV)")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="PNG output (default: docs/images/soak_rss.png with the default --out, else beside --out)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny budget to check the script: 600 steps, buffer of 200")
    args = parser.parse_args(argv)
    if args.plot is None:
        # README's figure only from a run with the default --out: a run elsewhere leaves it alone
        args.plot = (DOCS_IMAGES if args.out == parser.get_default("out") else args.out.parent) / "soak_rss.png"
    if args.smoke:
        args.timesteps, args.buffer_size, args.sample_every = 600, 200, 200
    th.set_num_threads(1)

    model = RecurrentDQN(
        "MlpLstmPolicy",
        make_vec_env("CartPole-v1", n_envs=args.n_envs, seed=0),
        buffer_size=args.buffer_size,
        learning_starts=1000,
        batch_size=16,
        train_freq=args.train_freq,
        sequence_length=10,
        burn_in=10,
        policy_kwargs=dict(lstm_hidden_size=64, net_arch=[64]),
        seed=0,
    )
    recorder = RssRecorder(args.sample_every)
    with tempfile.TemporaryDirectory() as log_dir:
        model.set_logger(configure(log_dir, ["csv"]))
        model.learn(args.timesteps, callback=recorder, log_interval=args.log_interval)
        recorder.record()
    samples = recorder.samples

    filled = min(args.buffer_size, args.timesteps)
    summary: dict[str, Any] = dict(
        timesteps=args.timesteps,
        buffer_size=args.buffer_size,
        n_envs=args.n_envs,
        rss_start_mib=samples[0]["rss_mib"],
        rss_at_buffer_full_mib=rss_at(samples, filled),
        rss_end_mib=samples[-1]["rss_mib"],
        rss_max_after_full_mib=max(s["rss_mib"] for s in samples if s["steps"] >= filled),
        episodes=samples[-1]["episodes"],
        wall_time_s=samples[-1]["seconds"],
    )
    summary["growth_after_full_mib"] = summary["rss_end_mib"] - summary["rss_at_buffer_full_mib"]
    summary["growth_after_full_percent"] = 100 * summary["growth_after_full_mib"] / summary["rss_at_buffer_full_mib"]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            dict(config=vars(args) | dict(out=str(args.out), plot=str(args.plot)), summary=summary, samples=samples), indent=1
        )
    )
    table = (
        "| steps | buffer | RSS at start | RSS, buffer full | RSS at the end | max after full | growth after full |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {args.timesteps:,} | {args.buffer_size:,} | {summary['rss_start_mib']:.0f} MiB "
        f"| {summary['rss_at_buffer_full_mib']:.0f} MiB | {summary['rss_end_mib']:.0f} MiB "
        f"| {summary['rss_max_after_full_mib']:.0f} MiB "
        f"| {summary['growth_after_full_mib']:+.1f} MiB ({summary['growth_after_full_percent']:+.1f}%) |\n"
    )
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"{summary['episodes']} episodes, {summary['wall_time_s']:.0f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s["steps"] for s in samples], [s["rss_mib"] for s in samples], marker=".")
    ax.axvline(filled, color="gray", linestyle="--", linewidth=1, label="buffer full")
    ax.set_xlabel("env steps")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"RecurrentDQN on CartPole-v1, buffer {args.buffer_size:,}")
    ax.legend()
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1:])
