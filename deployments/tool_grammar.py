"""Tool calling for a local model: the Hermes convention plus a grammar that forces well-formed calls.

The tools go into the system prompt inside ``<tools>…</tools>``; the model answers either in plain
text or with ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks, and tool results come
back as ``<tool_response>…</tool_response>`` in a user turn (the format Qwen2.5 and Hermes models are
trained on). A llama.cpp GBNF grammar built from the tools' JSON schemas makes a call impossible to
get wrong even for a 135M model: only a declared name, only arguments that match its schema. A text
answer may not contain ``<`` at all, so the first character of a reply tells text from a call.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Literal

from llama_cpp.llama_grammar import SchemaConverter

from deployments.errors import ModelInputError
from deployments.llm import ChatMessage, ToolCall, new_call_id

ToolMode = Literal["text", "auto", "required"]

_TOOLS_PROMPT = """

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# JSON strings may not hold raw control characters; the converter's stock rule would allow them.
_STRICT_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'

_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def tools_system_prompt(system: str | None, tools: list[dict]) -> str:
    """The system message with the tools' signatures and the call format appended."""
    signatures = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (system or DEFAULT_SYSTEM_PROMPT) + _TOOLS_PROMPT.format(tools=signatures)


def render_tool_calls(calls: list[ToolCall]) -> str:
    blocks = []
    for call in calls:
        arguments = json.loads(call.arguments or "{}")
        blocks.append(f"<tool_call>\n{json.dumps({'name': call.name, 'arguments': arguments})}\n</tool_call>")
    return "\n".join(blocks)


def plain_messages(messages: list[ChatMessage], system_prompt: str | None) -> list[dict[str, str]]:
    """Role/content pairs any chat template can render: calls and results become Hermes markup.

    ``system_prompt`` (the tools block, or None) replaces the first system message or leads the
    conversation; consecutive tool results share one user turn, as in Qwen's template.
    """
    out: list[dict[str, str]] = []
    if system_prompt is not None:
        out.append({"role": "system", "content": system_prompt})
    for index, message in enumerate(messages):
        if message.role == "system" and index == 0 and system_prompt is not None:
            continue
        if message.role == "tool":
            block = f"<tool_response>\n{message.content or ''}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        elif message.role == "assistant" and message.tool_calls:
            text = (message.content or "").strip()
            calls = render_tool_calls(message.tool_calls)
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
        else:
            out.append({"role": message.role, "content": message.content or ""})
    return out


_TEXT_RULE = r"text ::= [^<\x20\t\n\r] [^<]*"


def tool_call_grammar(tools: list[dict], mode: ToolMode, max_calls: int = 1) -> str | None:
    """GBNF for a reply: calls only (``required``), calls or ``<``-free text (``auto``), or None.

    Raises ModelInputError when a tool's parameter schema cannot be turned into grammar rules.
    """
    if mode == "text" or not tools:
        return None
    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False,
                                raw_pattern=False)
    alternatives = []
    for index, tool in enumerate(tools):
        function = tool["function"]
        parameters = copy.deepcopy(function.get("parameters") or {"type": "object", "properties": {}})
        try:
            # "#/$defs/…" references point into the parameters schema, so resolve them there
            call_schema = {
                "type": "object",
                "properties": {"name": {"const": function["name"]},
                               "arguments": converter.resolve_refs(parameters, f"tool{index}")},
                "required": ["name", "arguments"],
            }
            alternatives.append(converter.visit(call_schema, f"tool{index}"))
        except (AssertionError, KeyError, ValueError, TypeError, NotImplementedError) as error:
            raise ModelInputError(
                f"tool {function['name']!r}: its parameters schema is not supported ({error or type(error).__name__})",
                "invalid_tool_schema",
            ) from None
    rules = [line if not line.startswith("char ::= ") else _STRICT_CHAR_RULE
             for line in converter.format_grammar().splitlines()]
    more = f' ("\\n" tool-call){{0,{max_calls - 1}}}' if max_calls > 1 else ""
    head = [
        "root ::= tool-calls" if mode == "required" else "root ::= tool-calls | text",
        f"tool-calls ::= tool-call{more}",
        'tool-call ::= "<tool_call>\\n" tool-object "\\n</tool_call>"',
        "tool-object ::= " + " | ".join(alternatives),
    ]
    if mode == "auto":
        head.append(_TEXT_RULE)
    return "\n".join(head + rules) + "\n"


def has_tool_markup(messages: list[ChatMessage]) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in messages)


def answered_calls(messages: list[ChatMessage]) -> set[tuple[str, str]]:
    """(name, canonical arguments) of the calls made since the last user message (their results follow)."""
    answered: set[tuple[str, str]] = set()
    for message in reversed(messages):
        if message.role == "user":
            break
        for call in message.tool_calls or []:
            answered.add(call_key(call))
    return answered


def call_key(call: ToolCall) -> tuple[str, str]:
    return call.name, json.dumps(json.loads(call.arguments or "{}"), sort_keys=True)


def parse_tool_calls(reply: str, tools: list[dict]) -> list[ToolCall]:
    """The complete, declared calls in a reply, each once; a block cut short by the token limit is dropped."""
    names = {tool["function"]["name"] for tool in tools}
    calls: list[ToolCall] = []
    for block in _CALL_BLOCK.findall(reply):
        try:
            payload = json.loads(block, strict=False)
        except json.JSONDecodeError:
            continue
        if not isinstance(payload, dict) or payload.get("name") not in names:
            continue
        arguments = payload.get("arguments")
        if not isinstance(arguments, dict):
            continue
        call = ToolCall(id=new_call_id(), name=payload["name"], arguments=json.dumps(arguments))
        if call_key(call) not in {call_key(seen) for seen in calls}:
            calls.append(call)
    return calls


class ReplyReader:
    """Splits a streamed reply into text to pass on at once and tool-call markup to hold back.

    Leading whitespace is dropped; when tools are offered, a reply whose first character is ``<``
    is a call (the grammar allows nothing else to start with it) and is parsed at the end.
    """

    def __init__(self, tools: list[dict], mode: ToolMode) -> None:
        self.tools = tools
        self.watch_for_calls = mode != "text" and bool(tools)
        self.kind: Literal["unknown", "text", "calls"] = "unknown"
        self.held = ""

    def feed(self, piece: str) -> str:
        """Text to emit now (possibly empty)."""
        if self.kind == "text":
            return piece
        self.held += piece
        if self.kind == "calls":
            return ""
        stripped = self.held.lstrip()
        if not stripped:
            return ""
        if self.watch_for_calls and stripped.startswith("<"):
            self.kind = "calls"
            return ""
        self.kind, self.held = "text", ""
        return stripped

    def calls(self) -> list[ToolCall]:
        return parse_tool_calls(self.held, self.tools) if self.kind == "calls" else []
