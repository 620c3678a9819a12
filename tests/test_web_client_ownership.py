"""The web client's side of ownership, in Debian's headless chromium against the in-process app (uvicorn,
real models): the API key leaves the address bar and never travels in a URL, the resume token is kept
and sent, and a take-over by another connection stops the page's reconnecting."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from fastapi.responses import FileResponse
from playwright.sync_api import sync_playwright
from websockets.sync.client import connect

from serve_app.host import SessionHost
from serve_app.ingress import WEB_DIR
from serve_app.service_health import ServiceHealth
from tests.live_server import LiveServer
from tests.session_harness import build_app, server_options
from tests.test_web_client import CHROMIUM, browser_page, page_state, wait_for

KEY = "page-key_1"


def app_with_page(models, db):
    options = server_options(db, spoken_reply_tokens=12).model_copy(update={"api_keys": [KEY]})
    health = ServiceHealth({"tts": models.tts.info}, interval_s=60, timeout_s=10)  # the status line polls it
    app = build_app(SessionHost(models, options), health)
    app.get("/")(lambda: FileResponse(WEB_DIR / "index.html"))
    app.get("/web/{name}")(lambda name: FileResponse(WEB_DIR / name))  # the page's own files, as the ingress serves
    return app


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system_deps.sh (apt-get install chromium)")
    with sync_playwright() as driver:
        yield driver


def test_the_key_leaves_the_address_the_token_resumes_and_a_take_over_stops_the_page(models, tmp_path, playwright):
    db = tmp_path / "db.sqlite3"
    with LiveServer(app_with_page(models, db)) as server:
        sockets: list[str] = []
        with browser_page(playwright, f"http://127.0.0.1:{server.port}/?api_key={KEY}", None) as page:
            page.on("websocket", lambda ws: sockets.append(ws.url))
            assert "api_key" not in page.url and KEY not in page.url  # out of the address bar, history and Referer
            page.fill("#text", "Hello there.")
            page.press("#text", "Enter")
            wait_for(page, "o.replies.length === 1 && o.sessionId", 120)
            session_id = page_state(page)["sessionId"]
            with sqlite3.connect(db) as store:  # the key reached the server (as a subprotocol): it owns the session
                [(owner,)] = store.execute("SELECT owner_key_hash FROM sessions WHERE id = ?", (session_id,))
            assert owner == hashlib.sha256(KEY.encode()).hexdigest()

            page.evaluate("window.openRealtime.debug.dropConnection()")  # a lost network: the page resumes
            wait_for(page, "o.resumes === 1 && o.connection === 'open' && o.opens === 2", 30)
            assert sockets and all(KEY not in url for url in sockets)
            token = page.evaluate("sessionStorage.getItem('openrealtime.resumeToken')")
            assert token and token != session_id

            # the same person on another device, with the page's current token: it takes the session over
            with connect(f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {KEY}"}) as other:
                other.send(json.dumps({"type": "resume_session", "sessionId": session_id, "resumeToken": token}))
                while json.loads(other.recv(timeout=30))["type"] != "session_resumed":
                    pass
                wait_for(page, "o.connection === 'taken'", 30)
                assert page.locator("#connection").inner_text().startswith("This conversation was resumed")
                assert page_state(page)["opens"] == 2  # it does not reconnect to take the session back

                page.reload()  # its token is spent: the page forgets the session instead of fighting for it
                wait_for(page, "o.connection === 'open' && o.errors.some(e => e.code === 'session_forbidden')", 30)
                assert page_state(page)["sessionId"] is None
                assert "api_key" not in page.url  # the key was kept for the tab, not put back in the address
                page.fill("#text", "A new start.")
                page.press("#text", "Enter")
                wait_for(page, "o.replies.length === 1 && o.sessionId", 120)
                assert page_state(page)["sessionId"] != session_id
