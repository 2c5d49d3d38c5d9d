"""
Memory and speed of RecurrentDQN at Atari scale, measured side by side with SB3's DQN in one run.

Measures, on 84x84 single-frame observations (``CnnLstmPolicy`` with a 512-unit LSTM) against SB3's ``DQN``
with its usual 4-frame stack:

1. replay memory: resident bytes per stored transition (filled in a fresh subprocess each, RSS before/after),
   and the resident cost of constructing a model with ``buffer_size=1_000_000``;
2. update cost, in three configurations (``CONFIGS``: (A) a CartPole-size MLP, (B) a small CNN on 10x10 frames,
   (C) Atari), against DQN's update on as many transitions as the windows have learning steps, and the floor: a
   bare ``nn.LSTM`` doing the same recurrent work (DQN's update plus the floor bounds the ratio from below);
3. acting cost: ``learn()`` per env step, greedy, ``gradient_steps=0``, default ``log_interval`` (``ACTING``),
   and the same with the recurrent step skipped (``skip_recurrent_step``, a diagnostic): what the recurrent step
   costs inside the loop, and what the rest of acting costs against DQN's;
4. scaling of the update time and peak memory with ``sequence_length``, ``burn_in`` and ``batch_size``;
5. a bare ``nn.LSTM`` on oneDNN's CPU kernels against PyTorch's native ones (``RNN_KERNEL_SHAPES``), which
   decides ``native_cpu_rnn``.

Times are medians over ``--repeats`` interleaved repetitions. Usage::

    python benchmarks/throughput.py                  # everything, prints tables, writes JSON/markdown/plot
    python benchmarks/throughput.py --quick          # fewer repetitions and a smaller scaling grid
    python benchmarks/throughput.py --skip memory scaling kernels  # update and acting cost only
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
from sb3_drqn.common.torch_layers import SmallFrameCNN

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
        storage: dict[str, tuple[int | str, str]] = {"drqn_default": ("auto", "auto"), "drqn_exact_states": (1, "float32")}
        stride, dtype = storage[kind]
        recurrent_buffer = RecurrentReplayBuffer(
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
            recurrent_buffer.add(
                obs, frames[(t + 1) % 64][None], np.array([1]), np.array([0.0]), done, [{}], recurrent_state=state
            )
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


def _fill_with_pong_in_subprocess(n_transitions: int, queue: Any) -> None:
    """
    Fill a buffer of ``n_transitions`` with Pong episodes (random actions, the zoo's AtariWrapper: 84x84 frames,
    the real final observation at every episode end), then report its allocated bytes (the arrays' ``nbytes``) and
    its resident bytes, per transition.
    """
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    th.set_num_threads(1)
    gym.register_envs(ale_py)
    env = AtariWrapper(gym.make("PongNoFrameskip-v4"))
    space = spaces.Box(0, 255, (1, 84, 84), np.uint8)
    before = rss_bytes()
    buffer = RecurrentReplayBuffer(
        n_transitions,
        space,
        env.action_space,
        device="cpu",
        sequence_length=10,
        burn_in=10,
        recurrent_state_shape=(2, 1, LSTM),
    )
    state = (np.zeros((1, 1, LSTM), np.float32),) * 2
    obs, _ = env.reset(seed=0)
    episodes = 0
    for _ in range(n_transitions):
        next_obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
        info = {**info, "TimeLimit.truncated": truncated and not terminated}
        buffer.add(
            obs.transpose(2, 0, 1)[None],
            next_obs.transpose(2, 0, 1)[None],
            np.array([0]),
            np.array([reward]),
            np.array([done]),
            [info],
            recurrent_state=state,
        )
        obs = env.reset()[0] if done else next_obs
        episodes += int(done)
    resident = rss_bytes() - before
    allocated = sum(value.nbytes for value in vars(buffer).values() if isinstance(value, np.ndarray))
    queue.put(
        {
            "transitions": n_transitions,
            "episodes": episodes,
            "allocated_bytes_per_transition": allocated / n_transitions,
            "resident_bytes_per_transition": resident / n_transitions,
            "final_observation_slots": len(buffer.final_observations),
        }
    )


def measure_memory(n_transitions: int, pong_transitions: int) -> dict[str, dict[str, float]]:
    results = {"pong": run_in_subprocess(_fill_with_pong_in_subprocess, pong_transitions)}
    for kind in MEMORY_KINDS:
        results[kind] = run_in_subprocess(_fill_in_subprocess, kind, n_transitions)
    for algo in ("dqn", "drqn"):
        results[f"{algo}_model_1e6"] = run_in_subprocess(_construct_model_in_subprocess, algo)
    return results


# --------------------------------------------------------------------------------------------------------------
# 2. and 3. Update and acting cost, side by side with SB3's DQN (issue 14's configurations)


def small_image_env(n_envs: int = 1):
    def make() -> FakeImageEnv:
        env = FakeImageEnv(screen_height=10, screen_width=10, n_channels=4, discrete=True, channel_first=True)
        env.ep_length = EPISODE_LENGTH
        return env

    return make_vec_env(make, n_envs=n_envs, seed=0)


# name -> (RecurrentDQN's arguments, DQN's arguments, env factory for each, floor's (features, hidden))
CONFIGS: dict[str, dict[str, Any]] = {
    "A": dict(
        title="(A) CartPole-size MLP: LSTM 64, head [64], 4 windows x 8 after 8 burn-in; DQN [64, 64], batch 32",
        drqn=dict(
            policy="MlpLstmPolicy",
            batch_size=4,
            sequence_length=8,
            burn_in=8,
            policy_kwargs=dict(lstm_hidden_size=64, net_arch=[64]),
        ),
        dqn=dict(policy="MlpPolicy", batch_size=32, policy_kwargs=dict(net_arch=[64, 64])),
        drqn_env=lambda n: make_vec_env("CartPole-v1", n_envs=n, seed=0),
        dqn_env=lambda n: make_vec_env("CartPole-v1", n_envs=n, seed=0),
        floor=(4, 64),
    ),
    "B": dict(
        title="(B) small CNN on 4x10x10 frames, LSTM 128, 4 windows x 8 after 8 burn-in; DQN same CNN, [128], batch 32",
        drqn=dict(
            policy="CnnLstmPolicy",
            batch_size=4,
            sequence_length=8,
            burn_in=8,
            policy_kwargs=dict(lstm_hidden_size=128, features_extractor_class=SmallFrameCNN),
        ),
        dqn=dict(
            policy="CnnPolicy", batch_size=32, policy_kwargs=dict(net_arch=[128], features_extractor_class=SmallFrameCNN)
        ),
        drqn_env=small_image_env,
        dqn_env=small_image_env,
        floor=(128, 128),
    ),
    "C": dict(
        title="(C) Atari: Nature CNN + LSTM 512 on 84x84, 32 windows x 10 after 10 burn-in; DQN 4-frame stack, batch 320",
        drqn=dict(
            policy="CnnLstmPolicy", batch_size=32, sequence_length=10, burn_in=10, policy_kwargs=dict(lstm_hidden_size=LSTM)
        ),
        dqn=dict(
            policy="CnnPolicy",
            batch_size=320,
            optimize_memory_usage=True,
            replay_buffer_kwargs=dict(handle_timeout_termination=False),
        ),
        drqn_env=image_env,
        dqn_env=lambda n: image_env(n, frame_stack=4),
        floor=(512, LSTM),
    ),
}
# Acting: (configuration, number of envs) and the goal on the ratio
ACTING = [("A", 1, 1.3), ("A", 8, 1.3), ("C", 1, 1.45), ("C", 8, 1.3)]
UPDATE_GOALS = {"A": 2.0, "B": 1.5, "C": 1.3}


def make_model(config: str, algo: str, n_envs: int = 1) -> Any:
    """The configuration's model, set up to act greedily without learning (``learning_starts=0``, no exploration,
    ``gradient_steps=0``), so that ``learn`` measures acting and ``train`` one update."""
    settings = dict(CONFIGS[config][algo])
    policy = settings.pop("policy")
    cls = RecurrentDQN if algo == "drqn" else DQN
    return cls(
        policy,
        CONFIGS[config][f"{algo}_env"](n_envs),
        buffer_size=20_000,
        learning_starts=0,
        gradient_steps=0,
        exploration_initial_eps=0.0,
        exploration_final_eps=0.0,
        seed=0,
        **settings,
    )


def lstm_floor(config: str) -> Any:
    """A bare ``nn.LSTM`` doing the update's recurrent work: the target network over burn-in and learning steps
    (no gradient), the online network's burn-in (no gradient), then its learning steps forward and backward."""
    features, hidden = CONFIGS[config]["floor"]
    settings = CONFIGS[config]["drqn"]
    batch, length, burn_in = settings["batch_size"], settings["sequence_length"], settings["burn_in"]
    lstm = th.nn.LSTM(features, hidden)
    burn_in_input = th.randn(burn_in, batch, features)
    window_input = th.randn(length + 1, batch, features)
    whole_input = th.randn(burn_in + length + 1, batch, features)

    def step() -> None:
        with th.no_grad():
            lstm(whole_input)
            _, state = lstm(burn_in_input)
        output, _ = lstm(window_input, state)
        output.sum().backward()

    return step


