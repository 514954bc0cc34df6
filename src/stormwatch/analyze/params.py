"""Every threshold and weight of ``stormwatch analyze`` in one place (docs/analyze.md explains them).

They are set from first principles about real platforms (how many accounts share a household, a
VPS, a corporate NAT or a VPN exit), not fitted to one simulator; the evaluation in docs/analyze.md
is run on several seeds and sizes to check they hold.
"""

from __future__ import annotations

from stormwatch.vocab import LLMT_IDS

LLMT: tuple[str, ...] = LLMT_IDS  # the taxonomy's ids in order (stormwatch.vocab)

# --- content ---------------------------------------------------------------------------------
HIGH_SCORE = 0.5  # an event is "high" when its calibrated P(malicious) reaches this
TTP_MIN_SCORE = 0.3  # events at or above this contribute their category mass to the TTP profile
#: The scale every threshold here is on: the presets of the shipped first tier (first_tier-2.1), which
#: flag 5 % / 2 % / 0.5 % of benign security questions. Other detectors' scores are mapped onto it
#: through their own presets before analysis (``analyze.scale``).
REFERENCE_PRESETS: dict[str, float] = {"strict": 0.412949, "balanced": 0.482175, "permissive": 0.556063}
TOP_K = 3  # content score = noisy-OR of the account's top-K event scores ...
CONTENT_SUPPORT = 3  # ... shrunk while the account has fewer than this many high events
BREADTH_MIN_MASS = 1.0  # a TTP counts towards breadth with at least one event's worth of mass
BREADTH_MIN_SHARE = 0.1  # ... and at least this share of the account's TTP mass

# --- behaviour -------------------------------------------------------------------------------
REPHRASE_WINDOW_S = 1800.0  # a follow-up within 30 min in the same conversation after a refusal
REPHRASE_MIN_SCORE = 0.3  # ... counts as rephrasing when the refused ask or the retry scores this
ESCALATION_DELTA = 0.35  # last turn scores this much above the first turn of a conversation
ESCALATION_MIN = 0.5  # ... and ends at or above this
OFFICE_HOURS = (8.0, 19.0)  # local working day used to estimate a home UTC offset
# Share of a category's mass that stays on it when behaviour is compared with an actor profile; the
# rest is spread evenly over the categories of its ATT&CK tactic (analyze.profiles): request
# classifiers confuse neighbours such as scripting and operational commands.
TTP_EXACT_SHARE = 0.5

# --- linking ---------------------------------------------------------------------------------
#: kind -> (base weight when two accounts share one value, family). Values shared inside one
#: family are correlated (a VPN user rotates exits; a sign-up IP is usually a request IP), so a
#: pair's family weight is the maximum over its shared values, and families combine by noisy-OR.
LINK_KINDS: dict[str, tuple[float, str]] = {
    "api_key": (0.95, "api_key"),
    "device": (0.9, "device"),
    "payment": (0.9, "payment"),
    "phone": (0.85, "phone"),
    "signup_ip": (0.6, "network"),
    "ip": (0.6, "network"),
    "email_domain": (0.55, "email"),
    "org": (0.5, "org"),
}
RARE_DEGREE = 8  # a value shared by at most this many accounts keeps its full weight
DEGREE_CAP = 64  # above this many accounts a value links nobody (VPN exits, CGNAT, campus NAT)
RARITY_POWER = 1.5  # between the two: weight * (RARE_DEGREE / degree) ** RARITY_POWER
NO_OVERLAP_FACTOR = 0.5  # an IP two accounts used more than OVERLAP_SLACK_S apart counts half
OVERLAP_SLACK_S = 14 * 86400.0  # sequential reuse within two weeks (a burned account replaced) still counts
LINK_THRESHOLD = 0.5  # a pair is linked when its combined weight reaches this
MAX_CLUSTER = 200  # larger components are split by raising the link threshold inside them
SPLIT_THRESHOLDS = (0.7, 0.85, 0.93)
PAIR_MIN_WEIGHT = 0.1  # weaker values are ignored when combining pairs
PAIR_DEGREE_CAP = 32  # pairs are only enumerated for values shared by at most this many accounts
#: never link on these e-mail domains (webmail, ISP mail); unknown large domains fall to the cap
WEBMAIL = frozenset(
    """gmail.com googlemail.com outlook.com hotmail.com live.com msn.com yahoo.com ymail.com icloud.com
    me.com mac.com aol.com proton.me protonmail.com pm.me zoho.com tutanota.com tuta.io gmx.com gmx.de
    gmx.net web.de t-online.de mail.com yandex.ru yandex.com yandex.com.tr ya.ru mail.ru bk.ru inbox.ru
    list.ru rambler.ru ukr.net qq.com 163.com 126.com yeah.net sina.com sohu.com aliyun.com foxmail.com
    naver.com daum.net hanmail.net kakao.com yahoo.co.jp docomo.ne.jp ezweb.ne.jp orange.fr free.fr
    laposte.net sfr.fr wanadoo.fr libero.it virgilio.it wp.pl o2.pl interia.pl onet.pl btinternet.com
    sky.com virginmedia.com rediffmail.com uol.com.br bol.com.br terra.com.br chmail.ir seznam.cz
    hey.com fastmail.com""".split()
)

