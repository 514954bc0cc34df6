"""Labelled prompt rows: reading the JSONL line format and the vendored training data.

Line format (the shared datasets, the vendored copy and analysts' label exports)::

    {"id", "text", "label": "malicious"|"benign"|1|0, "category"?, "source"?, "split_hint"?,
     "group"?, "lang"? or "meta": {"group", "kind", "lang"}?}

Rows without ``split_hint`` count as ``train``; rows without ``source`` take the file's stem.

Vendored files (``stormwatch/data/model/``): the first tier trains on :func:`default_data_paths`
(``train.jsonl.gz`` plus one ``train-<source>.jsonl.gz`` per CC BY-SA source; their digest is the
shipped first tier's version). The later sources (``prompts/more/`` of the shared datasets:
multilingual, operator-style and benign security questions) are vendored apart, by
:func:`vendor_more_data`, into ``train-more.jsonl.gz`` plus ``train-more-<source>.jsonl.gz`` per
CC BY-SA source (:func:`more_data_paths`); those rows keep ``lang`` and ``origin`` (and ``url``,
``license`` where a row names its own). The project's authored prompts are plain JSONL files in
``stormwatch/data/authored/`` (:func:`authored_data_paths`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import orjson

from stormwatch.detect.taxonomy import categories_for, training_use

__all__ = [
    "CC_BY_SA_SOURCES",
    "FIRST_TIER_FILES",
    "MORE_CC_BY_SA_SOURCES",
    "MORE_FILE",
    "Row",
    "authored_data_paths",
    "authored_dir",
    "default_data_paths",
    "model_dir",
    "more_data_paths",
    "open_text",
    "read_rows",
    "vendor_more_data",
    "vendor_training_data",
]

# CC BY-SA sources stay in their own files (share-alike); everything else goes in train.jsonl.gz.
CC_BY_SA_SOURCES = ("dolly15k_partial", "nq_open", "xsid")
# The files the first tier trains on (and whose rows its version id hashes): nothing else.
FIRST_TIER_FILES = ("train.jsonl.gz", *(f"train-{s}.jsonl.gz" for s in CC_BY_SA_SOURCES))
# prompts/more/: share-alike sources in train-more-<source>.jsonl.gz, the rest in MORE_FILE.
MORE_CC_BY_SA_SOURCES = ("stackexchange_secrets",)
MORE_FILE = "train-more.jsonl.gz"


@dataclass(frozen=True)
class Row:
    id: str
    source: str
    text: str
    label: int  # 1 = malicious
    category: str
    split: str
    group: str
    use: bool  # used for fitting (see taxonomy.training_use)
    cats: tuple[str, ...]  # weak LLMT labels (malicious rows only)
    lang: str = ""  # ISO 639-1 where the file says ("lang" or meta.lang); "" when unknown


def model_dir() -> Path:
    """The package folder holding the shipped artifact, vendored data and licenses."""
    return Path(str(resources.files("stormwatch") / "data" / "model"))


def default_data_paths() -> list[Path]:
    """The first tier's vendored training data files (:data:`FIRST_TIER_FILES` present), sorted."""
    return sorted(p for p in (model_dir() / name for name in FIRST_TIER_FILES) if p.is_file())


def more_data_paths() -> list[Path]:
    """The later vendored sources (``train-more*.jsonl.gz``), sorted; not used by the first tier."""
    return sorted(model_dir().glob("train-more*.jsonl.gz"))


def authored_dir() -> Path:
    """The package folder of the project's own authored prompts."""
    return Path(str(resources.files("stormwatch") / "data" / "authored"))


def authored_data_paths() -> list[Path]:
    """The authored prompt files (``data/authored/*.jsonl``), sorted; ``[]`` without the folder."""
    folder = authored_dir()
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def open_text(path: str | Path) -> IO[str]:
    """Open a UTF-8 text file, transparently gunzipping ``.gz``; ``-`` is stdin."""
    if str(path) == "-":
        import sys

        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _label(value: Any) -> int:
    if value in ("malicious", 1, True, "1", "true"):
        return 1
    if value in ("benign", 0, False, "0", "false"):
        return 0
    raise ValueError(f"unknown label {value!r}")


def _row(obj: dict[str, Any], default_source: str) -> Row:
    text = obj.get("text")
    if not isinstance(text, str):
        raise ValueError("missing 'text'")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    source = str(obj.get("source") or default_source)
    label = _label(obj.get("label"))
    category = str(obj.get("category") or "")
    kind = str(obj.get("kind") or meta.get("kind") or "prompt")
    label_name = "malicious" if label else "benign"
    return Row(
        id=str(obj.get("id", "")),
        source=source,
        text=text,
        label=label,
        category=category,
        split=str(obj.get("split_hint") or "train"),
        group=str(obj.get("group") or meta.get("group") or text.lower()),
        use=training_use(source, label_name, category, kind),
        cats=categories_for(source, category, text) if label else (),
        lang=str(obj.get("lang") or meta.get("lang") or ""),
    )


