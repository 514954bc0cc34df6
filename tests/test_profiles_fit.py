"""Behaviour fit to an actor profile compares TTP mixes within ATT&CK tactics (analyze.profiles)."""

from __future__ import annotations

import numpy as np

from stormwatch.analyze import params as P
from stormwatch.analyze.profiles import _office_window, fit_behaviour, load_profiles, tactic_smoothing
from stormwatch.vocab import LLMT_IDS, ttps


def _mass(**counts: float) -> np.ndarray:
    m = np.zeros(len(LLMT_IDS))
    for k, v in counts.items():
        m[LLMT_IDS.index(k.replace("_", "-"))] = v
    return m


def test_the_smoothing_keeps_mass_within_a_tactic() -> None:
    s = tactic_smoothing()
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    np.testing.assert_allclose(s, s.T)
    tactic = [ttps()[c].tactic for c in LLMT_IDS]
    for i in range(len(LLMT_IDS)):
        assert s[i, i] >= P.TTP_EXACT_SHARE
        for j in range(len(LLMT_IDS)):
            assert (s[i, j] > 0) == (tactic[i] == tactic[j])


def test_a_neighbouring_category_fits_and_another_tactic_does_not() -> None:
    """Forest Blizzard asks reconnaissance and scripting. A cluster whose scripting asks the request
    classifier read as operational commands (the same tactic, execution) fits it: working its office
    hours, in English (no language evidence), it clears the coordinated-cluster line, which the exact
    comparison missed. A cluster asking for phishing and credential theft (other tactics) does not."""
    fb = next(p for p in load_profiles() if p.name == "Forest Blizzard")
    hours = _office_window(round(fb.utc_offsets[0] * 2)) * 10.0  # every event in its working day
    lang = {"en": 1.0}
    misread = _mass(LLMT_01=10, LLMT_10=10)
    fit = fit_behaviour(fb, misread, hours, lang, 200)
    assert fit.score >= P.COORDINATED_FIT
    exact_cos = float(misread @ fb.ttps) / (np.linalg.norm(misread) * np.linalg.norm(fb.ttps))
    exact = 0.4 * (2 * exact_cos - 1) + 0.35 * fit.hours + 0.25 * fit.language
    assert exact < P.COORDINATED_FIT <= fit.score
    other = fit_behaviour(fb, _mass(LLMT_04=10, LLMT_12=10), hours, lang, 200)
    assert other.ttp < 0 and other.score < P.COORDINATED_FIT
    same = fit_behaviour(fb, _mass(LLMT_01=10, LLMT_02=10), hours, lang, 200)
    assert same.ttp_cosine > fit.ttp_cosine  # the exact categories still fit best