# --- intel -----------------------------------------------------------------------------------
DEFAULT_INDICATOR_CONFIDENCE = 50
#: indicator_types that describe shared infrastructure rather than the actor itself
WEAK_INDICATOR_TYPES = frozenset({"anonymization", "benign", "compromised"})
WEAK_INDICATOR_FACTOR = 0.3
HOP_DECAY = 0.95  # evidence loses this much per link it crosses, on top of the link weight

# --- attribution -----------------------------------------------------------------------------
BEHAVIOUR_GAIN = 2.0  # logit(confidence) = logit(intel) + BEHAVIOUR_GAIN * behaviour score
BEHAVIOUR_ONLY_CAP = 0.45  # behaviour alone never reaches "medium"
BEHAVIOUR_ONLY_MIN = 0.3  # behaviour score needed to name an actor without intel
BEHAVIOUR_ONLY_MARGIN = 0.1  # ... and its lead over the second-best profile
CONFIDENCE_LABELS = ((0.75, "high"), (0.5, "medium"), (0.25, "low"))
MIN_ATTRIBUTION = 0.25  # below "low" no actor is named (the evidence is still listed)

# --- risk ------------------------------------------------------------------------------------
RISK_CONTENT_W = 0.6
RISK_BEHAVIOUR_W = 0.4
ENFORCE_CONFIDENCE = 0.5  # attributed at "medium" or better -> enforce
CORROBORATE_CONTENT = 0.8  # own content that corroborates an attribution ...
CORROBORATE_FIT = 0.25  # ... or own behaviour fit to the actor's profile ...
# ... but a fit (working hours, language, client) corroborates only together with some malicious content
# of its own or inside a linked cluster with a malicious member: an ordinary user in the actor's time
# zone who once used a recycled IP fits too
CORROBORATE_FIT_MIN_CONTENT = 0.5
IDENTITY_KINDS = frozenset({"device", "payment", "phone", "api_key"})  # ... or a shared identity value
IDENTITY_HIT_KINDS = frozenset({"domain", "email", "url"})  # ... or its own non-IP indicator hit
# without intel: a cluster of >= COORDINATED_MIN_SIZE linked accounts, >= that many and >= half of
# them with content >= COORDINATED_MEMBER_CONTENT, whose behaviour fits a profile >= COORDINATED_FIT
COORDINATED_MIN_SIZE = 3
COORDINATED_MEMBER_CONTENT = 0.8
COORDINATED_FIT = 0.5
COORDINATED_MIN_CONTENT = 0.5
REVIEW_RISK = 0.5
# without intel or links: a cohort (analyze.cohorts) of >= COHORT_MIN_SIZE accounts, each first used
# within COHORT_FRESH_DAYS of sign-up, active at most COHORT_SPAN_DAYS, with a request >=
# COHORT_MEMBER_SCORE, arriving on one provider-sized network at most COHORT_GAP_DAYS apart, at least
# COHORT_MIN_STRONG with a request >= COHORT_STRONG_SCORE: one operation's throwaway accounts
COHORT_FRESH_DAYS = 3.0
COHORT_SPAN_DAYS = 7.0
COHORT_GAP_DAYS = 14.0
COHORT_IDLE_DAYS = 2.0  # ... and stopped: the last request this long before the end of the data
COHORT_MEMBER_SCORE = 0.3
COHORT_STRONG_SCORE = 0.8
COHORT_MIN_STRONG = 2
COHORT_MIN_SIZE = 3
COHORT_ENFORCE_SCORE = 0.5  # a member whose own top request reaches this is enforced; the others reach review
COHORT_V4_PREFIX = 16  # a hosting provider's or ISP's range, not one address
COHORT_V6_PREFIX = 32
COHORT_EVIDENCE_MEMBERS = 20  # members listed in an account's evidence

# --- review queue ----------------------------------------------------------------------------
#: the account model looks beyond the rules: an account they leave at ``none`` whose top request
#: scores at least MODEL_CANDIDATE_SCORE is scored too (a candidate), and reaches ``review`` (ranked in
#: the queue; never ``enforce``, which still needs corroboration) when its calibrated probability is
#: at least MODEL_REVIEW_PROBABILITY: actors that ask little (one account per task, quiet operators)
MODEL_CANDIDATE_SCORE = 0.3
MODEL_REVIEW_PROBABILITY = 0.5
#: default review budget: this share of active accounts (accounts with events) is within the budget;
#: the queue is ordered by risk (the calibrated probability once it replaces risk). Set with
#: ``analyze --review-budget`` or ``[analyze] review_budget`` (a fraction or a count).
REVIEW_BUDGET = 0.005
