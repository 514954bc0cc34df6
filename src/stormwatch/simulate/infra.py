"""Synthetic network, identity and client infrastructure: countries, IP blocks, e-mail domains.

IP addresses are drawn from random public-looking space (private, shared, loopback, link-local,
documentation and multicast ranges are avoided). They are fictional and never contacted.
"""

# ruff: noqa: E501  (data tables: long literal strings)

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

# code, weight, UTC offsets (no DST), accept-language
COUNTRIES: list[tuple[str, float, list[float], str]] = [
    ("US", 27, [-5, -6, -7, -8], "en-US,en;q=0.9"),
    ("IN", 9, [5.5], "en-IN,en;q=0.9,hi;q=0.8"),
    ("GB", 6, [0], "en-GB,en;q=0.9"),
    ("DE", 5, [1], "de-DE,de;q=0.9,en;q=0.8"),
    ("BR", 5, [-3], "pt-BR,pt;q=0.9,en;q=0.7"),
    ("FR", 4, [1], "fr-FR,fr;q=0.9,en;q=0.7"),
    ("JP", 4, [9], "ja-JP,ja;q=0.9"),
    ("CA", 3, [-5, -8], "en-CA,en;q=0.9,fr;q=0.6"),
    ("KR", 3, [9], "ko-KR,ko;q=0.9,en;q=0.7"),
    ("ID", 3, [7], "id-ID,id;q=0.9,en;q=0.7"),
    ("MX", 2, [-6], "es-MX,es;q=0.9"),
    ("ES", 2, [1], "es-ES,es;q=0.9"),
    ("IT", 2, [1], "it-IT,it;q=0.9"),
    ("NL", 2, [1], "nl-NL,nl;q=0.9,en;q=0.8"),
    ("PL", 2, [1], "pl-PL,pl;q=0.9"),
    ("TR", 2, [3], "tr-TR,tr;q=0.9"),
    ("AU", 2, [10], "en-AU,en;q=0.9"),
    ("VN", 2, [7], "vi-VN,vi;q=0.9"),
    ("PH", 2, [8], "en-PH,en;q=0.9"),
    ("NG", 1.5, [1], "en-NG,en;q=0.9"),
    ("UA", 1.5, [2], "uk-UA,uk;q=0.9,ru;q=0.8"),
    ("TW", 1.5, [8], "zh-TW,zh;q=0.9"),
    ("RU", 1.5, [3], "ru-RU,ru;q=0.9,en;q=0.6"),
    ("CN", 1.2, [8], "zh-CN,zh;q=0.9"),
    ("HK", 1, [8], "zh-HK,zh;q=0.9,en;q=0.8"),
    ("SG", 1, [8], "en-SG,en;q=0.9"),
    ("IL", 1, [2], "he-IL,he;q=0.9,en;q=0.8"),
    ("AE", 1, [4], "ar-AE,ar;q=0.9,en;q=0.8"),
    ("SE", 1, [1], "sv-SE,sv;q=0.9,en;q=0.8"),
    ("IR", 0.5, [3.5], "fa-IR,fa;q=0.9,en;q=0.6"),
]
COUNTRY_CODES = [c[0] for c in COUNTRIES]
COUNTRY_WEIGHTS = [c[1] for c in COUNTRIES]
COUNTRY_TZ = {c[0]: c[2] for c in COUNTRIES}
COUNTRY_LANG = {c[0]: c[3] for c in COUNTRIES}

# Zipf-ish global webmail shares, plus regional providers
WEBMAIL_GLOBAL: list[tuple[str, float]] = [
    ("gmail.com", 42),
    ("outlook.com", 12),
    ("hotmail.com", 8),
    ("yahoo.com", 7),
    ("icloud.com", 5),
    ("proton.me", 1.5),
    ("aol.com", 0.8),
    ("zoho.com", 0.4),
    ("tutanota.com", 0.2),
    ("gmx.com", 0.4),
]
WEBMAIL_REGIONAL: dict[str, list[tuple[str, float]]] = {
    "RU": [("mail.ru", 20), ("yandex.ru", 18)],
    "UA": [("ukr.net", 10)],
    "CN": [("qq.com", 30), ("163.com", 20), ("126.com", 6)],
    "KR": [("naver.com", 25), ("daum.net", 6)],
    "JP": [("yahoo.co.jp", 15), ("docomo.ne.jp", 3)],
    "DE": [("gmx.de", 12), ("web.de", 12), ("t-online.de", 5)],
    "FR": [("orange.fr", 8), ("free.fr", 5), ("laposte.net", 3)],
    "GB": [("btinternet.com", 4), ("sky.com", 2)],
    "IN": [("rediffmail.com", 4)],
    "BR": [("uol.com.br", 5), ("bol.com.br", 3)],
    "IT": [("libero.it", 8)],
    "PL": [("wp.pl", 10), ("o2.pl", 5)],
    "IR": [("chmail.ir", 10)],
    "TR": [("yandex.com.tr", 4)],
}

