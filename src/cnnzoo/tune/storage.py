"""Where a study lives: checking a `--storage` URL, opening it, and heartbeats.

    sqlite:///PATH       the one-machine default (a file in OUT); workers wait for its lock
    postgresql://...     a server every machine reaches (psycopg 3, from the tune extra)
    journal:PATH         Optuna's journal file, for one machine or a shared file system

`check_storage` looks at a URL before anything is created; `open_storage` connects with
a bounded pool and Optuna's RDB heartbeat, and retries when another process was
creating Optuna's tables in the same database at the same moment. The journal has no
heartbeat in Optuna's public API, so it gets one here from public calls: a running
trial's worker writes the time into a user attribute every interval (`beating`), and
`fail_stale_trials` fails a trial whose time is older than the grace period and
enqueues its parameters again with Optuna's own retry callback, as the RDB storage does.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from cnnzoo.errors import CnnzooError
from cnnzoo.utils.files import check_writable

RETRIES = 3  # a trial whose worker died is run again at most this often
GRACE_BEATS = 3  # a running trial silent for this many heartbeats is failed
POOL_SIZE = 2  # connections per process: its main thread and its heartbeat thread
BEAT_ATTR = "cnnzoo:heartbeat"
_EXAMPLES = "e.g. sqlite:///study.db, postgresql://user:password@host/db or journal:PATH"
_CREATE_TRIES = 6  # opening a storage that another process is creating at the same moment


def check_storage(url: str, option: str = "--storage", *, existing: bool = False) -> None:
    """Refuse a storage URL that cannot work, before anything is created or connected;
    with `existing`, a file storage must already be there (a report creates nothing)."""
    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        if not path.strip():
            raise CnnzooError(f"{option} {url}: the journal file's path is empty; give "
                              "journal:PATH, e.g. journal:tune/study.journal")
        _check_file(url, path, option, existing)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CnnzooError(f"{option} {url} is not a storage URL; give one, {_EXAMPLES}") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(url, parsed.database, option, existing)
        return
    try:
        parsed.get_dialect().import_dbapi()
    except Exception as exc:  # sqlalchemy's NoSuchModuleError, or the driver's ImportError
        raise CnnzooError(f"{option} {shown(url)}: no database driver for "
                          f"'{parsed.drivername}' ({exc}); PostgreSQL's comes with "
                          "pip install 'cnnzoo[tune]'") from None


def _check_sqlite(url: str, database: str | None, option: str, existing: bool) -> None:
    if not database or database == ":memory:":
        raise CnnzooError(f"{option} {url} is a database in memory, which worker processes "
                          "cannot share; give a file, e.g. sqlite:///study.db")
    folder = Path(database).parent
    if not existing and not folder.is_dir():
        raise CnnzooError(f"{option} {url}: the folder {folder} does not exist (SQLite creates "
                          "the file, not its folder); create it or choose another path")
    _check_file(url, database, option, existing)


def _check_file(url: str, path: str, option: str, existing: bool) -> None:
    if existing and not Path(path).is_file():
        raise CnnzooError(f"{option} {url}: there is no study file {path}; give the storage "
                          "the study was run with")
    if not existing:
        check_writable(path, option)


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def open_storage(url: str, heartbeat: int, *, create: bool = True) -> optuna.storages.BaseStorage:
    """The storage `url` names, with heartbeats and the retry of trials whose worker died;
    without `create`, an RDB's tables are not made where they are missing."""
    # Heartbeats and the retry callback are marked experimental; they are why we use them.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
        # The open lock (O_EXCL) works on NFS too; a lock left by a killed process is
        # broken after the grace period.
        lock = optuna.storages.journal.JournalFileOpenLock(path, grace_period=30)
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(path, lock_obj=lock))
    attempt = 0
    while True:
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat,
                grace_period=GRACE_BEATS * heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RETRIES),
                skip_table_creation=not create)
        except (ImportError, ValueError) as exc:
            raise CnnzooError(f"--storage {shown(url)}: {exc}") from None
        except Exception as exc:
            if not is_database_error(exc):
                raise
            attempt += 1
            if attempt == _CREATE_TRIES or not _lost_creation_race(exc):
                raise CnnzooError(f"--storage {shown(url)}: cannot open the database: "
                                  f"{_first_line(exc)}") from None
            # Two machines started at once and both created Optuna's tables; the other
            # one won (PostgreSQL: a duplicate key in pg_type_typname_nsp_index, or the
            # relation exists). The next try finds the tables made.
            time.sleep(0.2 * attempt)


def shown(url: str) -> str:
    """`url` for messages: a password in it is replaced by ***."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # SQLite serialises writers; a worker waits up to a minute for the lock instead of
        # failing with "database is locked".
        return {"connect_args": {"timeout": 60}}
    # Each process holds at most POOL_SIZE connections, checked before use (a server restart
    # or an idle timeout leaves dead ones); max_overflow 0 makes the bound a bound.
    return {"pool_size": POOL_SIZE, "max_overflow": 0, "pool_pre_ping": True,
            "pool_timeout": 120}


def is_database_error(exc: BaseException) -> bool:
    """An error of the database or its driver (Optuna wraps some in its own)."""
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, (SQLAlchemyError, optuna.exceptions.StorageInternalError))


def _lost_creation_race(exc: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    while exc.__cause__ is not None and not isinstance(
            exc, (IntegrityError, OperationalError, ProgrammingError)):
        exc = exc.__cause__
    if isinstance(exc, IntegrityError):
        return True
    return isinstance(exc, (ProgrammingError, OperationalError)) and (
        "already exists" in str(exc))


def _first_line(exc: BaseException) -> str:
    """The driver's own words: the innermost cause, first line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_journal(url: str) -> bool:
    """A journal storage: its heartbeat is cnnzoo's (`beating`, `fail_stale_trials`)."""
    return url.startswith("journal:")


@contextlib.contextmanager
def beating(trial: optuna.Trial, interval: float) -> Iterator[None]:
    """Write the time into the trial every `interval` seconds while the body runs."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is what staleness measures
                trial.set_user_attr(BEAT_ATTR, time.time())

    trial.set_user_attr(BEAT_ATTR, time.time())
    thread = threading.Thread(target=beat, name="cnnzoo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def fail_stale_trials(study: optuna.Study, url: str, heartbeat: int) -> list[int]:
    """Fail the running trials whose worker stopped beating and enqueue each again; the
    numbers of the trials failed here (on an RDB storage Optuna does it and says none)."""
    if not is_journal(url):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return []
    limit = time.time() - GRACE_BEATS * heartbeat
    retry = RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # A retried trial inherits its predecessor's last beat; it counts from its start.
        started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        if max(float(trial.user_attrs.get(BEAT_ATTR, 0.0)), started) >= limit:
            continue
        try:
            frozen = study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first, or its own worker just finished it
        retry(study, frozen)
        failed.append(trial.number)
    return failed