def skip_recurrent_step(model: RecurrentDQN) -> RecurrentDQN:
    """
    A diagnostic copy of acting without its recurrent step: the model's one-step call runs the features extractor
    and the Q head (on the features where they are as wide as the recurrent layer, else on zeros) and returns the
    state unchanged. What it saves against the real model is what the recurrent step costs inside ``learn()``;
    the rest (carrying and storing the state) is what acting costs besides it.
    """
    q_net = model.policy.q_net
    zeros = th.zeros(model.n_envs, q_net.lstm_hidden_size)

    def step(obs: Any, state: Any) -> Any:
        features = q_net.extract_features(obs, q_net.features_extractor)
        return q_net.q_net(features if features.shape[-1] == q_net.lstm_hidden_size else zeros), state

    q_net.step = step  # type: ignore[method-assign]
    return model


def measure_speed(repeats: int, fill_steps: int, act_steps: int) -> dict[str, Any]:
    """Median seconds of one update (per configuration and algorithm, and the LSTM floor) and of one env step
    while acting, repetitions interleaved so that load on the machine hits all alike."""
    update_models = {(config, algo): make_model(config, algo) for config in CONFIGS for algo in ("dqn", "drqn")}
    for model in update_models.values():
        model.learn(fill_steps)  # fills the buffer: acting only (gradient_steps=0)
    floors = {config: lstm_floor(config) for config in CONFIGS}
    for step in floors.values():
        step()  # warm-up
    acting_models = {
        (config, n_envs, algo): make_model(config, algo, n_envs) for config, n_envs, _ in ACTING for algo in ("dqn", "drqn")
    }
    for config, n_envs, _ in ACTING:
        acting_models[(config, n_envs, "drqn_without_rnn")] = skip_recurrent_step(make_model(config, "drqn", n_envs))
    for model in acting_models.values():
        model.learn(10 * model.n_envs)  # warm-up
    update_times: dict[Any, list[float]] = {key: [] for key in [*update_models, *floors]}
    act_times: dict[Any, list[float]] = {key: [] for key in acting_models}
    for _ in range(repeats):
        for key, model in update_models.items():
            update_times[key].append(time_call(lambda m=model: m.train(gradient_steps=1, batch_size=m.batch_size), 5))
        for config, step in floors.items():
            update_times[config].append(time_call(step, 5))
        for acting_key, model in acting_models.items():
            start = clock()
            model.learn(act_steps * model.n_envs, reset_num_timesteps=False)
            act_times[acting_key].append((clock() - start) / (act_steps * model.n_envs))
    update = {key: statistics.median(values) for key, values in update_times.items()}
    act = {key: statistics.median(values) for key, values in act_times.items()}
    return {
        "update": {
            config: {
                "dqn_ms": update[(config, "dqn")] * 1e3,
                "drqn_ms": update[(config, "drqn")] * 1e3,
                "lstm_floor_ms": update[config] * 1e3,
                "ratio": update[(config, "drqn")] / update[(config, "dqn")],
                # the lowest ratio the recurrent work allows: DQN's update plus the bare LSTM doing that work
                "bound": (update[(config, "dqn")] + update[config]) / update[(config, "dqn")],
                "goal": UPDATE_GOALS[config],
            }
            for config in CONFIGS
        },
        "acting": [
            {
                "config": config,
                "n_envs": n_envs,
                "dqn_ms_per_step": act[(config, n_envs, "dqn")] * 1e3,
                "drqn_ms_per_step": act[(config, n_envs, "drqn")] * 1e3,
                "ratio": act[(config, n_envs, "drqn")] / act[(config, n_envs, "dqn")],
                "without_rnn_ms_per_step": act[(config, n_envs, "drqn_without_rnn")] * 1e3,
                "ratio_without_rnn": act[(config, n_envs, "drqn_without_rnn")] / act[(config, n_envs, "dqn")],
                "goal": goal,
            }
            for config, n_envs, goal in ACTING
        ],
    }


