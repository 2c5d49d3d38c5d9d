"""Saving and loading what SB3's own save utilities do not cover: the random generators' states, and replay buffers
in a file format without pickle."""

import hashlib
import io
import json
import os
import pathlib
import pickle
import random
import zipfile
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_pkl
from stable_baselines3.common.type_aliases import GymEnv

from sb3_drqn.common.buffers import PrioritizedRecurrentReplayBuffer, RecurrentReplayBuffer
from sb3_drqn.common.sum_tree import SumTree
from sb3_drqn.common.utils import first_array

SelfRandomStateSavingAlgorithm = TypeVar("SelfRandomStateSavingAlgorithm", bound="RandomStateSavingAlgorithm")


def get_rng_state(action_space: spaces.Space) -> dict[str, Any]:
    """
    The states of every random generator training draws from: Python's, NumPy's global one, PyTorch's (and CUDA's)
    and the action space's (random actions).

    :param action_space: The model's action space
    :return: The states, for :func:`set_rng_state`
    """
    rng_state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state(),
        "action_space": action_space.np_random.bit_generator.state,
    }
    if th.cuda.is_available():
        rng_state["torch_cuda"] = th.cuda.get_rng_state_all()
    return rng_state


def set_rng_state(rng_state: dict[str, Any], action_space: spaces.Space) -> None:
    """
    Set the random generators to states from :func:`get_rng_state` (CUDA's only where the same devices exist).

    :param rng_state: The states
    :param action_space: The model's action space
    """
    random.setstate(rng_state["python"])
    np.random.set_state(rng_state["numpy"])
    th.set_rng_state(rng_state["torch"])
    action_space.np_random.bit_generator.state = rng_state["action_space"]
    if "torch_cuda" in rng_state and th.cuda.is_available() and len(rng_state["torch_cuda"]) == th.cuda.device_count():
        th.cuda.set_rng_state_all(rng_state["torch_cuda"])


# The replay-buffer file: a ZIP archive (stored, not compressed) of .npy members, read with allow_pickle=False, and
# a JSON member that describes them (format version, spaces, settings, positions, each member's SHA-256)
BUFFER_FORMAT = "sb3-drqn-replay-buffer"
BUFFER_FORMAT_VERSION = 1
BUFFER_METADATA = "sb3_drqn_replay_buffer.json"
_READ_CHUNK = 16 * 2**20
# Opting in to unpickling buffer files of sb3-drqn 0.1.0 (or any pickle) for zoo users, who cannot pass arguments
ALLOW_PICKLE_ENV = "SB3_DRQN_ALLOW_PICKLE_BUFFER"
# Arrays with one row per buffer row (the others are saved whole)
_ROW_ARRAYS = ("observations", "actions", "rewards", "dones", "timeouts", "episode_steps", "final_observation_slots")
_NOT_SAVED = (
    *("observation_space", "action_space", "device", "obs_shape", "action_dim"),  # from the spaces
    *("observations", "final_observations", "recurrent_states", "priorities"),  # saved in their own way
)


