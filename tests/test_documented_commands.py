"""
Every shell command in README.md and the documentation runs as written.

The commands are the lines of the fenced ``bash``/``sh``/``shell``/``console`` blocks of README.md and of every
Markdown page under ``docs/`` (and the files they include with MyST's ``{include}``), continuation lines joined
and comments dropped. They run in order, in one scratch copy of the repository (so that a command finds what an
earlier one wrote, and committed results are never overwritten), each with a budget the test adds: a few
hundred env steps for the zoo's commands (``-n``, evaluation and checkpoint frequencies, two trials of one
evaluation for ``-optimize``, tiny replay buffers), ``--smoke`` for the scripts under ``benchmarks/`` and
``examples/`` (their shared convention). Only the commands named in :data:`EXEMPT` do not run, each with its
reason.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Regular expression (searched in the command) -> why that command does not run here
EXEMPT = {
    r"^pip install ": "installs packages: the test runs in the environment it was given",
    r"^python -m venv ": "creates a virtual environment (set-up): the test runs in the environment it was given",
    r"^git clone ": "downloads the repository: the test runs in a copy of this checkout instead",
    r"^cd sb3-drqn$": "enters the clone made by `git clone` (exempt): the scratch copy is that clone",
    r"postgresql(\+\w+)?://user:pass@host/": "a placeholder for a remote database; tests/test_zoo_storage.py runs two "
    "workers on a real PostgreSQL server",
    r"^(python -m )?pytest( |$)": "runs tests of this suite, which CI runs itself (.ci/run: `pytest tests`)",
    r"^(ruff|mypy|sphinx-build)( |$)": "a check that .ci/run runs itself, the same command",
}

# Budgets: a tiny replay buffer and early learning for the zoo's off-policy algorithms
OFF_POLICY_ALGOS = ("drqn", "dqn", "qrdqn")
TINY_PARAMS = ("learning_starts:50", "buffer_size:2000")
TINY_ATARI_PARAMS = ("learning_starts:20", "buffer_size:300", "batch_size:2")
TINY_DRQN_ATARI_PARAMS = ("sequence_length:4", "burn_in:2")
COMMAND_TIMEOUT = 300


@dataclass
class Command:
    """A documented command: where it is written, its text (continuations joined, comment dropped), its words."""

    source: str
    text: str
    words: list[str]


def documentation_files() -> list[Path]:
    """README.md, then the Markdown pages under docs/ (not the built site), in a fixed order."""
    pages = sorted(path for path in (REPO / "docs").rglob("*.md") if "_build" not in path.relative_to(REPO).parts)
    return [REPO / "README.md", *pages]


FENCE = re.compile(r"^[ \t]*```(?P<lang>[^\n`]*)\n(?P<body>.*?)^[ \t]*```[ \t]*$", re.S | re.M)


def block_commands(body: str, lang: str) -> list[str]:
    """The commands of one fenced block: ``$ `` lines for ``console``, every non-comment line otherwise."""
    lines = body.splitlines()
    if lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    # A backslash at the end of a line continues the command (inside quotes too, as in bash)
    joined = re.sub(r"\\\n", "", "\n".join(lines))
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def commands_of(path: Path, seen: set[Path]) -> list[Command]:
    seen.add(path)
    commands = []
    text = path.read_text()
    for match in FENCE.finditer(text):
        lang = match["lang"].strip()
        line = text.count("\n", 0, match.start()) + 1
        source = f"{path.relative_to(REPO)}:{line}"
        if lang.startswith("{include}"):
            included = (path.parent / lang.removeprefix("{include}").strip()).resolve()
            if included not in seen and included.suffix == ".md" and included.is_file():
                commands += commands_of(included, seen)
        elif lang in ("bash", "sh", "shell", "console"):
            for command in block_commands(match["body"], lang):
                # shlex drops a trailing comment; the words are what the shell would pass
                commands.append(
                    Command(source, shlex.join(shlex.split(command, comments=True)), shlex.split(command, comments=True))
                )
    return commands


def documented_commands() -> list[Command]:
    seen: set[Path] = set()
    commands = []
    for path in documentation_files():
        if path not in seen:
            commands += commands_of(path, seen)
    return commands


def exemption(command: Command) -> str | None:
    for pattern, reason in EXEMPT.items():
        if re.search(pattern, command.text):
            return reason
    return None


# Budgets


def option_index(words: list[str], *names: str) -> int | None:
    for index, word in enumerate(words):
        if word in names:
            return index
    return None


def set_option(words: list[str], names: tuple[str, ...], value: str, add: bool = True) -> None:
    """Give the option ``names`` (its first name when absent and ``add``) the value ``value``."""
    index = option_index(words, *names)
    if index is not None:
        words[index + 1] = value
    elif add:
        words += [names[0], value]


def add_params(words: list[str], params: tuple[str, ...]) -> None:
    """Append ``params`` to ``-params``/``--hyperparams`` (after the documented values: ours win), or add it."""
    index = option_index(words, "-params", "--hyperparams")
    if index is None:
        words += ["-params", *params]
        return
    end = index + 1
    while end < len(words) and not words[end].startswith("-"):
        end += 1
    words[end:end] = params


def zoo_budget(script: str, words: list[str]) -> list[str]:
    """The zoo's train / enjoy / record_video arguments with a budget of a few hundred steps."""
    words = list(words)
    env_index = option_index(words, "--env")
    env_id = words[env_index + 1] if env_index is not None else "CartPole-v1"
    algo_index = option_index(words, "--algo")
    algo = words[algo_index + 1] if algo_index is not None else ""
    atari = "NoFrameskip" in env_id
    if script == "train":
        set_option(words, ("-n", "--n-timesteps"), "60" if atari else "200")
        set_option(words, ("--num-threads",), "1")
        set_option(words, ("--eval-freq",), "100", add=False)
        set_option(words, ("--save-freq",), "100", add=False)
        set_option(words, ("--eval-episodes",), "2", add=False)
        if option_index(words, "-optimize", "--optimize-hyperparameters") is not None:
            set_option(words, ("--n-trials",), "2")
            set_option(words, ("--n-evaluations",), "1")
            set_option(words, ("--eval-episodes",), "2")
            if "--no-optim-plots" not in words:
                words.append("--no-optim-plots")
        if algo in OFF_POLICY_ALGOS:
            params = TINY_ATARI_PARAMS if atari else TINY_PARAMS
            add_params(words, params + (TINY_DRQN_ATARI_PARAMS if atari and algo == "drqn" else ()))
    elif script in ("enjoy", "record_video"):
        set_option(words, ("-n", "--n-timesteps"), "100")
    return words


