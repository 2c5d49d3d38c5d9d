"""
Automatic registration of ``drqn`` with rl-zoo3, armed at interpreter start.

The wheel installs this file as the top-level module ``_sb3_drqn_zoo_hook``, not inside ``sb3_drqn``.

rl-zoo3 has no plugin API and computes ``--algo``'s choices from ``ALGOS`` when its scripts are imported, so
``drqn`` must be registered as soon as ``rl_zoo3`` is imported. The wheel installs ``sb3_drqn_zoo.pth`` at
the top of site-packages; its one line imports this module (top-level, so that nothing of ``sb3_drqn``,
torch or SB3 is imported at start) and calls :func:`install`. That only puts a small finder at the front of
``sys.meta_path``: when ``rl_zoo3`` is first imported, its loader is wrapped so that, once the package has
run, :func:`sb3_drqn.zoo.register` is called and the finder removes itself. Nothing else happens in
interpreters that never import ``rl_zoo3``.

It is pure standard library and never raises: a failed registration only warns. Set the environment
variable ``SB3_DRQN_NO_ZOO_HOOK=1`` to disable it (then call ``sb3_drqn.zoo.register()`` yourself).
"""

import os
import sys
from types import ModuleType
from typing import Any

DISABLE_ENV_VAR = "SB3_DRQN_NO_ZOO_HOOK"
TARGET_MODULE = "rl_zoo3"


def is_disabled() -> bool:
    """
    :return: Whether the hook is turned off: ``SB3_DRQN_NO_ZOO_HOOK`` set to anything but ``""``, ``0``,
        ``false``, ``no`` or ``off``
    """
    return os.environ.get(DISABLE_ENV_VAR, "").strip().lower() not in ("", "0", "false", "no", "off")


def _register_with_zoo() -> None:
    try:
        from sb3_drqn.zoo import register

        register()
    except Exception as error:
        try:
            import warnings

            warnings.warn(
                f"sb3_drqn could not register 'drqn' with rl_zoo3 ({error!r}); "
                "call sb3_drqn.zoo.register() yourself to see the full error.",
                stacklevel=2,
            )
        except Exception:
            pass


class _RegisteringLoader:
    """Wraps rl_zoo3's loader: runs the package, then registers drqn. Everything else is delegated."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # rl_zoo3's own errors propagate as usual (above); only a registration failure is swallowed
        _register_with_zoo()
        _uninstall()

    def __getattr__(self, name: str) -> Any:
        # get_resource_reader, get_source, is_package, ...
        return getattr(self._loader, name)


class ZooImportHook:
    """``sys.meta_path`` finder that only acts on the first import of ``rl_zoo3``."""

    _sb3_drqn_zoo_hook = True

    def __init__(self) -> None:
        self.fired = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != TARGET_MODULE or self.fired:
            return None
        # Fires once: later imports (e.g. after the module is deleted) are not wrapped again
        self.fired = True
        try:
            for finder in sys.meta_path:
                find_spec = getattr(finder, "find_spec", None)
                if finder is self or find_spec is None:
                    continue
                spec = find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _RegisteringLoader(spec.loader)
            return spec
        except Exception:
            # Let the regular import machinery do its work (and report its own errors)
            return None


def _uninstall() -> None:
    try:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not getattr(finder, "_sb3_drqn_zoo_hook", False)]
    except Exception:
        pass


def install() -> bool:
    """
    Arm the hook (idempotent). If ``rl_zoo3`` is already imported, register right away instead.

    :return: Whether the hook is armed or registration was done
    """
    try:
        if is_disabled():
            return False
        if TARGET_MODULE in sys.modules:
            _register_with_zoo()
            return True
        if not any(getattr(finder, "_sb3_drqn_zoo_hook", False) for finder in sys.meta_path):
            sys.meta_path.insert(0, ZooImportHook())  # type: ignore[arg-type]
        return True
    except Exception:
        return False
