"""Reply decoding speed with the built-in tools offered, on one thread (not a test).

    .venv/bin/python bench/decode_rate.py [--cases 12]

Runs the first words-only and tool turns of ``bench/tool_choice_cases.py`` through the real
``LanguageModel`` the way a session asks (its instructions, the server's tools, temperature 0.6),
60 tokens each, and prints the median tokens/s after the first text and the median time to it.
This is the figure the text mask (``deployments/text_guard.py``) was measured by: a reply under the
tool grammar against one decoded free under the mask.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tool_choice import request_for
from bench.tool_choice_cases import ALL_CASES
from deployments.llm import ChatDone, LanguageModel, LlmOptions, TextDelta


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12, help="words-only and tool turns of each kind")
    args = parser.parse_args()
    # one_pass: every reply here is decoded with the tools offered, as the figure was measured
    # (the default embedding router would send the tool turns to a call and the rest to plain text)
    llm = LanguageModel.func_or_class(LlmOptions(n_threads=1, n_threads_batch=2, tool_decision="one_pass"))
    cases = [c for c in ALL_CASES if not c.tool][: args.cases] + [c for c in ALL_CASES if c.tool][: args.cases]
    rates, firsts = [], []
    for case in cases:
        request = request_for(case)
        request.max_tokens = 60
        start, first, done = time.perf_counter(), None, None
        async with contextlib.aclosing(llm.chat(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta) and first is None:
                    first = time.perf_counter()
                if isinstance(event, ChatDone):
                    done = event
        if first is not None and done is not None and done.completion_tokens > 5:
            rates.append((done.completion_tokens - 1) / (time.perf_counter() - first))
            firsts.append(first - start)
    print(f"{len(rates)} text replies: {statistics.median(rates):.1f} tokens/s median after the first text, "
          f"first text after {1000 * statistics.median(firsts):.0f} ms median")


if __name__ == "__main__":
    asyncio.run(main())
