"""Tools the server runs itself: the time, a safe calculator, and the weather from a configured service.

Each tool has an OpenAI-style function schema for the LLM and an async implementation. A
`ToolError` carries a message that is safe to show or say to the user; the LLM gets it as the
tool's result and can explain the problem in its own words.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema

WEATHER_NOT_CONFIGURED = "weather is not configured on this server: set server.session.weather_url in the app config"

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e100
MAX_WEATHER_CHARS = 2000

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


class ToolError(Exception):
    """A tool failed in a way the user may hear about; the message says what and, if possible, why."""


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool shape an LLM request carries."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


TIME_SPEC = ToolSpec(
    name="get_current_time",
    description="Get the current date and time in a time zone.",
    parameters={
        "type": "object",
        "properties": {
            "timezone": {"type": "string",
                         "description": "IANA time zone name, e.g. Europe/London or America/New_York. Default UTC."},
        },
        "required": [],
    },
)

CALCULATOR_SPEC = ToolSpec(
    name="calculator",
    description=("Evaluate an arithmetic expression. Supports + - * / // % ** and parentheses, the functions "
                 "sqrt, sin, cos, tan, log, log10, exp, abs, round, floor, ceil, and the constants pi and e."),
    parameters={
        "type": "object",
        "properties": {
            "expression": {"type": "string", "description": "for example: (12.5 * 3) / 4 + sqrt(16)"},
        },
        "required": ["expression"],
    },
)

WEATHER_SPEC = ToolSpec(
    name="get_weather",
    description="Get the current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "city name, e.g. Paris"}},
        "required": ["city"],
    },
)


class BuiltinTools:
    """The server-side tools, looked up by name; `call` validates the LLM's JSON arguments first."""

    def __init__(self, weather_url: str | None = None, timeout_s: float = 5.0, *,
                 clock: Callable[[], float] = time.time) -> None:
        if weather_url is not None and "{city}" not in weather_url:
            raise ValueError(f"weather_url must contain a {{city}} placeholder, got {weather_url!r}")
        self.weather_url = weather_url
        self.timeout_s = timeout_s
        self._clock = clock
        self._tools: dict[str, tuple[ToolSpec, Callable[..., Awaitable[dict[str, Any]]]]] = {
            TIME_SPEC.name: (TIME_SPEC, self.get_current_time),
            CALCULATOR_SPEC.name: (CALCULATOR_SPEC, self.calculator),
            WEATHER_SPEC.name: (WEATHER_SPEC, self.get_weather),
        }
        self._validators = {name: jsonschema.Draft202012Validator(spec.parameters)
                            for name, (spec, _) in self._tools.items()}

    def specs(self) -> list[ToolSpec]:
        return [spec for spec, _ in self._tools.values()]

    def has(self, name: str) -> bool:
        return name in self._tools

    async def call(self, name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
        """Run a tool with the LLM's arguments: JSON text (OpenAI) or an already-parsed object (Ollama)."""
        if name not in self._tools:
            raise ToolError(f"unknown tool {name!r}; available tools: {', '.join(self._tools)}")
        spec, implementation = self._tools[name]
        args = _parse_arguments(name, arguments)
        error = jsonschema.exceptions.best_match(self._validators[name].iter_errors(args))
        if error is not None:
            where = f" (at {'/'.join(map(str, error.absolute_path))})" if error.absolute_path else ""
            raise ToolError(f"bad arguments for {name}{where}: {error.message}")
        # Small LLMs sometimes add arguments nobody asked for; ignoring them beats failing the call.
        known = {key: value for key, value in args.items() if key in spec.parameters["properties"]}
        return await implementation(**known)

    async def get_current_time(self, timezone: str = "UTC") -> dict[str, Any]:
        zone = _find_zone(timezone)
        now = datetime.fromtimestamp(self._clock(), tz=zone)
        return {"iso": now.isoformat(timespec="seconds"), "timezone": zone.key, "spoken": _spoken_time(now)}

    async def calculator(self, expression: str) -> dict[str, Any]:
        return {"expression": expression, "result": evaluate(expression)}

    async def get_weather(self, city: str) -> dict[str, Any]:
        if self.weather_url is None:
            raise ToolError(WEATHER_NOT_CONFIGURED)
        city = city.strip()
        if not city:
            raise ToolError("get_weather needs a city name")
        url = self.weather_url.replace("{city}", quote(city, safe=""))
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.TimeoutException as exc:
            raise ToolError(f"the weather service did not answer within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise ToolError("the weather service could not be reached") from exc
        if response.status_code == 404:
            raise ToolError(f"the weather service does not know the city {city!r}")
        if response.status_code >= 400:
            raise ToolError(f"the weather service failed (HTTP {response.status_code})")
        try:
            data = response.json()
        except ValueError as exc:
            raise ToolError("the weather service answered with something that is not JSON") from exc
        return _weather_summary(city, data)


# arguments

def _parse_arguments(name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ToolError(f"the arguments for {name} are not valid JSON: {exc.msg}") from exc
    if not isinstance(parsed, dict):
        raise ToolError(f"the arguments for {name} must be a JSON object")
    return parsed


# time

def _find_zone(name: str) -> zoneinfo.ZoneInfo:
    name = name.strip() or "UTC"
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    # LLMs often get the capitalisation wrong ("europe/paris"); the zone database is case-sensitive.
    by_lower = {zone.lower(): zone for zone in zoneinfo.available_timezones()}
    if name.lower() in by_lower:
        return zoneinfo.ZoneInfo(by_lower[name.lower()])
    raise ToolError(f"unknown time zone {name!r}; use an IANA name such as Europe/London or America/New_York")


def _spoken_time(now: datetime) -> str:
    """'3:04 PM on Monday, 23 November 2026', built by hand so the server's locale cannot change it."""
    hour = now.hour % 12 or 12
    meridiem = "AM" if now.hour < 12 else "PM"
    return (f"{hour}:{now.minute:02d} {meridiem} on {_WEEKDAYS[now.weekday()]}, "
            f"{now.day} {_MONTHS[now.month - 1]} {now.year}")


# calculator

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "sqrt": (math.sqrt, (1,)), "sin": (math.sin, (1,)), "cos": (math.cos, (1,)), "tan": (math.tan, (1,)),
    "log": (math.log, (1, 2)), "log10": (math.log10, (1,)), "exp": (math.exp, (1,)), "abs": (abs, (1,)),
    "round": (round, (1, 2)), "floor": (math.floor, (1,)), "ceil": (math.ceil, (1,)),
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> int | float:
    """Evaluate arithmetic by walking its syntax tree: only numbers, operators and the listed functions."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is too long (over {MAX_EXPRESSION_CHARS} characters)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte in the text
        raise ToolError(f"cannot parse the expression {expression!r}") from exc
    try:
        value = _evaluate_node(tree.body)
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except OverflowError as exc:
        raise ToolError("the result is too large") from exc
    except ValueError as exc:  # math domain errors: sqrt(-1), log(0)
        raise ToolError(f"the expression has no real value ({exc})") from exc
    if isinstance(value, float):
        # Twelve significant digits: 0.1 + 0.2 is said as 0.3, not 0.30000000000000004.
        return float(f"{value:.12g}")
    return value


def _evaluate_node(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; the calculator knows only pi and e")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate_node(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate_node(node.left), _evaluate_node(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("'^' is not a power here: use ** (2 ** 10)")
    if isinstance(node, ast.Call):
        return _call_function(node)
    raise ToolError(f"the calculator does not support {type(node).__name__} expressions")


def _call_function(node: ast.Call) -> int | float:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        raise ToolError(f"only these functions are allowed: {', '.join(_FUNCTIONS)}")
    function, arities = _FUNCTIONS[node.func.id]
    if node.keywords or len(node.args) not in arities:
        expected = " or ".join(map(str, arities))
        raise ToolError(f"{node.func.id} takes {expected} positional argument(s)")
    args = [_evaluate_node(arg) for arg in node.args]
    if node.func.id == "round" and len(args) == 2 and not isinstance(args[1], int):
        raise ToolError("round's second argument must be a whole number")
    return _checked(function(*args))


def _check_power(base: float, exponent: float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"the exponent is too large (limit {MAX_EXPONENT})")
    # Integer powers are exact and could build a huge number before the magnitude check sees it.
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise ToolError("the result is too large")


def _checked(value: Any) -> int | float:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large" if math.isinf(value) else "the result is not a number")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError("the result is too large")
    return value


# weather

def _weather_summary(city: str, data: Any) -> dict[str, Any]:
    """The few fields a spoken answer needs from wttr.in's j1 shape; other services' JSON, size-capped."""
    if isinstance(data, dict) and isinstance(data.get("current_condition"), list) and data["current_condition"]:
        current = data["current_condition"][0]
        summary: dict[str, Any] = {
            "city": city,
            "condition": _first_value(current.get("weatherDesc")),
            "temperature_c": current.get("temp_C"),
            "feels_like_c": current.get("FeelsLikeC"),
            "humidity_percent": current.get("humidity"),
            "wind_kmph": current.get("windspeedKmph"),
        }
        area = (data.get("nearest_area") or [{}])[0]
        if area:
            summary["area"] = _first_value(area.get("areaName"))
            summary["country"] = _first_value(area.get("country"))
        today = (data.get("weather") or [{}])[0]
        if today:
            summary["today_max_c"] = today.get("maxtempC")
            summary["today_min_c"] = today.get("mintempC")
        return {key: value for key, value in summary.items() if value is not None}
    return {"city": city, "data": _truncated(data, MAX_WEATHER_CHARS)}


def _first_value(entries: Any) -> Any:
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        return entries[0].get("value")
    return None


def _truncated(data: Any, budget: int) -> Any:
    """Keep whole top-level entries while the JSON stays under `budget` characters (an LLM prompt is small)."""
    if len(json.dumps(data)) <= budget:
        return data
    if isinstance(data, dict):
        kept: dict[str, Any] = {}
        for key, value in data.items():
            if len(json.dumps({**kept, key: value})) <= budget:
                kept[key] = value
        return kept
    if isinstance(data, list):
        items: list[Any] = []
        for item in data:
            if len(json.dumps([*items, item])) > budget:
                break
            items.append(item)
        return items
    return str(data)[:budget]
