"""WebRTC per OpenAI's GA flow, proven with a pure-Python aiortc peer against a real uvicorn server
with the real models in-process (VAD, Whisper, Piper; the LLM's replies scripted through the fake
Ollama): the SDP exchange, ephemeral keys, Opus both ways, the oai-events data channel carrying the
same events as the WebSocket (validated against the `openai` SDK's GA types), the server-side
output buffer and its events, barge-in, and hang-up.
"""

from __future__ import annotations

import sqlite3
import time

import httpx
from openai import AsyncOpenAI
from openai.types.realtime import ClientSecretCreateResponse
from pydantic import TypeAdapter

from deployments.llm import LlmOptions
from serve_app.host import SessionHost
from serve_app.protocols.webrtc.client_secrets import Credentials
from serve_app.protocols.webrtc.options import WebRtcOptions
from tests.fake_ollama import FakeReply
from tests.live_server import LiveServer
from tests.realtime_harness import realtime
from tests.session_harness import build_app, server_options, stored_messages
from tests.text_normalise import normalise
from tests.webrtc_peer import Peer

API_KEY = "sk-webrtc-test"
LONG_REPLY = " ".join(f"Sentence number {n} of a long story about the sea." for n in range(1, 25))


def live(models, fake_ollama, db, api_keys: list[str] | None = None, webrtc: WebRtcOptions | None = None,
         **session) -> LiveServer:
    models = models.with_llm(LlmOptions(backend="ollama", ollama_host=fake_ollama.url, ollama_model="llama3.2"))
    options = server_options(db, **session).model_copy(update={"api_keys": api_keys or [],
                                                               "webrtc": webrtc or WebRtcOptions()})
    return LiveServer(build_app(SessionHost(models, options)))


def sdk(server: LiveServer, key: str = API_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=f"http://127.0.0.1:{server.port}/v1")


