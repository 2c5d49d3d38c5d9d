"""
What a single CartPole frame shows: a supervised probe of the pixel observations of ``examples/cartpole_pixels.py``.

An agent can only learn from pixels what the pixels show. This script collects rendered CartPole frames together
with the true state (cart position and velocity, pole angle and angular velocity), then trains the example's
small CNN to regress the state from one frame (and, as a check, from two consecutive frames) for each way of
turning the 600x400 screen into an observation. It reports the held-out R^2 of each state variable: near 1 means
the frame shows it, near 0 that it does not.

Frame variants:

- ``full48``: the whole screen resized to 48x48 (the example's default): the pole, 10 pixels wide on the screen,
  becomes less than one pixel wide;
- ``full84``: the whole screen resized to 84x84;
- ``band``: only the band of rows where the cart and the pole can be (rows 150-330 of 400, all 600 columns),
  resized to 36x120 (5x smaller in each direction): the pole stays 2 pixels wide, at fewer pixels than ``full84``
  (the example's default since this probe).

States are collected with a noisy balancing controller (a random action with probability 0.3, otherwise the push
that rights the pole), so that episodes are long and cover the positions and angles a learning agent sees.

``--gradients`` measures instead how much of the loss's gradient reaches each part of the online network (the mean
gradient norm over 20 updates after 1,100 env steps, the example's settings on the band), for drqn and dqn.

Usage::

    python benchmarks/pixel_probe.py            # about 10 minutes on one core
    python benchmarks/pixel_probe.py --gradients  # about 2 minutes
    python benchmarks/pixel_probe.py --frames 4000 --epochs 2  # a quick look
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from gymnasium.envs.classic_control import CartPoleEnv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from cartpole_pixels import SmallCNN, agent_settings, make_pixel_cartpole

RESULTS = Path(__file__).resolve().parent / "results" / "pixel_probe"
STATE_NAMES = ("cart position", "cart velocity", "pole angle", "pole angular velocity")


# CartPole's own colors (white background), as when the committed results were made; the example now inverts its
# frames, an affine map of the input that a CNN's first layer can undo
VARIANTS: dict[str, dict[str, Any]] = {
    "full48": dict(frame="full", frame_size=48, invert=False),
    "full84": dict(frame="full", frame_size=84, invert=False),
    "band": dict(invert=False),
}


def collect(n_frames: int, variants: list[str], seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """
    Frames of each variant (the example's envs, stepped in lockstep with the same actions), the true states, and
    each frame's episode step (to pair consecutive frames).
    """
    envs = {variant: make_pixel_cartpole(**VARIANTS[variant]) for variant in variants}
    rng = np.random.default_rng(seed)
    frames: dict[str, list[np.ndarray]] = {variant: [] for variant in variants}
    states: list[np.ndarray] = []
    steps: list[int] = []
    for variant, env in envs.items():
        frames[variant].append(env.reset(seed=seed)[0][..., 0])
    step = 0
    while len(states) < n_frames:
        state = np.array(cast(CartPoleEnv, envs[variants[0]].unwrapped).state, dtype=np.float32)
        states.append(state)
        steps.append(step)
        if len(states) == n_frames:
            break
        push_right = state[2] + 0.5 * state[3] > 0
        action = int(rng.integers(2)) if rng.random() < 0.3 else int(push_right)
        done = False
        for variant, env in envs.items():
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            if done:
                obs, _ = env.reset()
            frames[variant].append(obs[..., 0])
        step = 0 if done else step + 1
    for env in envs.values():
        env.close()
    return {variant: np.stack(value) for variant, value in frames.items()}, np.stack(states), np.array(steps)


def probe(frames: np.ndarray, states: np.ndarray, steps: np.ndarray, n_frames_in: int, epochs: int, seed: int) -> list[float]:
    """Held-out R^2 of each state variable, regressed by the small CNN from ``n_frames_in`` consecutive frames."""
    th.manual_seed(seed)
    index = np.flatnonzero(steps >= n_frames_in - 1)
    inputs = np.stack([frames[index - lag] for lag in reversed(range(n_frames_in))], axis=1)  # (N, C, H, W)
    targets = states[index]
    n_train = int(0.8 * len(index))  # held out: the last 20 %, later episodes
    mean, std = targets[:n_train].mean(axis=0), targets[:n_train].std(axis=0) + 1e-8
    x = th.as_tensor(inputs, dtype=th.float32) / 255.0
    y = th.as_tensor((targets - mean) / std, dtype=th.float32)
    cnn = SmallCNN(spaces.Box(0, 255, inputs.shape[1:], np.uint8), features_dim=128)
    model = th.nn.Sequential(cnn, th.nn.Linear(128, len(STATE_NAMES)))
    optimizer = th.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in th.randperm(n_train).split(64):
            loss = th.nn.functional.mse_loss(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with th.no_grad():
        predicted = th.cat([model(chunk) for chunk in x[n_train:].split(512)])
    residual = ((predicted - y[n_train:]) ** 2).mean(dim=0)
    variance = y[n_train:].var(dim=0, unbiased=False)
    return (1.0 - residual / variance).tolist()


def gradient_norms(steps: int = 1100, updates: int = 20, seed: int = 0) -> dict[str, dict[str, float]]:
    """
    Mean gradient norm of each part of the online network over ``updates`` updates, for the example's drqn and dqn
    (the example's settings, on the band) after ``steps`` env steps: how much of the loss's gradient reaches the CNN;
    and how far each weight matrix moved over those updates, relative to its norm.
    """
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_drqn import RecurrentDQN

    settings = agent_settings({})
    norms: dict[str, dict[str, float]] = {}
    for agent, algo in (("drqn", RecurrentDQN), ("dqn", DQN)):
        env = make_vec_env(make_pixel_cartpole, n_envs=1, seed=seed, env_kwargs=dict(invert=False))
        model = algo(settings[agent].policy, env, seed=seed, **settings[agent].kwargs)
        model.learn(steps)
        per_part: dict[str, list[float]] = {}

        def record(*_: Any, model: Any = model, per_part: dict = per_part) -> None:
            # Before each optimizer step: the gradient norm of each part
            for name, parameter in model.q_net.named_parameters():
                if parameter.grad is not None:
                    parts = name.split(".")
                    part = ".".join(parts[:2]) if parts[0] == "features_extractor" else parts[0]
                    per_part.setdefault(part, []).append(float(parameter.grad.norm()))

        before = {name: parameter.detach().clone() for name, parameter in model.q_net.named_parameters()}
        hook = model.policy.optimizer.register_step_pre_hook(record)
        model.train(gradient_steps=updates, batch_size=model.batch_size)
        hook.remove()
        norms[agent] = {part: float(np.mean(values)) for part, values in per_part.items()}
        # How far each part's weights moved over the updates, relative to their size (Adam rescales each gradient)
        for name, parameter in model.q_net.named_parameters():
            if name in before and name.endswith("weight"):
                change = float((parameter.detach() - before[name]).norm() / before[name].norm())
                norms[agent][f"relative change of {name}"] = change
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20_000, help="frames collected (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of each probe (default: %(default)s)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="frame variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--gradients", action="store_true", help="instead: the mean gradient norm of each part of drqn's and dqn's network"
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.gradients:
        norms = gradient_norms(seed=args.seed)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "gradient_norms.json").write_text(json.dumps(norms, indent=2))
        for agent, parts in norms.items():
            print(agent, {part: round(value, 4) for part, value in parts.items()})
        return
    start = time.perf_counter()
    frames, states, steps = collect(args.frames, args.variants, args.seed)
    print(f"collected {len(states)} frames in {time.perf_counter() - start:.0f} s")
    rows = []
    for variant in args.variants:
        for n_frames_in in (1, 2):
            start = time.perf_counter()
            r2 = probe(frames[variant], states, steps, n_frames_in, args.epochs, args.seed)
            shape = "x".join(map(str, frames[variant].shape[1:]))
            rows.append(dict(variant=variant, shape=shape, frames_in=n_frames_in, r2=dict(zip(STATE_NAMES, r2, strict=True))))
            print(variant, shape, n_frames_in, [round(value, 3) for value in r2], f"{time.perf_counter() - start:.0f} s")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(frames=args.frames, epochs=args.epochs, seed=args.seed)
    (args.out_dir / "pixel_probe.json").write_text(json.dumps(dict(settings=settings, rows=rows), indent=2))
    lines = [
        f"Held-out R^2 of the true state regressed from frames by the example's small CNN ({args.frames} frames, "
        f"{args.epochs} epochs, seed {args.seed}; `python benchmarks/pixel_probe.py`)",
        "",
        "| frames | size | frames in | " + " | ".join(STATE_NAMES) + " |",
        "|---|---|---|" + "---|" * len(STATE_NAMES),
    ]
    for row in rows:
        values = " | ".join(f"{row['r2'][name]:.2f}" for name in STATE_NAMES)
        lines.append(f"| {row['variant']} | {row['shape']} | {row['frames_in']} | {values} |")
    (args.out_dir / "pixel_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
