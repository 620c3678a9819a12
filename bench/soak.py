"""Soak: N sessions talking for a long time on the real graph, watched for leaks (not a test).

    .venv/bin/python bench/soak.py [--sessions 20] [--minutes 30] [--sample-s 30] [--api-key KEY]

Deploys configs/local.yaml on a local 2-CPU Ray instance behind the HAProxy ingress (as `make
run` serves it) with a fresh SQLite file. Every session is an open mic over a real WebSocket
(bench/conversation_load.py's ``Conversation``): recorded clips from ../shared/speech played in
real time, one after another, each answer heard out, a pause of 2-4 s between turns. A session
that misses a turn (no transcript or answer within 30 s) or loses its socket is replaced by a
new one, so N sessions talk for the whole run (the replacements are counted).

Every ``--sample-s`` it records, per Ray process of this run (psutil over this process's
descendants: each replica, the Serve proxy and controller, HAProxy, Ray's own daemons), the RSS;
from the ingress's /metrics, its open sessions and the asyncio tasks on its event loop; the
SQLite file's size (with its WAL); and the turns answered since the last sample with their
latencies. Writes docs/soak.json and docs/soak.png, and prints the growth per session-hour: the
least-squares slope over the samples after the warm-up (the first --warm-up-min minutes: models
reach their steady working set there), divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.conversation_load import DEFAULT_MANIFEST, Conversation, Stage, load_clips, percentile

# The processes of a Ray Serve graph, by their titles (``ray::<actor class>:<app>:<deployment>``).
_ROLE_PREFIXES = (("ray::ServeReplica:", None), ("ray::ProxyActor", "proxy"), ("ray::HAProxyManager", "haproxy_manager"),
                  ("ray::ServeController", "controller"))


def role_of(process: psutil.Process) -> str:
    """``Ingress``, ``LLM``, ... for a replica; ``proxy``, ``haproxy``, ``ray`` (daemons, idle workers) otherwise."""
    try:
        cmdline = process.cmdline()
        name = process.name()
    except psutil.Error:
        return "gone"
    title = cmdline[0] if cmdline else name
    for prefix, role in _ROLE_PREFIXES:
        if title.startswith(prefix):  # a replica's title gains ".<method>" while it runs a call
            return role or title.rsplit(":", 1)[-1].split(".", 1)[0]
    if "haproxy" in name:
        return "haproxy"
    return "ray"


def rss_by_role(root_pid: int) -> dict[str, float]:
    """MB of RSS per role, over every process this run started (descendants of ``root_pid``)."""
    totals: dict[str, float] = {}
    for process in psutil.Process(root_pid).children(recursive=True):
        try:
            rss = process.memory_info().rss / 2**20
        except psutil.Error:
            continue
        role = role_of(process)
        totals[role] = totals.get(role, 0.0) + rss
    return {role: round(mb, 1) for role, mb in sorted(totals.items())}


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


@dataclass
class Sample:
    t_s: float
    rss_mb: dict[str, float]
    sessions_open: float | None
    loop_tasks: float | None
    db_bytes: int
    turns: int  # answered so far
    window_turns: int
    window_first_audio_p50_s: float | None
    window_first_audio_p95_s: float | None
    window_transcript_p50_s: float | None
    errors: int
    replaced_sessions: int
    cpu_percent: float


@dataclass
class Soak:
    url: str
    metrics_url: str
    db: Path
    headers: dict[str, str]
    sessions: int
    seconds: float
    sample_s: float
    root_pid: int
    stage: Stage = field(init=False)
    samples: list[Sample] = field(default_factory=list)
    replaced: int = 0
    _counted: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.stage = Stage(self.sessions, self.seconds)

    async def talker(self, number: int, clips, rng: random.Random, deadline: float, start_delay: float) -> None:
        """One session slot: a conversation for the whole run, replaced if it misses a turn or drops."""
        first = True
        while time.perf_counter() < deadline - 10:
            conversation = Conversation(self.url, number, self.stage, clips, random.Random(rng.random()), deadline,
                                        interrupt_share=0.0)
            await conversation.run(start_delay if first else 1.0)
            first = False
            if time.perf_counter() < deadline - 10:
                self.replaced += 1

    async def sample(self, began: float, client: httpx.AsyncClient) -> Sample:
        sessions_open = loop_tasks = None
        try:
            text = (await client.get(self.metrics_url, headers=self.headers, timeout=20)).text
            sessions_open = metric_value(text, "openrealtime_sessions_active")
            loop_tasks = metric_value(text, "openrealtime_event_loop_tasks")
        except httpx.HTTPError as error:
            print(f"  /metrics failed: {error}", flush=True)
        window = [t for t in self.stage.turns if t.answered and id(t) not in self._counted]
        self._counted.update(id(t) for t in window)
        first = [t.first_audio_s for t in window]
        transcript = [t.transcript_s for t in window if t.transcript_s is not None]
        sample = Sample(
            t_s=round(time.perf_counter() - began, 1), rss_mb=rss_by_role(self.root_pid),
            sessions_open=sessions_open, loop_tasks=loop_tasks, db_bytes=db_bytes(self.db),
            turns=len(self._counted), window_turns=len(window),
            window_first_audio_p50_s=percentile(first, 50), window_first_audio_p95_s=percentile(first, 95),
            window_transcript_p50_s=percentile(transcript, 50), errors=len(self.stage.errors),
            replaced_sessions=self.replaced, cpu_percent=psutil.cpu_percent())
        self.samples.append(sample)
        print(f"  t={sample.t_s:6.0f}s turns={sample.turns} (+{sample.window_turns}, first audio P50 "
              f"{fmt(sample.window_first_audio_p50_s)} s) ingress {sample.rss_mb.get('Ingress')} MB, "
              f"replicas {sum(v for k, v in sample.rss_mb.items() if k[0].isupper()):.0f} MB, "
              f"tasks {sample.loop_tasks}, sessions {sample.sessions_open}, db {sample.db_bytes / 1024:.0f} KB, "
              f"errors {sample.errors}, replaced {self.replaced}", flush=True)
        return sample

    async def run(self, seed: int, stagger_s: float) -> None:
        clips = load_clips(DEFAULT_MANIFEST, 1.0, 4.0)
        rng = random.Random(seed)
        began = time.perf_counter()
        deadline = began + self.seconds
        psutil.cpu_percent()  # starts the machine-wide CPU window
        talkers = [asyncio.create_task(self.talker(i, clips, random.Random(rng.random()), deadline,
                                                   rng.uniform(0, stagger_s)))
                   for i in range(self.sessions)]
        async with httpx.AsyncClient() as client:
            await self.sample(began, client)
            while time.perf_counter() < deadline:
                await asyncio.sleep(min(self.sample_s, max(0.0, deadline - time.perf_counter())))
                await self.sample(began, client)
            await asyncio.gather(*talkers)
            await self.until_closed(client)
            await self.sample(began, client)  # every session closed: what stays is what leaked

    async def until_closed(self, client: httpx.AsyncClient, timeout_s: float = 60) -> None:
        """Until the ingress has no open session (its sockets close after ours), or the timeout."""
        limit = time.perf_counter() + timeout_s
        while time.perf_counter() < limit:
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(self.metrics_url, headers=self.headers, timeout=20)).text
                if metric_value(text, "openrealtime_sessions_active") == 0:
                    return
            await asyncio.sleep(1)  # polling the server's own count


def fmt(value: float | None, spec: str = ".2f") -> str:
    return format(value, spec) if value is not None else "-"


def slope_per_hour(samples: list[Sample], value, warm_up_s: float) -> float | None:
    """Least-squares growth per hour of ``value(sample)`` over the samples after the warm-up."""
    points = [(s.t_s, value(s)) for s in samples[:-1] if s.t_s >= warm_up_s and value(s) is not None]
    if len(points) < 3:
        return None
    t, y = np.array(points, dtype=float).T
    return float(np.polyfit(t / 3600, y, 1)[0])


def growth(samples: list[Sample], sessions: int, warm_up_s: float) -> dict:
    """Growth per session-hour: per-hour slopes of the steady part of the run, divided by N."""
    roles = sorted({role for s in samples for role in s.rss_mb})
    per_hour = {f"rss_mb.{role}": slope_per_hour(samples, lambda s, r=role: s.rss_mb.get(r), warm_up_s)
                for role in roles}
    per_hour["rss_mb.total"] = slope_per_hour(samples, lambda s: sum(s.rss_mb.values()), warm_up_s)
    per_hour["loop_tasks"] = slope_per_hour(samples, lambda s: s.loop_tasks, warm_up_s)
    per_hour["db_kb"] = slope_per_hour(samples, lambda s: s.db_bytes / 1024, warm_up_s)
    per_session_hour = {k: (round(v / sessions, 3) if v is not None else None) for k, v in per_hour.items()}
    turns = [s for s in samples if s.t_s >= warm_up_s]
    turns_per_hour = slope_per_hour(samples, lambda s: s.turns, warm_up_s)
    db_per_turn = (per_hour["db_kb"] / turns_per_hour) if per_hour["db_kb"] and turns_per_hour else None
    return {"per_session_hour": per_session_hour, "turns_per_session_hour": (
        round(turns_per_hour / sessions, 1) if turns_per_hour else None), "db_kb_per_turn": (
        round(db_per_turn, 2) if db_per_turn else None), "steady_samples": len(turns) - 1}


def plot(soak: Soak, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = soak.samples
    minutes = [s.t_s / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    rss, tasks, db, latency = axes.flat
    roles = sorted({r for s in samples for r in s.rss_mb}, key=lambda r: -max(s.rss_mb.get(r, 0) for s in samples))
    colours = plt.get_cmap("tab20").colors  # a dozen roles: tab10 would repeat its colours
    for index, role in enumerate(roles):
        rss.plot(minutes, [s.rss_mb.get(role, np.nan) for s in samples], label=role, color=colours[index % 20])
    rss.set_ylabel("RSS (MB)")
    rss.set_title("RSS per process role", fontsize=9)
    rss.legend(fontsize=7, ncol=2)
    tasks.plot(minutes, [s.loop_tasks if s.loop_tasks is not None else np.nan for s in samples], label="asyncio tasks")
    tasks.plot(minutes, [s.sessions_open if s.sessions_open is not None else np.nan for s in samples],
               label="open sessions")
    tasks.set_title("ingress event loop", fontsize=9)
    tasks.legend(fontsize=8)
    db.plot(minutes, [s.db_bytes / 2**20 for s in samples])
    db.set_ylabel("MB")
    db.set_title("SQLite file + WAL", fontsize=9)
    latency.plot(minutes, [s.window_first_audio_p50_s if s.window_first_audio_p50_s is not None else np.nan
                           for s in samples], "o-", label="first audio P50")
    latency.plot(minutes, [s.window_first_audio_p95_s if s.window_first_audio_p95_s is not None else np.nan
                           for s in samples], "s-", label="first audio P95")
    latency.plot(minutes, [s.window_transcript_p50_s if s.window_transcript_p50_s is not None else np.nan
                           for s in samples], "^--", label="transcript P50")
    latency.set_ylabel("s after end of speech")
    latency.set_title(f"turn latency per {soak.sample_s:g} s window", fontsize=9)
    latency.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(soak: Soak, warm_up_s: float) -> dict:
    answered = [t for t in soak.stage.turns if t.answered]
    first = [t.first_audio_s for t in answered]
    transcript = [t.transcript_s for t in answered if t.transcript_s is not None]
    start, end = soak.samples[0], soak.samples[-1]
    steady = next((s for s in soak.samples if s.t_s >= warm_up_s), start)
    return {
        "turns": len(answered), "missed_turns": len([t for t in soak.stage.turns if t.error]),
        "error_events": len(soak.stage.errors) - soak.stage.drops, "drops": soak.stage.drops,
        "replaced_sessions": soak.replaced,
        "first_audio_p50_s": percentile(first, 50), "first_audio_p95_s": percentile(first, 95),
        "transcript_p50_s": percentile(transcript, 50), "transcript_p95_s": percentile(transcript, 95),
        "rss_mb_start": start.rss_mb, "rss_mb_after_warm_up": steady.rss_mb, "rss_mb_end": end.rss_mb,
        "loop_tasks_start": start.loop_tasks, "loop_tasks_after_warm_up": steady.loop_tasks,
        "loop_tasks_after_close": end.loop_tasks, "sessions_after_close": end.sessions_open,
        "db_bytes_end": end.db_bytes, "errors_sample": soak.stage.errors[:8],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--sample-s", type=float, default=30)
    parser.add_argument("--warm-up-min", type=float, default=5, help="samples before this are left out of the slopes")
    parser.add_argument("--stagger-s", type=float, default=20, help="sessions start at random times in this window")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--api-key", default=None, help="sent as a Bearer token to /metrics and the sockets")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "soak")
    args = parser.parse_args()

    from tests.graph_harness import local_graph

    db_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    server = {"api_keys": [args.api_key]} if args.api_key else None
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with local_graph(db_dir, server=server) as port:
        query = f"?api_key={args.api_key}" if args.api_key else ""
        soak = Soak(url=f"ws://127.0.0.1:{port}/ws{query}", metrics_url=f"http://127.0.0.1:{port}/metrics",
                    db=db_dir / "sessions.sqlite3", headers=headers, sessions=args.sessions,
                    seconds=args.minutes * 60, sample_s=args.sample_s, root_pid=psutil.Process().pid)
        print(f"soak: {args.sessions} sessions for {args.minutes:g} min on {psutil.cpu_count()} cores", flush=True)
        asyncio.run(soak.run(args.seed, args.stagger_s))
    warm_up_s = args.warm_up_min * 60
    result = {
        "sessions": args.sessions, "minutes": args.minutes, "sample_s": args.sample_s, "warm_up_min": args.warm_up_min,
        "cores": psutil.cpu_count(), "seed": args.seed, "summary": summary(soak, warm_up_s),
        "growth": growth(soak.samples, args.sessions, warm_up_s), "samples": [asdict(s) for s in soak.samples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(soak, args.out.with_suffix(".png"),
         f"soak: {args.sessions} talking sessions, {args.minutes:g} min, {psutil.cpu_count()} cores (HAProxy ingress)")
    print(json.dumps({"summary": result["summary"], "growth": result["growth"]}, indent=1))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
