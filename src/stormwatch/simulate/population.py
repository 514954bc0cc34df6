"""The simulated platform's population: benign personas, organisations and actor operations."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from itertools import accumulate

from stormwatch.simulate.infra import (
    API_UAS,
    API_WEIGHTS,
    BROWSER_UAS,
    BROWSER_WEIGHTS,
    COUNTRY_CODES,
    COUNTRY_LANG,
    COUNTRY_TZ,
    COUNTRY_WEIGHTS,
    MODEL_WEIGHTS,
    MODELS,
    IPSpace,
    Provider,
    corp_domain,
    local_part,
    uni_domain,
    webmail,
)

DAY = 86400.0

# Local-time hourly activity weights (index = local hour).
PROFILES: dict[str, list[float]] = {
    "evening": [2, 1, 0.5, 0.3, 0.2, 0.3, 1, 2, 3, 4, 4, 5, 6, 5, 5, 5, 5, 6, 7, 9, 10, 9, 7, 4],
    "office": [0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 2, 6, 9, 10, 10, 7, 8, 10, 10, 9, 6, 3, 2, 2, 2, 1.5, 0.8],
    "student": [5, 3, 1.5, 0.5, 0.2, 0.2, 0.3, 1, 2, 3, 4, 5, 5, 6, 7, 7, 7, 7, 7, 8, 9, 10, 9, 7],
    "flat": [4, 4, 4, 4, 4, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 7, 6, 6, 5, 5, 5, 4, 4],
    # state-affiliated operators: weekday office hours, lunch dip, little night work
    "actor": [0, 0, 0, 0, 0, 0, 0.1, 0.4, 2, 8, 10, 10, 4, 7, 10, 10, 8, 5, 1, 0.4, 0.2, 0.1, 0, 0],
}

# persona: share of benign accounts, profile, weekend factor, sessions/day median, turn continue p
PERSONAS: dict[str, tuple[float, str, float, float, float]] = {
    "everyday": (0.54, "evening", 1.15, 0.35, 0.45),
    "developer": (0.18, "office", 0.35, 0.7, 0.55),
    "student": (0.12, "student", 0.9, 0.5, 0.5),
    "security_pro": (0.06, "office", 0.3, 0.6, 0.5),
    "marketer": (0.06, "office", 0.4, 0.5, 0.5),
    "heavy_api": (0.04, "flat", 0.9, 0.5, 0.0),
}


@dataclass(frozen=True, slots=True)
class ActorSpec:
    name: str
    country: str
    tz: float
    attack_id: str | None
    aliases: tuple[str, ...]
    ttp_mix: tuple[tuple[str, float], ...]
    lang: str
    home_webmail: tuple[str, ...]
    rare_domains: tuple[str, ...]


ACTORS: tuple[ActorSpec, ...] = (
    ActorSpec(
        "Forest Blizzard",
        "RU",
        3.0,
        "G0007",
        ("STRONTIUM", "APT28", "Fancy Bear", "Sofacy"),
        (("LLMT-01", 0.45), ("LLMT-02", 0.55)),
        "ru",
        ("mail.ru", "yandex.ru"),
        ("sat-techreview.org", "defence-logistics-forum.com"),
    ),
    ActorSpec(
        "Emerald Sleet",
        "KP",
        9.0,
        "G0094",
        ("THALLIUM", "Kimsuky", "Velvet Chollima"),
        (("LLMT-01", 0.25), ("LLMT-02", 0.2), ("LLMT-04", 0.35), ("LLMT-05", 0.2)),
        "ko",
        ("naver.com",),
        ("eastbrook-univ.org", "asia-policy-review.net"),
    ),
    ActorSpec(
        "Crimson Sandstorm",
        "IR",
        3.5,
        "G1012",
        ("CURIUM", "Tortoiseshell", "Imperial Kitten"),
        (("LLMT-02", 0.4), ("LLMT-04", 0.3), ("LLMT-07", 0.3)),
        "fa",
        ("chmail.ir",),
        ("intl-devaid.org", "women-voices-forum.org"),
    ),
    ActorSpec(
        "Charcoal Typhoon",
        "CN",
        8.0,
        "G1006",
        ("CHROMIUM", "Aquatic Panda", "ControlX", "RedHotel"),
        (("LLMT-01", 0.25), ("LLMT-02", 0.3), ("LLMT-04", 0.2), ("LLMT-10", 0.25)),
        "zh",
        ("qq.com", "163.com"),
        ("edu-cloudportal.net",),
    ),
    ActorSpec(
        "Salmon Typhoon",
        "CN",
        8.0,
        None,
        ("SODIUM", "APT4", "Maverick Panda"),
        (("LLMT-01", 0.35), ("LLMT-02", 0.2), ("LLMT-10", 0.2), ("LLMT-11", 0.25)),
        "zh",
        ("126.com",),
        ("crypto-tech-digest.com",),
    ),
)
FAKE_COUNTRIES = ["US", "GB", "NL", "DE", "SG", "HK", "AE", "TR", "MY", "FR"]


@dataclass(slots=True)
class Account:
    idx: int
    account_id: str
    persona: str  # benign persona name, or the actor name
    actor: str | None
    operation: str | None
    country: str
    tz: float
    created_at: float
    active_from: float
    active_until: float
    email: str
    email_domain: str
    payment: str | None
    phone: str | None
    device_id: str
    signup_ip: str
    org_id: str | None
    status: str
    ips: list[str]
    ip_cum: list[float]
    api_keys: list[str]
    uas: list[str]
    api_share: float
    model_cum: list[float]
    models: list[str]
    sessions_per_day: float
    turn_p: float
    weekend_factor: float
    profile_cum_utc: list[float]
    accept_language: str
    end_users: list[str] = field(default_factory=list)
    hidden: bool = False
    events_per_session: float = 1.0


@dataclass(slots=True)
class Operation:
    op_id: str
    actor: ActorSpec
    exposed_ips: list[str]
    hidden_ips: list[str]
    cidrs: list[tuple[str, list[str]]]
    vpn_exits: list[str]
    devices: list[str]
    payments: list[str]
    phones: list[str]
    rare_domain: str
    uas: list[str]
    accounts: list[int] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)


def hexid(rng: random.Random, bits: int = 64) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def utc_profile(profile: str, tz: float) -> list[float]:
    """Cumulative weights over UTC hours for a local-time profile at UTC offset ``tz``."""
    local = PROFILES[profile]
    shift = round(tz)
    utc = [local[(h + shift) % 24] + 1e-6 for h in range(24)]
    return list(accumulate(utc))


def cum(weights: list[float]) -> list[float]:
    return list(accumulate(weights))


def lognormal_rate(rng: random.Random, median: float, sigma: float = 1.0) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True)
class Population:
    accounts: list[Account]
    operations: list[Operation]
    providers: list[Provider]
    vpn_exits: dict[str, list[str]]
    orgs: dict[str, str]  # org_id -> domain
    salt: str


class _Builder:
    def __init__(self, rng: random.Random, n_accounts: int, start: float, days: int) -> None:
        self.rng = rng
        self.n = n_accounts
        self.start = start
        self.end = start + days * DAY
        self.space = IPSpace(rng)
        self.salt = hexid(rng, 64)
        self.accounts: list[Account] = []
        scale = max(1.0, n_accounts / 1500)
        self.residential: dict[str, list[Provider]] = {}
        self.mobile: dict[str, list[str]] = {}
        for cc in COUNTRY_CODES:
            self.residential[cc] = [
                self.space.provider(f"{cc}-resi-{i}", "residential", cc, v6=i == 0) for i in range(2)
            ]
            mob = self.space.provider(f"{cc}-mobile", "mobile", cc)
            self.mobile[cc] = [self.space.addr(mob) for _ in range(max(2, int(3 * scale)))]
        self.hosting = [
            self.space.provider(f"hosting-{i}", "hosting", cc, v6=i % 2 == 0)
            for i, cc in enumerate(["US", "NL", "DE", "SG", "FR", "GB", "US", "HK"])
        ]
        n_exit = max(2, int(n_accounts / 1500))
        self.vpn: dict[str, list[str]] = {}
        for i, cc in enumerate(["NL", "SE", "US"]):
            p = self.space.provider(f"vpn-{i}", "vpn", cc)
            self.vpn[p.name] = [self.space.addr(p) for _ in range(n_exit + (1 if i == 2 else 0))]
        self.orgs: dict[str, str] = {}

    def new_account(self, persona: str, country: str, tz: float) -> Account:
        rng = self.rng
        created = self.start - rng.uniform(1, 700) * DAY
        return Account(
            idx=len(self.accounts),
            account_id=f"acct_{hexid(rng, 64)}",
            persona=persona,
            actor=None,
            operation=None,
            country=country,
            tz=tz,
            created_at=created,
            active_from=self.start,
            active_until=self.end,
            email="",
            email_domain="",
            payment=None,
            phone=None,
            device_id=f"dev_{hexid(rng, 64)}",
            signup_ip="",
            org_id=None,
            status="active",
            ips=[],
            ip_cum=[],
            api_keys=[f"key_{hexid(rng, 48)}"],
            uas=[],
            api_share=0.0,
            model_cum=[],
            models=MODELS,
            sessions_per_day=0.0,
            turn_p=0.0,
            weekend_factor=1.0,
            profile_cum_utc=[],
            accept_language=COUNTRY_LANG.get(country, "en-US,en;q=0.9"),
        )

    def _orgs(self, kind: str, count: int) -> list[tuple[str, str, str, list[str], str]]:
        """(org_id, domain, country, NAT IPs, corporate card) per org; Zipf-sized by caller."""
        out = []
        corp = self.space.provider(f"{kind}-nets", "corporate" if kind == "corp" else "university", "US")
        for _ in range(count):
            cc = self.rng.choices(COUNTRY_CODES, weights=COUNTRY_WEIGHTS)[0]
            dom = corp_domain(self.rng) if kind == "corp" else uni_domain(self.rng, cc)
            oid = f"org_{hexid(self.rng, 48)}"
            self.orgs[oid] = dom
            nat = [self.space.addr(corp) for _ in range(self.rng.randint(1, 3))]
            out.append((oid, dom, cc, nat, f"pf_{hexid(self.rng, 64)}"))
        return out

    def benign(self, count: int) -> None:
        rng = self.rng
        names = list(PERSONAS)
        shares = [PERSONAS[p][0] for p in names]
        corps = self._orgs("corp", max(3, count // 45))
        unis = self._orgs("uni", max(2, count // 400))
        corp_w = [1.0 / (i + 1) ** 1.1 for i in range(len(corps))]
        uni_w = [1.0 / (i + 1) for i in range(len(unis))]
        lab_devices = [f"dev_{hexid(rng, 64)}" for _ in range(max(2, len(unis) * 2))]
        vpn_names = list(self.vpn)
        for _ in range(count):
            persona = rng.choices(names, weights=shares)[0]
            _, profile, weekend, median, turn_p = PERSONAS[persona]
            org = None
            office = persona in ("developer", "security_pro", "marketer")
            if (office and rng.random() < 0.55) or (persona == "everyday" and rng.random() < 0.12):
                org = rng.choices(corps, weights=corp_w)[0]
            elif persona == "student" and rng.random() < 0.65:
                org = rng.choices(unis, weights=uni_w)[0]
            country = org[2] if org else rng.choices(COUNTRY_CODES, weights=COUNTRY_WEIGHTS)[0]
            tz = rng.choice(COUNTRY_TZ[country])
            acc = self.new_account(persona, country, tz)
            if org:
                acc.org_id, acc.email_domain = org[0], org[1]
                if rng.random() < 0.5:
                    acc.payment = org[4]  # corporate card shared by colleagues
            else:
                acc.email_domain = webmail(rng, country)
            acc.email = f"{local_part(rng)}@{acc.email_domain}"
            if acc.payment is None and rng.random() < (0.35 if persona == "everyday" else 0.6):
                acc.payment = f"pf_{hexid(rng, 64)}"
            if rng.random() < 0.85:
                acc.phone = f"+{rng.randint(1, 99)}{rng.randint(10**8, 10**10)}"
            if persona == "student" and org and rng.random() < 0.3:
                acc.device_id = rng.choice(lab_devices)  # shared lab machine
            # network: home + mobile, office NAT, VPN, hosting for API automation
            provs = self.residential[country]
            home = self.space.addr6(provs[0]) if rng.random() < 0.18 else self.space.addr(rng.choice(provs))
            ips = [home]
            w = [6.0]
            if rng.random() < 0.4:
                ips.append(self.space.addr(rng.choice(provs)))  # DHCP change during the month
                w.append(2.0)
            if rng.random() < 0.5:
                ips.append(rng.choice(self.mobile[country]))
                w.append(2.0)
            if org:
                ips += org[3]
                w += [8.0 / len(org[3])] * len(org[3])
            if rng.random() < 0.18:
                exits = self.vpn[rng.choices(vpn_names, weights=[5, 3, 2])[0]]
                ips += exits
                w += [12.0 / len(exits)] * len(exits)
            acc.api_share = {"developer": 0.45, "heavy_api": 1.0, "security_pro": 0.2}.get(persona, 0.03)
            if persona == "heavy_api" or (persona == "developer" and rng.random() < 0.15):
                host = rng.choice(self.hosting)
                srv = [self.space.addr(host) for _ in range(rng.randint(1, 3))]
                ips += srv
                w += [10.0 * acc.api_share + 1] * len(srv)
                acc.api_keys.append(f"key_{hexid(rng, 48)}")
                if persona == "heavy_api" and rng.random() < 0.5:
                    acc.end_users = [f"eu_{hexid(rng, 32)}" for _ in range(rng.randint(5, 200))]
            acc.ips, acc.ip_cum = ips, cum(w)
            acc.signup_ip = home
            acc.uas = [rng.choices(BROWSER_UAS, weights=BROWSER_WEIGHTS)[0] for _ in range(rng.randint(1, 2))]
            acc.uas.append(rng.choices(API_UAS, weights=API_WEIGHTS)[0])
            acc.model_cum = cum([x * rng.uniform(0.2, 2) for x in MODEL_WEIGHTS])
            rate = lognormal_rate(rng, median, 1.0)
            if persona == "heavy_api":
                acc.events_per_session = 15.0
                rate = lognormal_rate(rng, median, 0.6)
            acc.sessions_per_day = rate
            acc.turn_p, acc.weekend_factor = turn_p, weekend
            acc.profile_cum_utc = utc_profile(profile, tz)
            if persona != "heavy_api":
                acc.events_per_session = 1.0 / (1.0 - turn_p)
            r = rng.random()
            if r < 0.004:
                acc.status = "suspended"
            elif r < 0.006:
                acc.status = "terminated"
            if rng.random() < 0.06:  # new sign-ups during the month
                acc.created_at = rng.uniform(self.start, self.end - DAY)
                acc.active_from = acc.created_at
            self.accounts.append(acc)

    def actors(self) -> list[Operation]:
        rng = self.rng
        factor = min(4.0, max(0.35, math.sqrt(self.n / 2000)))
        ops: list[Operation] = []
        for spec in ACTORS:
            n_ops = 2 if (self.n >= 8000 or rng.random() < 0.3) else 1
            for k in range(n_ops):
                ops.append(self._operation(spec, k, max(2, round(rng.randint(4, 9) * factor))))
        return ops

    def _operation(self, spec: ActorSpec, k: int, n_acc: int) -> Operation:
        rng = self.rng
        hosts = rng.sample(self.hosting, 3)
        cidr, block = self.space.block28(hosts[0])
        exposed = rng.sample(block, rng.randint(2, 4))
        third = rng.sample(["NL", "DE", "TR", "AE", "SG", "HK", "MY" if "MY" in self.residential else "VN"], 2)
        exposed += [self.space.addr(rng.choice(self.residential[c])) for c in third if c in self.residential]
        if rng.random() < 0.5:
            exposed.append(self.space.addr6(hosts[1]))
        hidden = [self.space.addr(hosts[2]) for _ in range(rng.randint(2, 3))]
        vpn = self.vpn[rng.choice(list(self.vpn))] if rng.random() < 0.7 else []
        op = Operation(
            op_id=f"op-{spec.name.split()[0].lower()}-{spec.name.split()[1].lower()}-{k + 1}",
            actor=spec,
            exposed_ips=exposed,
            hidden_ips=hidden,
            cidrs=[(cidr, block)],
            vpn_exits=vpn,
            devices=[f"dev_{hexid(rng, 64)}" for _ in range(rng.randint(2, 4))],
            payments=[f"pf_{hexid(rng, 64)}" for _ in range(rng.randint(1, 3))],
            phones=[f"+{rng.randint(1, 99)}{rng.randint(10**8, 10**10)}" for _ in range(rng.randint(2, 4))],
            rare_domain=rng.choice(spec.rare_domains),
            uas=[rng.choice(API_UAS[:4]), rng.choice(BROWSER_UAS[:6])],
        )
        span = self.end - self.start
        # first wave signed up before the window; later accounts replace "burned" ones
        n_first = max(1, round(n_acc * rng.uniform(0.5, 0.7)))
        burn_times: list[float] = []
        for i in range(n_acc):
            acc = self.new_account(spec.name, rng.choice(FAKE_COUNTRIES), spec.tz)
            acc.actor, acc.operation, acc.tz = spec.name, op.op_id, spec.tz
            acc.country = spec.country if rng.random() < 0.1 else acc.country
            acc.hidden = rng.random() < 0.35 or i == n_acc - 1
            if i < n_first:
                acc.created_at = self.start - rng.uniform(3, 120) * DAY
                acc.active_from = self.start + rng.uniform(0, 0.2) * span
                if rng.random() < 0.6:
                    acc.active_until = self.start + rng.uniform(0.3, 0.9) * span
                    burn_times.append(acc.active_until)
                    acc.status = "suspended" if rng.random() < 0.4 else "active"
            else:
                after = burn_times.pop(0) if burn_times else self.start + rng.uniform(0.2, 0.8) * span
                acc.created_at = min(self.end - DAY, after + rng.uniform(0.1, 2.0) * DAY)
                acc.active_from = acc.created_at + rng.uniform(0.0, 0.5) * DAY
            own = rng.sample(op.hidden_ips, 2) if acc.hidden else rng.sample(exposed, min(len(exposed), 3))
            ips, w = own, [5.0] * len(own)
            if vpn and rng.random() < 0.6:
                ips = ips + vpn
                w = w + [4.0 / len(vpn)] * len(vpn)
            acc.ips, acc.ip_cum, acc.signup_ip = ips, cum(w), own[0]
            if acc.hidden or rng.random() < 0.5:
                acc.email_domain = rng.choice([*spec.home_webmail, "gmail.com", "outlook.com", "proton.me"])
            else:
                acc.email_domain = op.rare_domain
            acc.email = f"{local_part(rng)}@{acc.email_domain}"
            op.emails.append(acc.email)
            acc.device_id = rng.choice(op.devices) if rng.random() < 0.7 else acc.device_id
            acc.payment = rng.choice(op.payments) if rng.random() < 0.6 else None
            acc.phone = rng.choice(op.phones) if rng.random() < 0.8 else None
            acc.uas = list(op.uas)
            acc.api_share = rng.uniform(0.2, 0.7)
            acc.model_cum = cum([40, 25, 20, 10, 5])
            acc.accept_language = (
                "en-US,en;q=0.9" if rng.random() < 0.7 else COUNTRY_LANG.get(spec.country, f"{spec.lang};q=0.9")
            )
            if spec.country == "KP" and not acc.accept_language.startswith("en"):
                acc.accept_language = "ko-KR,ko;q=0.9,en;q=0.6"
            acc.sessions_per_day = lognormal_rate(rng, 2.2, 0.4)
            acc.turn_p, acc.weekend_factor = 0.55, 0.08
            acc.profile_cum_utc = utc_profile("actor", spec.tz)
            acc.events_per_session = 2.6
            op.accounts.append(acc.idx)
            self.accounts.append(acc)
        return op


def build_population(rng: random.Random, n_accounts: int, start: float, days: int) -> Population:
    """Build benign accounts and actor operations. Actor accounts are part of ``n_accounts``."""
    b = _Builder(rng, n_accounts, start, days)
    # actors first so their count can be subtracted; then benign, then shuffle ids into one list
    ops = b.actors()
    actor_accounts = list(b.accounts)
    b.accounts = []
    b.benign(max(0, n_accounts - len(actor_accounts)))
    benign = b.accounts
    merged = benign + actor_accounts
    rng.shuffle(merged)
    remap = {}
    for i, acc in enumerate(merged):
        remap[acc.account_id] = i
        acc.idx = i
    for op in ops:
        op.accounts = sorted(
            remap[actor_accounts[j].account_id]
            for j in range(len(actor_accounts))
            if actor_accounts[j].operation == op.op_id
        )
    return Population(
        accounts=merged,
        operations=ops,
        providers=b.space.providers,
        vpn_exits=b.vpn,
        orgs=b.orgs,
        salt=b.salt,
    )
