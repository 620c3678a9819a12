"""Time to the first text on words-only turns, per ``tool_decision``, the decisions taking turns.

``bench/tool_choice.py`` times each decision in its own pass, minutes apart; on a shared 2-core box
the drift between passes is as large as the difference being measured. Here every decision has its
own model in one process and each words-only turn of ``bench/tool_choice_cases.py`` is sent to each
of them in turn, for several rounds, so a busy moment falls on all of them alike. Turns a decision
answered with a call are left out of its figures (they are false calls, counted by tool_choice.py).
The first turn after the tools change reads the whole prompt again; those turns get their own row.

    PYTHONPATH=. .venv/bin/python bench/tool_decision_latency.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tool_choice import percentile, run_case
from bench.tool_choice_cases import WORDS_ONLY
from deployments.llm import LanguageModel, LlmOptions


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", nargs="+", default=["one_pass", "embedding"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = {d: LanguageModel.func_or_class(LlmOptions(tool_decision=d)) for d in args.decisions}
    cases = sorted(WORDS_ONLY, key=lambda c: c.scenario)  # one scenario's turns together, as in a session
    seconds: dict[tuple[str, bool], list[float]] = {(d, s): [] for d in args.decisions for s in (True, False)}
    for model in models.values():  # warm: each tool set's prompt prefix and (embedding) its vectors
        for case in cases:
            await run_case(model, case)
    for _ in range(args.rounds):
        previous = None
        for case in cases:
            same_tools, previous = case.scenario == previous, case.scenario
            for decision, model in models.items():
                outcome = await run_case(model, case)
                if outcome.call is None:
                    seconds[decision, same_tools].append(outcome.seconds)
    print("| tool_decision | words-only turns | timed | first text P50 / P95 |")
    print("|---|---|---|---|")
    for decision in args.decisions:
        for same_tools, turns in ((True, "tools as the turn before"), (False, "first after the tools changed")):
            values = seconds[decision, same_tools]
            print(f"| {decision} | {turns} | {len(values)} | {1000 * statistics.median(values):.0f} / "
                  f"{1000 * percentile(values, 0.95):.0f} ms |")
        values = seconds[decision, True] + seconds[decision, False]
        print(f"| {decision} | all | {len(values)} | {1000 * statistics.median(values):.0f} / "
              f"{1000 * percentile(values, 0.95):.0f} ms |")


if __name__ == "__main__":
    asyncio.run(main())