def _space_to_json(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Box):
        return dict(
            type="Box", shape=list(space.shape), dtype=str(space.dtype), low=space.low.tolist(), high=space.high.tolist()
        )
    if isinstance(space, spaces.Discrete):
        return dict(type="Discrete", n=int(space.n), start=int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        return dict(type="MultiDiscrete", nvec=space.nvec.tolist(), dtype=str(space.dtype))
    if isinstance(space, spaces.MultiBinary):
        return dict(type="MultiBinary", n=np.asarray(space.n).tolist())
    if isinstance(space, spaces.Dict):
        return dict(type="Dict", spaces={key: _space_to_json(sub) for key, sub in space.spaces.items()})
    raise ValueError(f"Cannot save a replay buffer with the space {space} (Box, Discrete, MultiDiscrete, MultiBinary, Dict).")


def _space_from_json(data: dict[str, Any]) -> spaces.Space:
    kind = data["type"]
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        return spaces.Box(np.array(data["low"], dtype=dtype), np.array(data["high"], dtype=dtype), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(data["n"], start=data["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(data["nvec"], dtype=data["dtype"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({key: _space_from_json(sub) for key, sub in data["spaces"].items()})
    raise ValueError(f"unknown space type {kind!r}")


def _json_value(name: str, value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list) and all(isinstance(item, int | np.integer) for item in value):
        return [int(item) for item in value]
    raise ValueError(f"Cannot save the replay buffer's attribute {name!r} ({type(value).__name__}).")


def _buffer_members(buffer: RecurrentReplayBuffer) -> dict[str, np.ndarray]:
    """The arrays a buffer file holds: the rows written so far, the live final observations (oldest first), the
    stored states of the written rows, and the other arrays whole."""
    n_rows = buffer.buffer_size if buffer.full else buffer.pos
    members: dict[str, np.ndarray] = {}
    for name, value in vars(buffer).items():
        if isinstance(value, np.ndarray) and name not in _NOT_SAVED:
            members[name] = value[:n_rows] if name in _ROW_ARRAYS else value
    live = buffer.live_final_observation_slots()
    for key, array in buffer.observations.items() if isinstance(buffer.observations, dict) else [("", buffer.observations)]:
        members[f"observations{'/' + key if key else ''}"] = array[:n_rows]
    finals = buffer.final_observations
    for key, array in finals.items() if isinstance(finals, dict) else [("", finals)]:
        members[f"final_observations{'/' + key if key else ''}"] = array[live]
    # Slots renumbered as the live final observations are saved: in order, from 0
    capacity = len(first_array(finals))
    slots = (buffer.final_observation_slots[:n_rows].astype(np.int64) - buffer.first_live_final_slot()) % capacity
    members["final_observation_slots"] = slots.astype(buffer.final_observation_slots.dtype)
    if buffer.recurrent_states is not None:
        members["recurrent_states"] = buffer.recurrent_states[: -(-n_rows // buffer.state_stride)]
    priorities = getattr(buffer, "priorities", None)
    if priorities is not None:
        members["priorities/nodes"] = priorities.nodes
    return members


def save_recurrent_replay_buffer(buffer: RecurrentReplayBuffer, path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    Write a replay buffer without pickle: a ZIP archive of ``.npy`` members (the rows written so far, the live final
    observations, the stored states, the priorities), each with its SHA-256 in a JSON member that also holds the
    format version, the spaces, the settings and the positions. A path is written to a temporary file in the same
    folder, then renamed over the target: a save interrupted at any point leaves the previous file as it was.

    :param buffer: The replay buffer
    :param path: Where to write it (any name: files are recognised by their content), or a writable file object
    """
    if not isinstance(path, str | pathlib.Path):
        _write_buffer(buffer, path)
        return
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            _write_buffer(buffer, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_buffer(buffer: RecurrentReplayBuffer, file: Any) -> None:
    metadata: dict[str, Any] = dict(
        format=BUFFER_FORMAT,
        version=BUFFER_FORMAT_VERSION,
        buffer_class=type(buffer).__name__,
        observation_space=_space_to_json(buffer.observation_space),
        action_space=_space_to_json(buffer.action_space),
        attributes={},
        members={},
    )
    for name, value in vars(buffer).items():
        if not isinstance(value, np.ndarray | dict | SumTree) and name not in _NOT_SAVED:
            metadata["attributes"][name] = _json_value(name, value)
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in _buffer_members(buffer).items():
            array = np.ascontiguousarray(array)
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
            sha256 = hashlib.sha256(array.reshape(-1).view(np.uint8).data).hexdigest()
            metadata["members"][name] = dict(shape=list(array.shape), dtype=array.dtype.str, sha256=sha256)
        archive.writestr(BUFFER_METADATA, json.dumps(metadata))


def _read_member(archive: zipfile.ZipFile, name: str, expected: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
    """
    Read one ``.npy`` member (never unpickling) and check its header and the SHA-256 of its data against the
    metadata. With ``out`` (a contiguous array of that shape and type, e.g. the buffer's rows), the data is read
    straight into it, so loading holds no second copy.
    """
    shape, dtype = tuple(expected["shape"]), np.dtype(expected["dtype"])
    with archive.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        header = read_header(member)
        if header != (shape, False, dtype) or dtype.hasobject:
            raise ValueError(f"member {name!r}: its header {header} differs from the metadata {expected}")
        if out is None:
            out = np.empty(shape, dtype=dtype)
        if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(f"member {name!r}: {shape} / {dtype.str} in the file, {out.shape} / {out.dtype.str} expected")
        view, offset = out.reshape(-1).view(np.uint8).data, 0
        while offset < out.nbytes:  # in chunks: ZipExtFile.readinto would read the whole member into a copy first
            chunk = member.read(min(_READ_CHUNK, out.nbytes - offset))
            if not chunk:
                break
            view[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
        if offset != out.nbytes or member.read(1):
            raise ValueError(f"member {name!r} is truncated or longer than its metadata says")
    if hashlib.sha256(view).hexdigest() != expected["sha256"]:
        raise ValueError(f"member {name!r}: its SHA-256 does not match the metadata (the file is damaged)")
    return out


def _read_buffer(archive: zipfile.ZipFile, metadata: dict[str, Any], device: th.device | str) -> RecurrentReplayBuffer:
    if metadata.get("format") != BUFFER_FORMAT:
        raise ValueError("its metadata does not describe an sb3-drqn replay buffer")
    if metadata.get("version") != BUFFER_FORMAT_VERSION:
        raise ValueError(
            f"format version {metadata.get('version')!r}; this sb3-drqn reads version {BUFFER_FORMAT_VERSION} (a newer file?)"
        )
    classes = {cls.__name__: cls for cls in (RecurrentReplayBuffer, PrioritizedRecurrentReplayBuffer)}
    buffer_class = classes[metadata["buffer_class"]]
    attributes = metadata["attributes"]
    settings = [
        "buffer_size",
        "n_envs",
        "handle_timeout_termination",
        "sequence_length",
        "burn_in",
        "state_stride",
        "state_dtype",
    ]
    kwargs = {name: attributes[name] for name in settings}
    kwargs["buffer_size"] *= kwargs["n_envs"]  # the constructor takes the total over the envs
    if buffer_class is PrioritizedRecurrentReplayBuffer:
        kwargs.update({name: attributes[name] for name in ("priority_exponent", "priority_eta", "min_priority")})
    shape = attributes["recurrent_state_shape"]
    buffer = buffer_class(
        observation_space=_space_from_json(metadata["observation_space"]),
        action_space=_space_from_json(metadata["action_space"]),
        device=device,
        recurrent_state_shape=None if shape is None else tuple(shape),
        **kwargs,
    )
    for name, value in attributes.items():
        setattr(buffer, name, tuple(value) if name == "recurrent_state_shape" and value else value)
    small = {}
    for name, expected in metadata["members"].items():
        field, _, key = name.partition("/")
        target = getattr(buffer, field)
        if field == "observations":
            target = target[key] if key else target
        if field in (*_ROW_ARRAYS, "recurrent_states") or (field == "priorities" and key == "nodes"):
            # Straight into the buffer's own rows: only what the file holds becomes resident
            rows = target.nodes if field == "priorities" else target[: expected["shape"][0]]
            _read_member(archive, name, expected, out=rows)
        else:
            small[name] = _read_member(archive, name, expected)
    for name, array in small.items():
        if not name.startswith("final_observations"):
            setattr(buffer, name, array)
    dict_obs = isinstance(buffer.observations, dict)
    buffer.load_final_observations(
        {key: small[f"final_observations/{key}"] for key in buffer.observations} if dict_obs else small["final_observations"]
    )
    return buffer


def load_recurrent_replay_buffer(
    path: str | pathlib.Path | io.BufferedIOBase,
    verbose: int = 0,
    allow_pickle: bool = False,
    device: th.device | str = "cpu",
) -> RecurrentReplayBuffer:
    """
    Read a replay buffer written by :func:`save_recurrent_replay_buffer` (recognised by its content, whatever the
    file's name): every member is checked against the SHA-256 in the metadata and read with ``allow_pickle=False``.
    A pickle file (sb3-drqn 0.1.0's format, SB3's) is unpickled only with ``allow_pickle=True`` or the environment
    variable ``SB3_DRQN_ALLOW_PICKLE_BUFFER=1``: unpickling runs whatever code the file carries, so do it only for
    files you made or trust. Any other problem raises a ValueError.

    :param path: The file, or a readable file object
    :param verbose: Verbosity level (SB3's ``load_from_pkl``, for pickle files)
    :param allow_pickle: Unpickle pickle files (unsafe for files from elsewhere)
    :param device: The device the buffer's samples go to
    :return: The replay buffer
    """
    allow_pickle = allow_pickle or os.environ.get(ALLOW_PICKLE_ENV, "") not in ("", "0")
    try:
        if isinstance(path, str | pathlib.Path):
            with open(path, "rb") as file:
                head = file.read(4)
        else:
            head = path.read(4)
            path.seek(-len(head), io.SEEK_CUR)
    except OSError as error:
        raise ValueError(f"Could not read a replay buffer from {path!r}: {error}") from error
    if head[:1] == b"\x80":
        if not allow_pickle:
            raise ValueError(
                f"{path!r} is a pickle file (the replay-buffer format of sb3-drqn 0.1.0 and of SB3): unpickling runs "
                "whatever code the file carries, so it is not read by default. If you made this file or trust it, "
                f"pass allow_pickle=True (or set the environment variable {ALLOW_PICKLE_ENV}=1, e.g. for the zoo), then "
                "save it again in the current format."
            )
        try:
            buffer = load_from_pkl(path, verbose)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as error:
            raise ValueError(f"Could not read a replay buffer from {path!r}: {error}") from error
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                metadata = json.loads(archive.read(BUFFER_METADATA))
                buffer = _read_buffer(archive, metadata, device)
        except (zipfile.BadZipFile, KeyError, EOFError, OSError, TypeError, ValueError, json.JSONDecodeError) as error:
            raise ValueError(f"Could not read a replay buffer from {path!r}: {error}") from error
    if not isinstance(buffer, RecurrentReplayBuffer):
        raise ValueError(
            f"The replay buffer in {path!r} is a {type(buffer).__name__}, not a RecurrentReplayBuffer "
            "(saved by another algorithm?)."
        )
    return buffer


class RandomStateSavingAlgorithm(BaseAlgorithm):
    """
    An SB3 algorithm whose ``save`` also writes the states of the random generators training draws from, which
    ``load`` restores: with ``save_replay_buffer`` and ``load_replay_buffer``, a resumed run then draws the same
    batches and random actions as an uninterrupted one (the environment's own state aside). Put it before the
    SB3 base class: ``class RecurrentDQN(RandomStateSavingAlgorithm, OffPolicyAlgorithm)``.
    """

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save all the attributes of the object and the model parameters in a zip-file, with the random generators'
        states (:func:`get_rng_state`).

        :param path: path to the file where the rl agent should be saved
        :param exclude: name of parameters that should be excluded in addition to the default ones
        :param include: name of parameters that might be excluded but should be included anyway
        """
        self._saved_rng_state = get_rng_state(self.action_space)
        try:
            super().save(path, exclude=exclude, include=include)
        finally:
            del self._saved_rng_state

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfRandomStateSavingAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfRandomStateSavingAlgorithm:
        """
        Load the model from a zip-file (SB3's ``BaseAlgorithm.load``), then set the random generators to the states
        saved with it, unless a new ``seed`` is given in ``kwargs`` (the generators are then seeded with it) or the
        file has none (saved by an earlier version).

        :param path: path to the file (or a file-like) where to load the agent from
        :param env: the new environment to run the loaded model on
            (can be None if you only need prediction from a trained model) has priority over any saved environment
        :param device: Device on which the code should run.
        :param custom_objects: Dictionary of objects to replace upon loading.
        :param print_system_info: Whether to print system info from the saved model and the current system info
        :param force_reset: Force call to ``reset()`` before training to avoid unexpected behavior.
        :param kwargs: extra arguments to change the model when loading
        :return: new model instance with loaded parameters
        """
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        rng_state = model.__dict__.pop("_saved_rng_state", None)
        if rng_state is not None and kwargs.get("seed") is None:
            set_rng_state(rng_state, model.action_space)
        return model


class ReplayBufferFileAlgorithm(BaseAlgorithm):
    """
    An SB3 off-policy algorithm whose replay buffer (a :class:`~sb3_drqn.common.buffers.RecurrentReplayBuffer`) is
    saved in sb3-drqn's format without pickle, and loaded only if it fits the model: the subclass says what the
    buffer's settings must be (``_replay_buffer_settings``, the buffer's constructor arguments).
    """

    replay_buffer: RecurrentReplayBuffer | None

    def _replay_buffer_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Save the replay buffer without pickle (:func:`~sb3_drqn.common.save_util.save_recurrent_replay_buffer`):
        only the rows written so far, checksummed; written to a temporary file, then renamed over ``path``.

        :param path: Where to save it (any name, e.g. the zoo's ``replay_buffer.pkl``), or a writable file object
        """
        assert self.replay_buffer is not None, "The replay buffer is not defined"
        save_recurrent_replay_buffer(self.replay_buffer, path)

    def load_replay_buffer(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        truncate_last_traj: bool = True,
        allow_pickle: bool = False,
    ) -> None:
        """
        Load a replay buffer saved by :meth:`save_replay_buffer`. The file is checked before anything changes:
        a file that cannot be read, or a buffer that does not fit this model, raises a ValueError and the
        current buffer stays in place.

        :param path: The file (recognised by its content, whatever its name), or a readable file object
        :param truncate_last_traj: Unused (only meaningful for ``HerReplayBuffer``); the env is reset when
            training starts again after loading a model, and the buffer keeps the last episode's steps apart.
        :param allow_pickle: Also read pickle files (sb3-drqn 0.1.0's format): unpickling runs any code the file
            carries, so only for files you trust (the environment variable ``SB3_DRQN_ALLOW_PICKLE_BUFFER=1`` does
            the same, e.g. for the zoo's ``-i``)
        """
        buffer = load_recurrent_replay_buffer(path, self.verbose, allow_pickle=allow_pickle, device=self.device)
        problems = buffer.mismatches(self._replay_buffer_settings())
        prioritized = isinstance(self.replay_buffer, PrioritizedRecurrentReplayBuffer)
        if isinstance(buffer, PrioritizedRecurrentReplayBuffer) != prioritized:
            problems.append(f"it is a {type(buffer).__name__} but the model has prioritized_replay={prioritized}")
        if problems:
            raise ValueError(f"The replay buffer in {path!r} does not fit this model: " + "; ".join(problems) + ".")
        buffer.device = self.device
        self.replay_buffer = buffer
