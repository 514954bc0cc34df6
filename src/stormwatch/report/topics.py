"""What flagged usage is about, without showing it: topic clusters described by shared terms only.

Flagged requests are grouped by the LLM-TTP category the model gave them (the clusters), and each
cluster is described by the words and word pairs that at least ``k`` distinct accounts of the cluster
used, ranked by how much more often the cluster's accounts use them than all flagged accounts do
(a TF-IDF over accounts). A cluster with fewer than ``k`` accounts is not shown at all. No request
text leaves this module: only terms, and counts that went through :func:`~stormwatch.report.suppress.suppress`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stormwatch.detect.text import normalize
from stormwatch.disrupt.labels import event_text
from stormwatch.report.suppress import count, suppress
from stormwatch.store.repos.analysis import FlaggedRequest
from stormwatch.vocab import LLMT_LABELS

__all__ = ["Topic", "request_terms", "topic_clusters"]

#: a word: letters only (no numbers, addresses or identifiers), 3..24 characters
_WORD = re.compile(r"(?<![\w@.])[a-z][a-z'-]{1,22}[a-z](?![\w@])")
_STOP = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each even few for from further get give had has
    have having he her here hers him his how i i'd i'm if in into is it it's its just like make me might more most
    my need no nor not now of off on once only or other our out over own please same she should so some such than
    that the their them then there these they this those through to too under until up use using very want was
    we were what when where which while who whom why will with would you your yours let's can't don't write
    tell show help new one two way ways also sure thanks thank could well much many every you're i've we're it's
    that's there's what's must example examples provide including include includes based following given etc
    specific certain various different""".split()
)
#: terms kept per topic
TERMS = 8
#: at most this many characters of a request are read
MAX_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Topic:
    ttp: str
    label: str
    accounts: int | str
    requests: int | str
    terms: tuple[str, ...]


def request_terms(text: str) -> set[str]:
    """The words (not stop words) and adjacent word pairs of one request."""
    words = [w for w in _WORD.findall(normalize(text[:MAX_CHARS])) if w not in _STOP]
    return set(words) | {f"{a} {b}" for a, b in itertools.pairwise(words) if a != b}


def topic_clusters(requests: Sequence[FlaggedRequest], k: int) -> list[Topic]:
    """One topic per LLM-TTP category with at least ``k`` accounts, described by terms of >= ``k`` accounts."""
    by_ttp: dict[str, list[FlaggedRequest]] = defaultdict(list)
    for r in requests:
        by_ttp[r.top_ttp or "-"].append(r)
    # terms per account (all flagged requests) and per (topic, account)
    account_terms: dict[str, set[str]] = defaultdict(set)
    topic_account_terms: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in requests:
        found = request_terms(event_text(r.prompt, r.messages))
        account_terms[r.account_id] |= found
        topic_account_terms[r.top_ttp or "-"][r.account_id] |= found
    df = _doc_freq(account_terms.values())
    n_accounts = max(1, len(account_terms))
    topics: list[Topic] = []
    ttps = [t for t in by_ttp if t != "-"]
    rows = [[len(by_ttp[t])] for t in ttps]
    contributors = [[len({r.account_id for r in by_ttp[t]})] for t in ttps]
    table = suppress(rows, k, contributors=contributors)  # each topic's own counts; no totals shown
    for i, t in enumerate(ttps):
        if not isinstance(table.cells[i][0], int):
            continue  # fewer than k accounts: the topic is not described at all
        per_account = topic_account_terms[t]
        tf = _doc_freq(per_account.values())
        size = len(per_account)
        scored = [
            (share * math.log(n_accounts / df[term]), term)
            for term, n in tf.items()
            if n >= k and (share := n / size) > 0
        ]
        scored.sort(key=lambda x: (-x[0], x[1]))
        terms: list[str] = []
        for _score, term in scored:
            if any(set(term.split()) & set(kept.split()) for kept in terms):
                continue  # a pair that repeats a kept word (or the other way round) says nothing new
            terms.append(term)
            if len(terms) == TERMS:
                break
        topics.append(Topic(t, LLMT_LABELS.get(t, t), count(size, k), table.cells[i][0], tuple(terms)))
    topics.sort(key=lambda tp: (-(tp.accounts if isinstance(tp.accounts, int) else 0), tp.ttp))
    return topics


def _doc_freq(term_sets: Iterable[set[str]]) -> Counter[str]:
    c: Counter[str] = Counter()
    for s in term_sets:
        c.update(s)
    return c
