"""Analysts' case labels as training data for the detection model (``stormwatch train --data``).

One line per event of each labelled account, in the detection line format
(``stormwatch.detect.data``): ``{"id", "text", "label": "malicious"|"benign", "category"?,
"source": "analyst", "group"}``. A true positive contributes the account's flagged events (all
its events when none was flagged); a false positive contributes all its events as benign, the
hard negatives the model most needs. ``group`` is the account, so one account never straddles
the train/test split.
"""

from __future__ import annotations

from typing import IO, Any

import orjson

from stormwatch.store import Store


def event_text(prompt: str | None, messages: Any) -> str:
    """The user-side text of an event: the prompt, else the user turns of the conversation."""
    if prompt:
        return prompt
    if isinstance(messages, str):
        try:
            messages = orjson.loads(messages)
        except orjson.JSONDecodeError:
            return str(messages)
    parts: list[str] = []
    for m in messages or []:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text")]
    return "\n".join(parts)


def _events(store: Store, account_id: str, flagged_only: bool) -> list[tuple[str, str]]:
    return [
        (e.event_id, event_text(e.prompt, e.messages))
        for e in store.disrupt.label_events(account_id, flagged_only=flagged_only)
    ]


def export_labels(store: Store, out: IO[str]) -> int:
    """Write the labelled cases' events to ``out``; return the number of lines."""
    n = 0
    seen: set[str] = set()
    for case in store.disrupt.labelled_cases():
        case_id, account_id, category = case.case_id, case.account_id, case.label_category
        malicious = case.label == "true_positive"
        for event_id, text in _events(store, account_id, malicious):
            if not text.strip() or event_id in seen:
                continue
            seen.add(event_id)
            line: dict[str, Any] = {
                "id": f"{case_id}:{event_id}",
                "text": text,
                "label": "malicious" if malicious else "benign",
                "source": "analyst",
                "group": str(account_id),
            }
            if category and malicious:
                line["category"] = category
            out.write(orjson.dumps(line).decode() + "\n")
            n += 1
    return n
