"""The OpenAI request/response body mapping (chat, responses, moderations, completions, embeddings,
images) shared by the OpenAI Batch and OpenAI HTTP-log formats (``../shared/research/interfaces.md`` §6, Ingest C)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stormwatch.errors import RecordError
from stormwatch.events import ROLES, type_name
from stormwatch.ingest.formats._fields import (
    JSON,
    first_str,
    join,
    opt_list,
    opt_obj,
)

# --------------------------------------------------------------------------------------------
# OpenAI message / content rendering

_PLACEHOLDER = {
    "image_url": "[image]",
    "input_image": "[image]",
    "image": "[image]",
    "image_file": "[image]",
    "input_audio": "[audio]",
    "audio": "[audio]",
    "file": "[file]",
    "input_file": "[file]",
    "video_url": "[video]",
    "input_video": "[video]",
}
_TEXT_TYPES = frozenset({"text", "input_text", "output_text", "summary_text", "reasoning_text"})


def render_content(value: object, path: str) -> str:
    """Message content (a string, or a list of parts) as plain text; non-text parts become placeholders."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RecordError(f"expected a string or an array of parts, got {type_name(value)}", field=path)
    out: list[str] = []
    for i, part in enumerate(value):
        where = join(path, i)
        if isinstance(part, str):
            out.append(part)
            continue
        if not isinstance(part, dict):
            raise RecordError(f"expected a content part object, got {type_name(part)}", field=where)
        kind = part.get("type")
        if kind is not None and not isinstance(kind, str):
            raise RecordError(f"expected a string, got {type_name(kind)}", field=join(where, "type"))
        if kind in _TEXT_TYPES or (kind is None and "text" in part):
            text = part.get("text")
            if isinstance(text, dict):  # some SDKs nest {"text": {"value": ...}}
                text = text.get("value")
            if not isinstance(text, str):
                raise RecordError(f"expected a string, got {type_name(text)}", field=join(where, "text"))
            out.append(text)
        elif kind == "refusal":
            refusal = part.get("refusal")
            if not isinstance(refusal, str):
                raise RecordError(f"expected a string, got {type_name(refusal)}", field=join(where, "refusal"))
            out.append(refusal)
        elif kind in ("file", "input_file"):
            inner = part.get("file") if isinstance(part.get("file"), dict) else part
            name = inner.get("filename") if isinstance(inner, dict) else None
            out.append(f"[file: {name}]" if isinstance(name, str) and name else "[file]")
        else:
            out.append(_PLACEHOLDER.get(kind or "", f"[{kind or 'part'}]"))
    return "\n".join(out)


def render_tool_calls(value: object) -> list[str]:
    """``[tool_call name(arguments)]`` lines for chat ``tool_calls`` / legacy ``function_call``."""
    calls = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    out: list[str] = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") if isinstance(call.get("function"), dict) else call
        assert isinstance(fn, dict)
        name = fn.get("name")
        args = fn.get("arguments")
        out.append(f"[tool_call {name if isinstance(name, str) else '?'}({args if isinstance(args, str) else ''})]")
    return out


def map_role(value: object, path: str) -> str:
    if value == "function":
        return "tool"
    if not isinstance(value, str) or value not in ROLES:
        raise RecordError(f"role must be one of {sorted(ROLES)}, got {value!r}"[:200], field=path)
    return value


def chat_messages(value: object, path: str) -> list[dict[str, str]]:
    """Chat-style ``messages`` (list of ``{role, content}``) -> canonical messages."""
    if not isinstance(value, list):
        raise RecordError(f"expected an array of messages, got {type_name(value)}", field=path)
    out: list[dict[str, str]] = []
    for i, msg in enumerate(value):
        where = join(path, i)
        if not isinstance(msg, dict):
            raise RecordError(f"expected a message object, got {type_name(msg)}", field=where)
        role = map_role(msg.get("role"), join(where, "role"))
        text = render_content(msg.get("content"), join(where, "content"))
        extra = render_tool_calls(msg.get("tool_calls")) + render_tool_calls(msg.get("function_call"))
        if not text and isinstance(msg.get("refusal"), str):
            text = msg["refusal"]
        if extra:
            text = "\n".join([text, *extra]) if text else "\n".join(extra)
        out.append({"role": role, "content": text})
    return out


