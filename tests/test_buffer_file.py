"""Replay-buffer files without pickle: exact round trips, only what was written, damaged and hostile files refused
before anything changes, saves that an interruption cannot break."""

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import SimpleMultiObsEnv

from sb3_drqn import RecurrentDQN
from sb3_drqn.common.envs import CueMemoryEnv
from sb3_drqn.common.save_util import ALLOW_PICKLE_ENV, BUFFER_METADATA, load_recurrent_replay_buffer


def model(seed: int = 0, policy: str = "MlpLstmPolicy", env=None, **kwargs) -> RecurrentDQN:
    env = env if env is not None else make_vec_env(lambda: CueMemoryEnv(delay=3), n_envs=2, seed=0)
    defaults = dict(buffer_size=2000, learning_starts=20, batch_size=4, sequence_length=3, burn_in=2, seed=seed)
    return RecurrentDQN(policy, env, policy_kwargs=dict(lstm_hidden_size=8), **{**defaults, **kwargs})


def assert_same_batches(a, b, prioritized: bool = False) -> None:
    for seed in range(3):
        batches = []
        for buffer in (a, b):
            np.random.seed(seed)
            batches.append(buffer.sample(6, beta=0.4) if prioritized else buffer.sample(6))
        for field, x in batches[0]._asdict().items():
            y = getattr(batches[1], field)
            if isinstance(x, dict):
                assert all(th.equal(x[key], y[key]) for key in x), field
            elif isinstance(x, th.Tensor):
                assert th.equal(x, y), field
            elif isinstance(x, tuple):
                assert all(th.equal(p, q) for p, q in zip(x, y, strict=True)), field
            else:
                assert np.array_equal(np.asarray(x), np.asarray(y)), field


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(prioritized_replay=True), dict(replay_buffer_kwargs=dict(state_stride=3, state_dtype="float16"))],
    ids=["uniform", "prioritized", "strided_states"],
)
def test_round_trip_is_exact_and_keeps_training_the_same(tmp_path, kwargs):
    original = model(**kwargs).learn(700)
    original.save_replay_buffer(tmp_path / "replay_buffer.pkl")  # the zoo's name: recognised by content
    loaded = model(seed=1, **kwargs)
    loaded.load_replay_buffer(tmp_path / "replay_buffer.pkl")
    assert_same_batches(original.replay_buffer, loaded.replay_buffer, prioritized="prioritized_replay" in kwargs)
    # Filling on from there (episode ends, final observations, wrap-around) stays identical
    for buffer in (original.replay_buffer, loaded.replay_buffer):
        rng = np.random.default_rng(0)
        state = tuple(np.zeros((1, 2, 8), np.float32) for _ in range(2))
        for _ in range(1500):
            obs = rng.random((2, *original.observation_space.shape)).astype(np.float32)
            buffer.add(obs, obs + 1, np.array([0, 1]), np.ones(2), rng.random(2) < 0.1, [{}, {}], recurrent_state=state)
    assert_same_batches(original.replay_buffer, loaded.replay_buffer, prioritized="prioritized_replay" in kwargs)


def test_dict_observations_round_trip(tmp_path):
    original = model(policy="MultiInputLstmPolicy", env=SimpleMultiObsEnv(), burn_in=0).learn(300)
    original.save_replay_buffer(tmp_path / "buffer")
    loaded = model(policy="MultiInputLstmPolicy", env=SimpleMultiObsEnv(), burn_in=0)
    loaded.load_replay_buffer(tmp_path / "buffer")
    assert_same_batches(original.replay_buffer, loaded.replay_buffer)


def test_file_holds_only_what_was_written(tmp_path):
    big = model(buffer_size=200_000).learn(300)
    big.save_replay_buffer(tmp_path / "buffer.bin")
    with zipfile.ZipFile(tmp_path / "buffer.bin") as archive:
        metadata = json.loads(archive.read(BUFFER_METADATA))
        names = archive.namelist()
    members, rows = metadata["members"], big.replay_buffer.pos
    assert 150 <= rows < 160 and members["observations"]["shape"][0] == rows == members["recurrent_states"]["shape"][0]
    assert members["final_observations"]["shape"][0] == big.replay_buffer._n_final_observations
    assert all(not name.endswith(".pkl") for name in names)
    # The allocated capacity (100,000 rows per env) is not in the file
    assert os.path.getsize(tmp_path / "buffer.bin") < 200_000
    # Loading makes resident only what the file holds: the rows after it are untouched zeros
    loaded = model(buffer_size=200_000)
    loaded.load_replay_buffer(tmp_path / "buffer.bin")
    assert loaded.replay_buffer.pos == rows and not loaded.replay_buffer.observations[rows:].any()


