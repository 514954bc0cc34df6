"""Detector protocol, registry and contract checks."""

from __future__ import annotations

import pytest

from stormwatch.detect.base import (
    DEFAULT_DETECTORS,
    KeywordDetector,
    available_detectors,
    check_detector,
    clone,
    get_detector,
)


# The judge needs a live endpoint: tests/test_detect_judge.py runs the same contract against a real
# local server process.
@pytest.mark.parametrize("name", sorted(set(available_detectors()) - {"judge"}))
def test_every_registered_detector_passes_the_contract(name: str) -> None:
    check_detector(get_detector(name))


def test_builtins_are_registered() -> None:
    names = available_detectors()
    for name, target in DEFAULT_DETECTORS:
        assert names[name] == target


def test_unknown_detector() -> None:
    with pytest.raises(KeyError):
        get_detector("nope")


def test_keyword_detector_params_and_clone() -> None:
    det = KeywordDetector(keywords=["botnet"], weight=2.0)
    assert det.get_params() == {"keywords": ["botnet"], "weight": 2.0}
    twin = clone(det)
    assert twin.get_params() == det.get_params() and twin is not det
    with pytest.raises(ValueError):
        det.set_params(bogus=1)
    assert det.fit(["a"], [0]) is det
    assert det.score(["build a botnet"])[0] > det.score(["bake bread"])[0]


def test_check_detector_catches_a_bad_detector() -> None:
    class Bad(KeywordDetector):
        def score(self, items):  # type: ignore[no-untyped-def]
            return [2.0 for _ in items]

    with pytest.raises(AssertionError):
        check_detector(Bad())
