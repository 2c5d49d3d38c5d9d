"""The checks of RecurrentDQN's own hyper-parameters (the replay buffer and the policy check theirs)."""

from collections.abc import Callable
from typing import Any

from sb3_drqn.common.buffers import PrioritizedRecurrentReplayBuffer, RecurrentReplayBuffer
from sb3_drqn.common.utils import check_argument, is_finite_number, is_integer

RECURRENT_INITS = ("stored", "zero")


def _is_fraction(value: Any) -> bool:
    return is_finite_number(value) and 0 <= value <= 1


def _is_train_freq(value: Any) -> bool:
    frequency, unit = value if isinstance(value, tuple | list) and len(value) == 2 else (value, "step")
    return is_integer(frequency) and frequency >= 1 and unit in ("step", "episode")


# The algorithm's own hyper-parameters: name -> (is the value valid, what it must be)
HYPERPARAMETER_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (lambda v: is_integer(v) and v >= 1, "an integer >= 1 (sequences)"),
    "n_steps": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "target_update_interval": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "learning_starts": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "gradient_steps": (lambda v: is_integer(v) and v >= -1, "an integer >= 0, or -1 (as many as env steps)"),
    "stats_window_size": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "gamma": (_is_fraction, "in [0, 1]"),
    "exploration_fraction": (_is_fraction, "in [0, 1]"),
    "exploration_initial_eps": (_is_fraction, "in [0, 1]"),
    "exploration_final_eps": (_is_fraction, "in [0, 1]"),
    "recurrent_init": (lambda v: v in RECURRENT_INITS, f"one of {RECURRENT_INITS}"),
    "replay_buffer_class": (
        lambda v: isinstance(v, type) and issubclass(v, RecurrentReplayBuffer),
        "None or a subclass of RecurrentReplayBuffer",
    ),
    "tau": (lambda v: is_finite_number(v) and 0 < v <= 1, "in (0, 1]"),
    "learning_rate": (lambda v: callable(v) or (is_finite_number(v) and v > 0), "> 0 or a schedule"),
    "importance_sampling_exponent": (lambda v: callable(v) or _is_fraction(v), "in [0, 1] or a schedule"),
    "importance_sampling_exponent_final": (lambda v: v is None or _is_fraction(v), "None or in [0, 1]"),
    "max_grad_norm": (lambda v: is_finite_number(v) and v > 0, "> 0"),
    "train_freq": (_is_train_freq, 'an integer >= 1 or a tuple (frequency >= 1, "step" or "episode")'),
}


def check_hyperparameters(settings: dict[str, Any]) -> None:
    """
    Raise a ValueError naming the first invalid hyper-parameter.

    :param settings: RecurrentDQN's constructor arguments, by name (``replay_buffer_class`` resolved)
    """
    for name, (valid, expected) in HYPERPARAMETER_CHECKS.items():
        check_argument(valid(settings[name]), name, settings[name], expected)
    buffer_class = settings["replay_buffer_class"]
    if settings["prioritized_replay"] and not issubclass(buffer_class, PrioritizedRecurrentReplayBuffer):
        raise ValueError(
            "replay_buffer_class must be a subclass of PrioritizedRecurrentReplayBuffer with prioritized_replay=True, "
            f"got {buffer_class!r}."
        )
