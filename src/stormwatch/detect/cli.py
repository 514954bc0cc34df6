"""Click commands ``classify``, ``train`` and ``eval`` (registered in the main group by the CLI)."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import orjson

from stormwatch.clitools import warn_deprecated
from stormwatch.detect.cascade_detector import CascadeDetector
from stormwatch.detect.cli_train import parse_weight_for, train_combiner, train_encoder_artifact, train_gate
from stormwatch.detect.data import default_data_paths, model_dir, open_text, read_rows
from stormwatch.detect.scorer import CLASSIFY_DEFAULT_DETECTORS, DETECTOR_CHOICES, load_scorer, resolve_detectors
from stormwatch.detect.settings import PRESETS, load_settings
from stormwatch.detect.text import item_id, item_text
from stormwatch.errors import InputError
from stormwatch.vocab import LLMT_IDS

__all__ = ["EXIT_REJECTED", "classify_command", "eval_command", "train_command"]

EXIT_REJECTED = 10  # finished, but some records were rejected
BATCH = 2048
MAX_LINE_BYTES = 64 * 1024  # one plain-text line (--lines); longer lines are rejected with their line number
_TEXT_HINT = (
    "INPUT is a JSONL file (or - for stdin); to score a text itself use "
    "`stormwatch classify --text 'TEXT'`, for plain text lines on stdin `--lines`"
)


def _parse(lines: Iterator[tuple[int, str]], name: str, rejects: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            rejects.append(f"{name}:{lineno}: not JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            rejects.append(f"{name}:{lineno}: not a JSON object")
            continue
        try:
            item_text(obj)
        except ValueError as exc:
            rejects.append(f"{name}:{lineno}: {exc}")
            continue
        yield lineno, obj


def _batches(it: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    batch: list[tuple[int, dict[str, Any]]] = []
    for x in it:
        batch.append(x)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _open_input(path: str, name: str) -> IO[str]:
    """``open_text`` with a missing or unreadable file as an input error (exit 4) that names the
    ways to score a text without a file."""
    try:
        return open_text(path)
    except OSError as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise InputError(f"{name}: {reason}", hint=_TEXT_HINT) from exc


def _plain_lines(fh: IO[bytes], name: str, rejects: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Plain text, one prompt per line (UTF-8; blank lines skipped). A line longer than
    ``MAX_LINE_BYTES`` is rejected as ``name:line`` without being held in memory."""
    for lineno in itertools.count(1):
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a chunk at a time
                raw = fh.readline(MAX_LINE_BYTES)
                size += len(raw)
            rejects.append(
                f"{name}:{lineno}: line longer than {MAX_LINE_BYTES} bytes ({size:,} bytes); "
                "split it or send it as a JSONL record"
            )
            continue
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if text.strip():
            yield lineno, {"id": f"line-{lineno}", "text": text}


def _open_plain(path: str, name: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")
    except OSError as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise InputError(f"{name}: {reason}", hint=_TEXT_HINT) from exc


@contextlib.contextmanager
def _records(
    input_path: str | None, texts: tuple[str, ...], lines: bool, rejects: list[str]
) -> Iterator[Iterator[tuple[int, dict[str, Any]]]]:
    """The numbered records to score: ``--text`` values, plain text lines or JSONL lines."""
    if texts:
        yield iter([(i, {"id": f"text-{i}", "text": t}) for i, t in enumerate(texts, 1)])
        return
    path = input_path or "-"
    name = "<stdin>" if path == "-" else path
    if lines:
        bfh = _open_plain(path, name)
        try:
            yield _plain_lines(bfh, name, rejects)
        finally:
            if bfh is not sys.stdin.buffer:
                bfh.close()
        return
    with _open_input(path, name) as fh:
        yield _parse(enumerate(fh, 1), name, rejects)


@click.command("classify")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="Score this text (repeatable; ids text-1, text-2, ...) instead of reading INPUT.")  # fmt: skip
@click.option("--lines", is_flag=True,
              help="INPUT (default stdin) is plain text, a prompt a line (ids line-N; <= 64 KiB a line).")  # fmt: skip
@click.option("-o", "--output", "output", type=click.Path(allow_dash=True, dir_okay=False), default="-",
              help="Output JSONL (default stdout).")  # fmt: skip
@click.option("--preset", type=click.Choice(PRESETS), default=None, help="Threshold preset (default: settings).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Override the preset threshold.")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Model artifact (default: the one shipped).")  # fmt: skip
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="stormwatch.toml path.")
@click.option("--detectors", type=click.Choice(DETECTOR_CHOICES), default=None,
              help="cascade (the default: the first tier, then the multilingual encoder where the first tier "
              "does not clear a prompt; the first tier alone, with a warning, without the encoder extra), "
              "first_tier (lexical, fast; the default of score/analyze/serve), or encoder. "
              "Default: STORMWATCH_DETECTORS, else [detect] detectors in stormwatch.toml, else cascade.")  # fmt: skip
