"""The detection cascade, in one place: lexical first tier -> gate -> encoder second tier -> combiner.

Every prompt is scored by the first tier (word n-grams, ~10^5 prompts/s). A prompt goes on to the
second tier (:mod:`stormwatch.detect.encoder`, a fine-tuned multilingual transformer, ~140
prompts/s per core) when any of these holds (:meth:`CascadeModel.reason` says which):

* ``first-tier``: the first tier scores it at or above ``first_line`` (its ``strict`` preset, never
  above the cascade's lowest preset, so a prompt that stays behind is below every preset);
* ``topic-gate``: the topic gate (:mod:`stormwatch.detect.gate`, a lexical model of "is this about
  security at all?") puts it at or above its line, chosen so that the whole rule lets through all but
  at most 1 % of held-out malicious rows;
* ``script:<code>``: it is written outside the Latin script (the first tier was trained almost only
  on English);
* ``security-lexicon``: it has a word of a small multilingual security lexicon (malware, exploit,
  phishing, 漏洞, эксплойт, 피싱, بدافزار, ...).

An encoder folder without a gate (series 1.0) routes as before: first tier at or above the
combiner's ``clear`` line (0.05 ... 0.5, chosen the same way), script, lexicon. A prompt that
reaches the second tier gets the combiner's probability (:mod:`stormwatch.detect.combiner`, a
logistic model over both tiers' logits, calibrated); a cleared prompt keeps its first-tier score,
which is below every preset threshold. Category probabilities of a routed prompt are its score times
P(category | misuse) from the first tier where the first tier recognised the prompt itself (at or
above its ``strict`` preset), else the larger of the two tiers' (series 1.0 and 1.1 took the larger
everywhere: the encoder's heads, trained on weak labels, spread mass over more categories, which
blurred the TTP mix account judgement compares with actor profiles).

:class:`CascadeModel` offers the first tier's scoring interface (``version``, ``thresholds``,
``score_with_categories``, ``score_texts``, ``explain_text``), so the conversation rule, the
scoring stage, ``classify`` and the online endpoints use it unchanged; ``decisions`` says, per
prompt, which tier decided and why. Its version names every part:
``cascade-<series>+<first-tier version>+<encoder version>+<combiner hash>[+<gate hash>]``.

Per-text results of the second tier are cached (LRU, 200k texts; platform traffic repeats itself),
which is why the cascade's throughput on real traffic is far above the encoder's.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.detect.combiner import Combiner, load_combiner
from stormwatch.detect.encoder import EncoderModel, load_encoder
from stormwatch.detect.gate import TopicGate, load_gate
from stormwatch.detect.model import FirstTierModel, load_model
from stormwatch.detect.text import FUNCTION_WORDS
from stormwatch.vocab import LLMT_IDS

__all__ = ["CLEAR", "CascadeModel", "gate_reason", "gated_first_line", "load_cascade", "script_of"]

F64 = npt.NDArray[np.float64]
SERIES = "1.0.1"  # routing by the first tier's clear line (1.0: categories as the larger of both tiers')
GATED_SERIES = "1.2"  # routing by the topic gate (an encoder folder with gate.json.gz; 1.1: categories as above)
CLEAR = 0.05  # the lowest line of the ladder (the combiner file holds the one chosen)
CLEAR_LADDER = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)

# The security lexicon: regular-expression fragments, matched anywhere in the lower-cased text.
# fmt: off
_LEXICON_TERMS = (
    "malware", "ransom", "keylog", "exploit", "payload", "shellcode", "phish", "spear", "trojan", "backdoor",
    "botnet", "rootkit", r"c2\b", "beacon", "implant", "loader", "dropper", "inject", "obfuscat", "evade",
    "evasion", "bypass", "undetect", "antivirus", r"\bav\b", "edr", "amsi", r"uac\b", "mfa", "2fa", "otp",
    "captcha", "credential", "password", "passwd", "hash", "mimikatz", "lsass", "ntlm", "kerberos", "privilege",
    "escalat", "persist", "lateral", "exfil", "dump", "crack", "brute", "spray", "scan", "nmap", "shodan", "recon",
    "enumerat", "subdomain", "vuln", "cve-", "0day", "zero[- ]?day", r"rce\b", "sqli", "sql injection", "xss",
    "reverse shell", "webshell", "hack", "pentest", "red ?team", "attack", "target", "victim", "stealth", "hide",
    "spoof", "impersonat", "fake", "scam", "fraud", "ddos", "cobalt", "metasploit", "sliver", "powershell",
    r"\bcmd\b", "registry", "token", "session", "cookie", "steal", "satellite", "radar", "espionage", "infiltrat",
    "surveil", "dox", "track",
    "漏洞", "木马", "病毒", "钓鱼", "免杀", "提权", "渗透", "后门", "攻击", "黑客",
    "密码", "凭据", "爆破", "扫描", "绕过", "注入", "横向", "持久化", "窃取",
    "эксплойт", "вредонос", "троян", "фишинг", "пароль", "учетн", "взлом", "обход", "антивирус", "сканир",
    "уязвим", "бэкдор", "шелл", "атак", "брут", "инъекц", "малвар", "стилер", "кейлог",
    "악성", "피싱", "해킹", "취약점", "익스플로잇", "백도어", "우회", "비밀번호",
    "계정", "탈취", "스캔", "공격", "랜섬",
    "بدافزار", "فیشینگ", "هک", "آسیب\u200cپذیری", "آسیب پذیری", "رمز", "نفوذ", "دور زدن", "باج", "جاسوس",
    "برمجيات خبيثة", "تصيد", "اختراق", "ثغرة", "كلمة مرور", "تجاوز", "فدية", "تجسس",
)
# fmt: on


def _factored(terms: Sequence[str]) -> str:
    """One alternation per first character (``a(?:bc|de)|x(?:yz)``): the same matches as the flat
    ``abc|ade|xyz`` (``tests/test_encoder_cascade.py``); searched in the lower-cased text, several
    times faster than the flat ``(?i)`` alternation (``benchmarks/bench_cascade.py traffic``)."""
    by_first: dict[str, list[str]] = {}
    other: list[str] = []
    for t in terms:
        if t[0] in "\\[(.":
            other.append(t)
        else:
            by_first.setdefault(t[0], []).append(t[1:])
    return "|".join([re.escape(k) + "(?:" + "|".join(v) + ")" for k, v in by_first.items()] + other)


_LEXICON = re.compile(_factored(_LEXICON_TERMS))

_SCRIPTS = (("HANGUL", "ko"), ("CJK", "zh"), ("HIRAGANA", "ja"), ("KATAKANA", "ja"), ("CYRILLIC", "ru"),
            ("ARABIC", "ar"), ("DEVANAGARI", "hi"), ("THAI", "th"), ("HEBREW", "he"), ("GREEK", "el"))  # fmt: skip
_PERSIAN = set("پچژگکی")


def script_of(text: str, sample: int = 400) -> str:
    """The dominant non-Latin script of ``text`` as a language-ish code, or ``latin``."""
    if text[:sample].isascii():
        return "latin"
    counts: dict[str, int] = {}
    latin = 0
    for ch in text[:sample]:
        if ch.isascii():
            latin += ch.isalpha()
            continue
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        for key, code in _SCRIPTS:
            if key in name:
                if code == "ar" and ch in _PERSIAN:
                    code = "fa"
                counts[code] = counts.get(code, 0) + 1
                break
        else:
            latin += 1
    if not counts:
        return "latin"
    code, n = max(counts.items(), key=lambda kv: kv[1])
    if code == "ar" and counts.get("fa"):
        code = "fa"
    return code if n * 2 >= latin or n >= 8 else "latin"


def gate_reason(text: str) -> str | None:
    """Why a prompt the first tier would clear still goes to the second tier (None: it doesn't)."""
    script = script_of(text)
    if script != "latin":
        return f"script:{script}"
    if _LEXICON.search(text.lower()):
        return "security-lexicon"
    return None


def gated_first_line(first: FirstTierModel, thresholds: dict[str, float]) -> float:
    """With a topic gate, the first-tier score at or above which a prompt goes on regardless: the
    first tier's ``strict`` preset, never above the cascade's lowest preset (``thresholds``)."""
    lowest = min(thresholds.values(), default=1.0)
    return min(first.thresholds.get("strict", lowest), lowest)


@dataclass(frozen=True)
class Decision:
    tier: str  # "first" (cleared by the first tier) or "second"
    reason: str  # why it went on (or "cleared")
    first_tier: float
    encoder: float | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tier": self.tier, "reason": self.reason, "first_tier": round(self.first_tier, 6)}
        if self.encoder is not None:
            out["encoder"] = round(self.encoder, 6)
        out["score"] = round(self.score, 6)
        return out


class CascadeModel:
    """First tier + gate + encoder + combiner, with the first tier's scoring interface."""

    def __init__(
        self,
        first: FirstTierModel,
        encoder: EncoderModel,
        combiner: Combiner,
        *,
        clear: float | None = None,
        gate: TopicGate | None = None,
    ) -> None:
        self.first = first
        self.encoder = encoder
        self.combiner = combiner
        self.gate = gate
        self.thresholds: dict[str, float] = dict(combiner.thresholds)
        self.parts = {"first_tier": first.version, "encoder": encoder.version, "combiner": combiner.version}
        if gate is None:
            self.clear = combiner.clear if clear is None else clear
            self.version = f"cascade-{SERIES}+{first.version}+{encoder.version}+{combiner.version}"
        else:
            self.clear = gated_first_line(first, self.thresholds) if clear is None else clear
            self.version = f"cascade-{GATED_SERIES}+{first.version}+{encoder.version}+{combiner.version}+{gate.version}"
            self.parts["gate"] = gate.version

    def route(self, texts: Sequence[str], first_scores: F64) -> list[str | None]:
        """Per text: the reason it goes to the second tier, or None when the first tier clears it."""
        topic = self.gate.on_topic(texts) if self.gate is not None else None
        out: list[str | None] = []
        for i, (t, s) in enumerate(zip(texts, first_scores.tolist(), strict=True)):
            if s >= self.clear:
                out.append("first-tier")
            elif topic is not None and topic[i]:
                out.append("topic-gate")
            else:
                out.append(gate_reason(t))
        return out

    def reason(self, text: str, first_score: float | None = None) -> str | None:
        """Why ``text`` goes to the second tier, or None when the first tier clears it."""
        if first_score is None:
            first_score = float(self.first.score_texts([text])[0])
        return self.route([text], np.array([first_score], dtype=np.float64))[0]

    def score_full(self, texts: Sequence[str]) -> tuple[F64, F64, list[Decision]]:
        first, first_cats = self.first.score_with_categories(texts)
        first = np.asarray(first, dtype=np.float64)
        scores = first.copy()
        cats = np.asarray(first_cats, dtype=np.float64).copy()
        reasons = self.route(texts, first)
        routed = [i for i, r in enumerate(reasons) if r is not None]
        enc_p: dict[int, float] = {}
        if routed:
            logit, cat_logits = self.encoder.logits([texts[i] for i in routed])
            scripts = [script_of(texts[i]) for i in routed]
            combined = self.combiner.combine(first[routed], logit, scripts)
            p_enc = self.encoder.calibrated(logit)
            cond_enc = 1.0 / (1.0 + np.exp(-np.clip(cat_logits.astype(np.float64), -40, 40)))
            cond_first = np.clip(cats[routed] / np.maximum(first[routed, None], 1e-6), 0.0, 1.0)
            # Which TTPs: the first tier's where it recognised the request itself (at or above its own
            # strict preset: its category heads are sharp and account judgement's actor profiles were
            # fitted on them); elsewhere the larger of both tiers' (the encoder reads what the first
            # tier cannot; its heads, trained on weak labels, spread mass over more categories).
            own = first[routed] >= float(self.first.thresholds.get("strict", 1.0))
            cond = np.where(own[:, None], cond_first, np.maximum(cond_first, cond_enc))
            cats[routed] = combined[:, None] * cond
            scores[routed] = combined
            enc_p = {i: float(p) for i, p in zip(routed, p_enc.tolist(), strict=True)}
        decisions = [
            Decision(
                tier="second" if reasons[i] is not None else "first",
                reason=reasons[i] or "cleared",
                first_tier=float(first[i]),
                encoder=enc_p.get(i),
                score=float(scores[i]),
            )
            for i in range(len(texts))
        ]
        return scores, cats, decisions

    # -- the first tier's interface ---------------------------------------------------------------
    def score_with_categories(self, texts: Sequence[str]) -> tuple[F64, F64]:
        scores, cats, _ = self.score_full(texts)
        return scores, cats

    def score_texts(self, texts: Sequence[str]) -> F64:
        return self.score_full(texts)[0]

    def decisions(self, texts: Sequence[str]) -> list[Decision]:
        return self.score_full(texts)[2]

    def explain_text(self, text: str, top: int = 8) -> list[dict[str, Any]]:
        """Spans from the second tier (when the prompt reached it), then first-tier n-grams that
        are not only function words; each entry names its ``tier``."""
        out: list[dict[str, Any]] = []
        if self.reason(text) is not None:
            out.extend(self.encoder.explain_text(text, top=top))
        for ev in self.first.explain_text(text, top=top * 2):
            feature = str(ev.get("feature", ""))
            words = [w for w in re.split(r"[\s_]+", feature.lower()) if w]
            if words and all(w in FUNCTION_WORDS for w in words):
                continue
            out.append({**ev, "tier": "first"})
        return out[: top * 2]

    def category_breakdown(self, text: str) -> dict[str, float]:
        _, cats, _ = self.score_full([text])
        return {c: float(v) for c, v in zip(LLMT_IDS, cats[0].tolist(), strict=True)}


@lru_cache(maxsize=4)
def _load(first: str | None, encoder: str | None, combiner: str | None) -> CascadeModel:
    enc = load_encoder(encoder)
    return CascadeModel(load_model(first), enc, load_combiner(combiner, enc.folder), gate=load_gate(enc.folder))


def load_cascade(
    first_tier: str | Path | None = None, encoder: str | Path | None = None, combiner: str | Path | None = None
) -> CascadeModel:
    """The shipped cascade (or one built from the given parts); cached per parts."""
    from stormwatch.detect.encoder import default_encoder_path
    from stormwatch.detect.model import default_model_path

    # the defaults are resolved before the cache: they follow STORMWATCH_DETECT_MODEL / STORMWATCH_ENCODER
    first_tier = first_tier or default_model_path()
    encoder = encoder or default_encoder_path()
    return _load(str(first_tier), str(encoder), str(combiner) if combiner else None)
