"""Built-in tools: schemas, argument checking, the time, the safe calculator, and weather over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import unquote, urlsplit

import pytest

from serve_app.session.tools import WEATHER_NOT_CONFIGURED, BuiltinTools, ToolError, ToolSpec, evaluate

# 2026-11-23 15:04:05 UTC, a Monday.
FIXED_NOW = datetime(2026, 11, 23, 15, 4, 5, tzinfo=UTC).timestamp()

WTTR_J1 = {
    "current_condition": [{
        "temp_C": "7", "FeelsLikeC": "4", "humidity": "81", "windspeedKmph": "19",
        "weatherDesc": [{"value": "Light rain"}], "pressure": "1012", "uvIndex": "1",
    }],
    "nearest_area": [{"areaName": [{"value": "Oslo"}], "country": [{"value": "Norway"}]}],
    "weather": [{"maxtempC": "9", "mintempC": "3", "hourly": [{"tempC": "5"}] * 8}],
}


class WeatherService:
    """A tiny weather HTTP service on loopback; the path's first segment picks its behaviour."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append(self.path)
                kind = urlsplit(self.path).path.split("/")[1]
                city = unquote(urlsplit(self.path).path.split("/")[2])
                if kind == "wttr":
                    self._send(200, json.dumps(WTTR_J1))
                elif kind == "generic":
                    body = {"location": city, "temperature": 21.5,
                            **{f"hour_{i:02d}": list(range(40)) for i in range(24)}}
                    self._send(200, json.dumps(body))
                elif kind == "missing":
                    self._send(404, json.dumps({"error": "Unknown location"}))
                elif kind == "notjson":
                    self._send(200, "<html>sunny</html>", "text/html")
                elif kind == "slow":
                    service.release.wait(10)  # held until the test is over: the client must give up first
                    self._send(200, "{}")
                else:
                    self._send(500, json.dumps({"error": "internal"}))

            def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def weather_service():
    with WeatherService() as service:
        yield service


@pytest.fixture
def tools():
    return BuiltinTools(clock=lambda: FIXED_NOW)


# schemas and dispatch

def test_specs_are_openai_function_schemas(tools):
    schemas = [spec.schema() for spec in tools.specs()]
    assert [s["function"]["name"] for s in schemas] == ["get_current_time", "calculator", "get_weather"]
    for schema in schemas:
        assert schema["type"] == "function"
        assert schema["function"]["description"]
        assert schema["function"]["parameters"]["type"] == "object"
    assert ToolSpec("x", "d", {"type": "object"}).schema() == {
        "type": "function", "function": {"name": "x", "description": "d", "parameters": {"type": "object"}}}


def test_has_knows_only_builtin_tools(tools):
    assert tools.has("calculator") and tools.has("get_weather") and tools.has("get_current_time")
    assert not tools.has("send_email")


async def test_unknown_tool_is_a_tool_error(tools):
    with pytest.raises(ToolError, match="unknown tool 'send_email'.*calculator"):
        await tools.call("send_email", "{}")


@pytest.mark.parametrize("arguments, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ("{}", "'expression' is a required property"),
    ('{"expression": 42}', "42 is not of type 'string'"),
])
async def test_bad_arguments_are_tool_errors(tools, arguments, message):
    with pytest.raises(ToolError, match=message):
        await tools.call("calculator", arguments)


async def test_arguments_may_be_parsed_objects_and_extra_keys_are_ignored(tools):
    result = await tools.call("calculator", {"expression": "6*7", "precision": "high"})
    assert result == {"expression": "6*7", "result": 42}


# get_current_time

async def test_current_time_defaults_to_utc_with_a_spoken_form(tools):
    result = await tools.call("get_current_time", "")
    assert result == {"iso": "2026-11-23T15:04:05+00:00", "timezone": "UTC",
                      "spoken": "3:04 PM on Monday, 23 November 2026"}


async def test_current_time_in_another_zone(tools):
    result = await tools.call("get_current_time", '{"timezone": "Asia/Tokyo"}')
    assert result["iso"] == "2026-11-24T00:04:05+09:00"
    assert result["spoken"] == "12:04 AM on Tuesday, 24 November 2026"


async def test_time_zone_names_are_matched_without_case(tools):
    result = await tools.call("get_current_time", '{"timezone": "america/new_york"}')
    assert result["timezone"] == "America/New_York"
    assert result["spoken"] == "10:04 AM on Monday, 23 November 2026"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd"])
async def test_unknown_time_zone_is_a_tool_error(tools, zone):
    with pytest.raises(ToolError, match="unknown time zone"):
        await tools.call("get_current_time", json.dumps({"timezone": zone}))


# calculator

