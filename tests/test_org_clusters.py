"""An organisation's accounts asking malicious-looking questions together (a penetration-testing firm
behind its corporate NAT, sharing keys) are not a coordinated operation: without intel they stay at
``review`` with the reason, never ``enforce`` (issue 12: 0 security firms enforced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormwatch.analyze.account_train import build_platform


@pytest.fixture(scope="module")
def pentest_platform(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    work = Path(tmp_path_factory.mktemp("org"))
    return build_platform(work, "pentest", seed=50100, accounts=3000, days=30, setting="pentest-heavy")


def test_pentest_firms_are_not_enforced_without_intel(pentest_platform) -> None:  # type: ignore[no-untyped-def]
    p = pentest_platform
    levels = dict(zip(p.ids, p.levels, strict=True)) | {a: lvl for a, lvl, _r, _y in p.others}
    firm = [a for a, persona in p.personas.items() if persona == "pentest_firm"]
    assert len(firm) >= 10
    assert [a for a in firm if levels.get(a) == "enforce"] == []
    # the firms' accounts are still visible to analysts, and actors are still enforced
    assert sum(levels.get(a) == "review" for a in firm) >= 3
    actors_enforced = sum(1 for a, y in zip(p.ids, p.y.tolist(), strict=True) if y and levels[a] == "enforce")
    assert actors_enforced >= 1
