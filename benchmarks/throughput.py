"""
Memory and speed of RecurrentDQN at Atari scale, measured side by side with SB3's DQN in one run.

Measures, on 84x84 single-frame observations (``CnnLstmPolicy`` with a 512-unit LSTM) against SB3's ``DQN``
with its usual 4-frame stack:

1. replay memory: resident bytes per stored transition (filled in a fresh subprocess each, RSS before/after),
   and the resident cost of constructing a model with ``buffer_size=1_000_000``;
2. update cost: one gradient step on 32 sequences x 10 steps (burn-in 0, then 10) against DQN's step on 320
   transitions;
3. acting cost: one env step while collecting (one forward carrying the state; exploration off for both);
4. scaling of the update time and peak memory with ``sequence_length``, ``burn_in`` and ``batch_size``.

Times are medians over ``--repeats`` interleaved repetitions. Usage::

    python benchmarks/throughput.py                  # everything, prints tables, writes JSON/markdown/plot
    python benchmarks/throughput.py --quick          # fewer repetitions and a smaller scaling grid
"""

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.vec_env import VecFrameStack

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.buffers import RecurrentReplayBuffer

FRAME = (1, 84, 84)
FRAME_BYTES = int(np.prod(FRAME))  # 7056
MEMORY_KINDS = ("dqn_stack4", "dqn_stack4_optimized", "drqn_default", "drqn_exact_states")
LSTM = 512
EPISODE_LENGTH = 1000  # typical order of an Atari episode, in agent steps
RESULTS = Path(__file__).parent / "results"
DOCS_IMAGES = Path(__file__).parent.parent / "docs" / "images"


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> None:
    """Reset this process's resident high-water mark (Linux: writing 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_bytes() -> int:
    """Resident high-water mark of this process since the last :func:`reset_peak_rss` (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fake_atari_env() -> FakeImageEnv:
    """84x84 grey frames, 6 actions' worth of Discrete, and Atari-like episodes of EPISODE_LENGTH steps."""
    env = FakeImageEnv(screen_height=84, screen_width=84, n_channels=1, discrete=True)
    env.ep_length = EPISODE_LENGTH  # SB3's default of 10 steps would clip every burn-in at the episode start
    return env


def image_env(n_envs: int = 1, frame_stack: int = 1):
    env = make_vec_env(fake_atari_env, n_envs=n_envs, seed=0)
    if frame_stack > 1:
        # Channel-last frames, stacked as the zoo does for Atari, then transposed by the model
        env = VecFrameStack(env, frame_stack, channels_order="last")
    return env


# --------------------------------------------------------------------------------------------------------------
# 1. Memory


def _fill_in_subprocess(kind: str, n_transitions: int, queue: Any) -> None:
    """Fill one buffer with ``n_transitions`` Atari-like transitions and report resident bytes per transition."""
    th.set_num_threads(1)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(64, *FRAME), dtype=np.uint8)
    action_space = spaces.Discrete(6)
    before = rss_bytes()
    if kind.startswith("drqn"):
        # default: "auto" storage (float16 states every 8th step for these frames); exact: every step, float32
        stride, dtype = {"drqn_default": ("auto", "auto"), "drqn_exact_states": (1, "float32")}[kind]
        buffer: ReplayBuffer = RecurrentReplayBuffer(
            n_transitions,
            spaces.Box(0, 255, FRAME, np.uint8),
            action_space,
            device="cpu",
            sequence_length=10,
            burn_in=10,
            recurrent_state_shape=(2, 1, LSTM),
            state_stride=stride,
            state_dtype=dtype,
        )
        state = (rng.standard_normal((1, 1, LSTM)).astype(np.float32),) * 2
        constructed = rss_bytes()
        for t in range(n_transitions):
            done = np.array([(t + 1) % EPISODE_LENGTH == 0])
            obs = frames[t % 64][None]
            buffer.add(obs, frames[(t + 1) % 64][None], np.array([1]), np.array([0.0]), done, [{}], recurrent_state=state)
    else:
        optimize = kind == "dqn_stack4_optimized"
        stacked = (4, *FRAME[1:])
        buffer = ReplayBuffer(
            n_transitions,
            spaces.Box(0, 255, stacked, np.uint8),
            action_space,
            device="cpu",
            optimize_memory_usage=optimize,
            handle_timeout_termination=not optimize,
        )
        stacks = np.repeat(frames, 4, axis=1)
        constructed = rss_bytes()
        for t in range(n_transitions):
            done = np.array([(t + 1) % EPISODE_LENGTH == 0])
            buffer.add(stacks[t % 64][None], stacks[(t + 1) % 64][None], np.array([1]), np.array([0.0]), done, [{}])
    after = rss_bytes()
    queue.put({"construct_bytes": constructed - before, "bytes_per_transition": (after - constructed) / n_transitions})


