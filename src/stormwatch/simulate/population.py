"""The simulated platform's population: benign personas, organisations and actor operations.

Why this module is long: it builds the whole simulated population (benign personas, organisations,
the five actors' operations and the hard populations of the settings: pentest firms, red-teamers,
CTF teams, imitating and one-account-per-task actors) drawing from one random stream in a fixed
order; splitting it would make that order, which reproducibility depends on, harder to see.
"""

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
from stormwatch.simulate.settings import SimSettings

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
    style: str = "standard"  # actor tradecraft: standard | imitates_researcher | account_per_task
    task_ttp: str | None = None  # one-account-per-task actors: the account's one TTP
    bursts: tuple[tuple[float, float, float], ...] = ()  # (from, until, rate multiplier)
    firm: str | None = None  # pentest firm (org id) of a pentest_firm account
    isolated: bool = False  # actor account on its own infrastructure (no shared IP/device/payment/phone)


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
    style: str = "standard"


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
    settings: SimSettings = field(default_factory=SimSettings)
    ctf_weekends: list[tuple[float, float]] = field(default_factory=list)
    firm_infra: dict[str, dict[str, list[str]]] = field(default_factory=dict)


class _Builder:
    def __init__(
        self, rng: random.Random, n_accounts: int, start: float, days: int, settings: SimSettings | None = None
    ) -> None:
        self.s = s = settings or SimSettings()
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
        n_exit = max(s.vpn_exits_min, int(n_accounts / 1500 * s.vpn_exit_scale))
        self.vpn: dict[str, list[str]] = {}
        for i, cc in enumerate(["NL", "SE", "US"]):
            p = self.space.provider(f"vpn-{i}", "vpn", cc)
            self.vpn[p.name] = [self.space.addr(p) for _ in range(n_exit + (1 if i == 2 else 0))]
        self.orgs: dict[str, str] = {}
        self.ctf_weekends: list[tuple[float, float]] = []
        self.firm_infra: dict[str, dict[str, list[str]]] = {}

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
        shares = [self.s.security_pro_share if p == "security_pro" else PERSONAS[p][0] for p in names]
        corps = self._orgs("corp", max(3, count // self.s.corp_org_size))
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
            if rng.random() < self.s.vpn_user_p:
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
            rate = lognormal_rate(rng, median * self.s.benign_rate_scale, 1.0)
            if persona == "heavy_api":
                acc.events_per_session = 15.0
                rate = lognormal_rate(rng, median * self.s.benign_rate_scale, 0.6)
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
        s = self.s
        factor = min(4.0, max(0.35, math.sqrt(self.n / 2000))) * s.actor_ops_scale
        # styles come from their own stream so that the default (all standard) draws nothing here
        srng = random.Random(f"{self.salt}:styles")
        ops: list[Operation] = []
        for spec in ACTORS:
            n_ops = 2 if (self.n >= 8000 or rng.random() < s.second_op_p) else 1
            for k in range(n_ops):
                style = "standard"
                if s.account_per_task_share or s.imitates_researcher_share:
                    r = srng.random()
                    if r < s.account_per_task_share:
                        style = "account_per_task"
                    elif r < s.account_per_task_share + s.imitates_researcher_share:
                        style = "imitates_researcher"
                if style == "account_per_task":
                    n_task = max(2, round(s.task_accounts * factor))
                    ops.append(self._task_operation(spec, k, n_task))
                    continue
                op = self._operation(spec, k, max(2, round(rng.randint(s.op_size_min, s.op_size_max) * factor)))
                if style != "standard":
                    op.style = style
                    for acc in self.accounts[-len(op.accounts) :]:
                        acc.style = style
                ops.append(op)
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
        vpn = self.vpn[rng.choice(list(self.vpn))] if rng.random() < self.s.actor_vpn_p else []
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
        # isolation comes from its own stream so that the default (none) draws nothing here
        iso_rng = random.Random(f"{self.salt}:isolated:{op.op_id}") if self.s.actor_isolated_p else None
        # first wave signed up before the window; later accounts replace "burned" ones
        n_first = max(1, round(n_acc * rng.uniform(0.5, 0.7)))
        burn_times: list[float] = []
        for i in range(n_acc):
            acc = self.new_account(spec.name, rng.choice(FAKE_COUNTRIES), spec.tz)
            acc.actor, acc.operation, acc.tz = spec.name, op.op_id, spec.tz
            acc.country = spec.country if rng.random() < 0.1 else acc.country
            acc.hidden = rng.random() < self.s.actor_hidden_p or i == n_acc - 1
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
                "en-US,en;q=0.9"
                if rng.random() < self.s.actor_english_p
                else COUNTRY_LANG.get(spec.country, f"{spec.lang};q=0.9")
            )
            if spec.country == "KP" and not acc.accept_language.startswith("en"):
                acc.accept_language = "ko-KR,ko;q=0.9,en;q=0.6"
            acc.sessions_per_day = lognormal_rate(rng, self.s.actor_rate_median, self.s.actor_rate_sigma)
            acc.turn_p, acc.weekend_factor = 0.55, 0.08
            acc.profile_cum_utc = utc_profile("actor", spec.tz)
            acc.events_per_session = 2.6
            if iso_rng is not None and iso_rng.random() < self.s.actor_isolated_p:
                self._isolate(acc, hosts)
            op.accounts.append(acc.idx)
            self.accounts.append(acc)
        return op

    # ---- hard populations (off by default) ------------------------------------------------
    def hard_populations(self) -> None:
        """Pentest firms, red-teamers and CTF students: benign, but they ask like attackers."""
        s = self.s
        if s.pentest_firms:
            self.pentest_firms(max(1, round(s.pentest_firms * self.n / 2000)))
        if s.red_teamer_share:
            self.red_teamers(round(self.n * s.red_teamer_share))
        if s.ctf_student_share:
            self.ctf_students(round(self.n * s.ctf_student_share))

    def _home(self, acc: Account, rng: random.Random) -> tuple[list[str], list[float]]:
        provs = self.residential[acc.country]
        home = self.space.addr(rng.choice(provs))
        ips, w = [home], [6.0]
        if rng.random() < 0.5:
            ips.append(rng.choice(self.mobile[acc.country]))
            w.append(2.0)
        acc.signup_ip = home
        return ips, w

    def _vpn(self, rng: random.Random, ips: list[str], w: list[float], weight: float) -> None:
        exits = self.vpn[rng.choice(list(self.vpn))]
        ips += exits
        w += [weight / len(exits)] * len(exits)

    def _finish(self, acc: Account, rng: random.Random, profile: str, median: float, sigma: float) -> None:
        acc.uas = [rng.choices(BROWSER_UAS, weights=BROWSER_WEIGHTS)[0] for _ in range(rng.randint(1, 2))]
        acc.uas.append(rng.choices(API_UAS, weights=API_WEIGHTS)[0])
        acc.model_cum = cum([x * rng.uniform(0.2, 2) for x in MODEL_WEIGHTS])
        acc.sessions_per_day = lognormal_rate(rng, median * self.s.benign_rate_scale, sigma)
        acc.profile_cum_utc = utc_profile(profile, acc.tz)
        acc.events_per_session = 1.0 / (1.0 - acc.turn_p) + 0.5
        self.accounts.append(acc)

    def pentest_firms(self, n_firms: int) -> None:
        """Firms of several linked accounts: one corporate NAT, the firm's domain, card and API key."""
        rng, s = self.rng, self.s
        nets = self.space.provider("pentest-nets", "corporate", "US")
        for _ in range(n_firms):
            cc = rng.choices(COUNTRY_CODES, weights=COUNTRY_WEIGHTS)[0]
            if rng.random() < 0.5:
                name = "".join(rng.choice(["red", "cyber", "sec", "hack", "zero", "shield", "byte"]) for _ in range(2))
                dom = f"{name}{rng.choice(['-security', 'sec', '-labs', '-offsec'])}{rng.choice(['.com', '.io'])}"
            else:
                dom = corp_domain(rng)
            oid = f"org_{hexid(rng, 48)}"
            self.orgs[oid] = dom
            nat = [self.space.addr(nets) for _ in range(rng.randint(1, 2))]
            lab = [self.space.addr(h) for h in rng.sample(self.hosting, 2)]  # the firm's test VPSs
            card, firm_key = f"pf_{hexid(rng, 64)}", f"key_{hexid(rng, 48)}"
            self.firm_infra[oid] = {"nat_ips": nat, "lab_ips": lab, "api_keys": [firm_key]}
            for _ in range(rng.randint(s.pentest_size_min, s.pentest_size_max)):
                acc = self.new_account("pentest_firm", cc, rng.choice(COUNTRY_TZ[cc]))
                acc.org_id, acc.firm, acc.email_domain = oid, oid, dom
                acc.email = f"{local_part(rng)}@{dom}"
                acc.payment = card if rng.random() < 0.8 else None
                acc.phone = f"+{rng.randint(1, 99)}{rng.randint(10**8, 10**10)}" if rng.random() < 0.7 else None
                ips, w = list(nat), [10.0 / len(nat)] * len(nat)
                home, hw = self._home(acc, rng)
                ips, w = ips + home, w + [x / 3 for x in hw]
                acc.signup_ip = nat[0]  # signed up from the office
                if rng.random() < 0.6:
                    ips, w = ips + lab, [*w, 3.0, 3.0]
                if rng.random() < 0.3:
                    self._vpn(rng, ips, w, 3.0)
                acc.ips, acc.ip_cum = ips, cum(w)
                if rng.random() < s.pentest_shared_key_p:
                    acc.api_keys.append(firm_key)
                acc.api_share = 0.35
                acc.turn_p, acc.weekend_factor = 0.5, 0.2
                self._finish(acc, rng, "office", 0.7, 0.6)

    def red_teamers(self, count: int) -> None:
        """Independent red-teamers / jailbreak hobbyists: probe, get refused, rephrase."""
        rng = self.rng
        for _ in range(count):
            cc = rng.choices(COUNTRY_CODES, weights=COUNTRY_WEIGHTS)[0]
            acc = self.new_account("red_teamer", cc, rng.choice(COUNTRY_TZ[cc]))
            acc.email_domain = webmail(rng, cc)
            acc.email = f"{local_part(rng)}@{acc.email_domain}"
            acc.payment = f"pf_{hexid(rng, 64)}" if rng.random() < 0.7 else None
            acc.phone = f"+{rng.randint(1, 99)}{rng.randint(10**8, 10**10)}" if rng.random() < 0.8 else None
            ips, w = self._home(acc, rng)
            if rng.random() < 0.45:
                self._vpn(rng, ips, w, 8.0)
            if rng.random() < 0.35:
                ips.append(self.space.addr(rng.choice(self.hosting)))
                w.append(4.0)
            acc.ips, acc.ip_cum = ips, cum(w)
            acc.api_share = 0.3
            acc.turn_p, acc.weekend_factor = 0.6, 0.9
            self._finish(acc, rng, rng.choice(["evening", "office", "flat"]), 0.6, 0.7)

    def ctf_students(self, count: int) -> None:
        """CTF students in teams: quiet most of the month, bursts of exploit questions on CTF weekends."""
        rng, s = self.rng, self.s
        span_days = (self.end - self.start) / DAY
        # CTF weekends: Friday 16:00Z .. Monday 00:00Z in the window (or the last 2.5 days of a short one)
        fridays = [
            self.start + d * DAY for d in range(int(span_days)) if (int((self.start + d * DAY) // DAY) + 3) % 7 == 4
        ]
        picks = sorted(rng.sample(fridays, min(len(fridays), rng.randint(1, 2)))) if fridays else []
        self.ctf_weekends = [(f + 16 * 3600, f + 3 * DAY) for f in picks] or [
            (max(self.start, self.end - 2.5 * DAY), self.end)
        ]
        campus = self.space.provider("campus-nets", "university", "US")
        made = 0
        while made < count:
            cc = rng.choices(COUNTRY_CODES, weights=COUNTRY_WEIGHTS)[0]
            team_nat = [self.space.addr(campus)] if rng.random() < 0.5 else []
            team_dom = uni_domain(rng, cc) if team_nat else None
            for _ in range(min(count - made, rng.randint(2, 5))):
                acc = self.new_account("ctf_student", cc, rng.choice(COUNTRY_TZ[cc]))
                acc.email_domain = team_dom if team_dom and rng.random() < 0.7 else webmail(rng, cc)
                acc.email = f"{local_part(rng)}@{acc.email_domain}"
                acc.payment = f"pf_{hexid(rng, 64)}" if rng.random() < 0.3 else None
                acc.phone = f"+{rng.randint(1, 99)}{rng.randint(10**8, 10**10)}" if rng.random() < 0.8 else None
                ips, w = self._home(acc, rng)
                if team_nat:
                    ips, w = ips + team_nat, [*w, 5.0]
                acc.ips, acc.ip_cum = ips, cum(w)
                acc.api_share = 0.1
                acc.turn_p, acc.weekend_factor = 0.55, 0.9
                acc.bursts = tuple((a, b, s.ctf_burst_scale) for a, b in self.ctf_weekends)
                self._finish(acc, rng, "student", 0.2, 0.6)
                made += 1

    def _isolate(self, acc: Account, hosts: list[Provider]) -> None:
        """Move an actor account onto its own infrastructure: nothing shared with its operation
        except weak signals (hosting provider ranges, user agents, hours, style)."""
        rng = self.rng
        third = [c for c in ("NL", "DE", "TR", "AE", "SG", "HK", "MY", "VN") if c in self.residential]
        if rng.random() < 0.5:
            ip = self.space.addr(rng.choice(hosts[1:]))
        else:
            ip = self.space.addr(rng.choice(self.residential[rng.choice(third)]))
        acc.ips, acc.ip_cum, acc.signup_ip = [ip], [1.0], ip
        if rng.random() < 0.4:  # plus a commercial VPN shared with benign crowds
            exits = self.vpn[rng.choice(list(self.vpn))]
            acc.ips = [ip, *exits]
            acc.ip_cum = cum([5.0] + [3.0 / len(exits)] * len(exits))
        acc.device_id = f"dev_{hexid(rng, 64)}"
        acc.payment = acc.phone = None
        acc.email_domain = rng.choice(["gmail.com", "outlook.com", "proton.me"])
        acc.email = f"{local_part(rng)}@{acc.email_domain}"
        acc.hidden = acc.isolated = True

    def _task_operation(self, spec: ActorSpec, k: int, n_acc: int) -> Operation:
        """One account per task: many short-lived accounts, a few requests on one TTP each, no shared
        infrastructure beyond weak signals (same hosting providers' ranges, user agents, hours)."""
        rng, s = self.rng, self.s
        hosts = rng.sample(self.hosting, 3)
        cidr, block = self.space.block28(hosts[0])
        op = Operation(
            op_id=f"op-{spec.name.split()[0].lower()}-{spec.name.split()[1].lower()}-{k + 1}",
            actor=spec,
            exposed_ips=[],
            hidden_ips=[],
            cidrs=[(cidr, block)],
            vpn_exits=[],
            devices=[],
            payments=[],
            phones=[],
            rare_domain=rng.choice(spec.rare_domains),
            uas=[rng.choice(API_UAS[:4]), rng.choice(BROWSER_UAS[:6])],
            style="account_per_task",
        )
        span = self.end - self.start
        ttps = [t for t, _ in spec.ttp_mix]
        weights = [w for _, w in spec.ttp_mix]
        third = [c for c in ("NL", "DE", "TR", "AE", "SG", "HK", "MY", "VN") if c in self.residential]
        for i in range(n_acc):
            acc = self.new_account(spec.name, rng.choice(FAKE_COUNTRIES), spec.tz)
            acc.actor, acc.operation, acc.style = spec.name, op.op_id, "account_per_task"
            acc.country = spec.country if rng.random() < 0.05 else acc.country
            acc.task_ttp = rng.choices(ttps, weights=weights)[0]
            life = rng.uniform(0.3, 3.0) * DAY
            acc.active_from = self.start + rng.uniform(0, max(0.0, span - life))
            acc.active_until = min(self.end, acc.active_from + life)
            acc.created_at = acc.active_from - rng.uniform(0.01, 1.0) * DAY
            acc.status = "suspended" if rng.random() < 0.15 else "active"
            # a fresh address per account: the operation's hosters (other /28s) or a third country
            if rng.random() < 0.55:
                ip = self.space.addr(rng.choice(hosts))
            else:
                ip = self.space.addr(rng.choice(self.residential[rng.choice(third)]))
            acc.hidden = i > 0 and rng.random() < 0.5
            (op.hidden_ips if acc.hidden else op.exposed_ips).append(ip)
            acc.ips, acc.ip_cum, acc.signup_ip = [ip], [1.0], ip
            acc.email_domain = rng.choice([*spec.home_webmail, "gmail.com", "outlook.com", "proton.me", "gmail.com"])
            acc.email = f"{local_part(rng)}@{acc.email_domain}"
            op.emails.append(acc.email)
            acc.phone = f"+{rng.randint(1, 99)}{rng.randint(10**8, 10**10)}" if rng.random() < 0.3 else None
            acc.uas = [op.uas[0] if rng.random() < 0.5 else rng.choice(API_UAS), rng.choice(BROWSER_UAS)]
            acc.api_share = rng.uniform(0.2, 0.7)
            acc.model_cum = cum([40, 25, 20, 10, 5])
            acc.accept_language = (
                "en-US,en;q=0.9"
                if rng.random() < s.actor_english_p
                else COUNTRY_LANG.get(spec.country, f"{spec.lang};q=0.9")
            )
            active_days = max(0.3, (acc.active_until - acc.active_from) / DAY)
            sessions = rng.uniform(1.0, max(1.5, s.task_requests_max / 1.8))
            acc.sessions_per_day = sessions / active_days
            acc.turn_p, acc.weekend_factor = 0.3, 0.6
            acc.profile_cum_utc = utc_profile("actor", spec.tz)
            acc.events_per_session = 1.8
            op.accounts.append(acc.idx)
            self.accounts.append(acc)
        return op


def build_population(
    rng: random.Random, n_accounts: int, start: float, days: int, settings: SimSettings | None = None
) -> Population:
    """Build benign accounts and actor operations. Actor accounts are part of ``n_accounts``."""
    b = _Builder(rng, n_accounts, start, days, settings)
    # actors first so their count can be subtracted; then the hard benign populations (only when
    # settings enable them), then the ordinary benign crowd; then shuffle ids into one list
    ops = b.actors()
    actor_accounts = list(b.accounts)
    b.accounts = []
    b.hard_populations()
    b.benign(max(0, n_accounts - len(actor_accounts) - len(b.accounts)))
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
        settings=b.s,
        ctf_weekends=b.ctf_weekends,
        firm_infra=b.firm_infra,
    )
