"""Phone calls through Twilio Media Streams, against a real uvicorn server with the real models in-process.

The caller's side is tests/twilio_simulator.py (Twilio's cloud cannot run here): real clips from
../shared/speech as 8 kHz µ-law in 20 ms frames in real time, the answer played back in real time
with its marks echoed as Twilio does. The LLM is a scripted Ollama (tests/fake_ollama.py) so the
reply's pieces are known and the cut can be checked word for word.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from deployments.llm import LlmOptions
from serve_app.clients.turn_end import InProcessTurnEnd
from serve_app.host import SessionHost
from serve_app.protocols.twilio.keypad import keypad_text
from serve_app.settings import ServerOptions
from tests.fake_ollama import FakeReply
from tests.live_server import LiveServer
from tests.session_harness import build_app, stored_messages
from tests.text_normalise import normalise
from tests.twilio_simulator import TwilioCall, parse_twiml, to_mulaw_8k

# the pieces the engine speaks one by one, a mark after each: the reply's first piece is a clause or
# its first six words, so the first sentence is shorter than that; later pieces are whole sentences.
# The third is long (about six seconds), so a slow machine still barges in while it plays.
STORY = ["The old ship left at dawn.", "Its crew sang as they worked.",
         ("By noon the wind had turned cold and strong, the waves rose higher than the mast, and every "
         "sailor held on to the ropes with both hands."),
         "At sunrise they saw the shore."]
AUTH_TOKEN = "twilio-test-token"


def live(models, fake, db, smart_turn_model, session: dict | None = None, **twilio) -> LiveServer:
    options = ServerOptions.model_validate({"session": {"db_path": str(db), **(session or {})}, "twilio": twilio})
    llm = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake.url, ollama_model="llama3.2"))
    return LiveServer(build_app(SessionHost(llm, options, InProcessTurnEnd(smart_turn_model))))


def reply_of(mark: str) -> str:
    return mark.rsplit(".", 1)[0]  # marks are named <reply id>.<piece>


def signed(url: str, params: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, params or {})}


@pytest.mark.parametrize("lead_ms", [1000, 60_000], ids=["while-the-reply-is-sent", "after-it-was-all-sent"])
async def test_a_call_is_answered_and_a_barge_in_keeps_only_what_the_caller_heard(
        lead_ms, models, smart_turn_model, fake_ollama, tmp_path, clip_by_name):
    """With a 60 s lead the engine sends the whole reply at once and is done with it while Twilio
    still plays it: the caller's speech must still stop the audio and cut the reply."""
    fake_ollama.script(FakeReply(content=" ".join(STORY)), FakeReply(content="Of course, I will stop."))
    question = to_mulaw_8k(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())  # "HE COULD WAIT NO LONGER"
    interruption = to_mulaw_8k(clip_by_name("jfk_inaugural_ask_not.wav").pcm16()[: 16000 * 3])
    db = tmp_path / "db.sqlite3"
    with live(models, fake_ollama, db, smart_turn_model, {"playback_lead_ms": lead_ms}, auth_token=AUTH_TOKEN) as server:
        form = {"CallSid": "CA00000000000000000000000000000001", "From": "+14155550100", "To": "+14155550199"}
        webhook = f"http://127.0.0.1:{server.port}/twilio/voice"
        async with httpx.AsyncClient() as http:
            answer = await http.post(webhook, data=form, headers=signed(webhook, form))
        url, parameters = parse_twiml(answer.text)
        async with TwilioCall(url, parameters=parameters, headers=signed(url)) as call:
            call.say(question)
            # two pieces of the story played out, and half a second of the third waits to be played
            heard = await call.until(lambda h: len(h.echoed) >= 2 and h.buffered_bytes >= 4000)
            call.say(interruption)  # the caller talks over the third
            await call.until(lambda h: bool(h.of("clear")))
            cleared_at = heard.received.index(heard.of("clear")[0])
            first_reply = reply_of(heard.echoed[0])
            # the next turn is answered and played out to its last mark
            await call.until(lambda h: any(reply_of(m) != first_reply for m in h.echoed))
            await call.hang_up()

    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    assert url == f"ws://127.0.0.1:{server.port}/twilio/media"
    heard_first = [m for m in heard.echoed if reply_of(m) == first_reply]
    assert len(heard_first) == 2, heard.echoed  # the clear came while the third piece played
    if lead_ms == 60_000:  # the later pieces' marks were in Twilio's buffer too: echoed as dropped, ignored
        assert any(reply_of(m) == first_reply for m in heard.dropped)
    after_clear = [m for m in heard.received[cleared_at:] if m["event"] == "mark"]
    assert after_clear and all(reply_of(m["mark"]["name"]) != first_reply for m in after_clear)
    assert heard.played_bytes > 8000 * 4  # the story's first pieces and the second answer were played

    with sqlite3.connect(db) as connection:
        session_id, config, state = connection.execute("SELECT id, config_json, state FROM sessions").fetchone()
    assert json.loads(config)["transport"]["twilio"]["callSid"] == "CA00000000000000000000000000000001"
    assert state == "listening"  # the call ended between turns
    rows = stored_messages(db, session_id)
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert normalise(rows[0]["content"]) == "he could wait no longer"
    story = rows[1]
    assert story["status"] == "interrupted" and story["full_content"] == " ".join(STORY)
    assert story["content"] == " ".join(STORY[:2])  # cut at the last mark Twilio echoed, not at the clock
    assert normalise(rows[2]["content"]).startswith("and so")
    assert rows[3]["content"] == "Of course, I will stop." and rows[3]["status"] == "complete"
    # and that is what the LLM was told it had said
    context = fake_ollama.requests[1]["messages"]
    assert {"role": "assistant", "content": " ".join(STORY[:2])}.items() <= next(
        m for m in context if m["role"] == "assistant").items()


async def test_keys_pressed_become_one_message_and_the_answer_is_spoken(models, smart_turn_model, fake_ollama,
                                                                        tmp_path):
    fake_ollama.script(FakeReply(content="You chose option forty two."))
    with live(models, fake_ollama, tmp_path / "db.sqlite3", smart_turn_model, keypad_pause_ms=60_000) as server:
        async with TwilioCall(f"ws://127.0.0.1:{server.port}/twilio/media",
                              parameters={"instructions": "You answer phone menus."}) as call:
            for key in "42#":  # '#' sends at once; the pause (a minute here) is not waited for
                await call.press(key)
            heard = await call.until(lambda h: len(h.echoed) >= 1)
            await call.hang_up()

    request = fake_ollama.requests[0]["messages"]
    assert request[0] == {"role": "system", "content": "You answer phone menus."}
    assert request[-1] == {"role": "user", "content": keypad_text(["4", "2", "#"])}
    assert len(fake_ollama.requests) == 1
    assert heard.played_bytes > 8000 * 0.5  # the answer was spoken


async def test_the_media_socket_needs_twilios_signature_when_a_token_is_set(models, smart_turn_model, fake_ollama,
                                                                            tmp_path):
    with live(models, fake_ollama, tmp_path / "db.sqlite3", smart_turn_model, auth_token=AUTH_TOKEN) as server:
        url = f"ws://127.0.0.1:{server.port}/twilio/media"
        for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, additional_headers=headers)
            assert refused.value.response.status_code == 403
        async with websockets.connect(url, additional_headers=signed(url)) as accepted:
            await accepted.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
