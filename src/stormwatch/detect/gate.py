"""The cascade's topic gate: a lexical model of *does this prompt concern security at all?*

The second tier costs ~7 ms a prompt; most platform traffic (recipes, translations, customer-service
intents, homework) needs none of it. The first tier cannot tell which: it was fitted to separate
malicious asks from benign *security* questions, so on everyday text it is merely unsure (scores
0.05-0.2), and clearing at a line low enough to miss at most 1 % of held-out malicious rows sent 81 %
of simulated traffic on. The gate answers an easier question, topic rather than intent:

* **Labels**: every malicious row and every benign security question (the hard negatives:
  CyberSecEval's false-refusal sets, the CrowdStrike questions, Stack Exchange secrets, the authored
  defenders' questions) are *on topic*; every other benign row (everyday instructions, chat, the
  authored everyday requests with their edgy words) is *off topic*.
* **Rows**: the encoder's training groups, uncapped (the calibration groups stay out: the line is
  chosen there), each text once; weights ``1/sqrt(n)`` per (source, topic) so that large everyday
  sources do not drown the small ones, then the two topics weighted equally.
* **Features and fit**: the first tier's hashed words, word pairs and character 3-5-grams
  (:mod:`stormwatch.detect.features`, scored by the same C path), an L2 logistic fit
  (:func:`stormwatch.detect.train_fit.fit_logistic`); long texts by windows, the maximum decides.
* **Line**: the highest margin at which the gate with the script and lexicon rules
  (:meth:`stormwatch.detect.cascade.CascadeModel.reason`) lets through all but at most ``max_missed``
  (1 %) of the encoder's malicious calibration rows. The first tier's own route (its ``strict``
  preset) is not counted: it fitted many of those rows, so it only adds.

Stored as ``gate.json.gz`` beside the encoder it was chosen for (``stormwatch train --model gate``
refits it; ``--model encoder`` fits it after the combiner). Without the file the cascade routes by
the first tier's ``clear`` line as before (series 1.0).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.detect.features import FeatureSpec, featurize, prepare_text
from stormwatch.errors import InputError

try:  # the optional C fast path (stormwatch.detect.model imports it the same way)
    from stormwatch.detect import _fast
except ImportError:  # pragma: no cover - exercised when the extension is not built
    _fast = None

__all__ = ["FORMAT", "GATE_FILE", "TopicGate", "fit_topic_gate", "load_gate", "write_gate"]

F64 = npt.NDArray[np.float64]
FORMAT = "stormwatch-gate-1"
GATE_FILE = "gate.json.gz"
SPEC = FeatureSpec(bits=18, char_lo=3, char_hi=5, char_weight=0.5, window=512, stride=256)
C_REG = 4.0  # chosen on the calibration split among 1, 4, 16 (traffic routed vs challenge misses: model card)


@dataclass(frozen=True)
class TopicGate:
    spec: FeatureSpec
    weights: npt.NDArray[np.float32]
    bias: float
    line: float  # margin at or above which a prompt goes to the second tier
    version: str
    info: dict[str, Any]

    def margins(self, texts: Sequence[str], *, pure: bool = False) -> F64:
        """Per text: the gate's margin (maximum over windows); C path unless ``pure``."""
        n = len(texts)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        from stormwatch.detect.model import fast_available

        sp = self.spec
        fast = _fast  # the optional C extension the first tier scores with
        if not pure and fast_available() and fast is not None:
            n_units, m, _c, o, _s, _nt = fast.score(
                [prepare_text(t) for t in texts], self.weights, None, 0, sp.bits, sp.cat_bits,
                sp.char_lo, sp.char_hi, float(sp.char_weight), sp.window, sp.stride, self.bias, None,
            )  # fmt: skip
            unit = np.frombuffer(m, dtype=np.float64)
            owner = np.frombuffer(o, dtype=np.int64)
        else:
            fz = featurize(texts, sp)
            n_units, unit, owner = fz.n_units, fz.margins(self.weights.astype(np.float64), self.bias), fz.owner
        if n_units == n:
            return np.asarray(unit, dtype=np.float64)
        out = np.full(n, -np.inf)
        np.maximum.at(out, owner, unit)
        return out

    def on_topic(self, texts: Sequence[str]) -> npt.NDArray[np.bool_]:
        return np.asarray(self.margins(texts) >= self.line)

    def to_dict(self) -> dict[str, Any]:
        from stormwatch.detect.model import encode_f32

        return {
            "format": FORMAT,
            "version": self.version,
            "features": asdict(self.spec),
            "weights": encode_f32(self.weights),
            "bias": self.bias,
            "line": self.line,
            "info": self.info,
        }


def _version(weights: npt.NDArray[np.float32], bias: float, line: float, spec: FeatureSpec) -> str:
    h = hashlib.sha256(np.asarray(weights, dtype="<f4").tobytes())
    h.update(json.dumps([bias, line, asdict(spec)], sort_keys=True).encode())
    return "gate-" + h.hexdigest()[:10]


