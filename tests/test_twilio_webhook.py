"""``POST /twilio/voice``: the TwiML that connects a call to ``/twilio/media``, and Twilio's signature.

No models are needed: the webhook only answers XML. Requests go through Starlette's test client to
the same route the ingress serves (tests/session_harness.py builds it from ``SessionHost``).
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from serve_app.host import SessionHost
from serve_app.protocols.twilio.options import TwilioOptions
from serve_app.protocols.twilio.webhook import refusal
from serve_app.settings import ServerOptions
from tests.session_harness import build_app
from tests.twilio_simulator import parse_twiml

FORM = {"CallSid": "CA00000000000000000000000000000002", "AccountSid": "AC00000000000000000000000000000002",
        "From": "+14155550100", "To": "+14155550199", "CallStatus": "ringing", "Direction": "inbound"}
TOKEN = "webhook-test-token"


def client(**options) -> TestClient:
    server = ServerOptions.model_validate({"api_keys": options.pop("api_keys", []), "twilio": options})
    return TestClient(build_app(SessionHost(None, server)))


@pytest.mark.parametrize(("headers", "stream"), [
    ({}, "ws://testserver/twilio/media"),  # plain http reached it: Twilio would refuse ws://, a simulator need not
    ({"host": "voice.example.com", "x-forwarded-proto": "https"}, "wss://voice.example.com/twilio/media"),
    ({"x-forwarded-host": "calls.example.com, edge.internal", "x-forwarded-proto": "https, http"},
     "wss://calls.example.com/twilio/media"),
])
def test_the_stream_url_is_built_from_the_request_twilio_made(headers, stream):
    with client() as http:
        answer = http.post("/twilio/voice", data=FORM, headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    assert answer.text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream ')
    assert parse_twiml(answer.text) == (stream, {})


def test_the_configured_public_url_wins_and_phone_settings_become_stream_parameters():
    with client(public_url="https://calls.example.org/agent/", instructions="Speak briefly & kindly.",
                voice="en_US-joe-medium") as http:
        answer = http.post("/twilio/voice", data=FORM, headers={"host": "10.0.0.7:8000"})
    assert parse_twiml(answer.text) == ("wss://calls.example.org/agent/twilio/media",
                                        {"instructions": "Speak briefly & kindly.", "voice": "en_US-joe-medium"})


def test_a_webhook_signed_by_twilio_is_answered_and_any_other_is_refused():
    url = "https://voice.example.com/twilio/voice"  # what Twilio called, in front of the TLS proxy
    signature = RequestValidator(TOKEN).compute_signature(url, FORM)
    proxy = {"host": "voice.example.com", "x-forwarded-proto": "https"}
    with client(auth_token=TOKEN) as http:
        good = http.post("/twilio/voice", data=FORM, headers={**proxy, "X-Twilio-Signature": signature})
        forged = http.post("/twilio/voice", data={**FORM, "From": "+19995550000"},
                           headers={**proxy, "X-Twilio-Signature": signature})
        unsigned = http.post("/twilio/voice", data=FORM, headers=proxy)
        wrong_host = http.post("/twilio/voice", data=FORM, headers={"X-Twilio-Signature": signature})
    assert good.status_code == 200 and parse_twiml(good.text)[0] == "wss://voice.example.com/twilio/media"
    assert (forged.status_code, forged.text) == (403, "invalid X-Twilio-Signature")
    assert (unsigned.status_code, unsigned.text) == (403, "missing X-Twilio-Signature")
    assert wrong_host.status_code == 403  # signed for another URL


def test_signatures_are_checked_as_twilio_documents_them():
    """The test vector of twilio-python's own tests (auth token 12345)."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212",
              "Caller": "+14158675309"}
    options = TwilioOptions(auth_token="12345")
    assert refusal(options, [], url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=") is None
    assert refusal(options, [], url, {**params, "Digits": "9999"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=") is not None
    assert refusal(options, [], url.replace("foo=1", "foo=2"), params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=") is not None


def test_with_api_keys_the_twilio_routes_stay_closed_until_an_auth_token_is_set():
    with client(api_keys=["sk-secret"], auth_token=None) as http:
        refused = http.post("/twilio/voice", data=FORM)
    assert refused.status_code == 403 and "auth_token" in refused.text


def test_an_oversized_webhook_body_is_refused():
    with client() as http:
        answer = http.post("/twilio/voice", content=b"x=" + b"y" * 70_000,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