class Hostile:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_hostile_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    (tmp_path / "replay_buffer.pkl").write_bytes(pickle.dumps(Hostile(str(marker))))
    target = model().learn(100)
    before = target.replay_buffer
    with pytest.raises(ValueError, match=r"pickle file.*runs.*allow_pickle=True"):
        target.load_replay_buffer(tmp_path / "replay_buffer.pkl")
    assert not marker.exists() and target.replay_buffer is before
    # A file object too
    with open(tmp_path / "replay_buffer.pkl", "rb") as file, pytest.raises(ValueError, match="pickle file"):
        target.load_replay_buffer(file)
    assert not marker.exists()


def test_pickle_opt_in_by_environment_variable(tmp_path, monkeypatch):
    old = model().learn(100)
    buffer = old.replay_buffer
    with open(tmp_path / "old.pkl", "wb") as file:
        pickle.dump(buffer, file)
    with pytest.raises(ValueError, match=ALLOW_PICKLE_ENV):
        load_recurrent_replay_buffer(tmp_path / "old.pkl")
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    assert_same_batches(buffer, load_recurrent_replay_buffer(tmp_path / "old.pkl"))


def rewrite(source, destination, change):
    """Copy a buffer file, passing each member's bytes (and the parsed metadata) through ``change``."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(destination, "w") as out:
        for name in archive.namelist():
            data = archive.read(name)
            out.writestr(name, change(name, data))


@pytest.mark.parametrize(
    "case,change,message",
    [
        (
            "data changed, zip checksums valid",
            lambda name, data: data[:-4] + bytes(b ^ 1 for b in data[-4:]) if name == "observations.npy" else data,
            "SHA-256",
        ),
        (
            "member shorter than its metadata",
            lambda name, data: data[:-8] if name == "actions.npy" else data,
            r"truncated|header",
        ),
        (
            "unknown format version",
            lambda name, data: json.dumps({**json.loads(data), "version": 99}).encode() if name == BUFFER_METADATA else data,
            "format version 99",
        ),
        (
            "object array",
            lambda name, data: (
                json.dumps(
                    {
                        **json.loads(data),
                        "members": {
                            **json.loads(data)["members"],
                            "rewards": {**json.loads(data)["members"]["rewards"], "dtype": "|O"},
                        },
                    }
                ).encode()
                if name == BUFFER_METADATA
                else data
            ),
            "header",
        ),
    ],
)
def test_damaged_files_are_refused_before_the_buffer_changes(tmp_path, case, change, message):
    source = model().learn(200)
    source.save_replay_buffer(tmp_path / "good.bin")
    rewrite(tmp_path / "good.bin", tmp_path / "bad.bin", change)
    target = model().learn(100)
    before = target.replay_buffer
    with pytest.raises(ValueError, match=message):
        target.load_replay_buffer(tmp_path / "bad.bin")
    assert target.replay_buffer is before


SAVER = """
import sys, numpy as np
from sb3_drqn.common.save_util import save_recurrent_replay_buffer
from sb3_drqn.common.buffers import RecurrentReplayBuffer
from gymnasium import spaces
buffer = RecurrentReplayBuffer(40_000, spaces.Box(0, 255, (1, 84, 84), np.uint8), spaces.Discrete(4), sequence_length=4)
frame = np.full((1, 1, 84, 84), 7, np.uint8)
for _ in range(40_000):
    buffer.add(frame, frame, np.zeros(1), np.zeros(1), np.zeros(1, bool), [{}])
print("saving", flush=True)
while True:
    save_recurrent_replay_buffer(buffer, sys.argv[1])
"""


@pytest.mark.slow
def test_an_interrupted_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / "replay_buffer.pkl"
    previous = model().learn(100)
    previous.save_replay_buffer(path)
    before = path.read_bytes()
    process = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "saving"
    # Killed while its temporary file is being written (280 MB of frames)
    deadline = time.time() + 60
    while not any(name.name.endswith(".tmp") for name in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert path.read_bytes() == before
    target = model()
    target.load_replay_buffer(path)
    assert_same_batches(previous.replay_buffer, target.replay_buffer)


def test_file_objects(tmp_path):
    original = model().learn(200)
    stream = io.BytesIO()
    original.save_replay_buffer(stream)
    stream.seek(0)
    loaded = model()
    loaded.load_replay_buffer(stream)
    assert_same_batches(original.replay_buffer, loaded.replay_buffer)
