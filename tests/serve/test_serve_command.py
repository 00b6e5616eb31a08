"""`cnnzoo serve` before any socket opens: its refusals (one line, exit code 2), and how
it readies the process once the network is loaded."""

from __future__ import annotations

import sys

import pytest

from cnnzoo.cli.options import USER_ERROR


def test_a_missing_run_is_one_line_before_serving(cli, tmp_path):
    result = cli("serve", tmp_path / "nowhere", "--port", "1")
    assert result.code == USER_ERROR
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert str(tmp_path / "nowhere") in result.err


@pytest.mark.parametrize(("option", "value"), [("--workers", "0"), ("--max-batch", "0"),
                                               ("--max-wait-ms", "-1"), ("--port", "70000")])
def test_options_out_of_range_are_refused(cli, option, value):
    result = cli("serve", "lenet5", "--pretrained", option, value)
    assert result.code == USER_ERROR and option in result.err


def test_without_the_web_extra_it_says_what_to_install(cli, monkeypatch):
    for name in [m for m in sys.modules if m.startswith(("cnnzoo.serve", "starlette"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)  # as if it were not installed
    result = cli("serve", "lenet5", "--pretrained")
    assert result.code == USER_ERROR
    assert "cnnzoo serve needs starlette: pip install 'cnnzoo[lab]'" in result.err


def test_settle_leaves_what_the_server_has_loaded_to_no_gc_pass():
    import gc

    from cnnzoo.serve import server

    try:
        server.settle()
        # The garbage collector's passes no longer walk what the process held by then.
        frozen = gc.get_freeze_count()
        assert frozen > 10_000 and len(gc.get_objects()) < frozen / 10
    finally:
        gc.unfreeze()
