"""Saving and loading what SB3's own save utilities do not cover: the random generators' states and replay buffers."""

import io
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

from sb3_drqn.common.buffers import RecurrentReplayBuffer

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


def load_recurrent_replay_buffer(path: str | pathlib.Path | io.BufferedIOBase, verbose: int = 0) -> RecurrentReplayBuffer:
    """
    Read a replay buffer written by ``save_replay_buffer``; a file that cannot be read, or that holds something
    else, raises a ValueError.

    :param path: The file, or a file-like object
    :param verbose: Verbosity level (SB3's ``load_from_pkl``)
    :return: The replay buffer
    """
    try:
        buffer = load_from_pkl(path, verbose)
    except (
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        AttributeError,
        ImportError,
        IndexError,
        ValueError,
    ) as error:
        # What unpickling a damaged or foreign file raises
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