def responses_input(body: JSON, path: str) -> list[dict[str, str]]:
    """Responses API ``instructions`` + ``input`` (string or items) -> canonical messages."""
    out: list[dict[str, str]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            out.append({"role": "system", "content": instructions})
    elif instructions is not None:
        raise RecordError(f"expected a string, got {type_name(instructions)}", field=join(path, "instructions"))
    value = body.get("input")
    where = join(path, "input")
    if isinstance(value, str):
        out.append({"role": "user", "content": value})
        return out
    if value is None:
        return out
    if not isinstance(value, list):
        raise RecordError(f"expected a string or an array of items, got {type_name(value)}", field=where)
    for i, item in enumerate(value):
        at = join(where, i)
        if isinstance(item, str):
            out.append({"role": "user", "content": item})
            continue
        if not isinstance(item, dict):
            raise RecordError(f"expected an input item object, got {type_name(item)}", field=at)
        kind = item.get("type")
        if "role" in item:
            role = map_role(item.get("role"), join(at, "role"))
            out.append({"role": role, "content": render_content(item.get("content"), join(at, "content"))})
        elif kind == "function_call_output" or kind == "custom_tool_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else render_content(output, join(at, "output"))
            out.append({"role": "tool", "content": text})
        elif kind in ("function_call", "custom_tool_call"):
            out.append({"role": "assistant", "content": render_tool_calls(item)[0]})
        # reasoning, item_reference and other bookkeeping items carry no user text: skipped.
    return out


def flat_input(value: object, path: str) -> str:
    """Moderations / embeddings ``input``, completions ``prompt``: string, strings, parts or token arrays."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "[tokens]"
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list):
                out.append("[tokens]")
            elif isinstance(item, dict):
                out.append(render_content([item], join(path, i)))
            else:
                raise RecordError(f"expected a string or a part, got {type_name(item)}", field=join(path, i))
        return "\n".join(out)
    raise RecordError(f"expected a string or an array, got {type_name(value)}", field=path)


# --------------------------------------------------------------------------------------------
# OpenAI request/response mapping (Ingest C)


def endpoint_kind(url: str | None, body: JSON) -> str:
    """The endpoint family: chat, responses, moderations, completions, embeddings, prompt or unknown."""
    path = (url or "").split("?", 1)[0].rstrip("/").lower()
    for suffix, kind in (
        ("/chat/completions", "chat"),
        ("/responses", "responses"),
        ("/moderations", "moderations"),
        ("/completions", "completions"),
        ("/embeddings", "embeddings"),
        ("/images/generations", "prompt"),
        ("/images/edits", "prompt"),
        ("/videos", "prompt"),
    ):
        if path.endswith(suffix):
            return kind
    if "messages" in body:
        return "chat"
    if "instructions" in body or isinstance(body.get("input"), list):
        return "responses"
    if "prompt" in body:
        return "completions"
    if "input" in body:
        return "moderations"
    return "unknown"


@dataclass(slots=True)
class OpenAIMapping:
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    response: str | None = None
    refused: bool | None = None
    model: str | None = None
    end_user_id: str | None = None
    conversation_id: str | None = None
    attributes: JSON = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def map_openai_request(kind: str, body: JSON, path: str, out: OpenAIMapping) -> None:
    """Fill the prompt side of ``out`` from a request body at ``path`` (``body`` or ``request.body``)."""
    if kind == "chat":
        out.messages = chat_messages(body.get("messages"), join(path, "messages"))
        out.origins["messages"] = join(path, "messages")
    elif kind == "responses":
        out.messages = responses_input(body, path)
        out.origins["messages"] = join(path, "input")
    elif kind in ("moderations", "embeddings"):
        if "input" not in body:
            raise RecordError("required field is missing", field=join(path, "input"))
        out.prompt = flat_input(body.get("input"), join(path, "input"))
        out.origins["prompt"] = join(path, "input")
    elif kind in ("completions", "prompt"):
        if "prompt" not in body:
            raise RecordError("required field is missing", field=join(path, "prompt"))
        out.prompt = flat_input(body.get("prompt"), join(path, "prompt"))
        out.origins["prompt"] = join(path, "prompt")
    else:
        raise RecordError("no prompt text found (no messages, input or prompt)", field=path)
    metadata = opt_obj(body, "metadata", path)
    out.end_user_id, src = first_str(
        (body, "safety_identifier", path),
        (body, "user", path),
        (metadata, "end_user_id", join(path, "metadata")),
    )
    if src:
        out.origins["end_user_id"] = src
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conv, src = first_str((conversation, "id", join(path, "conversation")))
    else:
        conv, src = first_str((body, "conversation", path))
    if conv is None:
        conv, src = first_str(
            (body, "previous_response_id", path), (metadata, "conversation_id", join(path, "metadata"))
        )
    out.conversation_id = conv
    if src:
        out.origins["conversation_id"] = src
    model, src = first_str((body, "model", path))
    if model is not None and out.model is None:
        out.model = model
        out.origins["model"] = src or join(path, "model")
    if metadata:
        out.attributes["metadata"] = metadata
    for key in ("stream", "service_tier", "store", "temperature", "max_tokens", "max_output_tokens"):
        if body.get(key) is not None:
            out.attributes.setdefault("request", {})[key] = body[key]
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        names: list[str] = []
        for tool in tools:
            if isinstance(tool, dict):
                fn = tool.get("function")
                name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
                names.append(name if isinstance(name, str) else str(tool.get("type")))
        out.attributes.setdefault("request", {})["tools"] = names


def map_openai_response(body: JSON, path: str, out: OpenAIMapping) -> None:
    """Fill the response side of ``out`` from a response body at ``path``."""
    model, src = first_str((body, "model", path))
    if model is not None:
        out.model = model
        out.origins["model"] = src or join(path, "model")
    texts: list[str] = []
    finish: list[str] = []
    choices = opt_list(body, "choices", path)
    for i, choice in enumerate(choices or []):
        at = join(join(path, "choices"), i)
        if not isinstance(choice, dict):
            raise RecordError(f"expected an object, got {type_name(choice)}", field=at)
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            finish.append(reason)
            if reason == "content_filter":
                out.refused = True
        message = choice.get("message")
        if isinstance(message, dict):
            text = render_content(message.get("content"), join(join(at, "message"), "content"))
            refusal = message.get("refusal")
            if isinstance(refusal, str) and refusal:
                out.refused = True
                text = text or refusal
            extra = render_tool_calls(message.get("tool_calls")) + render_tool_calls(message.get("function_call"))
            text = "\n".join(t for t in [text, *extra] if t)
            texts.append(text)
        elif message is not None:
            raise RecordError(f"expected an object, got {type_name(message)}", field=join(at, "message"))
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    output = opt_list(body, "output", path)
    for i, item in enumerate(output or []):
        at = join(join(path, "output"), i)
        if not isinstance(item, dict):
            raise RecordError(f"expected an object, got {type_name(item)}", field=at)
        kind = item.get("type")
        if kind == "message" or (kind is None and "content" in item):
            parts = item.get("content")
            if isinstance(parts, list):
                for j, part in enumerate(parts):
                    if isinstance(part, dict) and part.get("type") == "refusal":
                        out.refused = True
                        texts.append(render_content([part], join(join(at, "content"), j)))
                    elif isinstance(part, dict) and part.get("type") == "output_text":
                        texts.append(render_content([part], join(join(at, "content"), j)))
            elif isinstance(parts, str):
                texts.append(parts)
        elif kind in ("function_call", "custom_tool_call"):
            texts.extend(render_tool_calls(item))
    if isinstance(body.get("output_text"), str) and not texts:
        texts.append(body["output_text"])
    incomplete = body.get("incomplete_details")
    if isinstance(incomplete, dict) and incomplete.get("reason") == "content_filter":
        out.refused = True
    if (choices is not None and choices) or output is not None:
        out.response = "\n".join(texts)
        out.origins["response"] = join(path, "choices" if choices else "output")
    if finish:
        out.attributes["finish_reason"] = finish[0] if len(finish) == 1 else finish
    results = body.get("results")
    if isinstance(results, list):
        flagged = False
        categories: list[str] = []
        for res in results:
            if isinstance(res, dict):
                flagged = flagged or res.get("flagged") is True
                cats = res.get("categories")
                if isinstance(cats, dict):
                    categories.extend(k for k, v in cats.items() if v is True and k not in categories)
        out.attributes["moderation"] = {"flagged": flagged, "categories": categories}
    for key in ("id", "status", "service_tier", "system_fingerprint", "usage", "error"):
        if body.get(key) is not None:
            name = "response_id" if key == "id" else "response_status" if key == "status" else key
            out.attributes.setdefault(name, body[key])