async def test_a_spoken_question_over_webrtc_is_answered_on_the_reply_track(models, fake_ollama, tmp_path,
                                                                           clip_by_name):
    fake_ollama.script(FakeReply(content="He waited as long as he could, and then he went home."))
    with live(models, fake_ollama, tmp_path / "db.sqlite3", api_keys=[API_KEY]) as server:
        raw = await sdk(server).realtime.client_secrets.with_raw_response.create(
            expires_after={"anchor": "created_at", "seconds": 300},
            session={"type": "realtime", "instructions": "Answer in one sentence.",
                     "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
        secret = TypeAdapter(ClientSecretCreateResponse).validate_python(raw.http_response.json())
        peer = Peer()
        try:
            response = await peer.call(f"http://127.0.0.1:{server.port}/v1/realtime/calls", secret.value)
            created = await peer.until("session.created")
            peer.microphone.say(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())  # "HE COULD WAIT NO LONGER"
            transcribed = await peer.until("conversation.item.input_audio_transcription.completed")
            done = await peer.until("response.done")
            stopped = await peer.until("output_audio_buffer.stopped")
        finally:
            await peer.close()

    assert secret.value.startswith("ek_") and secret.expires_at > time.time() + 250
    assert secret.session.instructions == "Answer in one sentence."
    assert response.status_code == 201 and response.headers["content-type"].startswith("application/sdp")
    call_id = response.headers["location"].rsplit("/", 1)[-1]
    assert response.headers["location"] == f"/v1/realtime/calls/{call_id}" and call_id.startswith("rtc_")
    # the secret's session config is the call's
    assert created["session"]["instructions"] == "Answer in one sentence."
    assert normalise(transcribed["transcript"]) == "he could wait no longer"
    assert done["response"]["status"] == "completed"
    reply = done["response"]["output"][0]["content"][0]
    assert reply["transcript"] == "He waited as long as he could, and then he went home."
    # audio travels on the track, not in events; the buffer's events frame it as OpenAI orders them
    assert "response.output_audio.delta" not in peer.types()
    response_id = done["response"]["id"]
    started = peer.index("output_audio_buffer.started", response_id=response_id)
    assert peer.index("response.content_part.added") < started < peer.index("response.done")
    assert stopped["response_id"] == response_id and peer.index("output_audio_buffer.stopped") > peer.index(
        "response.done")
    assert peer.index("response.output_audio_transcript.delta") < peer.index("response.done")
    # the spoken reply arrived as Opus and decodes to speech: seconds of it, between started and stopped
    voiced = peer.voiced_s(peer.time_of("output_audio_buffer.started"), peer.time_of("output_audio_buffer.stopped")
                           + 0.5)
    assert voiced > 1.5, voiced


async def test_barge_in_clears_the_output_buffer_and_the_reply_is_cut_to_what_was_played(
        models, fake_ollama, tmp_path, clip_by_name):
    fake_ollama.script(FakeReply(content=LONG_REPLY, chunks=40), FakeReply(content="Sorry, go on."))
    db = tmp_path / "db.sqlite3"
    with live(models, fake_ollama, db, playback_lead_ms=500) as server:
        client = sdk(server)
        peer = Peer()
        try:
            # the multipart form (sdp + session), as the `openai` SDK's calls.create sends it
            raw = await client.realtime.calls.with_raw_response.create(
                sdp=await peer.offer(), session={"type": "realtime", "instructions": "Tell long stories."})
            await peer.answer(raw.http_response.text)
            created = await peer.until("session.created")
            peer.microphone.say(clip_by_name("librispeech_1089-134691-0000.wav").pcm16())
            started = await peer.until("output_audio_buffer.started")
            await peer.heard(1.0, since=peer.time_of("output_audio_buffer.started"))
            peer.microphone.say(clip_by_name("jfk_inaugural_ask_not.wav").pcm16()[: 16000 * 3])
            await peer.until("input_audio_buffer.speech_started")
            cleared = await peer.until("output_audio_buffer.cleared")
            cleared_at = time.monotonic()
            cancelled = await peer.until("response.done")
            truncated = await peer.until("conversation.item.truncated")
            peer.send({"type": "conversation.item.retrieve", "item_id": truncated["item_id"]})
            retrieved = await peer.until("conversation.item.retrieved")
            next_started = await peer.until("output_audio_buffer.started")  # the answer to the interruption
            call_id = raw.http_response.headers["location"].rsplit("/", 1)[-1]
            await client.realtime.calls.hangup(call_id)
            await peer.closed.wait()
            async with httpx.AsyncClient() as http:
                gone = await http.post(f"http://127.0.0.1:{server.port}/v1/realtime/calls/{call_id}/hangup")
        finally:
            await peer.close()

    assert created["session"]["instructions"] == "Tell long stories."
    assert cleared["response_id"] == started["response_id"] == cancelled["response"]["id"]
    assert peer.index("input_audio_buffer.speech_started") < peer.index("output_audio_buffer.cleared") < peer.index(
        "response.done")
    assert cancelled["response"]["status"] == "cancelled"
    assert cancelled["response"]["status_details"]["reason"] == "turn_detected"
    assert "output_audio_buffer.stopped" not in peer.types()[: peer.index("response.done")]
    # the playback stopped: silence on the track from shortly after the clear until the next reply
    quiet_until = min(cleared_at + 1.0, peer.time_of("output_audio_buffer.started", response_id=next_started[
        "response_id"]))
    assert peer.voiced_s(cleared_at + 0.3, quiet_until) < 0.1
    # the server knows what was played, and cut the reply to it without a truncate from the client
    reply_id = cancelled["response"]["output"][0]["id"]
    heard_s = peer.voiced_s(peer.time_of("output_audio_buffer.started"), cleared_at)
    assert truncated["item_id"] == reply_id and 1000 <= truncated["audio_end_ms"] < 20_000
    assert heard_s <= truncated["audio_end_ms"] / 1000 + 0.3  # played includes the pauses between sentences
    heard = retrieved["item"]["content"][0]["transcript"]
    assert heard and LONG_REPLY.startswith(heard) and len(heard) < len(LONG_REPLY) / 2, heard
    assert gone.status_code == 404
    # what the hang-up left in the store: both turns, the story cut to what was heard
    with sqlite3.connect(db) as connection:
        session_id = connection.execute("SELECT id FROM sessions").fetchone()[0]
    rows = [(r["role"], r["status"], r["content"]) for r in stored_messages(db, session_id)
            if r["role"] in ("user", "assistant")]
    assert [(role, status) for role, status, _ in rows[:2]] == [("user", "complete"), ("assistant", "interrupted")]
    assert normalise(rows[0][2]) == "he could wait no longer" and rows[1][2] == heard


async def test_keys_secrets_and_bad_offers_are_refused_with_clear_errors(models, fake_ollama, tmp_path):
    with live(models, fake_ollama, tmp_path / "db.sqlite3", api_keys=[API_KEY], webrtc=WebRtcOptions(max_calls=1)) \
            as server:
        base = f"http://127.0.0.1:{server.port}/v1/realtime"
        expired = Credentials([API_KEY]).mint(None, 10, now=time.time() - 3600).value
        fresh = (await sdk(server).realtime.client_secrets.create()).value
        peer = Peer()
        offer = await peer.offer()
        async with httpx.AsyncClient() as http:
            def post(path: str, key: str | None, **kwargs):
                headers = kwargs.pop("headers", {}) | ({"Authorization": f"Bearer {key}"} if key else {})
                return http.post(base + path, headers=headers, **kwargs)

            sdp = {"content": offer, "headers": {"Content-Type": "application/sdp"}}
            results = {
                "no key": await post("/calls", None, **sdp),
                "wrong key": await post("/calls", "sk-wrong", **sdp),
                "expired secret": await post("/calls", expired, **sdp),
                "forged secret": await post("/calls", fresh[:-4] + "AAAA", **sdp),
                "secret mints": await post("/client_secrets", fresh, json={}),
                "not sdp": await post("/calls", API_KEY, content=b"hello", headers={"Content-Type": "application/sdp"}),
                "json body": await post("/calls", API_KEY, json={"sdp": offer}),
                "bad session": await post("/calls", API_KEY, files={"sdp": (None, offer), "session": (
                    None, '{"type": "realtime", "max_output_tokens": 0}')}),
                "bad ttl": await post("/client_secrets", API_KEY, json={"expires_after": {"seconds": 5}}),
            }
            first = await post("/calls", API_KEY, **sdp)  # answered, and never connected: it holds the one place
            results["over max_calls"] = await post("/calls", API_KEY, **sdp)
            origin = {"Origin": "https://app.example"}
            preflight = await http.options(base + "/calls", headers=origin | {
                "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"})
            cross_origin = await post("/calls", API_KEY, content=b"v=0", headers=origin | {"Content-Type": "application/sdp"})
        await peer.close()
        async with realtime(server.ws_url, api_key=fresh) as rt:  # a secret opens a WebSocket session too
            opened = await rt.until("session.created")

    codes = {name: (r.status_code, r.json()["error"]["code"]) for name, r in results.items()}
    assert codes == {
        "no key": (401, "invalid_api_key"), "wrong key": (401, "invalid_api_key"),
        "expired secret": (401, "invalid_api_key"), "forged secret": (401, "invalid_api_key"),
        "secret mints": (401, "invalid_api_key"), "not sdp": (400, "invalid_offer"),
        "json body": (400, "unsupported_content_type"), "bad session": (400, "invalid_value"),
        "bad ttl": (400, "invalid_value"), "over max_calls": (429, "too_many_calls")}
    assert first.status_code == 201
    assert "expired" in results["expired secret"].json()["error"]["message"]
    assert results["bad session"].json()["error"]["param"] == "session.max_output_tokens"
    assert opened["session"]["type"] == "realtime"
    # a page on another origin may call, as it calls api.openai.com, and read the call id from Location
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert cross_origin.headers["access-control-allow-origin"] == "https://app.example"
    assert cross_origin.headers["access-control-expose-headers"] == "Location"