@pytest.mark.parametrize("expression, expected", [
    ("2 + 3 * 4", 14),
    ("(2 + 3) * 4", 20),
    ("7 / 2", 3.5),
    ("7 // 2", 3),
    ("7 % 3", 1),
    ("2 ** 10", 1024),
    ("-3 + +5", 2),
    ("0.1 + 0.2", 0.3),
    ("sqrt(16) + abs(-2)", 6.0),
    ("round(pi, 2)", 3.14),
    ("floor(2.7) + ceil(2.1)", 5),
    ("log(e)", 1.0),
    ("log(8, 2)", 3.0),
    ("log10(1000)", 3.0),
    ("exp(0) + sin(0) + cos(0) + tan(0)", 2.0),
    ("2 ** -2", 0.25),
])
async def test_calculator_evaluates_arithmetic(tools, expression, expected):
    result = await tools.call("calculator", json.dumps({"expression": expression}))
    assert result == {"expression": expression, "result": expected}


@pytest.mark.parametrize("expression, message", [
    ("__import__('os')", "only these functions are allowed"),
    ("().__class__", "does not support Attribute"),
    ("__import__('os').system('true')", "only these functions"),
    ("(1, 2)", "does not support Tuple"),
    ("2**100000", "exponent is too large"),
    ("10**200", "too large"),
    ("9" * 150, "too large"),
    ("exp(1000)", "too large"),
    ("a+1", "unknown name 'a'"),
    ("1/0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("sqrt(-1)", "no real value"),
    ("(-8) ** 0.5", "not a real number"),
    ("'abc' * 3", "only numbers are allowed"),
    ("True + 1", "only numbers are allowed"),
    ("2 ^ 3", "use \\*\\*"),
    ("1 +", "cannot parse"),
    ("1 + " * 60 + "1", "too long"),
    ("round(1.5, 1.5)", "whole number"),
    ("sqrt(x=4)", "positional"),
    ("[1, 2]", "does not support List"),
    ("lambda: 1", "does not support Lambda"),
])
async def test_calculator_rejects_unsafe_or_bad_expressions(tools, expression, message):
    with pytest.raises(ToolError, match=message):
        await tools.call("calculator", json.dumps({"expression": expression}))


def test_evaluate_keeps_integers_exact():
    assert evaluate("2 ** 64") == 18446744073709551616


# get_weather

async def test_weather_without_a_configured_service_says_how_to_configure_it(tools):
    with pytest.raises(ToolError) as raised:
        await tools.call("get_weather", '{"city": "Oslo"}')
    assert str(raised.value) == WEATHER_NOT_CONFIGURED


def test_weather_url_must_have_a_city_placeholder():
    with pytest.raises(ValueError, match="placeholder"):
        BuiltinTools(weather_url="http://example.invalid/weather")


async def test_weather_trims_wttr_j1_to_the_useful_fields(weather_service):
    tools = BuiltinTools(weather_url=weather_service.url + "/wttr/{city}?format=j1")
    result = await tools.call("get_weather", '{"city": "São Paulo"}')
    assert result == {"city": "São Paulo", "condition": "Light rain", "temperature_c": "7", "feels_like_c": "4",
                      "humidity_percent": "81", "wind_kmph": "19", "area": "Oslo", "country": "Norway",
                      "today_max_c": "9", "today_min_c": "3"}
    assert weather_service.requests == ["/wttr/S%C3%A3o%20Paulo?format=j1"]


async def test_weather_from_another_service_is_returned_truncated(weather_service):
    tools = BuiltinTools(weather_url=weather_service.url + "/generic/{city}")
    result = await tools.call("get_weather", '{"city": "Paris"}')
    assert result["city"] == "Paris"
    assert result["data"]["location"] == "Paris" and result["data"]["temperature"] == 21.5
    assert 0 < len(json.dumps(result["data"])) <= 2000
    assert len(result["data"]) < 26  # some hourly series were left out to fit


@pytest.mark.parametrize("kind, message", [
    ("fail", "failed \\(HTTP 500\\)"),
    ("missing", "does not know the city 'Atlantis'"),
    ("notjson", "not JSON"),
])
async def test_weather_service_failures_are_tool_errors(weather_service, kind, message):
    tools = BuiltinTools(weather_url=weather_service.url + f"/{kind}/{{city}}")
    with pytest.raises(ToolError, match=message):
        await tools.call("get_weather", '{"city": "Atlantis"}')


async def test_slow_weather_service_times_out(weather_service):
    tools = BuiltinTools(weather_url=weather_service.url + "/slow/{city}", timeout_s=0.3)
    with pytest.raises(ToolError, match="did not answer within 0.3 s"):
        await tools.call("get_weather", '{"city": "Oslo"}')


async def test_unreachable_weather_service_is_a_tool_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tools = BuiltinTools(weather_url=f"http://127.0.0.1:{port}/{{city}}")
    with pytest.raises(ToolError, match="could not be reached"):
        await tools.call("get_weather", '{"city": "Oslo"}')


async def test_weather_needs_a_city(weather_service):
    tools = BuiltinTools(weather_url=weather_service.url + "/wttr/{city}")
    with pytest.raises(ToolError, match="needs a city"):
        await tools.call("get_weather", '{"city": "  "}')
    assert weather_service.requests == []