def _construct_model_in_subprocess(algo: str, queue: Any) -> None:
    """Resident cost of a model with a 1e6 buffer, minus that of the same model with a 1e3 buffer."""
    th.set_num_threads(1)
    env = image_env(frame_stack=4 if algo == "dqn" else 1)
    costs = []
    # The first construction pays one-time costs (torch, the env): measured again after it
    for buffer_size in (1_000, 1_000, 1_000_000):
        before = rss_bytes()
        if algo == "dqn":
            model: Any = DQN(
                "CnnPolicy",
                env,
                buffer_size=buffer_size,
                optimize_memory_usage=True,
                replay_buffer_kwargs=dict(handle_timeout_termination=False),
            )
        else:
            model = RecurrentDQN("CnnLstmPolicy", env, buffer_size=buffer_size, policy_kwargs=dict(lstm_hidden_size=LSTM))
        costs.append(rss_bytes() - before)
        del model
    queue.put({"model_construct_bytes": costs[2] - costs[1]})


def _report_errors(target: Any, args: tuple, queue: Any) -> None:
    try:
        target(*args, queue)
    except MemoryError as error:
        queue.put({"error": f"{type(error).__name__}: {error}"})


def run_in_subprocess(target: Any, *args: Any) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a fresh process (clean memory accounting) and return what it reported."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_report_errors, args=(target, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def measure_memory(n_transitions: int) -> dict[str, dict[str, float]]:
    results = {}
    for kind in MEMORY_KINDS:
        results[kind] = run_in_subprocess(_fill_in_subprocess, kind, n_transitions)
    for algo in ("dqn", "drqn"):
        results[f"{algo}_model_1e6"] = run_in_subprocess(_construct_model_in_subprocess, algo)
    return results


# --------------------------------------------------------------------------------------------------------------
# 2. and 3. Update and acting cost


def make_drqn(
    sequence_length: int = 10, burn_in: int = 0, batch_size: int = 32, n_envs: int = 1, **kwargs: Any
) -> RecurrentDQN:
    return RecurrentDQN(
        "CnnLstmPolicy",
        image_env(n_envs),
        buffer_size=20_000,
        batch_size=batch_size,
        sequence_length=sequence_length,
        burn_in=burn_in,
        learning_starts=0,
        gradient_steps=0,
        exploration_initial_eps=0.0,
        exploration_final_eps=0.0,
        policy_kwargs=dict(lstm_hidden_size=LSTM),
        seed=0,
        **kwargs,
    )


def make_dqn(batch_size: int = 320, n_envs: int = 1) -> DQN:
    return DQN(
        "CnnPolicy",
        image_env(n_envs, frame_stack=4),
        buffer_size=20_000,
        batch_size=batch_size,
        learning_starts=0,
        gradient_steps=0,
        exploration_initial_eps=0.0,
        exploration_final_eps=0.0,
        optimize_memory_usage=True,
        replay_buffer_kwargs=dict(handle_timeout_termination=False),
        seed=0,
    )


