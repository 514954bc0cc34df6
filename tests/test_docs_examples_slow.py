"""The documentation examples of the slow pages (``SLOW_PAGES``): the same harness as
test_docs_examples.py, in a module of its own so that xdist's ``--dist loadfile`` runs them on the
other worker while the rest run."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_docs_examples import DOCS, SLOW_PAGES, _runnable, platform  # noqa: F401  (platform: the fixture)
from test_docs_examples import test_document_examples_run as _run


def test_every_slow_page_exists_and_has_examples() -> None:
    assert {d.name for d in DOCS if _runnable(d)} >= SLOW_PAGES


@pytest.mark.parametrize("doc", [d for d in DOCS if _runnable(d) and d.name in SLOW_PAGES], ids=lambda p: p.name)
def test_slow_document_examples_run(doc: Path, platform: dict[str, Path | str], tmp_path: Path) -> None:  # noqa: F811
    _run(doc, platform, tmp_path)
