"""OpenAI Batch API JSONL: input files and output files, joined on ``custom_id``.

Mapping: ``../shared/research/interfaces.md`` §2.2 and §6 (Ingest C, Batch column); see
``docs/formats.md``. Batch lines carry no account: the batch owner comes from the run
(``FormatOptions.default_account``, CLI ``--account``) and optional batch context from
``FormatOptions.extra``: ``batch_ts`` (the batch's time, used when a line has none; CLI ``--batch-ts``), ``batch_id``,
``api_key_id``, ``ip``, ``user_agent``.

Memory: output lines come in no guaranteed order, so every output file is read first and indexed
by ``custom_id`` -> (file, line, raw bytes) - the raw line, not the parsed object, to keep the index
small. The Batch API caps a batch at 50,000 requests (200 MB), so one batch's index fits in memory
comfortably. Input files are then streamed and joined line by line; outputs left over at the end
have no input line and are quarantined.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import RecordError
from stormwatch.events import Event, normalize_ts, type_name
from stormwatch.ingest.formats._common import (
    JSON,
    OpenAIMapping,
    build_event,
    endpoint_kind,
    iter_json_lines,
    join,
    map_openai_request,
    map_openai_response,
    opt_obj,
    opt_str,
    parse_ts,
    reject,
    safe_key_id,
    sniff_object,
)
from stormwatch.ingest.formats.base import FormatOptions, Parsed, Rejected, is_stream, load_json_line, read_head

INPUT = "input"
OUTPUT = "output"
_CLASSIFY_LINES = 1000


def _line_kind(obj: object) -> str | None:
    if not isinstance(obj, dict) or "custom_id" not in obj:
        return None
    if "body" in obj or "method" in obj or "url" in obj:
        return INPUT
    if "response" in obj or "error" in obj:
        return OUTPUT
    return None


@dataclass(slots=True)
class _Output:
    source: str
    line: int
    raw: bytes


class OpenAIBatchFormat:
    name = "openai_batch"
    description = "OpenAI Batch API input + output JSONL, joined on custom_id (needs --account: the batch owner)"

    #: input and output files of one batch are parsed together (one ``parse`` call), so they can be joined
    joins_files = True

    def sniff(self, head: bytes, path: Path) -> float:
        obj, line = sniff_object(head)
        if obj is not None:
            return 0.95 if _line_kind(obj) is not None else 0.0
        # first line longer than the sniffed head, or damaged: fall back to looking for the keys
        if (
            b'"custom_id"' in line
            and b'"event_id"' not in line
            and (b'"body"' in line or b'"method"' in line or b'"response"' in line)
        ):
            return 0.9
        return 0.0

    # ----------------------------------------------------------------------------------------

    def _classify(self, path: Path, options: FormatOptions) -> str | None:
        # the head first: a pipe (FIFO, /dev/stdin) can be read only once, and its head is kept for the parser
        for raw in read_head(path).splitlines()[:_CLASSIFY_LINES]:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            kind = _line_kind(obj)
            if kind is not None:
                return kind
        if is_stream(path):
            return None
        for count, (_lineno, raw) in enumerate(iter_json_lines(path, options)):
            if count >= _CLASSIFY_LINES:
                break
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            kind = _line_kind(obj)
            if kind is not None:
                return kind
        return None

    def parse(self, paths: Sequence[Path], options: FormatOptions) -> Iterator[Parsed]:
        kinds = {path: self._classify(path, options) for path in paths}
        outputs: dict[str, _Output] = {}
        for path in paths:
            if kinds[path] == OUTPUT:
                yield from self._index_outputs(path, options, outputs)
            elif kinds[path] is None:
                yield from self._unrecognised(path, options)
        for path in paths:
            if kinds[path] == INPUT:
                yield from self._join_inputs(path, options, outputs)
        inputs = [str(path) for path in paths if kinds[path] == INPUT]
        for custom_id, out in outputs.items():
            why = (
                f"no line of the input file{'s' if len(inputs) > 1 else ''} {', '.join(inputs)} "
                "has this custom_id (is it the input file of another batch?)"
                if inputs
                else "no Batch input file was given in this run: pass the batch's input file "
                "together with its output file in one `stormwatch ingest`"
            )
            yield reject(
                out.source,
                out.line,
                f"no matching input line for custom_id {custom_id!r}: {why}",
                "custom_id",
                out.raw,
            )

    def _unrecognised(self, path: Path, options: FormatOptions) -> Iterator[Parsed]:
        source = str(path)
        for lineno, raw in iter_json_lines(path, options):
            obj = load_json_line(raw, source, lineno, options)
            if isinstance(obj, Rejected):
                yield reject(source, lineno, obj.reason, obj.field, raw)
            else:
                yield reject(
                    source,
                    lineno,
                    "not a Batch input line (custom_id, method, url, body) or output "
                    "line (id, custom_id, response, error); no line of this file is",
                    "custom_id",
                    raw,
                )

    def _index_outputs(self, path: Path, options: FormatOptions, outputs: dict[str, _Output]) -> Iterator[Parsed]:
        source = str(path)
        for lineno, raw in iter_json_lines(path, options):
            obj = load_json_line(raw, source, lineno, options)
            if isinstance(obj, Rejected):
                yield reject(source, lineno, obj.reason, obj.field, raw)
                continue
            kind = _line_kind(obj)
            if kind != OUTPUT:
                what = "an input line" if kind == INPUT else "not a Batch output line"
                yield reject(source, lineno, f"{what} in a Batch output file", None if kind else "custom_id", raw)
                continue
            try:
                custom_id = _custom_id(obj)
                opt_obj(obj, "response", "")
                opt_obj(obj, "error", "")
            except RecordError as exc:
                yield reject(source, lineno, exc.reason, exc.field, raw)
                continue
            first = outputs.get(custom_id)
            if first is not None:
                yield reject(
                    source,
                    lineno,
                    f"duplicate custom_id {custom_id!r} (first at {first.source}:{first.line})",
                    "custom_id",
                    raw,
                )
                continue
            outputs[custom_id] = _Output(source, lineno, raw)

    def _join_inputs(self, path: Path, options: FormatOptions, outputs: dict[str, _Output]) -> Iterator[Parsed]:
        source = str(path)
        seen: dict[str, int] = {}
        for lineno, raw in iter_json_lines(path, options):
            obj = load_json_line(raw, source, lineno, options)
            if isinstance(obj, Rejected):
                yield reject(source, lineno, obj.reason, obj.field, raw)
                continue
            kind = _line_kind(obj)
            if kind != INPUT:
                what = "an output line" if kind == OUTPUT else "not a Batch input line"
                yield reject(source, lineno, f"{what} in a Batch input file", None if kind else "custom_id", raw)
                continue
            try:
                custom_id = _custom_id(obj)
            except RecordError as exc:
                yield reject(source, lineno, exc.reason, exc.field, raw)
                continue
            if custom_id in seen:
                yield reject(
                    source,
                    lineno,
                    f"duplicate custom_id {custom_id!r} (first at {source}:{seen[custom_id]})",
                    "custom_id",
                    raw,
                )
                continue
            seen[custom_id] = lineno
            out = outputs.pop(custom_id, None)
            yield self._pair(source, lineno, raw, obj, custom_id, out, options)

    def _pair(
        self,
        source: str,
        lineno: int,
        raw: bytes,
        inp: JSON,
        custom_id: str,
        out: _Output | None,
        options: FormatOptions,
    ) -> Parsed:
        """One event from an input line and its output line (if any); or the Rejected saying why not."""
        out_obj: JSON | None = None
        both = raw if out is None else raw + b"\n" + out.raw
        partner = "" if out is None else f" (joined with output {out.source}:{out.line})"
        if out is not None:
            loaded = orjson.loads(out.raw)  # parsed once already when indexed
            assert isinstance(loaded, dict)
            out_obj = loaded
        # which side a field error belongs to: the output line for response.*/error/id, else the input line
        try:
            return self._event(inp, custom_id, out_obj, options)
        except RecordError as exc:
            fld = exc.field or ""
            if out is not None and (fld.startswith(("response", "error")) or fld == "id"):
                return reject(
                    out.source,
                    out.line,
                    f"{exc.reason} (joined with input {source}:{lineno})",
                    exc.field,
                    both,
                )
            return reject(source, lineno, exc.reason + partner, exc.field, both)

    def _event(self, inp: JSON, custom_id: str, out: JSON | None, options: FormatOptions) -> Event:
        extra = options.extra
        url = opt_str(inp, "url", "")
        method = opt_str(inp, "method", "")
        body = opt_obj(inp, "body", "")
        if body is None:
            raise RecordError("required field is missing", field="body")
        mapping = OpenAIMapping()
        map_openai_request(endpoint_kind(url, body), body, "body", mapping)
        attrs: dict[str, Any] = {"custom_id": custom_id}
        if url:
            attrs["url"] = url
        if method:
            attrs["method"] = method

        resp: JSON | None = None
        event_id: str | None = None
        origins = dict(mapping.origins)
        ts: str | None = None
        if out is None:
            attrs["output_missing"] = True
        else:
            resp = opt_obj(out, "response", "")
            error = opt_obj(out, "error", "")
            batch_req = opt_str(out, "id", "")
            if batch_req:
                attrs["batch_request_id"] = batch_req
            if error is not None:
                attrs["error"] = error
            event_id = batch_req
            origins["event_id"] = "id"
            if resp is not None:
                status = resp.get("status_code")
                if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
                    raise RecordError(f"expected an integer, got {type_name(status)}", field="response.status_code")
                if status is not None:
                    attrs["status_code"] = status
                    if status >= 400:
                        attrs["failed"] = True
                request_id = opt_str(resp, "request_id", "response")
                if request_id:
                    attrs["request_id"] = request_id
                    event_id = request_id
                    origins["event_id"] = "response.request_id"
                rbody = opt_obj(resp, "body", "response")
                if rbody is not None:
                    map_openai_response(rbody, "response.body", mapping)
                    for key in ("created", "created_at"):
                        if rbody.get(key) is not None:
                            ts = parse_ts(rbody[key], join("response.body", key))
                            origins["ts"] = join("response.body", key)
                            break
            if error is not None:
                attrs["failed"] = True
        if event_id is None:
            batch_id = extra.get("batch_id")
            event_id = f"{batch_id}:{custom_id}" if isinstance(batch_id, str) and batch_id else custom_id
            origins["event_id"] = "custom_id"
        if ts is None:
            batch_ts = extra.get("batch_ts")
            if batch_ts is not None:
                ts = normalize_ts(batch_ts, field="batch_ts")
                attrs["ts_from_batch"] = True
            else:
                why = (
                    "output line missing for custom_id " + repr(custom_id)
                    if out is None
                    else "the output line has no response.body.created/created_at (failed or expired request)"
                )
                raise RecordError(
                    f"no timestamp: {why}; pass the batch's created_at with --batch-ts (RFC 3339 or epoch seconds)",
                    field="ts",
                )
        account = options.default_account
        if not account:
            raise RecordError(
                "Batch lines carry no account: pass --account with the batch owner's account id",
                field="account_id",
            )
        attrs.update(mapping.attributes)
        api_key_id = extra.get("api_key_id")
        fields: dict[str, Any] = {
            "event_id": event_id,
            "ts": ts,
            "account_id": account,
            "org_id": options.default_org,
            "end_user_id": mapping.end_user_id,
            "api_key_id": safe_key_id(api_key_id) if isinstance(api_key_id, str) else None,
            "ip": extra.get("ip") if isinstance(extra.get("ip"), str) else None,
            "user_agent": extra.get("user_agent") if isinstance(extra.get("user_agent"), str) else None,
            "model": mapping.model,
            "messages": mapping.messages,
            "prompt": mapping.prompt,
            "response": mapping.response,
            "conversation_id": mapping.conversation_id,
            "refused": mapping.refused,
            "attributes": attrs,
        }
        return build_event(fields, origins, self.name)


def _custom_id(obj: JSON) -> str:
    value = obj.get("custom_id")
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {type_name(value)}", field="custom_id")
    if not value:
        raise RecordError("must not be empty", field="custom_id")
    return value
