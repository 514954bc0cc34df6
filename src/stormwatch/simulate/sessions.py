"""Conversation content per persona: which prompts a session asks, and how the model answers.

A session is a list of :class:`Turn`; the engine turns each turn into one usage event whose
``messages`` carry the earlier turns of the conversation.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from stormwatch.simulate import templates as T
from stormwatch.simulate.pools import Entry, Pools
from stormwatch.simulate.population import ACTORS, Account
from stormwatch.simulate.settings import SimSettings

# refusal probability of a malicious request by TTP (templated, no pretext)
REFUSE_P: dict[str, float] = {
    "LLMT-01": 0.05,
    "LLMT-02": 0.12,
    "LLMT-03": 0.5,
    "LLMT-04": 0.3,
    "LLMT-05": 0.3,
    "LLMT-07": 0.5,
    "LLMT-08": 0.6,
    "LLMT-10": 0.35,
    "LLMT-11": 0.0,
    "LLMT-12": 0.55,
}
DATASET_REFUSE_P = 0.6  # machine-generated malicious prompts are blunter
# benign personas that ask like attackers; only present when settings enable them
HARD_PERSONAS = frozenset({"pentest_firm", "red_teamer", "ctf_student"})
# security-pro band edges of today's generator: follow-up, FRR, malware, TI, TTP shapes, dataset
_SECPRO_BANDS = (0.35, 0.55, 0.7, 0.83, 0.91, 0.95)


class Turn(NamedTuple):
    text: str
    response: str
    refused: bool
    malicious: bool  # serves an actor operation
    content: str  # benign | dual_use | malicious  (what the text alone looks like)
    ttp: str | None
    source: str
    kind: str


_SPECS = {a.name: a for a in ACTORS}


class SessionMaker:
    """Builds session content. All randomness comes from the caller's ``rng``."""

    def __init__(self, pools: Pools, settings: SimSettings | None = None) -> None:
        self.s = st = settings or SimSettings()
        k = st.secpro_malicious_scale
        if k == 1.0:
            self.secpro_bands = _SECPRO_BANDS
        else:  # the two hard-negative bands grow by k; the benign bands shrink to make room
            f = (0.95 - 0.12 * k) / 0.83
            self.secpro_bands = (0.35 * f, 0.55 * f, 0.7 * f, 0.83 * f, 0.83 * f + 0.08 * k, 0.95)
        self.p = pools
        g = pools.get
        self.general = g("general") + g("xstest")
        self.assistant = g("assistant")
        self.math = g("math")
        self.code = g("code")
        self.sec = {"sec_frr": g("sec_frr"), "sec_malware": g("sec_malware"), "sec_ti": g("sec_ti")}
        self.mal_all = g("mal_cyber")
        self.foreign_langs = sorted(pools.foreign_by_lang)

    # ---- answers -------------------------------------------------------------------------
    @staticmethod
    def answer(rng: random.Random, text: str, code: bool = False) -> str:
        if code or "```" in text or text.startswith(("def ", "from ", "import ")):
            return rng.choice(T.CODE_ANSWERS)
        head = text.split("\n", 1)[0][:70]
        return f'{rng.choice(T.ANSWER_OPENERS)} On "{head}": {rng.choice(T.ANSWER_BODIES)}'

    @staticmethod
    def refusal(rng: random.Random) -> str:
        return rng.choice(T.REFUSALS)

    def _benign(
        self,
        rng: random.Random,
        entry: Entry,
        kind: str,
        code: bool = False,
        content: str = "benign",
        refuse_p: float = 0.002,
    ) -> Turn:
        sid, text = entry
        if rng.random() < refuse_p:
            return Turn(text, self.refusal(rng), True, False, content, None, sid, kind)
        return Turn(text, self.answer(rng, text, code), False, False, content, None, sid, kind)

    def _followup(self, rng: random.Random, pool: list[str], kind: str) -> Turn:
        text = rng.choice(pool)
        return Turn(text, self.answer(rng, text), False, False, "benign", None, "template:followup", kind)

    def _translate(self, rng: random.Random, lang: str | None, kind: str, malicious: bool = False) -> Turn:
        langs = self.foreign_langs
        use: str | None
        if lang in self.p.foreign_by_lang and rng.random() < 0.7:
            use = lang
        else:
            use = rng.choice(langs) if langs else None
        if use is not None and rng.random() < 0.6:
            sid, text = rng.choice(self.p.foreign_by_lang[use])
            prompt = rng.choice(T.TRANSLATE_TO_EN).format(text=text)
        else:
            sid, text = rng.choice(self.general)
            name = T.LANG_NAMES.get(lang or "", "Spanish")
            prompt = rng.choice(T.TRANSLATE_FROM_EN).format(text=text, lang_name=name)
        resp = f"{rng.choice(T.TRANSLATION_ANSWERS)} {text[:80]}"
        return Turn(prompt, resp, False, malicious, "benign", None, f"translate:{sid}", kind)

    # ---- benign personas -----------------------------------------------------------------
    def benign_session(self, rng: random.Random, acc: Account) -> list[Turn]:
        persona = acc.persona
        n = 1
        while rng.random() < acc.turn_p and n < 12:
            n += 1
        lang = acc.accept_language[:2]
        r = rng.random()
        if persona == "developer":
            if r < 0.75:
                first = self._benign(rng, rng.choice(self.code), "code", code=True)
                follow, fkind = T.FOLLOWUPS_CODE, "code"
            elif r < 0.8:
                first = self._benign(
                    rng,
                    rng.choice(self.sec["sec_frr"]),
                    "security",
                    code=True,
                    content="dual_use",
                    refuse_p=0.05,
                )
                follow, fkind = T.FOLLOWUPS_CODE, "code"
            elif r < 0.88 and lang != "en":
                first, follow, fkind = (
                    self._translate(rng, lang, "translation"),
                    T.FOLLOWUPS_GENERAL,
                    "general",
                )
            else:
                first = self._benign(rng, rng.choice(self.general), "general")
                follow, fkind = T.FOLLOWUPS_GENERAL, "general"
        elif persona == "security_pro":
            return self._secpro(rng, n)
        elif persona == "student":
            pool = self.math if r < 0.45 else (self.code if r < 0.65 else self.general)
            first = self._benign(rng, rng.choice(pool), "student", code=pool is self.code)
            follow, fkind = (T.FOLLOWUPS_CODE if pool is self.code else T.FOLLOWUPS_GENERAL), "student"
        elif persona == "marketer":
            if r < 0.5:
                text = T.fill(rng.choice(BENIGN_OUTREACH), rng, {}, {})
                first = Turn(
                    text,
                    self.answer(rng, text),
                    False,
                    False,
                    "benign",
                    None,
                    "template:outreach",
                    "marketing",
                )
            else:
                first = self._benign(rng, rng.choice(self.general), "general")
            follow, fkind = T.FOLLOWUPS_GENERAL, "marketing"
        else:  # everyday
            if r < 0.55:
                first = self._benign(rng, rng.choice(self.general), "general")
            elif r < 0.8:
                first = self._benign(rng, rng.choice(self.assistant), "assistant")
            elif r < 0.9:
                first = self._translate(rng, lang, "translation")
            else:
                first = self._benign(rng, rng.choice(self.math), "general")
            follow, fkind = T.FOLLOWUPS_GENERAL, "general"
        turns = [first]
        for _ in range(n - 1):
            if rng.random() < 0.6:
                turns.append(self._followup(rng, follow, fkind))
            else:
                pool = self.code if fkind == "code" else self.general
                turns.append(self._benign(rng, rng.choice(pool), fkind, code=fkind == "code"))
        return turns

    def _secpro(self, rng: random.Random, n: int) -> list[Turn]:
        turns: list[Turn] = []
        b_follow, b_frr, b_mal, b_ti, b_shape, b_ds = self.secpro_bands
        for i in range(n):
            r = rng.random()
            if i > 0 and r < b_follow:
                turns.append(self._followup(rng, T.FOLLOWUPS_SEC, "security"))
            elif r < b_frr:
                turns.append(self._benign(rng, rng.choice(self.sec["sec_frr"]), "security", True, "dual_use", 0.06))
            elif r < b_mal:
                turns.append(
                    self._benign(rng, rng.choice(self.sec["sec_malware"]), "security", False, "dual_use", 0.01)
                )
            elif r < b_ti:
                turns.append(self._benign(rng, rng.choice(self.sec["sec_ti"]), "security", False, "dual_use", 0.01))
            elif r < b_shape:
                # the same shapes actors use (CVE explanations, recon of tech): hard negatives
                ttp = rng.choice(["LLMT-05", "LLMT-01", "LLMT-07", "LLMT-10"])
                text = T.fill(rng.choice(T.TTP_TEMPLATES[ttp]), rng, {}, {"ti_text": ""})
                refused = rng.random() < REFUSE_P[ttp] * 0.5
                resp = self.refusal(rng) if refused else self.answer(rng, text)
                turns.append(Turn(text, resp, refused, False, "dual_use", None, f"template:{ttp}", "security"))
            elif r < b_ds and self.mal_all:
                # malicious-labelled dual-use request from a legitimate professional (low rate)
                sid, text = rng.choice(self.mal_all)
                refused = rng.random() < DATASET_REFUSE_P
                resp = self.refusal(rng) if refused else self.answer(rng, text, True)
                turns.append(Turn(text, resp, refused, False, "malicious", None, sid, "security"))
            else:
                turns.append(self._benign(rng, rng.choice(self.general), "general"))
        return turns

    # ---- actors --------------------------------------------------------------------------
    def actor_session(self, rng: random.Random, acc: Account, mundane_share: float) -> list[Turn]:
        spec = _SPECS[acc.actor or ""]
        slots = T.ACTOR_SLOTS.get(spec.name, {})
        if acc.style == "account_per_task":
            return self._task_session(rng, acc, slots)
        imitate = acc.style == "imitates_researcher"
        r = rng.random()
        if r < mundane_share:
            n = 1
            while rng.random() < 0.45 and n < 6:
                n += 1
            out: list[Turn] = []
            tr_p = self.s.actor_translate_p
            for _ in range(n):
                if imitate and rng.random() < 0.35:  # defender-style cover question
                    text = T.fill(rng.choice(T.IMITATOR_COVER), rng, slots, {})
                    out.append(
                        Turn(text, self.answer(rng, text), False, False, "dual_use", None, "template:cover", "mundane")
                    )
                    continue
                q = rng.random()
                if q < tr_p:
                    out.append(self._translate(rng, spec.lang, "mundane"))
                elif q < tr_p + 0.35:
                    out.append(self._benign(rng, rng.choice(self.code), "mundane", code=True))
                else:
                    out.append(self._benign(rng, rng.choice(self.general), "mundane"))
            return out
        chains = T.CHAINS.get(spec.name, [])
        if chains and r < mundane_share + (1 - mundane_share) * 0.2:
            ttp, steps = rng.choice(chains)
            k = rng.randint(2, len(steps))
            return [
                Turn(
                    s,
                    self.answer(rng, s, code=True),
                    False,
                    True,
                    "benign",
                    ttp,
                    f"template:chain:{ttp}:{j}",
                    "op_step",
                )
                for j, s in enumerate(steps[:k])
            ]
        ttps = [t for t, _ in spec.ttp_mix]
        weights = [w for _, w in spec.ttp_mix]
        out = []
        n_req = 1 + (rng.random() < 0.45) + (rng.random() < 0.2)
        for _ in range(n_req):
            ttp = rng.choices(ttps, weights=weights)[0]
            out.extend(self._op_request(rng, ttp, slots, imitate))
            if out and out[-1].kind == "abandon":
                out[-1] = out[-1]._replace(kind="op_request")
                break
            if rng.random() < 0.25:  # mundane requests interleave with operational ones
                out.append(self._benign(rng, rng.choice(self.code), "mundane", code=True))
        return out

    def _op_request(
        self, rng: random.Random, ttp: str, slots: dict[str, list[str]], imitate: bool = False
    ) -> list[Turn]:
        pool = self.p.mal_by_ttp.get(ttp, [])
        if pool and rng.random() < self.p.dataset_share:
            sid, text = rng.choice(pool)
            refuse_p, content = DATASET_REFUSE_P, "malicious"
        else:
            ti = rng.choice(self.sec["sec_ti"])[1][:300] if self.sec["sec_ti"] else ""
            text = T.fill(rng.choice(T.TTP_TEMPLATES[ttp]), rng, slots, {"ti_text": ti})
            sid = f"template:{ttp}"
            refuse_p = REFUSE_P.get(ttp, 0.2)
            content = "dual_use" if ttp in ("LLMT-01", "LLMT-11", "LLMT-02") else "malicious"
        if imitate and rng.random() < self.s.imitation_p:  # phrased like a defender's research question
            pre, post = rng.choice(T.IMITATION_FRAMES)
            text = pre + text[:1].lower() + text[1:] + post
            sid, refuse_p, content = f"{sid}:imitation", refuse_p * 0.4, "dual_use"
        if rng.random() >= refuse_p:
            return [
                Turn(
                    text,
                    self.answer(rng, text, ttp in ("LLMT-02", "LLMT-10")),
                    False,
                    True,
                    content,
                    ttp,
                    sid,
                    "op_request",
                )
            ]
        turns = [Turn(text, self.refusal(rng), True, True, content, ttp, sid, "op_request")]
        if rng.random() < 0.3:
            return [turns[0]._replace(kind="abandon")]
        # rephrase with a pretext; sometimes a second try
        for attempt in range(2):
            re_text = T.rephrase(text, rng)
            refused = rng.random() < refuse_p * (0.5 if attempt == 0 else 0.3)
            resp = self.refusal(rng) if refused else self.answer(rng, re_text)
            turns.append(Turn(re_text, resp, refused, True, content, ttp, f"{sid}:rephrase", "rephrase"))
            if not refused:
                break
        return turns

    def _task_session(self, rng: random.Random, acc: Account, slots: dict[str, list[str]]) -> list[Turn]:
        """A one-account-per-task actor account: one or two requests on its one TTP."""
        ttp = acc.task_ttp or "LLMT-02"
        out: list[Turn] = []
        for _ in range(1 + (rng.random() < 0.4)):
            out.extend(self._op_request(rng, ttp, slots))
            if out[-1].kind == "abandon":
                out[-1] = out[-1]._replace(kind="op_request")
                break
        if rng.random() < 0.15:
            out.append(self._benign(rng, rng.choice(self.code), "mundane", code=True))
        return out

    # ---- hard benign populations ---------------------------------------------------------
    def hard_session(self, rng: random.Random, acc: Account, t: float) -> list[Turn]:
        """Pentest firm, red-teamer or CTF student session (benign accounts that ask like attackers)."""
        n = 1
        while rng.random() < acc.turn_p and n < 10:
            n += 1
        if acc.persona == "pentest_firm":
            return self._pentest(rng, n)
        if acc.persona == "red_teamer":
            return self._red_team(rng, n)
        burst = any(b0 <= t < b1 for b0, b1, _ in acc.bursts)
        return self._ctf(rng, n, burst)

    def _probe(
        self,
        rng: random.Random,
        ask: tuple[str, str, float, str],
        kind: str,
        tries: int,
        wraps: bool = False,
    ) -> list[Turn]:
        """A malicious-looking benign ask; after a refusal, rephrase (``rephrase_p``) up to ``tries`` times."""
        text, content, refuse_p, sid = ask
        if rng.random() >= refuse_p:
            return [Turn(text, self.answer(rng, text, True), False, False, content, None, sid, kind)]
        turns = [Turn(text, self.refusal(rng), True, False, content, None, sid, kind)]
        for attempt in range(tries):
            if rng.random() >= self.s.rephrase_p:
                break
            if wraps and rng.random() < 0.4:
                re_text = rng.choice(T.REDTEAM_WRAPS) + text[:1].lower() + text[1:]
            else:
                re_text = T.rephrase(text, rng)
            refused = rng.random() < refuse_p * (0.7 if attempt == 0 else 0.5)
            resp = self.refusal(rng) if refused else self.answer(rng, re_text)
            turns.append(Turn(re_text, resp, refused, False, content, None, f"{sid}:rephrase", "rephrase"))
            if not refused:
                break
        return turns

    def _attack_ask(self, rng: random.Random, pentest: bool) -> tuple[str, str, float, str]:
        r = rng.random()
        if pentest and r < 0.5:
            return T.fill(rng.choice(T.PENTEST_ASKS), rng, {}, {}), "malicious", 0.5, "template:pentest"
        if r < 0.75 or not self.mal_all:
            ttp = rng.choice(["LLMT-02", "LLMT-05", "LLMT-07", "LLMT-08", "LLMT-10", "LLMT-12"])
            text = T.fill(rng.choice(T.TTP_TEMPLATES[ttp]), rng, {}, {"ti_text": ""})
            content = "dual_use" if ttp == "LLMT-02" else "malicious"
            return text, content, max(0.2, REFUSE_P[ttp]), f"template:{ttp}"
        sid, text = rng.choice(self.mal_all)
        return text, "malicious", DATASET_REFUSE_P, sid

    def _pentest(self, rng: random.Random, n: int) -> list[Turn]:
        p = self.s.pentest_malicious_p
        turns: list[Turn] = []
        for i in range(n):
            r = rng.random()
            if r < p:
                turns.extend(self._probe(rng, self._attack_ask(rng, True), "pentest", 2))
            elif r < p + (1 - p) * 0.4:
                text = T.fill(rng.choice(T.PENTEST_WORK), rng, {}, {})
                turns.append(
                    Turn(
                        text, self.answer(rng, text), False, False, "dual_use", None, "template:pentest_work", "pentest"
                    )
                )
            elif i > 0 and r < p + (1 - p) * 0.6:
                turns.append(self._followup(rng, T.FOLLOWUPS_SEC, "pentest"))
            else:
                pool = self.sec["sec_frr"] if rng.random() < 0.6 else self.code
                turns.append(self._benign(rng, rng.choice(pool), "pentest", True, "dual_use", 0.05))
        return turns

    def _red_team(self, rng: random.Random, n: int) -> list[Turn]:
        r = rng.random()
        if r < 0.3:  # escalation: start harmless, end on the malicious ask
            turns = [self._benign(rng, rng.choice(self.sec["sec_ti"] or self.general), "escalation", False, "dual_use")]
            ttp = rng.choice(["LLMT-05", "LLMT-01", "LLMT-07"])
            text = T.fill(rng.choice(T.TTP_TEMPLATES[ttp]), rng, {}, {"ti_text": ""})
            turns.append(
                Turn(text, self.answer(rng, text), False, False, "dual_use", None, f"template:{ttp}", "escalation")
            )
            turns.extend(self._probe(rng, self._attack_ask(rng, False), "escalation", 3, wraps=True))
            return turns
        if r < 0.65:
            turns = []
            for _ in range(max(1, n // 2)):
                turns.extend(self._probe(rng, self._attack_ask(rng, False), "red_team", 3, wraps=True))
            return turns
        return [self._benign(rng, rng.choice(self.general), "general") for _ in range(n)]

    def _ctf(self, rng: random.Random, n: int, burst: bool) -> list[Turn]:
        p = 0.7 if burst else 0.1
        turns: list[Turn] = []
        for _ in range(n):
            r = rng.random()
            if r < p:
                text = rng.choice(T.CTF_ASKS)
                turns.extend(self._probe(rng, (text, "malicious", 0.25, "template:ctf"), "ctf", 1))
            elif r < p + (1 - p) * 0.3:
                text = rng.choice(T.CTF_WORK)
                turns.append(
                    Turn(text, self.answer(rng, text), False, False, "dual_use", None, "template:ctf_work", "ctf")
                )
            else:
                pool = self.code if rng.random() < 0.5 else self.math
                turns.append(self._benign(rng, rng.choice(pool), "student", code=pool is self.code))
        return turns


BENIGN_OUTREACH = [
    "Write a friendly email inviting {role} at partner companies to our product webinar next week.",
    "Give me 10 variations of this LinkedIn recruiting message for data engineers, so they don't look identical.",
    "Draft a newsletter intro about {topic} for our subscribers.",
    "Write a short bio for our new head of marketing, 80 words.",
    "Rewrite this cold email to sound less salesy: 'Hi, I wanted to reach out about our solution...'",
    "Plan a 4-week social media calendar for a bakery launching a new product.",
    "Write an invitation asking a professor to speak at our conference on {topic}.",
    "Translate this product announcement into German and French: 'We are excited to announce...'",
]
