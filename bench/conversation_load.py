"""Conversations at scale: N open-mic sessions talking to the native /ws protocol at once (not a test).

    .venv/bin/python bench/conversation_load.py [--sessions 2,5,10,25] [--seconds 60] [--url ws://…/ws]

Without --url it deploys configs/local.yaml on a local 2-CPU Ray instance behind the HAProxy
ingress (--python-proxy for Serve's Python proxy). Every session streams 100 ms chunks in real
time, silence between its turns, and speaks real clips from ../shared/speech at staggered,
randomised times (fixed --seed): it waits for the spoken answer and lets it finish, or, in a
share of turns (--interrupt-share), talks over it with its next clip after a random part of
the answer. Per turn it measures end of speech -> transcript_final and -> first answer audio,
and for interruptions start of the barge-in -> stop_speaking; it counts error events and dropped
sockets, and samples the CPU and RSS of the Ray processes (psutil) over each stage.

Writes every turn and the per-N summary as JSON, and a PNG of first-audio P50/P95 against N;
prints the capacity (the largest N whose P95 first audio <= --target-s with no errors or drops)
and the CPU floor that explains it: CPU-seconds per turn x turns per second / cores.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "peer_pipecat"))

from client import DEFAULT_MANIFEST, OpenMic, load_clips

RATE = 16000
TURN_TIMEOUT_S = 30.0  # a transcript or first audio later than this is a missed turn


@dataclass
class Turn:
    sessions: int
    session: int
    index: int
    clip: str
    interrupted: bool = False  # this turn's answer was talked over
    transcript_s: float | None = None  # end of speech -> transcript_final
    first_audio_s: float | None = None  # end of speech -> first answer audio
    barge_in_s: float | None = None  # start of the talking-over -> stop_speaking
    answered: bool = False
    error: str | None = None


@dataclass
class Stage:
    sessions: int
    seconds: float
    turns: list[Turn] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    drops: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    server_rss_mb: float = 0.0
    machine_busy_s: float = 0.0  # CPU-seconds the whole machine spent: the rest was someone else's


class Conversation:
    """One open-mic session: the mic task, a reader task that logs every event, and the turn loop."""

    def __init__(self, url: str, number: int, stage: Stage, clips, rng: random.Random, deadline: float,
                 interrupt_share: float) -> None:
        self.url, self.number, self.stage, self.clips, self.rng = url, number, stage, clips, rng
        self.deadline, self.interrupt_share = deadline, interrupt_share
        self.events: list[dict] = []  # every JSON event, with its arrival time
        self.audio_at: list[float] = []  # arrival time of every binary audio frame
        self.state = "idle"
        self.arrived = asyncio.Event()

    async def run(self, start_delay: float) -> None:
        import websockets

        try:
            async with websockets.connect(self.url, max_size=None, open_timeout=60, ping_interval=20) as ws:
                await ws.send(json.dumps({"type": "start_conversation", "config": {
                    "inputSampleRate": RATE, "outputSampleRate": RATE, "binaryAudio": True}}))
                mic = OpenMic(ws.send)
                tasks = [asyncio.create_task(mic.run()), asyncio.create_task(self._read(ws))]
                try:
                    if await self._next("session_started", 0.0, 60) is None:
                        raise TimeoutError("no session_started")
                    await asyncio.sleep(start_delay)  # staggered starts: a crowd, not a chorus
                    await self._talk(mic)
                finally:
                    for task in tasks:
                        task.cancel()
        except Exception as error:  # noqa: BLE001 - a load test counts failures, it does not stop on them
            self.stage.drops += 1
            self.stage.errors.append(f"session {self.number}: {type(error).__name__}: {error}"[:200])

    async def _read(self, ws) -> None:
        async for frame in ws:
            now = time.perf_counter()
            if isinstance(frame, bytes):
                self.audio_at.append(now)
            else:
                event = json.loads(frame)
                event["at"] = now
                if event["type"] == "state_change":
                    self.state = event["state"]
                elif event["type"] == "error":
                    self.stage.errors.append(f"session {self.number}: {event.get('code')}: "
                                             f"{event.get('message')}"[:200])
                self.events.append(event)
            self.arrived.set()
        raise ConnectionError("server closed the socket")

    async def _until(self, found, timeout: float):
        """Wait until ``found()`` returns something (checked on every arrival), or None after timeout."""
        limit = time.perf_counter() + timeout
        while (result := found()) is None:
            if (left := limit - time.perf_counter()) <= 0:
                return None
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return found()
        return result

    async def _next(self, kind: str, after: float, timeout: float) -> dict | None:
        """The first event of this type that arrived at or after ``after``."""
        def found() -> dict | None:
            hit = None
            for event in reversed(self.events):
                if event["at"] < after:
                    break
                if event["type"] == kind:
                    hit = event
            return hit

        return await self._until(found, timeout)

    async def _first_audio_after(self, t: float, timeout: float) -> float | None:
        def found() -> float | None:
            i = bisect.bisect_left(self.audio_at, t)
            return self.audio_at[i] if i < len(self.audio_at) else None

        return await self._until(found, timeout)

    async def _talk(self, mic: OpenMic) -> None:
        clip = self.rng.choice(self.clips)
        began = time.perf_counter()
        spoken_until = await mic.say(clip.pcm)  # end of speech: the clip's last chunk was sent
        index = 0
        while True:
            turn = Turn(self.stage.sessions, self.number, index, clip.name)
            self.stage.turns.append(turn)
            final = await self._next("transcript_final", began, TURN_TIMEOUT_S + (spoken_until - began))
            if final is None:
                turn.error = "no transcript"
                return
            turn.transcript_s = final["at"] - spoken_until
            first_audio = await self._first_audio_after(spoken_until, TURN_TIMEOUT_S)
            if first_audio is None:
                turn.error = "no answer audio"
                return
            turn.first_audio_s = first_audio - spoken_until
            turn.answered = True
            index += 1
            clip = self.rng.choice(self.clips)
            if time.perf_counter() > self.deadline:
                return
            interrupt = self.rng.random() < self.interrupt_share
            if interrupt:
                await asyncio.sleep(self.rng.uniform(0.3, 1.5))  # let part of the answer play
            if interrupt and self.state == "speaking":  # a short answer may be over already: then just talk
                turn.interrupted = True
                began = time.perf_counter()  # the barge-in starts with the first chunk of speech
                speaking = asyncio.create_task(mic.say(clip.pcm))
                stopped = await self._next("stop_speaking", began, clip.duration_s + 3)
                if stopped is not None:
                    turn.barge_in_s = stopped["at"] - began
                spoken_until = await speaking
            else:
                if await self._next("audio_complete", first_audio, 120) is None:
                    turn.error = "answer never completed"
                    return
                await asyncio.sleep(1.0 + self.rng.uniform(1.0, 3.0))  # the answer plays out; the user thinks
                began = time.perf_counter()
                spoken_until = await mic.say(clip.pcm)

def server_processes(exclude: int) -> list[psutil.Process]:
    """Everything this process started (Ray: gcs, raylet, workers, replicas, HAProxy) but itself."""
    return [p for p in psutil.Process(exclude).children(recursive=True)]


def cpu_and_rss(processes: list[psutil.Process]) -> tuple[float, float]:
    cpu, rss = 0.0, 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            cpu += times.user + times.system
            rss += process.memory_info().rss
        except psutil.Error:
            continue
    return cpu, rss / 2**20


async def run_stage(url: str, sessions: int, seconds: float, clips, seed: int, interrupt_share: float,
                    stagger_s: float) -> Stage:
    stage = Stage(sessions, seconds)
    rng = random.Random(seed * 1000 + sessions)
    processes = server_processes(os.getpid())
    server_before, _ = cpu_and_rss(processes)
    client_before = time.process_time()
    machine_before = busy_cpu_s()
    began = time.perf_counter()
    deadline = began + seconds
    conversations = [Conversation(url, i, stage, clips, random.Random(rng.random()), deadline, interrupt_share)
                     for i in range(sessions)]
    tasks = [asyncio.create_task(c.run(rng.uniform(0, stagger_s))) for c in conversations]

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            done = [t for t in stage.turns if t.answered]
            late = sorted(t.first_audio_s for t in done)
            p50 = late[len(late) // 2] if late else float("nan")
            print(f"  N={sessions} t={time.perf_counter() - began:4.0f}s turns={len(done)} first-audio P50 {p50:.2f}s "
                  f"errors={len(stage.errors)} drops={stage.drops}", flush=True)

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*tasks)
    reporter.cancel()
    stage.seconds = time.perf_counter() - began
    server_after, stage.server_rss_mb = cpu_and_rss(processes)
    stage.server_cpu_s = server_after - server_before
    stage.client_cpu_s = time.process_time() - client_before
    stage.machine_busy_s = busy_cpu_s() - machine_before
    return stage


def busy_cpu_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(stage: Stage, cores: int) -> dict:
    answered = [t for t in stage.turns if t.answered]
    first = [t.first_audio_s for t in answered]
    transcript = [t.transcript_s for t in stage.turns if t.transcript_s is not None]
    barge = [t.barge_in_s for t in stage.turns if t.barge_in_s is not None]
    missed = [t for t in stage.turns if t.error]
    turns_per_s = len(answered) / stage.seconds
    cpu_per_turn = stage.server_cpu_s / len(answered) if answered else None
    return {
        "sessions": stage.sessions, "seconds": round(stage.seconds, 1), "turns": len(answered),
        "missed_turns": len(missed), "error_events": len(stage.errors) - stage.drops, "drops": stage.drops,
        "transcript_p50_s": percentile(transcript, 50), "transcript_p95_s": percentile(transcript, 95),
        "first_audio_p50_s": percentile(first, 50), "first_audio_p95_s": percentile(first, 95),
        "barge_in_p50_s": percentile(barge, 50), "barge_in_p95_s": percentile(barge, 95),
        "barge_ins": len(barge), "turns_per_s": round(turns_per_s, 3),
        "server_cpu_s_per_turn": cpu_per_turn, "server_cpu_share": stage.server_cpu_s / stage.seconds / cores,
        "cpu_floor": (cpu_per_turn * turns_per_s / cores) if cpu_per_turn else None,
        "client_cpu_share": stage.client_cpu_s / stage.seconds / cores, "server_rss_mb": round(stage.server_rss_mb),
        # the machine's CPU not spent by this server or this client: other work sharing the cores
        "other_cpu_share": max(0.0, stage.machine_busy_s - stage.server_cpu_s - stage.client_cpu_s) / stage.seconds / cores,
        "errors_sample": stage.errors[:5],
    }


def capacity(summaries: list[dict], target_s: float) -> dict | None:
    ok = [s for s in summaries if s["first_audio_p95_s"] is not None and s["first_audio_p95_s"] <= target_s
          and s["error_events"] == 0 and s["drops"] == 0 and s["missed_turns"] == 0]
    return max(ok, key=lambda s: s["sessions"]) if ok else None


def plot(summaries: list[dict], target_s: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [s["sessions"] for s in summaries]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label, style in (("first_audio_p50_s", "first audio P50", "o-"),
                              ("first_audio_p95_s", "first audio P95", "s-"),
                              ("transcript_p50_s", "transcript P50", "^--")):
        ax.plot(ns, [s[key] if s[key] is not None else np.nan for s in summaries], style, label=label)
    ax.axhline(target_s, color="grey", linestyle=":", label=f"target {target_s:g} s")
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("concurrent open-mic sessions (N)")
    ax.set_ylabel("seconds after end of speech")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def deploy_local(python_proxy: bool, port: int, vad_placement: str = "deployment"):
    """The local graph on a 2-CPU Ray instance in this process, as `make run` serves it."""
    import ray

    from serve_app.serve_config import deploy, load_serve_config, with_app_args
    from tests.graph_harness import serve_environment, wait_for_haproxy_replicas

    config = with_app_args(load_serve_config(ROOT / "configs" / "local.yaml"),
                           server={"vad_placement": vad_placement,
                                   "session": {"db_path": str(Path(tempfile.mkdtemp()) / "load.sqlite3")}})
    config["http_options"]["port"] = port
    environment = serve_environment(haproxy=not python_proxy)
    haproxy_dir = environment.__enter__()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    deploy(config)
    if not python_proxy:
        wait_for_haproxy_replicas(haproxy_dir)
    return f"ws://127.0.0.1:{port}/ws"


async def sweep(url: str, ns: list[int], seconds: float, seed: int, interrupt_share: float, stagger_s: float,
                cores: int, after_stage=None, warm_up: bool = False) -> tuple[list[Stage], list[dict]]:
    clips = load_clips(DEFAULT_MANIFEST, 1.0, 4.0)
    if warm_up:  # one turn first, not counted: the first call of each model is slower
        await run_stage(url, 1, 1.0, clips, seed + 1, 0.0, 0.0)
    stages, summaries = [], []
    for n in ns:
        print(f"N={n}: {seconds:.0f} s of conversation", flush=True)
        stage = await run_stage(url, n, seconds, clips, seed, interrupt_share, stagger_s)
        stages.append(stage)
        summaries.append(summarise(stage, cores))
        print("  " + json.dumps(summaries[-1]), flush=True)
        if after_stage is not None:
            after_stage(stages, summaries)  # results so far survive a sweep cut short
    return stages, summaries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", default="2,5,10,25", help="comma-separated N values to sweep")
    parser.add_argument("--seconds", type=float, default=60, help="conversation time per N (turns started after it end the session)")
    parser.add_argument("--interrupt-share", type=float, default=0.3)
    parser.add_argument("--stagger-s", type=float, default=8.0, help="sessions start at random times in this window")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--target-s", type=float, default=1.5, help="first-audio P95 a session must get")
    parser.add_argument("--url", default=None)
    parser.add_argument("--port", type=int, default=8013)
    parser.add_argument("--python-proxy", action="store_true", help="Serve's Python proxy instead of HAProxy")
    parser.add_argument("--vad-placement", choices=["deployment", "ingress"], default="deployment")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "conversation_load")
    args = parser.parse_args()
    cores = psutil.cpu_count() or 1
    url = args.url or deploy_local(args.python_proxy, args.port, args.vad_placement)
    ns = [int(n) for n in args.sessions.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plane = "python proxy" if args.python_proxy else "haproxy"

    def write(stages: list[Stage], summaries: list[dict]) -> None:
        result = {"url": url, "data_plane": plane, "cores": cores, "vad_placement": args.vad_placement,
                  "seconds_per_n": args.seconds, "seed": args.seed, "interrupt_share": args.interrupt_share,
                  "target_s": args.target_s, "summaries": summaries, "capacity": capacity(summaries, args.target_s),
                  "turns": [asdict(t) for stage in stages for t in stage.turns]}
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        plot(summaries, args.target_s, args.out.with_suffix(".png"),
             f"open-mic conversations on {cores} cores ({plane}), {args.seconds:.0f} s per N")

    _, summaries = asyncio.run(sweep(url, ns, args.seconds, args.seed, args.interrupt_share, args.stagger_s,
                                     cores, after_stage=write, warm_up=True))
    best = capacity(summaries, args.target_s)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    print("   N  turns  transcript P50  first audio P50/P95  barge-in P50  errors drops  CPU-s/turn  turns/s  floor  other")
    for s in summaries:
        def fmt(v, spec=".2f"):
            return format(v, spec) if v is not None else "-"
        print(f"{s['sessions']:4d} {s['turns']:6d} {fmt(s['transcript_p50_s']):>15} "
              f"{fmt(s['first_audio_p50_s']):>10}/{fmt(s['first_audio_p95_s']):<8} {fmt(s['barge_in_p50_s']):>12} "
              f"{s['error_events'] + s['missed_turns']:6d} {s['drops']:5d} {fmt(s['server_cpu_s_per_turn']):>11} "
              f"{s['turns_per_s']:8.2f} {fmt(s['cpu_floor'])} {s['other_cpu_share']:6.0%}")
    if best is None:
        print(f"capacity: no N met first-audio P95 <= {args.target_s:g} s with 0 errors")
    else:
        print(f"capacity: {best['sessions']} sessions (first-audio P95 {best['first_audio_p95_s']:.2f} s); "
              f"CPU floor {best['server_cpu_s_per_turn']:.2f} CPU-s/turn x {best['turns_per_s']:.2f} turns/s "
              f"/ {cores} cores = {best['cpu_floor']:.0%} of the machine")


if __name__ == "__main__":
    main()