def print_speed(speed: dict[str, Any]) -> None:
    unit = "CPU ms of the timing thread" if clock is CLOCKS["cpu"] else "ms"
    print(f"\n## One update (median {unit}): RecurrentDQN against SB3's DQN, equal learning steps per update\n")
    print("| configuration | DQN | RecurrentDQN | ratio | goal | bare nn.LSTM floor | (DQN + floor) / DQN |")
    print("|---|---|---|---|---|---|---|")
    for config, row in speed["update"].items():
        met = "met" if row["ratio"] <= row["goal"] else "not met"
        print(
            f"| {CONFIGS[config]['title']} | {row['dqn_ms']:.2f} | {row['drqn_ms']:.2f} | **{row['ratio']:.2f}x** | "
            f"<= {row['goal']}x ({met}) | {row['lstm_floor_ms']:.2f} | {row['bound']:.2f}x |"
        )
    print(f"\n## Acting inside learn() (median {unit} per env step, greedy, gradient_steps=0, default log_interval)\n")
    print("| configuration | envs | DQN | RecurrentDQN | ratio | goal | without the recurrent step | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for row in speed["acting"]:
        met = "met" if row["ratio"] <= row["goal"] else "not met"
        print(
            f"| ({row['config']}) | {row['n_envs']} | {row['dqn_ms_per_step']:.3f} | {row['drqn_ms_per_step']:.3f} | "
            f"**{row['ratio']:.2f}x** | <= {row['goal']}x ({met}) | {row['without_rnn_ms_per_step']:.3f} | "
            f"{row['ratio_without_rnn']:.2f}x |"
        )


def make_drqn(
    sequence_length: int = 10, burn_in: int = 0, batch_size: int = 32, n_envs: int = 1, **kwargs: Any
) -> RecurrentDQN:
    """Configuration (C)'s RecurrentDQN with another window (the scaling grid)."""
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


# The clock of every timing: wall time, or with --clock cpu the CPU time of the calling thread (every timed call runs
# in it: one torch thread, DummyVecEnv), which other processes on a busy machine do not inflate
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCKS["wall"]


def time_call(fn: Any, n: int) -> float:
    """Seconds per call, over ``n`` calls."""
    start = clock()
    for _ in range(n):
        fn()
    return (clock() - start) / n


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


# (time steps, batch, hidden units): one acting step, and training-size windows of (A), (B), (C) and the suites
RNN_KERNEL_SHAPES = ((1, 1, 64), (1, 1, 512), (16, 4, 64), (24, 32, 64), (16, 4, 128), (20, 32, 512))


def measure_rnn_kernels(repeats: int) -> list[dict[str, float]]:
    """
    Time a bare ``nn.LSTM`` on PyTorch's two CPU kernels, oneDNN's and the native ones (what ``native_cpu_rnn``
    chooses between): forward alone (``no_grad``, as when acting) and forward and backward, repetitions interleaved.

    :param repeats: Repetitions per timing (median reported)
    :return: One record per shape of ``RNN_KERNEL_SHAPES``
    """
    records = []
    for n_steps, batch, hidden in RNN_KERNEL_SHAPES:
        lstm = th.nn.LSTM(64, hidden)
        x = th.randn(n_steps, batch, 64)

        def forward(lstm: th.nn.LSTM = lstm, x: th.Tensor = x) -> None:
            with th.no_grad():
                lstm(x)

        def forward_backward(lstm: th.nn.LSTM = lstm, x: th.Tensor = x) -> None:
            lstm(x)[0].sum().backward()

        times: dict[str, list[float]] = {}
        for _ in range(repeats):
            for onednn in (True, False):
                th._C._set_mkldnn_enabled(onednn)
                name = "onednn" if onednn else "native"
                times.setdefault(f"{name}_forward", []).append(time_call(forward, 50 if n_steps == 1 else 10))
                times.setdefault(f"{name}_forward_backward", []).append(time_call(forward_backward, 10))
        th._C._set_mkldnn_enabled(True)
        medians = {key: float(np.median(values)) for key, values in times.items()}
        records.append(dict(n_steps=n_steps, batch=batch, hidden=hidden, **medians))
    return records


def measure_scaling(quick: bool, repeats: int) -> list[dict[str, float]]:
    grid = [dict(sequence_length=n, burn_in=0, batch_size=32) for n in ((10, 40) if quick else (10, 20, 40, 80))]
    grid += [dict(sequence_length=10, burn_in=b, batch_size=32) for b in ((10,) if quick else (10, 40))]
    grid += [dict(sequence_length=10, burn_in=0, batch_size=b) for b in ((64,) if quick else (16, 64))]
    return [run_in_subprocess(_scaling_point, config, repeats) for config in grid]


# --------------------------------------------------------------------------------------------------------------


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    """Print a Markdown section: ``title`` as a heading, then a table of ``rows`` under ``headers``."""
    print(f"\n## {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller scaling grid")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per timing (median reported)")
    parser.add_argument("--transitions", type=int, default=50_000, help="transitions stored for the memory figure")
    parser.add_argument("--pong-transitions", type=int, default=20_000, help="Pong steps for the allocated-memory figure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["memory", "speed", "scaling", "kernels"], help="parts to skip"
    )
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall time, or the CPU time of the timing thread (for a machine busy with other runs; default: %(default)s)",
    )
    parser.add_argument("--profile-acting", action="store_true", help="print where acting time goes (cProfile)")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run to check the script (one repetition, no memory or scaling part)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.skip = ["memory", "scaling", "kernels"]
        args.out = args.out.with_name("throughput_smoke.json")
    th.set_num_threads(args.threads)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu times the calling thread only: it needs --threads 1")
    global clock
    clock = CLOCKS[args.clock]
    repeats = args.repeats or (3 if args.quick else 7)
    results: dict[str, Any] = {
        "torch": th.__version__,
        "threads": args.threads,
        "repeats": repeats,
        "device": "cpu",
        "clock": args.clock,
    }

    if args.profile_acting:
        profile_acting(50 if args.smoke else 1000)

    if "memory" not in args.skip:
        memory = measure_memory(args.transitions // (5 if args.quick else 1), args.pong_transitions)
        results["memory"] = memory
        pong = memory["pong"]
        print(f"\n## Replay memory of a buffer filled with {pong['transitions']:,} Pong steps ({pong['episodes']} episodes)\n")
        print("| | bytes / transition | x one frame (7,056 B) |")
        print("|---|---|---|")
        for key in ("allocated", "resident"):
            per = pong[f"{key}_bytes_per_transition"]
            print(f"| {key} | {per:,.0f} | {per / FRAME_BYTES:.3f} |")
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
        if args.smoke:
            speed = measure_speed(repeats=1, fill_steps=100, act_steps=20)
        else:
            speed = measure_speed(repeats, fill_steps=1000 if args.quick else 3000, act_steps=500)
        results["speed"] = speed
        print_speed(speed)

    if "scaling" not in args.skip:
        scaling = measure_scaling(args.quick, max(repeats // 2, 2))
        results["scaling"] = scaling
        print_table(
            "Scaling of one gradient step",
            ["sequence_length", "burn_in", "batch_size", "update (ms)", "peak extra memory (MiB)"],
            [
                [p["sequence_length"], p["burn_in"], p["batch_size"], f"{p['update_seconds'] * 1e3:.1f}",
                 f"{p['peak_extra_bytes'] / 2**20:.0f}"]
                for p in scaling
            ],
        )  # fmt: skip
        # README's figure only from a run with the default --out: a run elsewhere leaves it alone
        plot_dir = DOCS_IMAGES if args.out == parser.get_default("out") else args.out.parent
        plot_scaling(scaling, plot_dir / "throughput_scaling.png")

    if "kernels" not in args.skip:
        kernels = measure_rnn_kernels(1 if args.smoke else repeats)
        results["rnn_kernels"] = kernels
        kernel_times = ("onednn_forward", "native_forward", "onednn_forward_backward", "native_forward_backward")
        print_table(
            "nn.LSTM on the CPU: oneDNN's kernels against PyTorch's native ones (median ms)",
            ["steps x batch x units", "forward, oneDNN", "forward, native", "forward + backward, oneDNN", "native"],
            [
                [f"{k['n_steps']} x {k['batch']} x {k['hidden']}", *(f"{k[t] * 1e3:.2f}" for t in kernel_times)]
                for k in kernels
            ],
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


def profile_acting(n_steps: int = 1000) -> None:
    """Print the functions where DRQN and DQN spend their acting time (one env, exploration off)."""
    import cProfile
    import pstats

    for name, model in (("dqn", make_model("C", "dqn")), ("drqn", make_model("C", "drqn"))):
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


def plot_scaling(scaling: list[dict[str, float]], path: Path) -> None:
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
