"""The README's two set-up commands are what CI runs and what the project offers."""

from __future__ import annotations

import re

from tests.helpers.common import ROOT


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup)


def test_readme_has_exactly_two_setup_commands():
    commands = _commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "cnnzoo train --config" in main_job and "dataset-fashion-mnist" in main_job
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()
    assert "ruff check" in ci


def test_main_job_config_is_bundled():
    from cnnzoo.config.bundled import bundled_configs

    name = _commands()[0].rsplit("--config", 1)[1].split()[0]
    assert name in bundled_configs()
