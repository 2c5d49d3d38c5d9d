"""
The API reference covers the public API: every public class and function of ``sb3_drqn`` has a docstring, and
the documentation site built from ``docs/`` has an entry for each (Sphinx's ``objects.inv`` names it).

The site is read from ``$SB3_DRQN_DOCS_HTML`` when set (CI builds it once, then runs this file), else built here
into a temporary folder when Sphinx is installed (``pip install ".[docs]"``); without either the site checks are
skipped.
"""

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sb3_drqn

ROOT = Path(__file__).resolve().parent.parent
HTML_DIR_VAR = "SB3_DRQN_DOCS_HTML"
# One line of an objects.inv (version 2): name, domain:role, priority, URI, display name
INVENTORY_LINE = re.compile(r"(?x)(?P<name>.+?)\s+(?P<type>\S+:\S+)\s+(?P<priority>-?\d+)\s+(?P<uri>\S*)\s+(?P<display>.+)")


def public_modules() -> list[ModuleType]:
    """Every module of the package without a private (``_``) component in its name."""
    names = ["sb3_drqn"] + [
        info.name
        for info in pkgutil.walk_packages(sb3_drqn.__path__, "sb3_drqn.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [importlib.import_module(name) for name in sorted(names)]


def public_objects() -> dict[str, Any]:
    """
    The public classes and functions: those named by a module's ``__all__``, or, in a module without one, those
    defined there under a name without a leading ``_``; keyed by one qualified name each.
    """
    objects: dict[str, Any] = {}
    for module in public_modules():
        names = getattr(module, "__all__", None)
        if names is None:
            names = [name for name in vars(module) if not name.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(module, "__all__", None) is None and obj.__module__ != module.__name__:
                continue  # imported from elsewhere
            objects.setdefault(f"{module.__name__}.{name}", obj)
    return objects


def test_public_objects_found() -> None:
    names = public_objects()
    # The walk finds the package's public API: a sample from each part
    for expected in (
        "sb3_drqn.RecurrentDQN",
        "sb3_drqn.MlpLstmPolicy",
        "sb3_drqn.common.buffers.RecurrentReplayBuffer",
        "sb3_drqn.common.wrappers.FlickeringWrapper",
        "sb3_drqn.common.envs.CueMemoryEnv",
        "sb3_drqn.common.type_aliases.RecurrentReplayBufferSamples",
        "sb3_drqn.zoo.register",
        "sb3_drqn.zoo.hyperparams_opt.sample_drqn_params",
    ):
        assert expected in names
    assert not any(name.rsplit(".", 1)[-1].startswith("_") for name in names)


@pytest.mark.parametrize("name", sorted(public_objects()))
def test_public_object_has_docstring(name: str) -> None:
    obj = public_objects()[name]
    # The object's own docstring: a class without one would show its base class's text
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    assert doc is not None and doc.strip(), f"{name} has no docstring"


def read_inventory(path: Path) -> list[tuple[str, str]]:
    """``(name, domain:role)`` of every entry of a Sphinx ``objects.inv`` (version 2)."""
    with open(path, "rb") as file_handler:
        header = [file_handler.readline() for _ in range(4)]
        assert header[0].startswith(b"# Sphinx inventory version 2"), header[0]
        assert b"zlib" in header[3], header[3]
        text = zlib.decompress(file_handler.read()).decode()
    entries = []
    for line in text.splitlines():
        match = INVENTORY_LINE.fullmatch(line)
        assert match is not None, line
        entries.append((match["name"], match["type"]))
    return entries


def resolve(name: str) -> Any:
    """The object a dotted name stands for (a module, then attributes), or ``None``."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return None
        return obj
    return None


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get(HTML_DIR_VAR):
        return Path(os.environ[HTML_DIR_VAR])
    pytest.importorskip("sphinx", reason='the docs build needs pip install ".[docs]"')
    pytest.importorskip("myst_parser", reason='the docs build needs pip install ".[docs]"')
    out = tmp_path_factory.mktemp("html")
    # The documented build command: offline, nitpicky, warnings as errors
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(ROOT / "docs"), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_every_public_object_has_an_api_entry(html_dir: Path) -> None:
    entries = read_inventory(html_dir / "objects.inv")
    documented = {id(resolve(name)) for name, kind in entries if kind.startswith("py:") and name.startswith("sb3_drqn")}
    missing = [name for name, obj in public_objects().items() if id(obj) not in documented]
    assert not missing, f"not in the API reference: {missing}"


def test_site_pages(html_dir: Path) -> None:
    # Every page of docs/ was built, the guides included, and the results come from the README
    sources = {path.relative_to(ROOT / "docs").with_suffix(".html") for path in (ROOT / "docs").rglob("*.md")}
    sources = {path for path in sources if path.parts[0] not in ("_build", "images")}
    for page in sources:
        assert (html_dir / page).is_file(), page
    algorithm_page = (html_dir / "modules" / "drqn.html").read_text()
    readme = (ROOT / "README.md").read_text()
    results = readme.split("<!-- results:start -->", 1)[1].split("<!-- results:end -->", 1)[0]
    first_heading = next(line for line in results.splitlines() if line.startswith("### "))
    assert first_heading.removeprefix("### ") in algorithm_page
