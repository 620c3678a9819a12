"""Turn latency over a real socket, in one long conversation (not a test).

    .venv/bin/python bench/turn_latency.py [--turns 30] [--barge-ins 5] [--url ws://127.0.0.1:8000/ws]

Without --url it deploys configs/local.yaml on a local 2-CPU Ray instance first (and then also
reads the server's own per-turn breakdown from its SQLite ``turns`` table). All turns share one
connection, so the conversation grows as a person's would: each turn streams a speech clip from
../shared/speech as a microphone would (100 ms chunks, real time) followed by silence, and
measures on the client: end of speech (last speech sample sent) -> transcript_final, -> first
llm_token, -> first audio byte, for the first and the second half of the turns separately; and,
for barge-in turns, the onset of the interrupting speech -> stop_speaking. It also prints the VAD
cost of 100 simulated live streams batched per tick.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import load_manifest

CHUNK = 1600  # 100 ms at 16 kHz
BARGE_IN_CLIP = "jfk_inaugural_ask_not.wav"


def conversation_clips(count: int) -> list:
    """English speech clips of 1.5-8 s from the corpus, in manifest order, repeated as needed."""
    clips = [c for c in load_manifest() if c.kind == "speech" and c.language == "en" and 1.5 <= c.duration_s <= 8]
    return [clips[i % len(clips)] for i in range(count)]


def server_breakdown(db_path: Path) -> None:
    """Per-turn spans the server recorded (seconds) and prompt tokens it evaluated, by half."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT speech_end_at, turn_end_at, transcript_at, first_token_at, first_audio_at,"
                          " prompt_tokens, cached_tokens FROM turns WHERE first_audio_at IS NOT NULL"
                          " AND speech_end_at IS NOT NULL AND transcript_at IS NOT NULL"
                          " ORDER BY id").fetchall()  # spoken turns only (typed ones have no speech end)
    half = len(rows) // 2
    halves = ((f"turns 1-{half}", rows[:half]), (f"turns {half + 1}-{len(rows)}", rows[half:]))
    print("server-side breakdown (medians, from the turns table):")
    for label, part in halves:
        if not part:
            continue

        def median(values):
            values = [v for v in values if v is not None]
            return statistics.median(values) if values else float("nan")

        print(f"  {label:11s} pause->turn end {median([r[1] - r[0] for r in part if r[1]]):.2f} s  "
              f"pause->transcript {median([r[2] - r[0] for r in part]):.2f} s  "
              f"transcript->first token {median([r[3] - r[2] for r in part if r[3]]):.2f} s  "
              f"first token->first audio {median([r[4] - r[3] for r in part if r[3]]):.2f} s  "
              f"prompt tokens evaluated {median([(r[5] or 0) - (r[6] or 0) for r in part]):.0f} "
              f"of {median([r[5] for r in part]):.0f}")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def send_realtime(ws, audio: np.ndarray, started: float) -> float:
    """Send each chunk when a microphone would deliver it: once its last sample has been recorded."""
    for index, start in enumerate(range(0, audio.size, CHUNK)):
        due = started + min(start + CHUNK, audio.size) / 16000
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ws.send(audio[start : start + CHUNK].tobytes())
    return time.perf_counter()


def recv_json(ws, timeout: float = 60.0):
    while True:
        frame = ws.recv(timeout=timeout)
        if isinstance(frame, bytes):
            return frame
        return json.loads(frame)


def one_turn(ws, clip: np.ndarray) -> dict[str, float]:
    from threading import Thread

    silence = np.zeros(16000 * 3, np.int16)
    start = time.perf_counter()
    speech_end = start + clip.size / 16000
    sender = Thread(target=send_realtime, args=(ws, np.concatenate([clip, silence]), start))
    sender.start()
    marks: dict[str, float] = {}
    while "audio" not in marks or "transcript" not in marks:
        frame = recv_json(ws)
        now = time.perf_counter()
        if isinstance(frame, bytes):
            marks.setdefault("audio", now)
        elif frame["type"] == "transcript_final":
            marks.setdefault("transcript", now)
        elif frame["type"] == "llm_token":
            marks.setdefault("token", now)
        elif frame["type"] == "error":
            print("  error:", frame, file=sys.stderr)
    while True:  # let the answer finish before the next turn
        frame = recv_json(ws, timeout=120)
        if isinstance(frame, dict) and frame["type"] == "state_change" and frame["state"] == "listening":
            break
    sender.join()
    return {name: marks[name] - speech_end for name in marks}


def wait_until_quiet(ws, quiet_s: float = 3.0, limit_s: float = 180.0) -> None:
    """Until the server has sent nothing for ``quiet_s`` and was last seen listening. The speech
    that barged in is a turn of its own (or several, at its pauses), answered after the stop; a
    request sent into that answer interrupts it ("manual") and would be timed as a barge-in."""
    state, deadline = None, time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        try:
            frame = recv_json(ws, timeout=quiet_s)
        except TimeoutError:
            if state in (None, "listening"):
                return
            continue
        if isinstance(frame, dict) and frame["type"] == "state_change":
            state = frame["state"]


