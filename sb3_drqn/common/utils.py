from typing import Any

import numpy as np
import torch as th


def first_array(obs: Any) -> Any:
    """
    The array to read the leading (row, time or env) dimensions of observations from.

    :param obs: An observation array or tensor, or a dict of them
    :return: ``obs`` itself, or the first entry of the dict
    """
    return next(iter(obs.values())) if isinstance(obs, dict) else obs


def value_rescale(x: th.Tensor, eps: float = 1e-3) -> th.Tensor:
    """
    R2D2's value-function rescaling ``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x`` (Pohlen et al. 2018), which
    compresses large returns so that one network can fit values of very different scales.

    :param x: Values
    :param eps: The linear term's coefficient (R2D2: 1e-3)
    :return: ``h(x)``
    """
    return th.sign(x) * (th.sqrt(th.abs(x) + 1.0) - 1.0) + eps * x


def inverse_value_rescale(x: th.Tensor, eps: float = 1e-3) -> th.Tensor:
    """
    The exact inverse of :func:`value_rescale`:
    ``h^-1(x) = sign(x) (((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))^2 - 1)``.

    :param x: Rescaled values
    :param eps: The coefficient used by :func:`value_rescale`
    :return: ``h^-1(x)``
    """
    root = (th.sqrt(1.0 + 4.0 * eps * (th.abs(x) + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return th.sign(x) * (root**2 - 1.0)


def is_integer(value: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return (
        isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool) and bool(np.isfinite(value))
    )


def check_argument(valid: bool, name: str, value: Any, expected: str) -> None:
    """
    The one way arguments are checked: raise a ValueError that names the argument, what it must be and what it is.

    :param valid: Whether the value is acceptable
    :param name: The argument's name
    :param value: Its value
    :param expected: What it must be, e.g. ``"an integer >= 1"``
    """
    if not valid:
        raise ValueError(f"{name} must be {expected}, got {value!r}.")


def n_step_targets(
    rewards: th.Tensor, terminations: th.Tensor, mask: th.Tensor, next_q_values: th.Tensor, gamma: float, n_steps: int
) -> th.Tensor:
    """
    n-step targets of every learning step of a batch of windows, all ``(L, batch)`` (``n_steps=1``: the one-step TD
    target). The return of step ``k`` sums the discounted rewards of the valid steps ``k .. k + m - 1``, where ``m``
    is ``n_steps`` or less: it stops after the last valid step of the run that starts at ``k`` (the episode's end,
    the window's end, or the newest stored step), then bootstraps with
    ``gamma ** m * (1 - terminations[k + m - 1]) * next_q_values[k + m - 1]``.

    :param rewards: Rewards of the learning steps
    :param terminations: 1 where the step ends its episode by termination (no bootstrap), else 0
    :param mask: 1 on the valid learning steps, 0 elsewhere
    :param next_q_values: Value of the step after each learning step
    :param gamma: Discount factor
    :param n_steps: Length of the returns
    :return: The targets (meaningless where the mask is 0)
    """

    # ahead[j][k, :, i]: input j at step k + i, zeros past the window (views of one padded copy of the four inputs)
    inputs = th.stack([mask, rewards, terminations, next_q_values])
    padded = th.cat([inputs, inputs.new_zeros((4, n_steps - 1, *rewards.shape[1:]))], dim=1)
    mask_ahead, rewards_ahead, terminations_ahead, next_q_ahead = padded.unfold(1, n_steps, 1)
    # run[k, :, i]: steps k .. k + i are all valid; ends[k, :, i]: and step k + i + 1 is not (the return stops there)
    run = mask_ahead.cumprod(dim=-1)
    ends = run - th.nn.functional.pad(run[..., 1:], (0, 1))
    discounts = rewards.new_tensor([gamma**i for i in range(n_steps + 1)])
    returns = (run * rewards_ahead * discounts[:n_steps]).sum(dim=-1)
    bootstrap = (ends * discounts[1:] * (1.0 - terminations_ahead) * next_q_ahead).sum(dim=-1)
    return returns + bootstrap