def write_gate(gate: TopicGate, folder: Path) -> Path:
    """Write ``gate.json.gz`` into the encoder folder (atomically: a reader sees the old or the new)."""
    target = folder / GATE_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(gzip.compress(json.dumps(gate.to_dict(), sort_keys=True).encode(), mtime=0))
    tmp.replace(target)
    return target


def load_gate(folder: Path) -> TopicGate | None:
    """The gate stored beside an encoder, or None when there is none (an older artifact)."""
    from stormwatch.detect.model import decode_f32

    file = folder / GATE_FILE
    if not file.exists():
        return None
    try:
        d = json.loads(gzip.decompress(file.read_bytes()))
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r}, expected {FORMAT}")
        spec = FeatureSpec(**d["features"])
        w = np.ascontiguousarray(decode_f32(d["weights"]))
        if len(w) != spec.n_buckets:
            raise ValueError("weights do not match the feature spec")
        return TopicGate(spec, w, float(d["bias"]), float(d["line"]), str(d["version"]), dict(d.get("info", {})))
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise InputError(f"{file}: not a gate file ({exc})") from exc


def _line(margins: F64, caught: npt.NDArray[np.bool_], max_missed: float) -> float:
    """The highest line at which at most ``max_missed`` of the rows are below it and not ``caught``."""
    n = len(margins)
    free = np.sort(margins[~caught])
    k = math.floor(max_missed * n)  # rows that may be missed
    if k >= len(free):
        return float("inf") if len(free) == 0 else float(free[-1]) + 1e-6
    return float(free[k])


def fit_topic_gate(
    rows: Sequence[Any],
    cfg: Any,
    route_other: Callable[[Sequence[str]], npt.NDArray[np.bool_]],
    *,
    c: float = C_REG,
    max_missed: float = 0.01,
    fitted_for: dict[str, str] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> TopicGate:
    """Fit the gate on ``rows`` (:class:`stormwatch.detect.data.Row`) outside the calibration groups of
    ``cfg`` (an encoder ``TrainConfig``); choose its line on the malicious calibration rows, given
    ``route_other`` (the rules that send a text on whatever the gate says)."""
    from stormwatch.detect.encoder_rows import TrainRow, calibration_split, is_hard_negative, training_rows
    from stormwatch.detect.features import tokens_of
    from stormwatch.detect.train_fit import design_matrix, fit_logistic

    fit: list[TrainRow] = []
    seen: set[tuple[str, int]] = set()
    for r in rows:
        if not r.text.strip() or r.source in cfg.holdout_sources:
            continue
        if calibration_split(r.group, cfg.calib_share, cfg.seed) or (r.text, r.label) in seen:
            continue
        seen.add((r.text, r.label))
        fit.append(TrainRow(r.text, r.label, r.source, r.group, r.cats, r.split, r.category))
    if not fit:
        raise ValueError("no rows to fit the gate on")
    y = np.array([int(r.label == 1 or is_hard_negative(r)) for r in fit], dtype=np.int64)
    if y.min() == y.max():
        raise ValueError("the gate needs rows of both topics (security and everyday)")
    sizes = Counter((r.source, int(t)) for r, t in zip(fit, y.tolist(), strict=True))
    w = np.array([1.0 / math.sqrt(sizes[(r.source, int(t))]) for r, t in zip(fit, y.tolist(), strict=True)])
    for cls in (0, 1):
        w[y == cls] *= 0.5 / w[y == cls].sum()
    w *= len(fit)
    progress(f"gate: {len(fit)} rows ({int(y.sum())} on topic), C={c}")
    x = design_matrix([tokens_of(r.text) for r in fit], SPEC)
    coef, bias = fit_logistic(x, y, w, c, max_iter=5000, gtol=1e-6)
    weights = np.ascontiguousarray(coef.astype(np.float32))
    bias = float(np.float32(bias))
    _, calib = training_rows(rows, cfg)
    mal = [r.text for r in calib if r.label == 1]
    probe = TopicGate(SPEC, weights, bias, 0.0, "", {})
    if mal:
        m = probe.margins(mal)
        line = _line(m, route_other(mal), max_missed)
        missed = float(np.mean((m < line) & ~route_other(mal)))
    else:
        line, missed = 0.0, 0.0
    line = float(np.float32(line))
    info = {
        "rows": len(fit),
        "on_topic": int(y.sum()),
        "c": c,
        "max_missed": max_missed,
        "calibration_malicious": len(mal),
        "calibration_missed": round(missed, 5),
        "fitted_for": dict(fitted_for or {}),
    }
    return TopicGate(SPEC, weights, bias, line, _version(weights, bias, line, SPEC), info)