def barge_in_turn(ws, interruption: np.ndarray) -> float | None:
    """Talk over a typed request's spoken answer: speech onset -> ``stop_speaking`` after an
    ``interrupted`` for user speech; None when the answer ended before the speech was confirmed."""
    from threading import Thread

    wait_until_quiet(ws)
    ws.send(json.dumps({"type": "user_message", "text": "Tell me a long story about the sea, please."}))
    while True:
        frame = recv_json(ws)
        if isinstance(frame, bytes):
            break
    start = time.perf_counter()
    sender = Thread(target=send_realtime, args=(ws, np.concatenate([interruption, np.zeros(48000, np.int16)]),
                                                start))
    sender.start()
    stopped, by_speech = None, False
    while stopped is None:
        frame = recv_json(ws, timeout=120)
        if not isinstance(frame, dict):
            continue
        if frame["type"] == "interrupted":
            by_speech = frame.get("reason") == "user_speech"
        elif frame["type"] == "stop_speaking" and by_speech:
            stopped = time.perf_counter() - start
        elif frame["type"] == "audio_complete":
            break  # the answer was over before the speech was confirmed: nothing to stop
    sender.join()
    return None if stopped is None else stopped - speech_onset_s(interruption)


def speech_onset_s(clip: np.ndarray) -> float:
    """Where speech starts in the clip (first silero frame >= 0.5), so leading silence is not counted."""
    from deployments.vad import FRAME_SAMPLES, SileroVad, VadOptions, VadRequest, initial_states

    audio = clip.astype(np.float32) / 32768
    frames = audio[: audio.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(1, -1, FRAME_SAMPLES)
    probabilities = SileroVad(VadOptions()).run(VadRequest(frames, initial_states(1))).probabilities[0]
    return int(np.argmax(probabilities >= 0.5)) * FRAME_SAMPLES / 16000


def vad_cost_for_100_streams() -> None:
    from deployments.vad import FRAME_SAMPLES, SileroVad, VadOptions, VadRequest, initial_states

    vad = SileroVad(VadOptions())
    rng = np.random.default_rng(1)
    frames = (rng.standard_normal((100, 3, FRAME_SAMPLES)) * 0.05).astype(np.float32)  # ~100 ms per stream
    states = initial_states(100)
    times = []
    for _ in range(30):
        began = time.perf_counter()
        states = vad.run(VadRequest(frames, states)).states
        times.append(time.perf_counter() - began)
    per_tick = statistics.median(times)
    print(f"VAD, 100 live streams, one call per 96 ms tick (3 frames each): {per_tick * 1000:.1f} ms per call "
          f"= {per_tick / 0.096 * 100:.1f}% of one core")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--barge-ins", type=int, default=5)
    parser.add_argument("--url", default=None)
    parser.add_argument("--python-proxy", action="store_true", help="Serve's Python proxy instead of HAProxy")
    args = parser.parse_args()
    from websockets.sync.client import connect

    clips = {c.file: c for c in load_manifest()}
    url, db = args.url, None
    if url is None:
        import ray

        from serve_app.serve_config import deploy, load_serve_config, with_app_args
        from tests.graph_harness import serve_environment, wait_for_haproxy_replicas

        root = Path(__file__).resolve().parents[1]
        db = Path(tempfile.mkdtemp()) / "bench.sqlite3"
        config = with_app_args(load_serve_config(root / "configs" / "local.yaml"),
                               server={"session": {"db_path": str(db)}})
        config["http_options"]["port"] = 8011
        environment = serve_environment(haproxy=not args.python_proxy)  # kept open for the whole run
        haproxy_dir = environment.__enter__()
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024)
        deploy(config)
        if not args.python_proxy:
            wait_for_haproxy_replicas(haproxy_dir)
        url = "ws://127.0.0.1:8011/ws"

    per_turn: list[dict[str, float]] = []
    stops: list[float] = []
    missed_barge_ins = 0  # answers that ended before the speech over them was confirmed
    with connect(url, open_timeout=60, max_size=None) as ws:
        ws.send(json.dumps({"type": "start_conversation", "config": {"binaryAudio": True}}))
        for turn, clip in enumerate(conversation_clips(args.turns), start=1):
            marks = one_turn(ws, clip.pcm16())
            per_turn.append(marks)
            print(f"  turn {turn:2d} {clip.file:45s} first audio {marks.get('audio', float('nan')):.2f} s",
                  flush=True)
        for _ in range(args.barge_ins):
            stopped = barge_in_turn(ws, clips[BARGE_IN_CLIP].pcm16())
            if stopped is not None:
                stops.append(stopped)
            else:
                missed_barge_ins += 1

    print(f"{args.turns} turns on one connection over {url} (client-side clock, end of speech = last speech "
          "sample sent):")
    half = len(per_turn) // 2
    for part_label, part in (("all turns", per_turn), (f"turns 1-{half}", per_turn[:half]),
                             (f"turns {half + 1}-{len(per_turn)}", per_turn[half:])):
        print(f" {part_label}:")
        for name, label in (("transcript", "final transcript"), ("token", "first LLM token"),
                            ("audio", "first audio byte")):
            values = [marks[name] for marks in part if name in marks]
            print(f"  end of speech -> {label:17s} P50 {percentile(values, 50):.2f} s   "
                  f"P95 {percentile(values, 95):.2f} s")
    print(f"  barge-in speech onset -> stop_speaking ({len(stops)} barge-ins, includes the minimum "
          f"speech of a barge-in): P50 {percentile(stops, 50):.2f} s   "
          f"P95 {percentile(stops, 95):.2f} s; {missed_barge_ins} answers were over before it")
    if db is not None:
        server_breakdown(db)
    vad_cost_for_100_streams()


if __name__ == "__main__":
    main()