def read_rows(paths: Iterable[str | Path]) -> list[Row]:
    """All rows of ``paths`` sorted by (source, id, text) so that training is order-independent."""
    rows: list[Row] = []
    for path in paths:
        stem = Path(str(path)).name.split(".")[0]
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(_row(orjson.loads(line), stem))
                except (orjson.JSONDecodeError, ValueError) as exc:
                    raise ValueError(f"{path}:{lineno}: {exc}") from exc
    rows.sort(key=lambda r: (r.source, r.id, r.text))
    return rows


def _trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("meta") or {}
    out = {k: obj[k] for k in ("id", "source", "text", "label", "category", "split_hint")}
    out["group"] = meta.get("group", "")
    if meta.get("kind", "prompt") != "prompt":
        out["kind"] = meta["kind"]
    return out


def _trimmed_more(obj: dict[str, Any]) -> dict[str, Any]:
    """A ``prompts/more`` row trimmed: the first tier's fields plus ``lang`` and the provenance."""
    meta = obj.get("meta") or {}
    out = _trimmed(obj)
    out["lang"] = meta.get("lang", "")
    for key in ("origin", "url", "license"):  # url/license: the post to credit (Stack Exchange)
        if meta.get(key):
            out[key] = meta[key]
    return out


def _write_jsonl_gz(path: Path, objs: Iterable[dict[str, Any]]) -> None:
    buf = b"".join(orjson.dumps(o, option=orjson.OPT_SORT_KEYS) + b"\n" for o in objs)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buf)


def _vendor_files(
    files: Iterable[Path],
    trim: Callable[[dict[str, Any]], dict[str, Any]],
    share_alike: Iterable[str],
    prefix: str,
    main_file: Path,
) -> list[Path]:
    """Trimmed, sorted rows: one ``<prefix><source>.jsonl.gz`` per share-alike source, the rest in ``main_file``."""
    share_alike = set(share_alike)
    main: list[dict[str, Any]] = []
    written: list[Path] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            objs = [trim(orjson.loads(line)) for line in fh if line.strip()]
        objs.sort(key=lambda o: (o["source"], o["id"]))
        if f.stem in share_alike:
            target = main_file.parent / f"{prefix}{f.stem}.jsonl.gz"
            _write_jsonl_gz(target, objs)
            written.append(target)
        else:
            main.extend(objs)
    main.sort(key=lambda o: (o["source"], o["id"]))
    _write_jsonl_gz(main_file, main)
    written.append(main_file)
    return written


def vendor_training_data(datasets_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Copy the shared datasets, trimmed, into the package (and their licenses).

    Writes ``train.jsonl.gz`` (permissively licensed sources) and one ``train-<source>.jsonl.gz``
    per CC BY-SA source. Deterministic: sorted inputs, sorted keys, gzip mtime 0.
    """
    out_dir = out_dir or model_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted((datasets_dir / "prompts").glob("*.jsonl")) + sorted(
        (datasets_dir / "prompts" / "everyday").glob("*.jsonl")
    )
    written = _vendor_files(files, _trimmed, CC_BY_SA_SOURCES, "train-", out_dir / "train.jsonl.gz")
    lic_out = out_dir / "licenses"
    for lic in sorted((datasets_dir / "licenses").rglob("*.txt")):
        target = lic_out / lic.relative_to(datasets_dir / "licenses")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lic, target)
    if (datasets_dir / "prompts" / "more").is_dir():
        written.extend(vendor_more_data(datasets_dir, out_dir))
    return sorted(written)


def vendor_more_data(datasets_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Vendor ``prompts/more/*.jsonl`` apart from the first tier's files, with their licenses.

    Writes :data:`MORE_FILE` and one ``train-more-<source>.jsonl.gz`` per
    :data:`MORE_CC_BY_SA_SOURCES` source, and copies ``licenses/<source>.LICENSE.txt`` of every
    source (a source without one is an error: nothing is written). Deterministic like
    :func:`vendor_training_data`.
    """
    out_dir = out_dir or model_dir()
    files = sorted((datasets_dir / "prompts" / "more").glob("*.jsonl"))
    if not files:
        raise ValueError(f"{datasets_dir / 'prompts' / 'more'}: no *.jsonl files")
    licenses = {f.stem: datasets_dir / "licenses" / f"{f.stem}.LICENSE.txt" for f in files}
    missing = sorted(s for s, lic in licenses.items() if not lic.is_file())
    if missing:
        raise ValueError(f"no license file for {', '.join(missing)} under {datasets_dir / 'licenses'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _vendor_files(files, _trimmed_more, MORE_CC_BY_SA_SOURCES, "train-more-", out_dir / MORE_FILE)
    (out_dir / "licenses").mkdir(parents=True, exist_ok=True)
    for lic in licenses.values():
        shutil.copyfile(lic, out_dir / "licenses" / lic.name)
    return sorted(written)


def iter_jsonl(fh: IO[str]) -> Iterator[tuple[int, str]]:
    yield from enumerate(fh, 1)


def data_digest(paths: Iterable[str | Path]) -> str:
    """sha256 over the (decompressed) bytes of ``paths``, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        with open_text(p) as fh:
            h.update(fh.read().encode("utf-8"))
    return h.hexdigest()
