"""Tool choice on the embedded LLM: the right tool, valid arguments, and no call where none is needed.

Runs the fixed request set of ``bench/tool_choice_cases.py`` (45 turns that need a tool, 44 that
must be answered in words) through the real ``LanguageModel`` deployment class in process, the way
a session asks: the session's default instructions as the system prompt, the server's three tools
plus a scenario's client tools, ``tool_choice: auto``, the session's temperature 0.6. Cases run
grouped by scenario, as in a session, where the tools (and so the prompt's prefix) stay the same.

    .venv/bin/python bench/tool_choice.py                          # embedding, two_step and one_pass, SmolLM2
    .venv/bin/python bench/tool_choice.py --decision two_step --model-path some.gguf

Each decision also gets a row for the held-out half: the cases at odd positions of each list
(``NEEDS_A_TOOL``, ``WORDS_ONLY``). ``router_margin`` (embedding) was picked on the even half only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tool_choice_cases import ALL_CASES, NEEDS_A_TOOL, WORDS_ONLY, Case
from deployments.llm import (
    ChatDone,
    ChatMessage,
    ChatRequest,
    LanguageModel,
    LlmOptions,
    TextDelta,
    ToolCallEvent,
)
from serve_app.session.options import SessionOptions

SYSTEM_PROMPT = SessionOptions().instructions
TEMPERATURE = SessionOptions().temperature


@dataclass
class Outcome:
    case: Case
    call: tuple[str, dict[str, Any]] | None  # the first call's name and parsed arguments
    seconds: float  # to the first text, or to the call


def request_for(case: Case, with_tools: bool = True) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="system", content=SYSTEM_PROMPT),
                                 ChatMessage(role="user", content=case.text)],
                       tools=case.tools if with_tools else [], tool_choice="auto" if with_tools else "none",
                       max_tokens=120, temperature=TEMPERATURE)


async def run_case(llm: LanguageModel, case: Case, with_tools: bool = True) -> Outcome:
    """Up to the first text or the first call: the turn's decision is made by then."""
    start = time.perf_counter()
    async with contextlib.aclosing(llm.chat(request_for(case, with_tools))) as events:
        async for event in events:
            if isinstance(event, ToolCallEvent):
                return Outcome(case, (event.call.name, json.loads(event.call.arguments)), time.perf_counter() - start)
            if isinstance(event, TextDelta | ChatDone):
                return Outcome(case, None, time.perf_counter() - start)
    raise AssertionError("the stream ended without ChatDone")


def valid_arguments(case: Case, arguments: dict[str, Any]) -> bool:
    schema = next(t["function"]["parameters"] for t in case.tools if t["function"]["name"] == case.tool)
    return jsonschema.Draft202012Validator(schema).is_valid(arguments)


def as_asked(case: Case, arguments: dict[str, Any]) -> bool:
    def same(want: Any, got: Any) -> bool:
        if isinstance(want, str):
            return isinstance(got, str) and want.lower() in got.lower().replace(" ", "_" if "_" in want else " ")
        return got == want and type(got) is type(want)

    return all(same(want, arguments.get(key)) for key, want in case.expect.items())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def held_out(case: Case) -> bool:
    """The half no margin was picked on: odd positions in each list."""
    cases = NEEDS_A_TOOL if case.tool else WORDS_ONLY
    return cases.index(case) % 2 == 1


def routing_ms(cases: list[Case], margin: float) -> tuple[float, float]:
    """The embedding decision alone, per message (P50, P95), with each tool set's vectors kept."""
    from deployments.tool_router import ToolRouter

    router, seconds = ToolRouter(margin), []
    for case in cases:
        router.decide(case.tools, case.text)  # the tool set's first message also embeds its tools
        start = time.perf_counter()
        router.decide(case.tools, case.text)
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds), 1000 * percentile(seconds, 0.95)


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    needs = [o for o in outcomes if o.case.tool]
    words = [o for o in outcomes if not o.case.tool]
    right = [o for o in needs if o.call and o.call[0] == o.case.tool]
    valid = [o for o in right if valid_arguments(o.case, o.call[1])]
    asked = [o for o in valid if as_asked(o.case, o.call[1])]
    first_text = [o.seconds for o in words if o.call is None]
    to_call = [o.seconds for o in right]
    return {
        "right_tool": f"{len(right)}/{len(needs)}", "right_tool_valid_args": f"{len(valid)}/{len(needs)}",
        "valid_share": len(valid) / len(needs), "as_asked": f"{len(asked)}/{len(needs)}",
        "missed": sum(1 for o in needs if o.call is None),
        "false_calls": f"{sum(1 for o in words if o.call)}/{len(words)}",
        "false_share": sum(1 for o in words if o.call) / len(words),
        "first_text_p50_ms": 1000 * statistics.median(first_text) if first_text else None,
        "first_text_p95_ms": 1000 * percentile(first_text, 0.95) if first_text else None,
        "to_call_p50_ms": 1000 * statistics.median(to_call) if to_call else None,
    }


