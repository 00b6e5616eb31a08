"""Where a study lives: a malformed `--storage` or an unwritable `--out` refused before
anything is created, the `--help` example that must parse, Optuna's public API only,
and loads of many workers on SQLite, the journal and PostgreSQL that finish exactly the
trials asked for without lock or connection errors."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml

from cnnzoo.tune.storage import POOL_SIZE
from tests.helpers.common import ROOT, write
from tests.tune.load import run_load
from tests.tune.test_tune import space_file, tiny

BAD_STORAGES = {
    "notaurl": ["is not a storage URL", "postgresql://"],
    "sqlite:////nonexistent/dir/x.db": ["the folder /nonexistent/dir does not exist"],
    "journal:": ["the journal file's path is empty", "journal:PATH"],
    "sqlite://": ["in memory", "sqlite:///study.db"],
    "nosuchdb://host/db": ["no database driver for 'nosuchdb'"],
    "journal:/proc/x.journal": ["/proc does not take new files"],
}


@pytest.mark.parametrize("storage", list(BAD_STORAGES))
def test_a_malformed_storage_is_one_line_and_leaves_nothing(tmp_path, cli, storage):
    out = tmp_path / "study"
    result = cli("tune", "-c", tiny(tmp_path), "--space", space_file(tmp_path), "--storage",
                 storage, "--out", out, "-q")
    assert result.code == 2, result.err
    message = result.err.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert message.startswith("error: --storage ")
    assert storage.removeprefix("journal:") in message  # the URL, or the journal's path
    for words in BAD_STORAGES[storage]:
        assert words in message
    assert not out.exists()  # checked before anything is created


def test_a_password_in_the_storage_url_is_never_printed(tmp_path, cli):
    # Port 1 on this machine: nothing listens, so the connection is refused at once.
    for storage in ("nosuchdb://user:s3cret@host/db", "postgresql://user:s3cret@127.0.0.1:1/db"):
        result = cli("tune", "-c", tiny(tmp_path), "--space", space_file(tmp_path),
                     "--storage", storage, "--out", tmp_path / "study", "-q")
        assert result.code == 2 and result.err.count("\n") == 1, result.err
        assert "s3cret" not in result.err and "user:***@" in result.err
    assert "cannot open the database" in result.err  # the server that is not there
    assert not (tmp_path / "study").exists()


def test_an_unwritable_out_is_one_line_and_leaves_nothing(tmp_path, cli):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    cases = {afile: "is a file; give a directory", Path("/proc/cnnzoo-tune"):
             "/proc does not take new files", afile / "below": "is a file, not a folder"}
    for out, words in cases.items():
        result = cli("tune", "-c", tiny(tmp_path), "--space", space_file(tmp_path), "--out",
                     out, "-q")
        assert result.code == 2, result.err
        assert result.err.count("\n") == 1 and "Traceback" not in result.err
        assert f"--out {out}" in result.err and words in result.err
    assert afile.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "space.yaml", "tiny.yaml"]


def test_a_report_needs_a_study_that_exists(tmp_path, cli):
    out = tmp_path / "report"
    missing = cli("tune", "--report", "--storage", f"sqlite:///{tmp_path / 'none.db'}",
                  "--out", out)
    assert missing.code == 2 and "there is no study file" in missing.err
    assert not (tmp_path / "none.db").exists() and not out.exists()
    other = tmp_path / "other.db"  # a SQLite file of something else: left as it was
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE mine (a)")
    before = other.read_bytes()
    foreign_file = cli("tune", "--report", "--storage", f"sqlite:///{other}", "--out", out)
    assert foreign_file.code == 2 and foreign_file.err.count("\n") == 1, foreign_file.err
    assert "no such table" in foreign_file.err and "Traceback" not in foreign_file.err
    assert other.read_bytes() == before and not out.exists()
    storage = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("one", "two"):
        optuna.create_study(storage=storage, study_name=name)
    unnamed = cli("tune", "--report", "--storage", storage, "--out", out)
    assert unnamed.code == 2 and "studies there: one, two" in unnamed.err
    foreign = cli("tune", "--report", "--storage", storage, "--study", "one", "--out", out)
    assert foreign.code == 2 and "was not made by cnnzoo tune" in foreign.err


def test_the_help_example_is_a_valid_space(tmp_path, cli):
    """`tune --help` shows a space file on one line, its lines split by ' / ': copied into a
    file, it must be YAML that `load_space` takes (a key with [ needs its quotes)."""
    from cnnzoo.tune.space import load_space

    text = " ".join(cli("tune", "--help").out.split())
    text = re.sub(r"[│|]", " ", text)  # Typer's box around the help
    text = " ".join(text.split())
    example = text[text.index("trials: 24"):text.index("]}") + 2]
    lines = example.split(" / ")
    assert yaml.safe_load("\n".join(lines))["space"]["model.layers[1].conv.kernel"] == [3, 5, 7]
    space = load_space(write(tmp_path / "space.yaml", "\n".join(lines)))
    assert space.trials == 24 and [p.key for p in space.params] == [
        "train.optimizer.lr", "model.layers[1].conv.kernel"]


PRIVATE = [
    re.compile(r"^\s*(from|import)\s+optuna(\.\w+)*\._\w*", re.MULTILINE),  # a private module
    re.compile(r"\boptuna(\.\w+)*\._\w+"),  # a private name reached through optuna
    re.compile(r"\._(trial_id|study_id|storage|cached_frozen_trial)\b"),  # Optuna's fields
]


def private_optuna_uses(text: str) -> list[str]:
    return [m.group(0).strip() for pattern in PRIVATE for m in pattern.finditer(text)]


def test_no_private_optuna_api_in_src():
    # The patterns find what they are for: the two uses this package once had.
    assert private_optuna_uses("from optuna.storages._heartbeat import BaseHeartbeat")
    assert private_optuna_uses("ids = [t._trial_id for t in running]")
    assert not private_optuna_uses("from optuna.storages import RetryHeartbeatStaleTrialCallback")
    found = {str(path.relative_to(ROOT)): uses for path in sorted((ROOT / "src").rglob("*.py"))
             if (uses := private_optuna_uses(path.read_text()))}
    assert found == {}


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "workers", "trials"), [
    ("sqlite", 4, 40), ("sqlite", 8, 200), ("journal", 4, 40)])
def test_many_workers_on_one_file_storage(tmp_path, kind, workers, trials):
    url = (f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite"
           else f"journal:{tmp_path / 'study.journal'}")
    load = run_load(url, workers, trials)
    assert load.errors == []  # no "database is locked", no lost journal lines
    assert load.finished == trials  # exactly: never more


@pytest.mark.slow
def test_many_workers_on_postgresql_stay_within_the_pool(pg_database):
    cluster, database, url = pg_database
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], cluster.connections(database))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        load = run_load(url, 8, 200)
    finally:
        done.set()
        watcher.join()
    assert load.errors == []
    assert load.finished == 200
    # Each process (8 workers and the one that made the study) holds at most its pool.
    assert 1 <= peak[0] <= 9 * POOL_SIZE
