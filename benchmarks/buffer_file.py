"""
Replay-buffer files: size on disk and peak resident memory while saving and loading, sb3-drqn's format (no pickle)
against SB3's pickle path (``save_to_pkl`` / ``load_from_pkl`` of the same buffer, sb3-drqn 0.1.0's format).

A ``RecurrentReplayBuffer`` of ``--transitions`` Atari-shaped steps (84x84 random frames, episodes of 1,000 steps,
a 512-unit LSTM's states stored as by default) is filled once and saved both ways; each save and each load runs in
a fresh process that reports its resident memory before, its high-water mark during the operation (Linux:
``/proc/self/clear_refs`` and ``VmHWM``) and the buffer's own resident size. Usage::

    python benchmarks/buffer_file.py                       # 200,000 transitions (about 1.4 GB), a few minutes
    python benchmarks/buffer_file.py --transitions 20000   # smaller
"""

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import EPISODE_LENGTH, LSTM, peak_rss_bytes, reset_peak_rss, rss_bytes

from sb3_drqn.common.buffers import RecurrentReplayBuffer
from sb3_drqn.common.save_util import load_recurrent_replay_buffer, save_recurrent_replay_buffer

RESULTS = Path(__file__).parent / "results"
FRAME = (1, 84, 84)


def filled_buffer(n_transitions: int) -> RecurrentReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = RecurrentReplayBuffer(
        n_transitions,
        spaces.Box(0, 255, FRAME, np.uint8),
        spaces.Discrete(6),
        sequence_length=10,
        burn_in=10,
        recurrent_state_shape=(2, 1, LSTM),
    )
    state = tuple(rng.standard_normal((1, 1, LSTM)).astype(np.float32) for _ in range(2))
    frames = rng.integers(0, 256, size=(1000, 1, *FRAME), dtype=np.uint8)
    for t in range(n_transitions):
        done = np.array([(t + 1) % EPISODE_LENGTH == 0])
        obs = frames[t % 1000] ^ np.uint8(t % 251)  # every frame different
        buffer.add(obs, frames[(t + 1) % 1000], np.array([t % 6]), np.array([1.0]), done, [{}], recurrent_state=state)
    return buffer


def _save(kind: str, n_transitions: int, path: str, queue: Any) -> None:
    buffer = filled_buffer(n_transitions)
    resident = rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    if kind == "pickle":
        save_to_pkl(path, buffer)
    else:
        save_recurrent_replay_buffer(buffer, path)
    seconds = time.perf_counter() - start
    queue.put(dict(seconds=seconds, process_resident=resident, peak=peak_rss_bytes(), bytes_on_disk=Path(path).stat().st_size))


def _load(kind: str, path: str, queue: Any) -> None:
    before = rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    buffer = load_from_pkl(path) if kind == "pickle" else load_recurrent_replay_buffer(path)
    seconds = time.perf_counter() - start
    after = rss_bytes()
    queue.put(dict(seconds=seconds, buffer_resident=after - before, peak_extra=peak_rss_bytes() - after, pos=buffer.pos))


def run(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "buffer_file.json")
    parser.add_argument("--smoke", action="store_true", help="2,000 transitions, results not written")
    args = parser.parse_args()
    n = 2_000 if args.smoke else args.transitions
    results: dict[str, Any] = {"transitions": n}
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("sb3_drqn", "pickle"):
            path = str(Path(folder) / f"buffer_{kind}.pkl")  # SB3 adds .pkl to a name without it
            saved = run(_save, kind, n, path)
            loaded = run(_load, kind, path)
            # The buffer's own resident size, as loading measures it; peaks are beyond what the process then holds
            save_extra = saved["peak"] - saved["process_resident"]
            results[kind] = dict(
                bytes_on_disk=saved["bytes_on_disk"],
                buffer_resident=loaded["buffer_resident"],
                save_peak_extra=save_extra,
                load_peak_extra=loaded["peak_extra"],
                save_seconds=saved["seconds"],
                load_seconds=loaded["seconds"],
            )
            Path(path).unlink()
    print(f"\n## Replay-buffer files: {n:,} Atari-shaped transitions\n")
    print(
        "| format | on disk | buffer resident after loading | peak extra while saving | peak extra while loading "
        "| save | load |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in ("sb3_drqn", "pickle"):
        r = results[kind]
        resident = r["buffer_resident"]
        print(
            f"| {kind} | {r['bytes_on_disk'] / 2**20:,.0f} MiB | {resident / 2**20:,.0f} MiB | "
            f"{r['save_peak_extra'] / 2**20:,.0f} MiB ({r['save_peak_extra'] / resident:+.0%}) | "
            f"{r['load_peak_extra'] / 2**20:,.0f} MiB ({r['load_peak_extra'] / resident:+.0%}) | "
            f"{r['save_seconds']:.1f} s | {r['load_seconds']:.1f} s |"
        )
    if not args.smoke:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
