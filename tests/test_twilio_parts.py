"""The Twilio adapter's parts on their own: the µ-law codec, what the caller heard, the keypad."""

from __future__ import annotations

import asyncio
import audioop  # the reference G.711 implementation while Python still has it (3.11 here)
import math

import numpy as np

from serve_app.protocols.twilio import mulaw
from serve_app.protocols.twilio.keypad import Keypad, keypad_text
from serve_app.protocols.twilio.playback import ALL_OF_IT, Playback, SentMark


def test_mulaw_is_bit_exact_with_the_reference_g711_for_every_sample():
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    every_code = bytes(range(256))
    assert mulaw.encode(every_sample) == audioop.lin2ulaw(every_sample, 2)
    assert mulaw.decode(every_code) == audioop.ulaw2lin(every_code, 2)
    # G.711's table at its corners: 0xFF and 0x7F are silence, 0x00 / 0x80 the loudest
    assert np.frombuffer(mulaw.decode(b"\x00\x80\xff\x7f"), "<i2").tolist() == [-32124, 32124, 0, 0]
    assert mulaw.encode(b"\x00\x00" + b"\x01") == b"\xff"  # an odd trailing byte is no sample


def test_a_mark_echoed_means_everything_before_it_was_heard():
    playback = Playback()
    playback.audio_sent("r1")
    assert playback.playing and playback.unmarked("r1")
    for piece, end_ms in ((1, 1500.25), (2, 3100.0), (3, 4800.5)):
        playback.mark_sent(SentMark(f"r1.{piece}", "r1", end_ms))
    assert playback.playing and not playback.unmarked("r1")
    assert playback.echoed("r1.2")  # marks play in order: r1.1 was played too
    assert playback.heard_ms("r1") == 3101  # a millisecond past the mark: that piece counts in full
    assert playback.playing  # r1.3 is still in Twilio's buffer
    assert not playback.echoed("r1.9")  # never sent: says nothing
    assert playback.clear() == ["r1"]
    assert not playback.playing
    assert not playback.echoed("r1.3")  # echoed because the clear dropped it: not heard
    assert playback.heard_ms("r1") == 3101


def test_a_clear_cuts_every_reply_still_playing_and_audio_without_a_mark_counts():
    playback = Playback()
    playback.audio_sent("r1")
    playback.mark_sent(SentMark("r1.1", "r1", math.inf))  # "after all of it"
    playback.audio_sent("r2")  # the next reply's first piece, not marked yet
    assert playback.clear() == ["r1", "r2"]
    assert playback.heard_ms("r1") == 0 and playback.heard_ms("r2") == 0
    playback.audio_sent("r3")
    playback.mark_sent(SentMark("r3.1", "r3", math.inf))
    assert playback.echoed("r3.1") and playback.heard_ms("r3") == ALL_OF_IT


async def test_keys_are_gathered_into_one_message_until_hash_or_a_pause():
    delivered: list[str] = []
    arrived = asyncio.Event()

    def deliver(text: str) -> None:
        delivered.append(text)
        arrived.set()

    keypad = Keypad(deliver, pause_s=0.05)
    for key in "12#":
        keypad.press(key)
    assert delivered == [keypad_text(["1", "2", "#"])]  # '#' ends it at once
    arrived.clear()
    keypad.press("7")
    keypad.press("*")
    await asyncio.wait_for(arrived.wait(), 5)  # the pause ends it
    assert delivered[-1] == "The caller pressed 7 * on the phone keypad."
    keypad.press("5")
    keypad.close()  # the call ended: its pending keys go with it
    keypad.flush()
    assert len(delivered) == 2