@click.option("--encoder", "encoder_path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Encoder artifact folder (default: the one shipped).")  # fmt: skip
@click.option("--explain", type=click.Choice(["flagged", "all", "none"]), default="flagged",
              help="Which records get an explanation (default: flagged ones).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print the run summary as one JSON document: on stdout with -o FILE, else on stderr "
              "(stdout carries the scores).")  # fmt: skip
@click.option("-q", "--quiet", "quiet", is_flag=True, help="No progress bar.")
def classify_command(
    input_path: str | None,
    texts: tuple[str, ...],
    lines: bool,
    output: str,
    preset: str | None,
    threshold: float | None,
    model_path: str | None,
    config: str | None,
    detectors: str | None,
    encoder_path: str | None,
    explain: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Score prompts or usage events in INPUT (JSONL, .gz, or - for stdin), the texts given with
    --text, or plain text lines (--lines).

    Each output line: {id, score, flagged, categories, flagged_categories, explanation,
    model_version, threshold, cascade}; `cascade` says which tier decided (first: cleared by the
    first tier; second: the encoder and the combiner) and why, with both tiers' scores (null when
    the detectors are not the cascade). The detectors default to the cascade (the first tier alone,
    with a warning, without the encoder extra); score, analyze and serve default to the first tier.
    Bad lines are reported on stderr as file:line and the command exits with code 10 after scoring
    the good ones. A missing INPUT file exits with code 4.
    """
    from tqdm import tqdm

    if texts and (input_path is not None or lines):
        raise click.UsageError("--text replaces INPUT and --lines; give one of them")
    if not texts and input_path is None and not lines:
        raise click.UsageError("give INPUT (JSONL, or - for stdin), --text TEXT, or --lines for plain text on stdin")
    if input_path is not None and input_path != "-" and not Path(input_path).exists():
        # before the model loads and before -o is created: nothing to score
        raise InputError(f"{input_path}: no such file", hint=_TEXT_HINT)
    settings = load_settings(config, preset=preset, threshold=threshold, detectors=detectors)
    name, asked = resolve_detectors(settings.detectors, default=CLASSIFY_DEFAULT_DETECTORS)
    if encoder_path is not None and name == "first_tier":
        raise click.UsageError("--encoder needs --detectors cascade or encoder")
    det = CascadeDetector(model_path=model_path, encoder_path=encoder_path, detectors=name)
    model = load_scorer(name, model_path=model_path, encoder_path=encoder_path, asked=asked)
    det.model_ = model
    thr = settings.resolved_threshold(model.thresholds)
    cat_thr = {c: settings.category_thresholds.get(c, thr) for c in LLMT_IDS}
    rejects: list[str] = []
    n_out = n_flagged = 0
    out: IO[bytes] = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
    try:
        with (
            _records(input_path, texts, lines, rejects) as records,
            tqdm(desc="classify", unit=" rec", disable=quiet, file=sys.stderr, mininterval=0.5) as bar,
        ):
            for batch in _batches(records):
                items = [obj for _, obj in batch]
                scores, cats = det.score_full(items)
                decisions = det.decisions(items)
                out_lines = []
                for (lineno, obj), s, c, dec in zip(batch, scores.tolist(), cats.tolist(), decisions, strict=True):
                    categories = {cid: round(v, 6) for cid, v in zip(LLMT_IDS, c, strict=True)}
                    flagged_cats = [cid for cid in LLMT_IDS if categories[cid] >= cat_thr[cid]]
                    flagged = s >= thr or bool(flagged_cats)
                    ev: list[dict[str, Any]] = []
                    if explain == "all" or (explain == "flagged" and flagged):
                        ev = det.explain(obj)
                    out_lines.append(
                        orjson.dumps(
                            {
                                "id": item_id(obj, default=f"line-{lineno}"),
                                "score": round(s, 6),
                                "flagged": flagged,
                                "categories": categories,
                                "flagged_categories": flagged_cats,
                                "explanation": ev,
                                "model_version": model.version,
                                "threshold": thr,
                                "cascade": dec,
                            }
                        )
                    )
                    n_flagged += flagged
                out.write(b"\n".join(out_lines) + b"\n")
                n_out += len(batch)
                bar.update(len(batch))
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    for r in rejects:
        click.echo(f"rejected: {r}", err=True)
    summary = {
        "scored": n_out,
        "flagged": n_flagged,
        "rejected": len(rejects),
        "model_version": model.version,
        "threshold": thr,
        "preset": settings.preset,
    }
    if as_json:
        click.echo(orjson.dumps(summary).decode(), err=output == "-")
    elif not quiet:
        click.echo(f"scored {n_out}, flagged {n_flagged}, rejected {len(rejects)} ({model.version})", err=True)
    if rejects:
        sys.exit(EXIT_REJECTED)


@click.command("train")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training JSONL files (default: the vendored data). Repeatable.")  # fmt: skip
@click.option("--add", "add", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="More labelled JSONL (e.g. analysts' labels) on top of --data or the vendored data.")  # fmt: skip
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the artifact to this file.")  # fmt: skip
@click.option("--out", "out", type=click.Path(), default=None, metavar="DIR",
              help="Write the artifact into this folder as VERSION.json.gz. Default (neither -o nor --out): "
              "replace the packaged one.")  # fmt: skip
@click.option("--vendor-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="First re-vendor training data from this datasets folder (maintainers).")  # fmt: skip
@click.option("--model", "which", type=click.Choice(["first_tier", "encoder", "gate", "combiner"]),
              default="first_tier", show_default=True,
              help="Which model to build: the lexical first tier, the second tier (the multilingual encoder, "
              "the cascade's combiner and topic gate; needs the train-encoder extra, ~20 min on 2 cores), or "
              "the topic gate or the combiner alone (~1-4 min; --out names the encoder folder it is written "
              "into).")  # fmt: skip
@click.option("--combiner-design", default="linear", show_default=True, metavar="DESIGN",
              help="Combiner only: linear, trees-LxR (boosted trees, L leaves x R rounds), latin-trees-LxR "
              "(trees for Latin script only) or chosen (the best of linear and three tree sizes by "
              "leave-source-out inside its rows).")  # fmt: skip
@click.option("--epochs", type=click.FloatRange(0.01, 20), default=None,
              help="Encoder only: passes over the training rows (default: the recipe's, 1; recipe 4: 3).")  # fmt: skip
@click.option("--max-rows", type=click.IntRange(16), default=None,
              help="Encoder only: train on at most this many rows (smoke runs).")  # fmt: skip
@click.option("--layers", type=click.IntRange(1, 12), default=6, show_default=True,
              help="Encoder only: transformer layers kept from the base model (fewer: a faster student, "
              "see the cascade's model card for what each costs).")  # fmt: skip
@click.option("--lr", type=click.FloatRange(1e-7, 1e-2), default=None,
              help="Encoder only: the encoder body's peak learning rate (default: the recipe's, 1.2e-4; the head "
              "keeps its own); --epochs 3 --lr 6e-5 is encoder-recipe-4's.")  # fmt: skip
@click.option("--authored-weight", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Encoder only: how many times each authored training prompt is repeated.")  # fmt: skip
@click.option("--authored-weight-for", "authored_weights", multiple=True, metavar="PREFIX=N",
              callback=lambda _c, _p, v: tuple(parse_weight_for(x) for x in v),
              help="Encoder only: repeat the authored prompts whose id starts with PREFIX N times instead "
              "(e.g. authored-b10-=1 for one batch; repeatable, the first match wins).")  # fmt: skip
@click.option("--seed", type=click.IntRange(0), default=13, show_default=True,
              help="Encoder only: the recipe's seed (sampling, calibration split, initialisation, batch order); "
              "another seed is another draw of the same recipe, to see how much one training run varies.")  # fmt: skip
@click.option("--teacher", type=click.Path(exists=True), default=None, metavar="DIR|FILE",
              help="Encoder only: distil from this bigger encoder build (e.g. one trained with --layers 12), or "
              "from its logits saved with --save-teacher-logits: the student also learns the teacher's "
              "probability on every training row.")  # fmt: skip
@click.option("--save-teacher-logits", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Encoder only, with --teacher DIR: also write the teacher's logits to FILE (.json.gz, a few "
              "hundred KB) for later students.")  # fmt: skip
@click.option("--distill-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Encoder only, with --teacher: the share of the misuse loss that follows the teacher.")  # fmt: skip
@click.option("--weight-average", type=click.Choice(["none", "swa", "ema"]), default="none", show_default=True,
              help="Encoder only: ship the average of the fine-tune's late weights (swa: the uniform mean over its "
              "last half; ema: an exponential moving average) instead of its last weights.")  # fmt: skip
@click.option("-q", "--quiet", "quiet", is_flag=True, help="No progress lines.")
def train_command(
    data: tuple[str, ...],
    add: tuple[str, ...],
    output: str | None,
    out: str | None,
    vendor_from: str | None,
    which: str,
    epochs: float | None,
    max_rows: int | None,
    layers: int,
    lr: float | None,
    authored_weight: int,
    authored_weights: tuple[tuple[str, int], ...],
    seed: int,
    teacher: str | None,
    save_teacher_logits: str | None,
    distill_weight: float,
    weight_average: str,
    combiner_design: str,
    quiet: bool,
) -> None:
    """Rebuild the first-tier model artifact (or, with --model encoder, the second tier). The first
    tier's version id names the data, the parameters and the recipe: the same on every CPU (scores
    within 1e-4, see the model card); other data, another id."""
    from stormwatch.detect.data import vendor_training_data
    from stormwatch.detect.evaluate import finalize_artifact
    from stormwatch.detect.train import serialize, train_artifact

    def progress(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    output, out = train_target(output, out)
    if vendor_from:
        for p in vendor_training_data(Path(vendor_from)):
            progress(f"vendored {p}")
    if which == "encoder":
        train_encoder_artifact(
            data,
            add,
            output,
            out,
            epochs,
            max_rows,
            progress,
            layers=layers,
            lr=lr,
            authored_weight=authored_weight,
            authored_weights=authored_weights,
            seed=seed,
            teacher=teacher,
            save_teacher_logits=save_teacher_logits,
            distill_weight=distill_weight,
            weight_average="" if weight_average == "none" else weight_average,
        )
        return
    if which in ("gate", "combiner"):
        if which == "gate":
            train_gate(data, add, output, out, progress)
        else:
            train_combiner(data, add, output, out, combiner_design, progress)
        return
    paths = ([Path(d) for d in data] or default_data_paths()) + [Path(a) for a in add]
    rows = read_rows(paths)
    art = train_artifact(rows, progress=progress)
    finalize_artifact(art, rows)
    blob = serialize(art)
    version = art["version"]
    if output is not None:
        target = Path(output)
    else:
        folder = Path(out) if out is not None else model_dir()
        if out is None:
            for old in folder.glob("first_tier-*.json.gz"):
                old.unlink()
        target = folder / f"{version}.json.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(blob)
    click.echo(f"{version} -> {target} ({len(blob)} bytes)")


@click.command("eval")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled JSONL files (default: the vendored data's test split).")  # fmt: skip
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--loso/--no-loso", default=True,
              help="Leave-one-source-out retraining of the first tier (slow; first_tier only).")  # fmt: skip
@click.option("--detectors", type=click.Choice(DETECTOR_CHOICES), default="first_tier", show_default=True,
              help="What to evaluate: the first tier, the encoder alone, or the cascade (then use --no-loso; "
              "the encoder's leave-source-out is `python benchmarks/bench_cascade.py loso`).")  # fmt: skip
@click.option("--encoder", "encoder_path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Encoder artifact folder (default: the one shipped).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.option("-q", "--quiet", "quiet", is_flag=True, help="No progress lines.")
def eval_command(
    data: tuple[str, ...],
    model_path: str | None,
    loso: bool,
    detectors: str,
    encoder_path: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Per-source and leave-one-source-out metrics."""
    from stormwatch.detect.evaluate import evaluate, format_report

    if loso and detectors != "first_tier":
        raise click.UsageError("--loso retrains the first tier; with --detectors cascade|encoder give --no-loso")
    model = load_scorer(detectors, model_path=model_path, encoder_path=encoder_path)
    rows = read_rows([Path(d) for d in data] or default_data_paths())
    split = "test" if not data else None
    report = evaluate(model, rows, split=split, loso=loso,
                      progress=None if quiet else lambda m: click.echo(m, err=True))  # fmt: skip
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_report(report))


def train_target(output: str | None, out: str | None) -> tuple[str | None, str | None]:
    """``(output FILE, out DIR)`` of ``stormwatch train``; ``--out FILE`` is the old spelling of ``-o FILE``.

    ``--out PATH`` means a file (and warns) when PATH is an existing file or, not being a folder, ends in
    ``.gz`` or ``.json``; otherwise it is a folder.
    """
    if out is not None:
        p = Path(out)
        if p.is_file() or (not p.is_dir() and p.name.endswith((".gz", ".json"))):
            warn_deprecated("`train --out FILE`", "-o/--output FILE (--out is a folder)")
            if output is not None:
                raise click.UsageError("give -o/--output FILE or --out DIR, not both")
            return out, None
        if output is not None:
            raise click.UsageError("give -o/--output FILE or --out DIR, not both")
    return output, out
