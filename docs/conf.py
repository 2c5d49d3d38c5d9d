"""
Sphinx configuration of the sb3-drqn documentation (MyST Markdown pages, API reference from the docstrings).

Build it, offline, with warnings as errors and broken references failing the build::

    pip install ".[docs]"
    sphinx-build -W --keep-going -n -b html docs docs/_build/html
"""

import datetime
import inspect
import os
import sys
from typing import Any

from sphinx.util.nodes import make_refnode

# The checkout's package comes first, so that the checkout is what is documented, installed or not
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

with open(os.path.join(os.path.dirname(__file__), "..", "sb3_drqn", "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

# -- Project information -----------------------------------------------------

project = "sb3-drqn"
_year = datetime.date.today().year
copyright = f"2026{f'-{_year}' if _year > 2026 else ''}, sb3-drqn developers"
author = "sb3-drqn developers"
version = __version__
release = __version__

# -- General configuration ---------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
language = "en"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Every reference must resolve: a broken internal link or an unknown cross-reference fails the build (-n -W)
nitpicky = True

# MyST: anchors for headings down to ### so that pages can link to sections ("page.md#section")
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "substitution"]
# {{ version }} in the pages: the one copy of the version is sb3_drqn/version.txt
myst_substitutions = {"version": __version__}

# -- autodoc -----------------------------------------------------------------

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": True}
autosummary_generate = False

# -- External types ----------------------------------------------------------
# The build is offline (no intersphinx), so types of other packages and of the standard library have no page
# to link to. Each one that our signatures, base classes or inherited docstrings name is listed here by its
# exact name, so that any other unresolved reference (one of ours, misspelt or moved) still fails the build.
_EXTERNAL = {
    # Python's standard library
    "py:class": [
        "collections.abc.Callable",
        "collections.abc.Iterable",
        "collections.abc.Iterator",
        "io.BufferedIOBase",
        "pathlib.Path",
        # NumPy
        "numpy.ndarray",
        "numpy.integer",
        "numpy.random._generator.Generator",
        # PyTorch
        "torch.Tensor",
        "torch.device",
        "torch.nn.Module",
        "torch.nn.modules.module.Module",
        "torch.optim.optimizer.Optimizer",
        # Gymnasium
        "gymnasium.core.Env",
        "gymnasium.core.Wrapper",
        "gymnasium.core.ObservationWrapper",
        "gymnasium.spaces.space.Space",
        "gymnasium.spaces.dict.Dict",
        "gymnasium.spaces.discrete.Discrete",
        "gymnasium.spaces.box.Box",
        # Stable-Baselines3 (and the short name its own docstrings use)
        "stable_baselines3.common.atari_wrappers.AtariWrapper",
        "stable_baselines3.common.base_class.BaseAlgorithm",
        "stable_baselines3.common.torch_layers.FlattenExtractor",
        "stable_baselines3.common.torch_layers.NatureCNN",
        "stable_baselines3.common.torch_layers.CombinedExtractor",
        "stable_baselines3.common.buffers.ReplayBuffer",
        "stable_baselines3.common.callbacks.BaseCallback",
        "stable_baselines3.common.logger.Logger",
        "stable_baselines3.common.noise.ActionNoise",
        "stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm",
        "stable_baselines3.common.policies.BasePolicy",
        "stable_baselines3.common.torch_layers.BaseFeaturesExtractor",
        "stable_baselines3.common.type_aliases.RolloutReturn",
        "stable_baselines3.common.type_aliases.TrainFreq",
        "stable_baselines3.common.vec_env.base_vec_env.VecEnv",
        "stable_baselines3.common.vec_env.vec_normalize.VecNormalize",
        "VecEnv",
        # Optuna
        "optuna.trial._trial.Trial",
    ],
    "py:func": [
        "gymnasium.utils.env_checker.check_env",
        "rl_zoo3.hyperparams_opt.convert_offpolicy_params",
    ],
}
nitpick_ignore = [(role, name) for role, names in _EXTERNAL.items() for name in names]
# SB3's convention for the type of ``self`` (``SelfRecurrentDQN = TypeVar(..., bound=RecurrentDQN)``): a TypeVar
# in signatures, not an object with a page of its own
nitpick_ignore_regex = [("py:class", r"sb3_drqn(\.\w+)*\.Self\w+")]


def _resolve_short_names(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """
    Resolve a bare name (``:class:`RecurrentDQN```, ``:meth:`save_replay_buffer```) that our docstrings use for
    one of this package's own objects documented on another page or under another module path: it resolves
    when exactly one documented ``sb3_drqn`` object has that last name component, and stays a warning (an
    error with ``-W``) otherwise.
    """
    if node.get("refdomain") != "py" or node.get("reftype") not in ("class", "meth", "func", "attr", "obj", "data"):
        return None
    target = node["reftarget"]
    if "." in target:
        return None
    domain = env.get_domain("py")
    matches = [
        (name, obj)
        for name, obj in domain.objects.items()
        if name.startswith("sb3_drqn.") and name.rsplit(".", 1)[-1] == target and not obj.aliased
    ]
    if len(matches) != 1:
        return None
    name, obj = matches[0]
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, name)


# Packages whose methods our classes override without a docstring of their own: gymnasium's ``reset``/``step``/
# ``observation`` and torch's ``forward`` keep their meaning, documented by those packages
_FRAMEWORKS = ("gymnasium.", "torch.")


def _skip_framework_overrides(app: Any, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """
    Leave out of the reference a method that only overrides a gymnasium or torch method without a docstring of
    its own (its inherited docstring describes the framework's contract, in that package's own markup).
    """
    function = getattr(obj, "__func__", obj)
    qualname = getattr(function, "__qualname__", "")
    if skip or what != "class" or not inspect.isfunction(function) or function.__doc__ or qualname.count(".") != 1:
        return None
    owner = getattr(sys.modules.get(function.__module__), qualname.split(".")[0], None)
    for base in getattr(owner, "__mro__", ())[1:]:
        inherited = base.__dict__.get(name)
        if inherited is not None and getattr(inherited, "__doc__", None):
            return True if base.__module__.startswith(_FRAMEWORKS) else None
    return None


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_short_names)
    app.connect("autodoc-skip-member", _skip_framework_overrides)


# -- HTML output -------------------------------------------------------------

html_theme = "sphinx_rtd_theme"
html_title = f"sb3-drqn {__version__}"
html_static_path: list[str] = []