def time_call(fn: Any, n: int) -> float:
    """Seconds per call, over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def measure_speed(repeats: int, fill_steps: int) -> dict[str, Any]:
    models: dict[str, Any] = {
        "dqn": make_dqn(),
        "drqn_burn0": make_drqn(burn_in=0),
        "drqn_burn10": make_drqn(burn_in=10),
    }
    acting_only = {"dqn_4envs": make_dqn(n_envs=4), "drqn_4envs": make_drqn(n_envs=4)}
    for model in [*models.values(), *acting_only.values()]:
        model.learn(fill_steps)  # fills the buffer: acting only (gradient_steps=0)
    act_steps = 200
    update_times: dict[str, list[float]] = {name: [] for name in models}
    act_times: dict[str, list[float]] = {name: [] for name in [*models, *acting_only]}
    for _ in range(repeats):  # interleaved, so that load on the machine hits all alike
        for name, model in models.items():
            batch = model.batch_size
            update_times[name].append(time_call(lambda m=model, b=batch: m.train(gradient_steps=1, batch_size=b), 5))
        for name, model in [*models.items(), *acting_only.items()]:
            start = time.perf_counter()
            model.learn(act_steps * model.n_envs, reset_num_timesteps=False)
            # per env step: one call to env.step() steps n_envs envs
            act_times[name].append((time.perf_counter() - start) / act_steps / model.n_envs)
    update = {name: statistics.median(values) for name, values in update_times.items()}
    act = {name: statistics.median(values) for name, values in act_times.items()}
    return {
        "update_seconds": update,
        "act_seconds_per_step": act,
        "update_ratio_burn0_vs_dqn": update["drqn_burn0"] / update["dqn"],
        "burn_in10_extra": update["drqn_burn10"] / update["drqn_burn0"] - 1.0,
        "act_ratio_vs_dqn": act["drqn_burn0"] / act["dqn"],
        "act_ratio_vs_dqn_4envs": act["drqn_4envs"] / act["dqn_4envs"],
    }


# --------------------------------------------------------------------------------------------------------------
# 4. Scaling


def _scaling_point(config: dict[str, int], repeats: int, queue: Any) -> None:
    th.set_num_threads(1)
    model = make_drqn(**config)
    model.learn(1500)
    model.train(gradient_steps=1, batch_size=model.batch_size)  # warm-up
    reset_peak_rss()
    baseline = rss_bytes()
    seconds = statistics.median(
        time_call(lambda: model.train(gradient_steps=1, batch_size=model.batch_size), 2) for _ in range(repeats)
    )
    queue.put({**config, "update_seconds": seconds, "peak_extra_bytes": max(peak_rss_bytes() - baseline, 0)})


def measure_scaling(quick: bool, repeats: int) -> list[dict[str, float]]:
    grid = [dict(sequence_length=n, burn_in=0, batch_size=32) for n in ((10, 40) if quick else (10, 20, 40, 80))]
    grid += [dict(sequence_length=10, burn_in=b, batch_size=32) for b in ((10,) if quick else (10, 40))]
    grid += [dict(sequence_length=10, burn_in=0, batch_size=b) for b in ((64,) if quick else (16, 64))]
    return [run_in_subprocess(_scaling_point, config, repeats) for config in grid]


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller scaling grid")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per timing (median reported)")
    parser.add_argument("--transitions", type=int, default=50_000, help="transitions stored for the memory figure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--skip", nargs="*", default=[], choices=["memory", "speed", "scaling"], help="parts to skip")
    parser.add_argument("--profile-acting", action="store_true", help="print where acting time goes (cProfile)")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    results: dict[str, Any] = {"torch": th.__version__, "threads": args.threads, "repeats": repeats, "device": "cpu"}

    if args.profile_acting:
        profile_acting()

    if "memory" not in args.skip:
        memory = measure_memory(args.transitions // (5 if args.quick else 1))
        results["memory"] = memory
        print(f"\n## Replay memory per stored transition (84x84 frames, {args.transitions} transitions, RSS)\n")
        print("| buffer | bytes / transition | x one frame (7,056 B) |")
        print("|---|---|---|")
        for kind in MEMORY_KINDS:
            per = memory[kind]["bytes_per_transition"]
            print(f"| {kind} | {per:,.0f} | {per / FRAME_BYTES:.3f} |")
        for algo in ("dqn", "drqn"):
            outcome = memory[f"{algo}_model_1e6"]
            if "error" in outcome:
                print(f"\nconstructing {algo} with buffer_size=1e6 failed: {outcome['error']}")
            else:
                resident = outcome["model_construct_bytes"] / 2**20
                print(f"\nconstructing {algo} with buffer_size=1e6: {resident:.1f} MiB more resident than with 1e3")

    if "speed" not in args.skip:
        speed = measure_speed(repeats, fill_steps=1000 if args.quick else 3000)
        results["speed"] = speed
        print("\n## Update and acting cost (median seconds)\n")
        print("| | DQN (320 transitions, 4 frames) | DRQN 32x10, burn-in 0 | DRQN 32x10, burn-in 10 |")
        print("|---|---|---|---|")
        u, a = speed["update_seconds"], speed["act_seconds_per_step"]
        columns = ("dqn", "drqn_burn0", "drqn_burn10")
        print("| one gradient step | " + " | ".join(f"{u[name] * 1e3:.1f} ms" for name in columns) + " |")
        print("| one env step (acting) | " + " | ".join(f"{a[name] * 1e3:.2f} ms" for name in columns) + " |")
        print(f"\nupdate ratio DRQN/DQN: {speed['update_ratio_burn0_vs_dqn']:.2f} (goal <= 1.3)")
        print(f"burn-in 10 adds: {speed['burn_in10_extra'] * 100:.0f}% (goal <= 55%)")
        print(f"acting ratio DRQN/DQN: {speed['act_ratio_vs_dqn']:.2f} (goal <= 1.3)")
        print(f"acting ratio DRQN/DQN with 4 envs: {speed['act_ratio_vs_dqn_4envs']:.2f}")

    if "scaling" not in args.skip:
        scaling = measure_scaling(args.quick, max(repeats // 2, 2))
        results["scaling"] = scaling
        print("\n## Scaling of one gradient step\n")
        print("| sequence_length | burn_in | batch_size | update (ms) | peak extra memory (MiB) |")
        print("|---|---|---|---|---|")
        for point in scaling:
            print(
                f"| {point['sequence_length']} | {point['burn_in']} | {point['batch_size']} | "
                f"{point['update_seconds'] * 1e3:.1f} | {point['peak_extra_bytes'] / 2**20:.0f} |"
            )
        plot_scaling(scaling)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


def profile_acting(n_steps: int = 1000) -> None:
    """Print the functions where DRQN and DQN spend their acting time (one env, exploration off)."""
    import cProfile
    import pstats

    for name, model in (("dqn", make_dqn()), ("drqn", make_drqn())):
        model.learn(200)
        profiler = cProfile.Profile()
        profiler.enable()
        model.learn(n_steps, reset_num_timesteps=False)
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"\n## Acting profile: {name}, {total / n_steps * 1e3:.2f} ms per step\n")
        print("| function | ms per step | share |")
        print("|---|---|---|")
        rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
        for (filename, line, function), (_, _, own_time, _, _) in rows[:8]:
            where = f"{Path(filename).name}:{line}({function})" if line else function
            print(f"| `{where}` | {own_time / n_steps * 1e3:.3f} | {own_time / total:.0%} |")


def plot_scaling(scaling: list[dict[str, float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, fixed in zip(
        axes,
        ("sequence_length", "burn_in", "batch_size"),
        (dict(burn_in=0, batch_size=32), dict(sequence_length=10, batch_size=32), dict(sequence_length=10, burn_in=0)),
        strict=True,
    ):
        points = sorted(
            (p for p in scaling if all(p[k] == v for k, v in fixed.items())),
            key=lambda p: p[key],
        )
        ax.plot([p[key] for p in points], [p["update_seconds"] * 1e3 for p in points], marker="o")
        ax.set_xlabel(key)
        ax.set_ylabel("one gradient step (ms)")
        ax.grid(alpha=0.3)
    fig.suptitle("RecurrentDQN update time, CnnLstmPolicy (84x84, LSTM 512), CPU")
    fig.tight_layout()
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    fig.savefig(DOCS_IMAGES / "throughput_scaling.png", dpi=100)


if __name__ == "__main__":
    main()