def runnable(command: Command) -> list[str]:
    """The command as run here: this Python for ``python``, console scripts next to it, a budget added."""
    words = list(command.words)
    python = [sys.executable]
    if words[0] in ("python", "python3"):
        words = [*python, *words[1:]]
    elif words[0] == "rl_zoo3":
        words = [*python, "-m", "rl_zoo3.cli", *words[1:]]
    elif words[0] == "optuna":
        cli = shutil.which("optuna", path=str(Path(sys.executable).parent))
        entry_point = [*python, "-c", "import sys; from optuna.cli import main; sys.exit(main())"]
        words = [*([cli] if cli else entry_point), *words[1:]]
    if words[0] != sys.executable:
        return words
    # python -m rl_zoo3.<script> ... / python -m rl_zoo3.cli <script> ...
    if len(words) > 2 and words[1] == "-m" and words[2].startswith("rl_zoo3"):
        if words[2] == "rl_zoo3.cli" and len(words) > 3:
            return [*words[:4], *zoo_budget(words[3], words[4:])]
        return [*words[:3], *zoo_budget(words[2].removeprefix("rl_zoo3."), words[3:])]
    # The scripts' shared convention: --smoke is a tiny budget, results still go where the other flags say
    if len(words) > 1 and words[1].startswith(("benchmarks/", "examples/")) and words[1].endswith(".py"):
        return [*words, "--smoke"]
    return words


