"""What the end-of-turn model says about each finished clip, for the audio windows it could be fed (not a test).

    .venv/bin/python bench/smart_turn_window.py

For every speech clip of ``../shared/speech`` (1.5-8 s, 16 kHz) silero finds the first and last
voiced frame; Smart Turn v3.2 is then asked about four windows: speech start to the last voiced
frame (what the engine fed it before), the same with 300 ms before the speech, 700 ms before and
200 ms of the pause after (Pipecat's), and 300 ms before with 200 ms after (what the engine feeds it
now: ``PauseCheck.heard_until``). Every clip is a finished sentence, so a probability under 0.5
is a turn the engine would have waited 2 s more on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.turn_end import SmartTurnModel
from deployments.vad import SileroVad, VadOptions, VadRequest, initial_states

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
RATE, FRAME = 16000, 512
WINDOWS = {"speech only": (0.0, 0.0), "+300 ms before": (0.3, 0.0),
           "+700 before, +200 after": (0.7, 0.2), "+300 before, +200 after": (0.3, 0.2)}


def main() -> None:
    vad, model = SileroVad(VadOptions()), SmartTurnModel()
    finished = {name: 0 for name in WINDOWS}
    clips = 0
    for line in (SPEECH / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind", "speech") != "speech":
            continue
        audio, rate = soundfile.read(SPEECH / entry["file"], dtype="float32")
        if rate != RATE or not 1.5 <= audio.size / RATE <= 8:
            continue
        frames = audio[: audio.size // FRAME * FRAME].reshape(1, -1, FRAME)
        voiced = np.nonzero(vad.run(VadRequest(frames, initial_states(1))).probabilities[0] >= 0.5)[0]
        if not voiced.size:
            continue
        clips += 1
        start, end = voiced[0] * FRAME, (voiced[-1] + 1) * FRAME
        padded = np.concatenate([audio, np.zeros(RATE, np.float32)])
        row = []
        for name, (before, after) in WINDOWS.items():
            p = model.completion_probability(padded[max(0, start - int(before * RATE)) : end + int(after * RATE)])
            finished[name] += p >= 0.5
            row.append(f"{p:.2f}")
        print(f"{entry['file'][:40]:40s} " + " ".join(row))
    for name, count in finished.items():
        print(f"{name:26s} finished (>= 0.5): {count} of {clips}")


if __name__ == "__main__":
    main()
