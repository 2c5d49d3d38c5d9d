"""
Several zoo workers sharing one Optuna study through a database (docs/zoo.md, "Hyper-parameter tuning"):
a PostgreSQL server started on the loopback for the test, and a SQLite file. In both, the study is created
once before the workers start (two workers creating the tables of a fresh database at once can crash:
``UNIQUE constraint failed: alembic_version.version_num`` with SQLite), then two workers run at the same time.

With ``CI=true`` the PostgreSQL test never skips: a missing server or driver fails it (``.ci/run`` installs
Debian's ``postgresql``; ``psycopg2-binary`` comes with the ``tests`` extra). Elsewhere it skips and names
what is missing.
"""

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from test_zoo import train_args, zoo_env

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_USER = "postgres"

# Each worker: one trial of 150 steps (learning from step 50), one evaluation of 2 episodes
WORKER_ARGS = (
    *("-optimize", "--n-trials", "1", "--sampler", "random", "--pruner", "none", "--n-evaluations", "1"),
    *("--eval-episodes", "2", "--no-optim-plots", "-params", "learning_starts:50", "buffer_size:2000"),
)


def missing(what: str) -> None:
    """Skip outside CI, fail in CI (where everything the test needs is installed)."""
    message = f"PostgreSQL test: {what}"
    if IN_CI:
        pytest.fail(message + " (CI=true: .ci/run installs it)")
    pytest.skip(message)


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or under Debian's ``/usr/lib/postgresql/<version>/bin``."""
    found = shutil.which(name)
    if found is not None:
        return os.path.realpath(found)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(Path(path).parts[4]))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 (as the ``postgres`` user when run as root: the server refuses root)."""
    try:
        import psycopg2  # SQLAlchemy's PostgreSQL driver
    except ImportError:
        missing("the psycopg2 driver is not installed (pip install psycopg2-binary)")
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("no PostgreSQL server programs (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    # Not under pytest's tmp_path: its parents are private to the user running pytest
    base = Path(tempfile.mkdtemp(prefix="sb3_drqn_pg_"))
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            shutil.rmtree(base)
            missing(f"running as root and there is no '{POSTGRES_USER}' user to run the server as")
        os.chown(base, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", POSTGRES_USER, "--"]
    data, port = base / "data", free_port()

    def run_as(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)

    try:
        run_as(str(initdb), "-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "--no-sync")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run_as(str(pg_ctl), "-D", str(data), "-o", options, "-l", str(base / "server.log"), "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as error:
        log = (base / "server.log").read_text() if (base / "server.log").is_file() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {error.stdout}\n{log}")
    try:
        connection = psycopg2.connect(host="127.0.0.1", port=port, user=POSTGRES_USER, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE zoo")
        connection.close()
        # The driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
        yield f"postgresql+psycopg2://{POSTGRES_USER}@127.0.0.1:{port}/zoo"
    finally:
        subprocess.run([*as_user, str(pg_ctl), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def optuna_cli() -> list[str]:
    """Optuna's console script next to this Python, or the same entry point run by this Python."""
    cli = shutil.which("optuna", path=str(Path(sys.executable).parent))
    return [cli] if cli else [sys.executable, "-c", "import sys; from optuna.cli import main; sys.exit(main())"]


def create_study(storage: str, study_name: str, cwd: Path) -> None:
    """The documented workaround: create the study (and the database's tables) once, before the workers."""
    args = ["create-study", "--storage", storage, "--study-name", study_name, "--direction", "maximize"]
    result = subprocess.run([*optuna_cli(), *args], cwd=cwd, env=zoo_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def run_two_workers(storage: str, study_name: str, cwd: Path) -> None:
    """Two zoo workers started at the same time on one study, one trial each; both trials must land."""
    args = train_args("CartPoleNoVel-v1", 150, *WORKER_ARGS, "--storage", storage, "--study-name", study_name)
    workers = [
        subprocess.Popen(
            [sys.executable, *args, "--seed", str(seed), "-f", f"logs_{seed}"],
            cwd=cwd,
            env=zoo_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-6000:]
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert len(study.trials) == 2
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
    # Each worker finished one of the two trials (Optuna logs the trial's number)
    finished = [set(re.findall(r"Trial (\d+) finished", output)) for output in outputs]
    assert all(len(numbers) == 1 for numbers in finished), finished
    assert set.union(*finished) == {str(trial.number) for trial in study.trials}
    for trial in study.trials:
        assert {"learning_steps", "replay_ratio", "sequence_length", "lstm_hidden_size"} <= set(trial.params)


@pytest.mark.slow
def test_two_workers_on_postgresql(postgres_url, tmp_path):
    create_study(postgres_url, "drqn-postgres", tmp_path)
    run_two_workers(postgres_url, "drqn-postgres", tmp_path)


@pytest.mark.slow
def test_two_workers_on_a_sqlite_file_created_first(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    create_study(storage, "drqn-sqlite", tmp_path)
    run_two_workers(storage, "drqn-sqlite", tmp_path)
