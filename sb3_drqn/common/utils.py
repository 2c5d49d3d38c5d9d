import torch as th


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
