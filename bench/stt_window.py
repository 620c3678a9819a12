"""Whisper's window, short or full, over the speech corpus (not a test).

    .venv/bin/python bench/stt_window.py

Runs every English speech clip of ``../shared/speech`` through the real ``WhisperTranscriber``
(embedded tiny.en, int8, 2 threads) with ``short_window_s`` 16 (the default: a 16 s window, and the
30 s one again when Whisper doubts the result) and 0 (always Whisper's 30 s window), one clip at a
time as a turn asks, and prints the corpus WER, the time per utterance, how many took the second
pass, and any text from the non-speech clips cut to 1, 2, 3, 6, 12 and 30 s. These are the figures
``deployments/stt.py``'s docstring and the README cite.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.stt import SttOptions, WhisperTranscriber
from tests.text_normalise import normalise

SPEECH = ROOT.parent / "shared" / "speech"
CUTS_S = (1, 2, 3, 6, 12, 30)


def load(name: str) -> np.ndarray:
    audio, rate = sf.read(SPEECH / name, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return audio if rate == 16000 else soxr.resample(audio, rate, 16000)


def main() -> None:
    manifest = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]
    speech = [(c, load(c["file"])) for c in manifest if c["kind"] == "speech" and c.get("language", "en") == "en"]
    other = [(c, load(c["file"])) for c in manifest if c["kind"] != "speech"]
    for window in (16, 0):
        stt = WhisperTranscriber(SttOptions(word_timestamps=False, short_window_s=window))
        stt.transcribe_batch([speech[0][1]])  # warm-up
        full_windows: list[bool] = []
        decode = stt._decode

        def counting(audios, window_s, _decode=decode, _seen=full_windows):
            _seen.append(window_s == 30)  # which window each decode used
            return _decode(audios, window_s)

        stt._decode = counting
        refs, hyps, times = [], [], []
        for clip, audio in speech:
            start = time.perf_counter()
            hyps.append(normalise(stt.transcribe_batch([audio])[0].text))
            times.append(time.perf_counter() - start)
            refs.append(normalise(clip["transcript"]))
        second_pass = sum(full_windows) if window else "-"
        spoken = [(c["file"], cut, r.text) for c, audio in other for cut in CUTS_S
                  for r in stt.transcribe_batch([audio[: cut * 16000]]) if r.text]
        print(f"short_window_s {window:2d}: WER {jiwer.wer(refs, hyps):.3f} over {len(refs)} clips, "
              f"P50 {1000 * statistics.median(times):.0f} ms, P90 {1000 * np.percentile(times, 90):.0f} ms a clip, "
              f"{second_pass} speech clips decoded again in 30 s; "
              f"non-speech clips ({len(other)} x {len(CUTS_S)} cuts) with text: {spoken or 'none'}", flush=True)


if __name__ == "__main__":
    main()
