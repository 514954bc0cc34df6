"""Distillation for the second tier: a bigger encoder build's logits as a student's soft targets.

``stormwatch train --model encoder --teacher DIR|FILE``: the teacher is a built encoder folder
(e.g. ``--layers 12``, too slow to serve), run on each training row's first window, or the logits
saved from one (:func:`save_teacher_logits`, a few hundred KB), so a later student needs neither the
teacher's folder nor its inference time. The loss that uses them is in :mod:`.encoder_train`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TEACHER_LOGITS_FORMAT", "save_teacher_logits", "teacher_logits"]

TEACHER_LOGITS_FORMAT = "stormwatch-teacher-logits-1"


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def teacher_logits(
    source: Path, texts: Sequence[str], threads: int, progress: Callable[[str], None] = print
) -> tuple[np.ndarray[Any, Any], str]:
    """(misuse logits, the teacher's version) for each text's first window, the part of the text the
    student is trained on. ``source``: a built encoder folder (run now), or a file that
    :func:`save_teacher_logits` wrote from one (every text must be in it)."""
    from stormwatch.errors import InputError

    if source.is_file():
        try:
            doc = json.loads(gzip.decompress(source.read_bytes()))
        except (OSError, ValueError) as exc:
            raise InputError(f"{source}: not a teacher-logits file ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != TEACHER_LOGITS_FORMAT:
            raise InputError(f"{source}: format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                             f"expected {TEACHER_LOGITS_FORMAT!r}")  # fmt: skip
        table = doc.get("logits")
        if not isinstance(table, dict) or not isinstance(doc.get("teacher"), str):
            raise InputError(f"{source}: a teacher-logits file needs 'teacher' (a version) and 'logits' (an object)")
        missing = [t for t in texts if _text_key(t) not in table]
        if missing:
            raise InputError(
                f"{source}: {len(set(missing))} training texts have no teacher logit (first: {missing[0][:60]!r}); "
                "the data changed since it was written: give the teacher's folder instead"
            )
        return np.array([table[_text_key(t)] for t in texts], dtype=np.float32), str(doc["teacher"])
    from stormwatch.detect.encoder import EncoderModel

    teacher = EncoderModel(source, threads=threads, cache_size=len(texts) + 1)
    out = np.zeros(len(texts), dtype=np.float32)
    t0 = time.monotonic()
    step = 2048
    for s in range(0, len(texts), step):
        out[s : s + step] = teacher.first_window_logits(texts[s : s + step])[:, 0]
        done = min(s + step, len(texts))
        progress(f"teacher {teacher.version}: {done}/{len(texts)} texts ({done / (time.monotonic() - t0):.0f}/s)")
    return out, teacher.version


def save_teacher_logits(path: Path, texts: Sequence[str], logits: np.ndarray[Any, Any], version: str) -> None:
    """Keep a teacher's logits (a few hundred KB) so a later student needs neither the teacher's
    folder nor its inference time; keyed by a digest of each text."""
    table = {_text_key(t): round(float(v), 4) for t, v in zip(texts, logits, strict=True)}
    doc = {"format": TEACHER_LOGITS_FORMAT, "teacher": version, "logits": table}
    path.write_bytes(gzip.compress(json.dumps(doc, sort_keys=True).encode(), mtime=0))
