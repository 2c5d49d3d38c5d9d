"""
rl-zoo3 integration: ``--algo drqn`` in the zoo's own, unchanged commands.

rl-zoo3 has no plugin API, so :func:`register` adds ``drqn`` to its tables: ``ALGOS`` (train, enjoy,
record_video), ``HYPERPARAMS_SAMPLER`` and ``HYPERPARAMS_CONVERTER`` (``-optimize``), and makes the zoo read
this package's ``drqn.yml`` when no ``--conf-file`` is given (the zoo looks for ``hyperparams/{algo}.yml``
inside its own package only). It also registers the ``Flickering{Game}NoFrameskip-v4`` env ids.

The import hook installed with the package (the top-level module ``_sb3_drqn_zoo_hook``) calls :func:`register` when
``rl_zoo3`` is imported; scripts that turn the hook off (``SB3_DRQN_NO_ZOO_HOOK=1``) call it themselves,
before the zoo parses its arguments::

    from sb3_drqn.zoo import register

    register()

    from rl_zoo3.train import train

    train()
"""

import functools
import inspect
from pathlib import Path
from typing import Any

ALGO_NAME = "drqn"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def hyperparams_path() -> Path:
    """
    :return: Path of the ``drqn.yml`` hyper-parameter file: the copy inside the installed package, or the
        top-level ``hyperparams/drqn.yml`` of a source checkout (editable install)
    """
    packaged = _PACKAGE_DIR / "hyperparams" / f"{ALGO_NAME}.yml"
    if packaged.is_file():
        return packaged
    return _PACKAGE_DIR.parent / "hyperparams" / f"{ALGO_NAME}.yml"


def _default_config_to_drqn_yml(experiment_manager_class: type) -> None:
    """
    Wrap ``ExperimentManager.__init__`` (once) so that ``algo="drqn"`` without ``config`` uses
    :func:`hyperparams_path`; every other call goes through unchanged.
    """
    init = getattr(experiment_manager_class, "__init__")  # noqa: B009
    if getattr(init, "_sb3_drqn_default_config", False):
        return
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        if bound.arguments.get("algo") == ALGO_NAME and not bound.arguments.get("config"):
            bound.arguments["config"] = str(hyperparams_path())
        init(*bound.args, **bound.kwargs)

    setattr(__init__, "_sb3_drqn_default_config", True)  # noqa: B010
    setattr(experiment_manager_class, "__init__", __init__)  # noqa: B010


def register() -> None:
    """
    Register ``drqn`` with rl-zoo3 (idempotent): the algorithm, its Optuna sampler and converter, its default
    hyper-parameter file, the flickering Atari env ids and the MinAtar ones
    (:func:`~sb3_drqn.common.envs.register_minatar_envs`). Call it before the zoo parses its arguments (its
    ``--algo`` choices are read from ``ALGOS`` then).
    """
    from rl_zoo3 import exp_manager, hyperparams_opt, utils

    from sb3_drqn.common.envs import register_minatar_envs
    from sb3_drqn.common.wrappers import register_flickering_atari_envs
    from sb3_drqn.drqn import RecurrentDQN
    from sb3_drqn.zoo.hyperparams_opt import convert_drqn_params, sample_drqn_params

    utils.ALGOS[ALGO_NAME] = RecurrentDQN
    hyperparams_opt.HYPERPARAMS_SAMPLER[ALGO_NAME] = sample_drqn_params
    hyperparams_opt.HYPERPARAMS_CONVERTER[ALGO_NAME] = convert_drqn_params
    _default_config_to_drqn_yml(exp_manager.ExperimentManager)
    register_flickering_atari_envs()
    register_minatar_envs()


__all__ = ["ALGO_NAME", "hyperparams_path", "register"]
