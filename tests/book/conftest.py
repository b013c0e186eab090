"""The runbook site, built once per test session (example runs reused when their inputs are unchanged)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """`_build/html` of a fresh `build_book()`; its drills get a lakehouse of their own."""
    from retail_lakehouse.site.book import build_book

    index = build_book(home=tmp_path_factory.mktemp("book-lakehouse"))
    return index.parent
