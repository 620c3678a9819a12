"""Many concurrent sessions on one ingress replica (not a test).

    .venv/bin/python bench/load.py [--sessions 100] [--seconds 30] [--chunk-ms 200] [--url ws://…/ws]

Without --url it deploys configs/local.yaml on a local 2-CPU Ray instance first, behind the
HAProxy ingress with configs/haproxy.env (--python-proxy: Serve's Python proxy). Every session
opens a socket, starts a conversation and streams room tone (a real non-speech clip, looped) as
a live microphone would, in real time; every second it sends a ping and times the pong. One
session in ten also says a short command once (all ten at the same moment), which must come back
as a transcript; a speaker still waiting at the end keeps streaming up to --grace seconds more.
Prints how many sessions connected and stayed up, error events, failures, ping round trips and
end of command -> transcript_final under load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import load_manifest


async def session(url: str, index: int, seconds: float, grace: float, chunk: int, tone: np.ndarray,
                  command: np.ndarray | None, stats: dict) -> None:
    import websockets

    try:
        async with websockets.connect(url, open_timeout=60, max_size=None) as ws:
            stats["connected"] += 1
            await ws.send(json.dumps({"type": "start_conversation", "config": {"binaryAudio": True}}))
            audio = tone if command is None else np.concatenate([tone[: 16000], command, tone])
            pings: dict[int, float] = {}
            command_end = 16000 + (command.size if command is not None else 0)  # sample where the command ends
            heard = asyncio.Event()
            command_sent_at: list[float] = []
            marks: dict[str, float] = {}

            async def reader() -> None:
                async for frame in ws:
                    if isinstance(frame, bytes):
                        continue
                    event = json.loads(frame)
                    if event["type"] == "pong":
                        stats["rtt"].append(time.perf_counter() - pings.pop(event["t"], time.perf_counter()))
                    elif event["type"] == "error":
                        stats["errors"].append(event["code"])
                    elif event["type"] == "transcript_final":
                        stats["transcripts"] += 1
                        if command_sent_at and not heard.is_set():
                            stats["transcript_s"].append(time.perf_counter() - command_sent_at[0])
                        heard.set()
                    elif event["type"] == "speech_stopped" and command_sent_at and "stopped" not in marks:
                        marks["stopped"] = time.perf_counter() - command_sent_at[0]
                        stats["stopped_s"].append(marks["stopped"])
                    if command is not None and event["type"] in ("speech_started", "speech_stopped",
                                                                 "transcript_final", "state_change"):
                        stats["speaker_events"].setdefault(index, []).append(
                            f"{event['type']}:{event.get('state', event.get('text', ''))}"[:40])

            read_task = asyncio.create_task(reader())
            start = time.perf_counter()
            position, sent = 0, 0
            def streaming() -> bool:
                elapsed = time.perf_counter() - start
                waiting = command is not None and not heard.is_set()
                return elapsed < seconds or (waiting and elapsed < seconds + grace)

            while streaming():
                piece = audio[position : position + chunk]
                if piece.size < chunk:
                    position = 0 if command is None else min(position, audio.size - chunk)
                    piece = np.resize(audio, chunk) if command is None else tone[:chunk]
                position += chunk
                await ws.send(piece.astype("<i2").tobytes())
                if command is not None and not command_sent_at and position >= command_end:
                    command_sent_at.append(time.perf_counter())
                sent += 1
                if sent % max(1, 16000 // chunk) == 0:
                    pings[sent] = time.perf_counter()
                    await ws.send(json.dumps({"type": "ping", "t": sent}))
                due = start + sent * chunk / 16000
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            stats["completed"] += 1
            read_task.cancel()
    except Exception as error:  # noqa: BLE001 - a load test counts failures, it does not stop on them
        stats["failures"].append(f"{index}: {type(error).__name__}: {error}"[:200])


async def run(url: str, sessions: int, seconds: float, grace: float, chunk_ms: int) -> dict:
    clips = {c.file: c for c in load_manifest()}
    tone = clips["nonspeech_room_tone_1s.wav"].pcm16()
    tone = np.tile(tone, int(seconds) + 2)
    command = clips["voice2json_turn_on_living_room_lamp.wav"].pcm16()
    stats = {"connected": 0, "completed": 0, "transcripts": 0, "rtt": [], "errors": [], "failures": [],
             "speaker_events": {}, "transcript_s": [], "stopped_s": []}
    chunk = 16000 * chunk_ms // 1000
    await asyncio.gather(*(session(url, i, seconds, grace, chunk, tone, command if i % 10 == 0 else None, stats)
                           for i in range(sessions)))
    stats["speakers"] = len(range(0, sessions, 10))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--chunk-ms", type=int, default=200)
    parser.add_argument("--grace", type=float, default=60, help="extra seconds a speaker may wait for its transcript")
    parser.add_argument("--url", default=None)
    parser.add_argument("--python-proxy", action="store_true", help="Serve's Python proxy instead of HAProxy")
    args = parser.parse_args()
    url = args.url
    if url is None:
        import ray

        from serve_app.serve_config import deploy, load_serve_config, with_app_args
        from tests.graph_harness import serve_environment, wait_for_haproxy_replicas

        root = Path(__file__).resolve().parents[1]
        config = with_app_args(load_serve_config(root / "configs" / "local.yaml"),
                               server={"session": {"db_path": str(Path(tempfile.mkdtemp()) / "load.sqlite3")}})
        config["http_options"]["port"] = 8012
        environment = serve_environment(haproxy=not args.python_proxy)  # as `make run` serves it; kept open
        haproxy_dir = environment.__enter__()  # until the process ends (a dropped reference would close it)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024)
        deploy(config)
        if not args.python_proxy:
            wait_for_haproxy_replicas(haproxy_dir)
        url = "ws://127.0.0.1:8012/ws"
    began = time.perf_counter()
    stats = asyncio.run(run(url, args.sessions, args.seconds, args.grace, args.chunk_ms))
    rtt = np.array(stats["rtt"]) * 1000 if stats["rtt"] else np.array([np.nan])
    plane = "" if args.url else (" (Python proxy)" if args.python_proxy else " (HAProxy)")
    print(f"{args.sessions} sessions x {args.seconds:.0f} s of live audio in {args.chunk_ms} ms chunks{plane} "
          f"({args.sessions * 1000 // args.chunk_ms} audio messages/s) over {url}, {time.perf_counter() - began:.0f} s wall:")
    print(f"  connected {stats['connected']}, streamed to the end {stats['completed']}, "
          f"failures {len(stats['failures'])}, error events {len(stats['errors'])} {sorted(set(stats['errors']))}")
    waits = np.array(stats["transcript_s"]) if stats["transcript_s"] else np.array([np.nan])
    print(f"  spoken commands transcribed: {len(stats['transcript_s'])} of {stats['speakers']}; end of command -> "
          f"transcript_final P50 {np.percentile(waits, 50):.1f} s, max {np.max(waits):.1f} s "
          f"(10 speakers at once, one STT replica)")
    stopped = np.array(stats["stopped_s"]) if stats["stopped_s"] else np.array([np.nan])
    print(f"  end of command -> speech_stopped P50 {np.percentile(stopped, 50):.1f} s, max {np.max(stopped):.1f} s")
    print(f"  ping round trip under load: P50 {np.percentile(rtt, 50):.0f} ms, P95 {np.percentile(rtt, 95):.0f} ms, "
          f"max {np.max(rtt):.0f} ms ({len(stats['rtt'])} pings)")
    for index, events in sorted(stats["speaker_events"].items()):
        if not any(e.startswith("transcript_final") for e in events):
            print(f"  speaker {index} heard no transcript: {events}")
    for failure in stats["failures"][:5]:
        print("  failure:", failure)


if __name__ == "__main__":
    main()
