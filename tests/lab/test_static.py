"""The page's files: everything it loads is in the package (no other host), and each
bundled script ships with its licences."""

from __future__ import annotations

import re

import pytest

from cnnzoo.lab.server import STATIC

PAGE_FILES = ["index.html", "lab.js", "lab.css"]


def test_the_page_loads_only_its_own_files() -> None:
    html = (STATIC / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert loaded, "the page loads no scripts"
    for url in loaded:
        if url.startswith("data:"):
            continue
        assert url.startswith("/static/"), url
        assert (STATIC / url.removeprefix("/static/")).is_file(), url


@pytest.mark.parametrize("name", PAGE_FILES)
def test_no_other_host_is_named(name: str) -> None:
    text = (STATIC / name).read_text()
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), name


@pytest.mark.parametrize("script", sorted((STATIC / "vendor").glob("*.js")),
                         ids=lambda p: p.name)
def test_every_bundled_script_has_its_licences(script) -> None:
    licence = script.with_name(f"{script.stem}.LICENSE.txt")
    assert licence.is_file()
    assert "MIT License" in licence.read_text() or "Permission is hereby granted" in (
        licence.read_text())


def test_the_page_has_its_test_ids() -> None:
    html = (STATIC / "index.html").read_text()
    for testid in ("editor", "summary", "config-error", "train", "stop", "curves", "runs",
                   "volumes"):
        assert f'data-testid="{testid}"' in html, testid
