"""Request scores on the reference scale (analyze.scale): a detector calibrated on other data gives
the same account judgements as the first tier once its presets are aligned."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stormwatch.analyze import params as P
from stormwatch.analyze.scale import PRESET_NAMES, ScoreScale, presets_of, scale_for

# a cascade's presets (the combiner of encoder-1.0+3d3841bbf246): the same false-positive rates as the
# reference's, on another scale
CASCADE = {"strict": 0.785366, "balanced": 0.942788, "permissive": 0.970686}


def _shipped_combiner_presets() -> dict[str, float]:
    """The presets in the shipped encoder folder's ``combiner.json``, read as plain JSON."""
    from stormwatch.detect.encoder import default_encoder_path

    thresholds = orjson.loads((default_encoder_path() / "combiner.json").read_bytes())["thresholds"]
    return {k: float(thresholds[k]) for k in PRESET_NAMES}


REF = tuple(P.REFERENCE_PRESETS[k] for k in PRESET_NAMES)


def test_the_reference_model_is_not_mapped() -> None:
    assert ScoreScale.from_presets("first", dict(P.REFERENCE_PRESETS)) is None


def test_presets_map_onto_the_reference_presets_monotonically() -> None:
    s = ScoreScale.from_presets("cascade", CASCADE)
    assert s is not None
    at = s.apply(np.array([CASCADE[k] for k in PRESET_NAMES]))
    assert at == pytest.approx(REF, abs=1e-9)
    grid = np.linspace(0.0, 1.0, 2001)
    mapped = s.apply(grid)
    assert mapped[0] == 0.0 and mapped[-1] == 1.0
    assert np.all(np.diff(mapped) >= 0)
    # beyond the outer presets a logit stays a logit (slope 1)
    lo, hi = np.array([0.5, 0.6]), np.array([0.99, 0.995])
    for pair in (lo, hi):
        z = np.log(pair / (1 - pair))
        m = s.apply(pair)
        assert np.diff(np.log(m / (1 - m)))[0] == pytest.approx(np.diff(z)[0], rel=1e-6)
    # a benign security question the cascade puts at 0.9 is below balanced on the reference scale
    assert s.apply(np.array([0.9]))[0] < P.REFERENCE_PRESETS["balanced"] < P.HIGH_SCORE


@pytest.mark.parametrize(
    "presets",
    [
        {"strict": 0.5, "balanced": 0.4, "permissive": 0.6},  # not increasing
        {"strict": 0.5, "balanced": 0.6},  # incomplete
        {"strict": 0.0, "balanced": 0.6, "permissive": 0.7},  # outside (0, 1)
        {"strict": "x", "balanced": 0.6, "permissive": 0.7},
    ],
)
def test_unusable_presets_mean_no_map(presets: dict[str, Any]) -> None:
    assert ScoreScale.from_presets("m", presets) is None


def test_the_shipped_cascade_registers_its_presets(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from stormwatch.score.models import get_model, register_detectors
    from stormwatch.store import open_store

    shipped = _shipped_combiner_presets()
    assert shipped["strict"] < shipped["balanced"] < shipped["permissive"]
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        entry = register_detectors(store, "cascade")
        first = register_detectors(store, "first_tier")
        assert entry.metadata["presets"] == pytest.approx(shipped)
        assert first.metadata["presets"] == pytest.approx(P.REFERENCE_PRESETS)
        assert scale_for(store, first.version) is None
        s = scale_for(store, entry.version)
        assert s is not None and s.model == pytest.approx(tuple(shipped[k] for k in PRESET_NAMES))
        # a registration made before presets were stored: read from the combiner's file
        old = get_model(store, entry.version)
        assert old is not None
        old.metadata.pop("presets")
        assert presets_of(old) == pytest.approx(shipped)
        assert scale_for(store, "cascade-unknown") is None
    finally:
        store.close()


def _recalibrated_copy(db: Path, version: str, new: str, inverse: ScoreScale) -> None:
    """Store every detection of ``version`` again under ``new`` with its score (and category
    probabilities) re-calibrated by ``inverse``: a detector that ranks exactly like the first tier
    but whose presets are the cascade's."""
    c = sqlite3.connect(db)
    try:
        rows = c.execute(
            "SELECT event_id, account_id, conversation_id, ts, score, flagged, top_ttp, categories, explanation,"
            " scored_at FROM detections WHERE model_version = ?",
            (version,),
        ).fetchall()
        scores = np.array([r[4] for r in rows], dtype=np.float64)
        mapped = inverse.apply(scores)
        out = []
        for r, s, m in zip(rows, scores.tolist(), mapped.tolist(), strict=True):
            cats = r[7]
            if cats:
                f = m / s if s > 0 else 0.0
                cats = orjson.dumps({k: min(1.0, v * f) for k, v in orjson.loads(cats).items()}).decode()
            out.append((r[0], new, r[1], r[2], r[3], m, r[5], r[6], cats, r[8], r[9]))
        c.executemany(
            "INSERT INTO detections (event_id, model_version, account_id, conversation_id, ts, score, flagged,"
            " top_ttp, categories, explanation, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            out,
        )
        c.commit()
    finally:
        c.close()


def test_a_recalibrated_detector_gets_the_first_tiers_judgements(tmp_path: Path, monkeypatch: Any) -> None:
    from stormwatch.analyze import stages
    from stormwatch.analyze.account_train import build_platform
    from stormwatch.analyze.judge import analyze_graph
    from stormwatch.analyze.stages import model_version, update_features
    from stormwatch.score.models import register
    from stormwatch.store import open_store

    build_platform(tmp_path, "p", 7, 500, 30, "default")
    db = tmp_path / "p" / "platform.db"
    store = open_store(f"sqlite:///{db}")
    try:
        first = model_version(store, active=False)
        judged = analyze_graph(store.analysis.load_graph(), first, account_model="off").judgements
        base = {j.account_id: j for j in judged}
        inverse = ScoreScale("inverse", REF, tuple(CASCADE[k] for k in PRESET_NAMES))
        _recalibrated_copy(db, first, "recal-1", inverse)
        register(store, name="first_tier", version="recal-1", kind="first_tier", status="candidate",
                 metadata={"presets": CASCADE})  # fmt: skip
        store.commit()

        def levels(version: str) -> dict[str, Any]:
            update_features(store, version, full=True, progress=False)
            store.commit()
            graph = store.analysis.load_graph()
            return {j.account_id: j for j in analyze_graph(graph, version, account_model="off").judgements}

        mapped = levels("recal-1")
        assert base.keys() == mapped.keys()
        differ = [a for a in base if base[a].level != mapped[a].level]
        assert len(differ) <= 1, differ  # float rounding at a threshold, at most
        risks = np.array([abs(base[a].risk - mapped[a].risk) for a in base])
        assert float(np.quantile(risks, 0.99)) < 1e-3
        flagged = sum(j.level != "none" for j in base.values())
        assert flagged > 0

        # the summary says how the scores were read
        from stormwatch.analyze.pipeline import analyze

        summary = analyze(store, score=False, version="recal-1", progress=False)
        assert summary.score_scale is not None
        assert summary.score_scale["model_presets"] == pytest.approx(CASCADE)
        assert analyze(store, score=False, version=first, progress=False).score_scale is None

        # the raw scores: security professionals' questions look "high-scoring" and the queue grows
        monkeypatch.setattr(stages, "scale_for", lambda store, version: None)
        raw = levels("recal-1")
        assert sum(j.level != "none" for j in raw.values()) > flagged + 5
    finally:
        store.close()
