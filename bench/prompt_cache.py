"""Two conversations taking turns on one llama.cpp replica: prompt tokens evaluated per turn (not a test).

    .venv/bin/python bench/prompt_cache.py [--turns 8] [--sessions 2]

Each session's prompt grows turn by turn (system prompt, the built-in tools, its own history);
the sessions alternate, as they do when several share a replica. With ``prompt_cache_mb: 0`` the
context holds only the last conversation, so every turn re-reads its whole prompt; with saved
per-conversation states (deployments/llm_prompt_states.py) a turn reads only its new tokens.
Prints, for each setting, the prompt tokens evaluated per turn and the time to the first token.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.llm import ChatDone, LanguageModel, LlmOptions, TextDelta
from serve_app.session.tools import BuiltinTools

SYSTEM = "You are a helpful, friendly voice assistant. Answer in one or two short sentences."
QUESTIONS = ["What is the capital of France?", "Tell me something about the sea.", "How tall is a giraffe?",
             "What do cats like to eat?", "Name a famous painter.", "Why is the sky blue?",
             "What is a good breakfast?", "How many legs does a spider have?", "What is rain made of?",
             "Who wrote Hamlet?"]


async def run(cache_mb: int, sessions: int, turns: int) -> tuple[list[int], list[float]]:
    model = LanguageModel.func_or_class(LlmOptions(prompt_cache_mb=cache_mb, n_threads=1, n_threads_batch=2))
    tools = [spec.schema() for spec in BuiltinTools().specs()]
    histories = [[{"role": "system", "content": SYSTEM}] for _ in range(sessions)]
    evaluated, first_token = [], []
    for turn in range(turns):
        for index, history in enumerate(histories):
            history.append({"role": "user", "content": QUESTIONS[(turn + index) % len(QUESTIONS)]})
            started, first, reply = time.perf_counter(), None, ""
            async for event in model.chat({"messages": history, "tools": tools, "max_tokens": 32,
                                           "temperature": 0.0}):
                if isinstance(event, TextDelta):
                    first = first or time.perf_counter()
                    reply += event.text
                elif isinstance(event, ChatDone) and turn > 0:  # the first turn reads every prompt anyway
                    evaluated.append(event.prompt_tokens - event.cached_tokens)
                    first_token.append((first or time.perf_counter()) - started)
            history.append({"role": "assistant", "content": reply})
    return evaluated, first_token


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.sessions} conversations alternating on one replica, {args.turns} turns each "
          "(turn 1 left out), SmolLM2-135M, 3 built-in tools in the prompt:")
    for cache_mb, label in ((0, "live context only (prompt_cache_mb: 0)"),
                            (256, "saved per-conversation states (prompt_cache_mb: 256)")):
        evaluated, first = asyncio.run(run(cache_mb, args.sessions, args.turns))
        print(f"  {label:52s} prompt tokens evaluated per turn: median {statistics.median(evaluated):.0f}, "
              f"max {max(evaluated)};  first token median {statistics.median(first) * 1000:.0f} ms, "
              f"max {max(first) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
