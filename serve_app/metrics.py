"""Prometheus metrics of the session engine, served at /metrics by the ingress."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

# (metric, from, to) pairs of the per-turn timestamps the engine records
_TURN_SPANS = {
    "transcript": ("speech_end_at", "transcript_at"),
    "first_token": ("speech_end_at", "first_token_at"),
    "first_audio": ("speech_end_at", "first_audio_at"),
    "turn_end": ("speech_end_at", "turn_end_at"),
    "transcript_to_first_token": ("transcript_at", "first_token_at"),
    "first_token_to_first_audio": ("first_token_at", "first_audio_at"),
    "barge_in_stop": ("barge_in_at", "stopped_at"),
}


class TurnMetrics:
    def __init__(self) -> None:
        self.sessions = Gauge("openrealtime_sessions_active", "Open sessions on this ingress replica")
        self.loop_tasks = Gauge("openrealtime_event_loop_tasks",
                                "asyncio tasks on the sessions' event loop of this ingress replica (sessions, their "
                                "helpers, Serve's own), counted when read: growth with no sessions open is a leak")
        self.errors = Counter("openrealtime_errors_total", "Error events sent", ["phase", "code"])
        self.latency = Histogram("openrealtime_turn_latency_seconds",
                                 "Per-turn latency from end of speech (or barge-in onset)", ["span"],
                                 buckets=_LATENCY_BUCKETS)
        self.turns = Counter("openrealtime_turns_total", "Turns answered", ["outcome"])
        self.speculation = Counter("openrealtime_speculative_turns_total",
                                   "Speculative turn ends: started, transcript/answer used, cancelled (why)",
                                   ["outcome"])
        self.prompt_tokens = Counter("openrealtime_llm_prompt_tokens_total",
                                     "Prompt tokens of turn replies: evaluated, or cached (KV prefix reused)",
                                     ["kind"])

    def count_tasks_of(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count ``loop``'s tasks at every scrape; set from the loop the sessions run on, since the
        ingress's own methods are pickled by value and would set a copy of the gauge."""
        self.loop_tasks.set_function(lambda: len(asyncio.all_tasks(loop)))

    def observe(self, times: dict[str, float]) -> None:
        for span, (start, end) in _TURN_SPANS.items():
            if times.get(start) and times.get(end) and times[end] >= times[start]:
                self.latency.labels(span=span).observe(times[end] - times[start])
        self.turns.labels(outcome="interrupted" if "stopped_at" in times else "completed").inc()


TURN_METRICS = TurnMetrics()