BROWSER_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36 Edg/121.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Mobile Safari/537.36",
]
BROWSER_WEIGHTS = [30, 6, 10, 10, 3, 5, 14, 8, 8]
API_UAS = [
    "OpenAI/Python 1.14.0",
    "OpenAI/Python 1.12.0",
    "OpenAI/NodeJS/4.28.4",
    "python-requests/2.31.0",
    "python-httpx/0.27.0",
    "curl/8.6.0",
    "Go-http-client/2.0",
    "axios/1.6.7",
    "langchain-openai/0.0.8",
]
API_WEIGHTS = [25, 10, 15, 10, 8, 4, 4, 5, 6]
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-3.5-turbo", "gpt-4"]
MODEL_WEIGHTS = [30, 30, 15, 20, 5]

_BAD_FIRST = {0, 10, 100, 127, 169, 172, 192, 198, 203, 224}


@dataclass(slots=True)
class Provider:
    """A network operator (ASN-like): its kind, country and address prefixes."""

    name: str
    kind: str  # residential | mobile | hosting | vpn | corporate | university
    country: str
    prefixes: list[str] = field(default_factory=list)
    v6_prefix: str | None = None
    _next: int = 0


class IPSpace:
    """Deterministic allocator of fictional provider blocks and addresses."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used16: set[tuple[int, int]] = set()
        self.providers: list[Provider] = []
        self._blocks: dict[str, list[tuple[int, int]]] = {}

    def _new16(self) -> tuple[int, int]:
        while True:
            a = self.rng.randint(2, 222)
            if a in _BAD_FIRST:
                continue
            b = self.rng.randint(0, 255)
            if (a, b) not in self.used16:
                self.used16.add((a, b))
                return (a, b)

    def provider(self, name: str, kind: str, country: str, v6: bool = False) -> Provider:
        p = Provider(name=name, kind=kind, country=country)
        a, b = self._new16()
        p.prefixes.append(f"{a}.{b}.0.0/16")
        self._blocks[name] = [(a, b)]
        if v6:
            p.v6_prefix = f"2a0{self.rng.randint(1, 9)}:{self.rng.getrandbits(16):x}:{self.rng.getrandbits(16):x}"
        self.providers.append(p)
        return p

    def addr(self, p: Provider) -> str:
        a, b = self._blocks[p.name][0]
        return f"{a}.{b}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"

    def block28(self, p: Provider) -> tuple[str, list[str]]:
        """A /28 inside the provider's block (for VPS ranges); returns (cidr, usable addresses)."""
        a, b = self._blocks[p.name][0]
        c = self.rng.randint(0, 255)
        base = self.rng.randint(0, 15) * 16
        return f"{a}.{b}.{c}.{base}/28", [f"{a}.{b}.{c}.{base + i}" for i in range(1, 15)]

    def addr6(self, p: Provider) -> str:
        if not p.v6_prefix:
            return self.addr(p)
        r = self.rng.getrandbits
        return f"{p.v6_prefix}:{r(16):x}:{r(16):x}:{r(16):x}:{r(16):x}:{r(16):x}"


def pick_weighted(rng: random.Random, items: Sequence[tuple[str, float]]) -> str:
    return rng.choices([i[0] for i in items], weights=[i[1] for i in items])[0]


def webmail(rng: random.Random, country: str) -> str:
    regional = WEBMAIL_REGIONAL.get(country, [])
    return pick_weighted(rng, WEBMAIL_GLOBAL + regional)


_SYL = [
    "ka",
    "lo",
    "ve",
    "ri",
    "ta",
    "no",
    "mi",
    "sa",
    "de",
    "ru",
    "po",
    "li",
    "xa",
    "ne",
    "zo",
    "bi",
    "ter",
    "gan",
]
_CORP_SUFFIX = [
    "tech",
    "labs",
    "group",
    "systems",
    "soft",
    "data",
    "works",
    "consulting",
    "health",
    "logistics",
]
_TLDS: list[tuple[str, float]] = [
    (".com", 60),
    (".io", 10),
    (".co.uk", 6),
    (".de", 6),
    (".net", 6),
    (".fr", 4),
    (".co", 4),
    (".ai", 4),
]


def corp_domain(rng: random.Random) -> str:
    name = "".join(rng.choice(_SYL) for _ in range(rng.randint(2, 3)))
    sep = rng.choice(["", "-"])
    return f"{name}{sep}{rng.choice(_CORP_SUFFIX)}{pick_weighted(rng, _TLDS)}"


def uni_domain(rng: random.Random, country: str) -> str:
    name = "".join(rng.choice(_SYL) for _ in range(rng.randint(2, 3)))
    tld = {"GB": ".ac.uk", "JP": ".ac.jp", "KR": ".ac.kr", "IN": ".ac.in", "AU": ".edu.au"}.get(country, ".edu")
    return f"{name}{tld}"


def local_part(rng: random.Random) -> str:
    name = "".join(rng.choice(_SYL) for _ in range(rng.randint(2, 4)))
    style = rng.random()
    if style < 0.4:
        return f"{name}{rng.randint(1, 9999)}"
    if style < 0.7:
        return f"{name}.{''.join(rng.choice(_SYL) for _ in range(2))}"
    return name
