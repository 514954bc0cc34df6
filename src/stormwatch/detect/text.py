"""Text extraction, normalisation and tokenisation shared by training and scoring.

Everything here is pure Python/stdlib so that scoring needs only numpy at run time.
Training and scoring call the *same* functions, so features cannot drift between them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "FUNCTION_WORDS",
    "TOKEN_RE",
    "Turn",
    "item_id",
    "item_text",
    "item_turns",
    "normalize",
    "tokenize",
]

# Word tokens: runs of letters/digits (any script). Punctuation is dropped; ``_`` is kept out so
# ``snake_case`` identifiers split into their words.
TOKEN_RE = re.compile(r"[^\W_]+")

# Zero-width and bidi control characters that attackers use to break tokens apart.
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u202a\u202b\u202c\u202d\u202e",
    ),
    None,
)

_INVISIBLE_RE = re.compile("[" + "".join(map(chr, _INVISIBLE)) + "]")

Turn = dict[str, Any]


def normalize(text: str) -> str:
    """NFKC-fold, lowercase and drop invisible characters.

    NFKC maps full-width and compatibility forms (``ｍａｌｗａｒｅ``) onto plain letters; the
    ``isascii`` fast path keeps the common case cheap.
    """
    if not text.isascii():
        if not unicodedata.is_normalized("NFKC", text):
            text = unicodedata.normalize("NFKC", text)
        if _INVISIBLE_RE.search(text):  # translate() is slow; most texts have none
            text = text.translate(_INVISIBLE)
    return text.lower()


def tokenize(text: str) -> list[str]:
    """Tokens of ``text`` after :func:`normalize`."""
    return TOKEN_RE.findall(normalize(text))


def item_id(item: Any, default: str = "") -> str:
    """The id of a scored item: ``id`` or ``event_id``; ``default`` for bare strings."""
    if isinstance(item, Mapping):
        for key in ("id", "event_id"):
            value = item.get(key)
            if value is not None:
                return str(value)
    return default


def item_turns(item: Any) -> list[Turn]:
    """Conversation turns of an item (``messages``), or a single user turn for plain text."""
    if isinstance(item, Mapping):
        messages = item.get("messages")
        if isinstance(messages, list) and messages:
            turns: list[Turn] = []
            for m in messages:
                if isinstance(m, Mapping):
                    turns.append({"role": str(m.get("role", "user")), "content": _as_text(m.get("content"))})
            return turns
    return [{"role": "user", "content": item_text(item)}]


def item_text(item: Any) -> str:
    """The text to score for one item.

    Accepts a string, ``{"text": ...}``, a canonical usage event with ``prompt``, or one with
    ``messages`` (the user turns, joined by blank lines). Content parts in the OpenAI list form
    (``[{"type": "text", "text": ...}]``) are flattened. Raises ``ValueError`` when there is no text
    field at all; an empty string is valid text.
    """
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        if "text" in item and item["text"] is not None:
            return _as_text(item["text"])
        if "prompt" in item and item["prompt"] is not None:
            return _as_text(item["prompt"])
        messages = item.get("messages")
        if isinstance(messages, list):
            users = [
                _as_text(m.get("content"))
                for m in messages
                if isinstance(m, Mapping) and m.get("role", "user") == "user"
            ]
            return "\n\n".join(users)
    raise ValueError("no text: expected 'text', 'prompt' or 'messages'")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: Iterable[Any] = (p.get("text", "") if isinstance(p, Mapping) else p for p in value if p is not None)
        return "\n".join(str(p) for p in parts)
    return str(value)


# Function words never reported as evidence (lower-cased; CJK/Korean particles as pieces).
FUNCTION_WORDS: frozenset[str] = frozenset(  # also filters the first tier's evidence
    """a an the and or but if then else of to in on at by for with from as is are was were be been
    being it its this that these those there here i me my we our you your he she they them their his
    her do does did done can could would should will shall may might must give me please just also
    so not no yes how what which who whom when where why all any some such into onto out up down
    over under about than too very via per full code write make create need want use using get
    against after before between through during without within while because until upon off each
    every both either neither nor other others own same only more most few now once again further
    am has have had having doing him himself herself itself themselves ourselves yourself yourselves
    myself us whose let above below
    的 了 是 在 和 与 及 或 把 被 给 我 你 他 她 它 们 这 那 个 一 吗 呢 吧 啊 请 帮 帮我 一个 如何 怎么 什么
    и в во на с со к ко по о об от до за из у а но или не ни что как это то же ли бы мне меня мой
    моя мои ты вы он она они мы для при про над под без через пожалуйста напиши сделай дай нужно
    이 그 저 은 는 이 가 을 를 에 에서 의 와 과 도 로 으로 좀 해줘 주세요 해 줘 나 너 우리 제 내
    و در به از که را با این آن برای یک تا هم یا اما می نمی است هست بود من تو ما شما او آنها لطفا
    في من إلى على عن مع هذا هذه ذلك التي الذي هو هي أنا أنت نحن أو ثم لا ما كيف لي لنا""".split()
)