async def run(llm: LanguageModel, cases: list[Case], verbose: bool) -> list[Outcome]:
    outcomes = []
    for case in cases:
        outcome = await run_case(llm, case)
        outcomes.append(outcome)
        if verbose:
            mark = "ok " if (outcome.call[0] if outcome.call else None) == case.tool else "BAD"
            print(f"  {mark} {case.scenario:16s} {case.text[:52]:52s} -> {outcome.call} {outcome.seconds * 1000:.0f} ms",
                  flush=True)
    return outcomes


async def no_tools_first_text(llm: LanguageModel, cases: list[Case]) -> tuple[float, float]:
    """The reference: time to the first text of the same words-only turns with no tools offered."""
    seconds = [(await run_case(llm, case, with_tools=False)).seconds for case in cases if not case.tool]
    return 1000 * statistics.median(seconds), 1000 * percentile(seconds, 0.95)


def fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decision", choices=["embedding", "two_step", "one_pass", "all"], default="all")
    parser.add_argument("--model-path", default=None, help="another GGUF (default: the embedded SmolLM2-135M)")
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases of each kind")
    parser.add_argument("--verbose", action="store_true", help="one line per case, with the decision's scores")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(format="    %(message)s")
        logging.getLogger("deployments.llm_llama_cpp").setLevel(logging.DEBUG)

    cases = ALL_CASES
    if args.limit:
        cases = [c for c in cases if c.tool][: args.limit] + [c for c in cases if not c.tool][: args.limit]
    cases = sorted(cases, key=lambda c: c.scenario)  # stable: one scenario's turns together, as in a session
    decisions = ["embedding", "two_step", "one_pass"] if args.decision == "all" else [args.decision]
    rows = []
    reference = None
    for decision in decisions:
        llm = LanguageModel.func_or_class(LlmOptions(model_path=args.model_path, n_threads=args.n_threads,
                                                     tool_decision=decision))
        model = (await llm.info())["model"]
        if reference is None:
            reference = await no_tools_first_text(llm, cases)
        print(f"{model}, tool_decision={decision}:", flush=True)
        outcomes = await run(llm, cases, args.verbose)
        rows.append((model, decision, summary(outcomes)))
        if not args.limit:
            rows.append((model, f"{decision}, held-out half", summary([o for o in outcomes if held_out(o.case)])))
        del llm

    print("\n| model | tool_decision | right tool | right tool, valid args | args as asked | false calls "
          "| first text, words-only turns P50 / P95 | to the call P50 |")
    print("|---|---|---|---|---|---|---|---|")
    for model, decision, s in rows:
        print(f"| {model} | {decision} | {s['right_tool']} | {s['right_tool_valid_args']} "
              f"({s['valid_share']:.0%}) | {s['as_asked']} | {s['false_calls']} ({s['false_share']:.0%}) "
              f"| {fmt(s['first_text_p50_ms'])} / {fmt(s['first_text_p95_ms'])} ms | {fmt(s['to_call_p50_ms'])} ms |")
    print(f"| {rows[0][0]} | no tools offered | - | - | - | - | {reference[0]:.0f} / {reference[1]:.0f} ms | - |")
    if "embedding" in decisions:
        p50, p95 = routing_ms(cases, LlmOptions().router_margin)
        print(f"\nembedding routing step alone: {p50:.1f} / {p95:.1f} ms per message (P50 / P95)")


if __name__ == "__main__":
    asyncio.run(main())