def scratch_copy(destination: Path) -> Path:
    """A copy of the checkout's files (git's tracked and unignored ones when it is a git work tree)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        files = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        ignore = shutil.ignore_patterns(".git", "_build", "__pycache__", "logs", "runs", ".pytest_cache", "*.egg-info")
        shutil.copytree(REPO, destination, ignore=ignore)
        return destination
    for name in files:
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def command_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """The environment of a command (leading ``NAME=value`` words set variables) and the rest of its words."""
    env = {key: value for key, value in os.environ.items() if key != "SB3_DRQN_NO_ZOO_HOOK"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, value = words[0].split("=", 1)
        env[name] = value
        words = words[1:]
    return env, words


# Tests


def test_commands_are_collected():
    """The collection sees the documented commands, joined and without comments, and every exemption is used."""
    commands = documented_commands()
    texts = [command.text for command in commands]
    assert any(text.startswith("python -m rl_zoo3.train --algo drqn --env CartPoleNoVel-v1") for text in texts)
    # Continuation lines are joined, trailing comments dropped
    optimize = [text for text in texts if "-optimize" in text and "--storage" in text]
    assert optimize and all("#" not in text and "\\" not in text for text in optimize)
    # enjoy and record_video read the zoo's training folder
    for text in texts:
        if re.search(r"rl_zoo3[. ](enjoy|record_video)", text):
            assert " -f " in f" {text} ", text
    for pattern, reason in EXEMPT.items():
        assert any(re.search(pattern, text) for text in texts), f"exemption not used: {pattern} ({reason})"
    # The checks exempted because CI runs them: it does
    ci_script = REPO / ".ci" / "run"
    if ci_script.is_file():
        for text in texts:
            if re.search(r"^(ruff|mypy|sphinx-build|pytest)( |$)", text):
                assert text.split()[0] in ci_script.read_text(), text
    # Commands are plain programs with arguments: no shell operators in the ones that run
    for command in commands:
        if exemption(command) is None:
            assert not {"|", "||", "&&", ";", ">", ">>", "<"} & set(command.words), command.source


def test_budgets():
    words = shlex.split("python -m rl_zoo3.train --algo drqn --env CartPoleNoVel-v1 -n 50000 -optimize --n-trials 100")
    run = runnable(Command("x", "", words))
    assert run[run.index("-n") + 1] == "200" and run[run.index("--n-trials") + 1] == "2"
    assert "--no-optim-plots" in run and run[run.index("-params") + 1 :][:2] == list(TINY_PARAMS)
    words = shlex.split("python -m rl_zoo3.train --algo dqn --env CartPole-v1 -params buffer_size:100000 gamma:0.99 -f logs")
    run = runnable(Command("x", "", words))
    # Ours after the documented values (the zoo's parser keeps the last), before the next option
    assert run[run.index("-params") + 1 : run.index("-f")] == ["buffer_size:100000", "gamma:0.99", *TINY_PARAMS]
    assert runnable(Command("x", "", ["python", "examples/cartpole.py", "--seeds", "0"]))[-1] == "--smoke"
    assert runnable(Command("x", "", ["rl_zoo3", "train", "--algo", "ppo_lstm", "--env", "CartPole-v1"]))[3:] == [
        "train",
        *("--algo", "ppo_lstm", "--env", "CartPole-v1", "-n", "200", "--num-threads", "1"),
    ]


def is_script(words: list[str]) -> bool:
    """A script under benchmarks/ or examples/ (they read nothing the other commands write)."""
    return len(words) > 1 and words[0] == sys.executable and words[1].startswith(("benchmarks/", "examples/"))


@dataclass
class Outcome:
    command: Command
    words: list[str]
    seconds: float
    returncode: int
    output: str


def run_lane(lane: list[tuple[Command, dict[str, str], list[str]]], work: Path) -> list[Outcome]:
    """Run commands one after the other; a command identical to one already run in the lane is not run again."""
    outcomes: list[Outcome] = []
    done: dict[tuple[str, ...], Outcome] = {}
    for command, env, words in lane:
        key = tuple(words)
        if key in done and done[key].returncode == 0:
            print(f"   same as {done[key].command.source}: {command.source}: {command.text}")
            continue
        start = time.perf_counter()
        try:
            result = subprocess.run(
                words, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT
            )
            returncode, output = result.returncode, result.stdout
        except subprocess.TimeoutExpired as error:
            returncode, output = -1, f"timed out after {COMMAND_TIMEOUT} s\n{error.stdout or ''}"
        outcome = Outcome(command, words, time.perf_counter() - start, returncode, output)
        print(f"{outcome.seconds:6.1f} s {command.source}: {command.text}" + ("" if returncode == 0 else "  FAILED"))
        outcomes.append(outcome)
        done[key] = outcome
    return outcomes


@pytest.mark.slow
def test_documented_commands_run(tmp_path):
    """
    Every documented command, in order, in one scratch copy, with a budget; all failures are reported.

    Two lanes run side by side (two cores): the scripts under benchmarks/ and examples/, and everything else
    (the zoo's commands, which use each other's outputs); each lane keeps the documents' order.
    """
    if not (REPO / "README.md").is_file():
        pytest.skip("README.md is not part of this checkout")
    work = scratch_copy(tmp_path / "repo")
    lanes: dict[bool, list[tuple[Command, dict[str, str], list[str]]]] = {True: [], False: []}
    for command in documented_commands():
        reason = exemption(command)
        if reason is not None:
            print(f"exempt  {command.source}: {command.text}  ({reason})")
            continue
        env, words = command_env(command.words)
        words = runnable(Command(command.source, command.text, words))
        lanes[is_script(words)].append((command, env, words))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as executor:
        outcomes = [outcome for lane in executor.map(run_lane, lanes.values(), [work, work]) for outcome in lane]
    print(
        f"{len(outcomes)} commands in {time.perf_counter() - start:.0f} s ({sum(o.seconds for o in outcomes):.0f} s of runs)"
    )
    failures = [
        f"{o.command.source}: `{o.command.text}`\n  ran as: {shlex.join(o.words)}\n{o.output[-3000:]}"
        for o in outcomes
        if o.returncode != 0
    ]
    assert not failures, f"{len(failures)} documented command(s) failed:\n\n" + "\n\n".join(failures)
