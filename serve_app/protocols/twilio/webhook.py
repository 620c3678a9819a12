"""``POST /twilio/voice`` (the call's TwiML) and who may use the Twilio routes (Twilio's request signature).

Twilio signs each request with ``X-Twilio-Signature``: an HMAC-SHA1, keyed with the account's
auth token, of the URL it requested followed by the sorted POST parameters. The media socket's
upgrade request is signed the same way over its ``wss://`` URL, with no parameters. Both are
checked with the official ``twilio`` package's ``RequestValidator``. A proxy in front changes the
scheme and host this server sees, so they come from ``X-Forwarded-Proto`` / ``X-Forwarded-Host``,
or from ``TwilioOptions.public_url`` where the proxy does not say.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from serve_app.protocols.twilio.options import TwilioOptions

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
SIGNATURE_HEADER = "x-twilio-signature"
MAX_WEBHOOK_BYTES = 64 * 1024  # a voice webhook's form is a few hundred bytes
FORM = "application/x-www-form-urlencoded"


def _first(value: str | None) -> str | None:
    """The client's end of a proxy chain: ``X-Forwarded-*`` values are comma-separated, client first."""
    return value.split(",")[0].strip() or None if value else None


def _as_websocket(url: str) -> str:
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url[len(http):]
    return url


def requested_url(connection: HTTPConnection, options: TwilioOptions, route: str) -> str:
    """The URL Twilio requested (and signed) to reach ``route`` here, query string included."""
    query = f"?{connection.url.query}" if connection.url.query else ""
    if options.public_url:
        base, path = options.public_url, route
    else:
        scheme = _first(connection.headers.get("x-forwarded-proto")) or connection.url.scheme
        host = _first(connection.headers.get("x-forwarded-host")) or connection.headers.get("host") \
            or connection.url.netloc
        base, path = f"{scheme}://{host}", connection.url.path
    url = base + path + query
    return _as_websocket(url) if route == MEDIA_PATH else url


def stream_url(request: Request, options: TwilioOptions) -> str:
    """Where Twilio opens the media socket: beside the webhook it called, as ``wss://`` (``ws://``
    only when it called plain ``http://``, which Twilio itself refuses for streams)."""
    if options.public_url:
        return _as_websocket(options.public_url + MEDIA_PATH)
    voice = requested_url(request, options, VOICE_PATH).split("?", 1)[0]
    prefix = voice[: -len(VOICE_PATH)] if voice.endswith(VOICE_PATH) else voice.rsplit("/", 1)[0]
    return _as_websocket(prefix + MEDIA_PATH)


def twiml(url: str, parameters: dict[str, str]) -> str:
    """``<Connect><Stream>``: a bidirectional stream; Twilio passes ``<Parameter>``s on in ``start``
    (``<Stream>`` URLs take no query string)."""
    response, connect = VoiceResponse(), Connect()
    stream = connect.stream(url=url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def refusal(options: TwilioOptions, api_keys: list[str], url: str, params: dict[str, str],
            signature: str | None) -> str | None:
    """Why this request may not use the Twilio routes, or None."""
    if options.auth_token is None:
        # Twilio cannot present an API key; without its signature these routes would be open to anyone
        return "the Twilio routes need server.twilio.auth_token when server.api_keys are set" if api_keys else None
    if not signature:
        return "missing X-Twilio-Signature"
    if not RequestValidator(options.auth_token).validate(url, params, signature):
        return "invalid X-Twilio-Signature"
    return None


async def voice_webhook(request: Request, options: TwilioOptions, api_keys: list[str]) -> Response:
    """Answer Twilio's call webhook with TwiML that streams the call to ``/twilio/media``."""
    if int(request.headers.get("content-length") or 0) > MAX_WEBHOOK_BYTES:
        return PlainTextResponse("webhook body too large", status_code=413)
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        return PlainTextResponse("webhook body too large", status_code=413)
    params: dict[str, str] = {}
    if request.headers.get("content-type", "").split(";")[0].strip() == FORM:
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    reason = refusal(options, api_keys, requested_url(request, options, VOICE_PATH), params,
                     request.headers.get(SIGNATURE_HEADER))
    if reason is not None:
        return PlainTextResponse(reason, status_code=403)
    parameters = {name: value for name, value in (("instructions", options.instructions),
                                                  ("voice", options.voice)) if value}
    return Response(twiml(stream_url(request, options), parameters), media_type="text/xml")


def upgrade_refusal(connection: HTTPConnection, options: TwilioOptions, api_keys: list[str]) -> str | None:
    """Why the media socket's upgrade request is refused, or None (checked before it is accepted)."""
    return refusal(options, api_keys, requested_url(connection, options, MEDIA_PATH), {},
                   connection.headers.get(SIGNATURE_HEADER))
