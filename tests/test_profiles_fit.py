"""Behaviour fit to an actor profile compares TTP mixes within ATT&CK tactics (analyze.profiles)."""

from __future__ import annotations

import numpy as np

from stormwatch.analyze import params as P
from stormwatch.analyze.profiles import _office_window, fit_all, fit_behaviour, load_profiles, tactic_smoothing
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


def test_fit_all_gives_what_fit_behaviour_gives_for_every_profile() -> None:
    """The account model's shared computation (profiles.fit_all) equals fit_behaviour, profile by profile."""
    rng = np.random.default_rng(3)
    cases = [(rng.random(14) * 5, rng.integers(0, 9, 48).astype(float), {"zh": 0.6, "en": 0.3, "ru": 0.1}, 40)]
    cases += [(np.zeros(14), np.zeros(48), {}, 0), (rng.random(14) * 0.5, rng.random(48), {"fa": 1.0}, 9)]
    cases += [(rng.random(14) * 3, np.zeros(48), {"other": 1.0}, 12)]
    for ttp, hours, langs, n in cases:
        got = fit_all(ttp, hours, langs, n)
        want = [fit_behaviour(p, ttp, hours, langs, n) for p in load_profiles()]
        assert len(got) == len(want) == len(load_profiles())
        for g, w in zip(got, want, strict=True):
            assert np.allclose(
                [g.score, g.ttp, g.hours, g.language, g.ttp_cosine, g.office_share, g.language_share],
                [w.score, w.ttp, w.hours, w.language, w.ttp_cosine, w.office_share, w.language_share],
                rtol=0,
                atol=1e-12,
            )
