// The WebSocket to GET /ws: JSON and binary frames, an app-level heartbeat, and reconnection with
// exponential backoff (1, 2, 4, 8 … 30 s). What to say after (re)connecting is the caller's job.

const MAX_BACKOFF_S = 30;
const PING_EVERY_MS = 15000;
const SILENT_LIMIT_MS = 45000; // nothing heard for this long (not even a pong): the link is dead
const POLICY_VIOLATION = 1008;
const TAKEN_OVER = 4409; // the server: this session was resumed by another connection
const KEY_STORAGE = "openrealtime.apiKey";
const SUBPROTOCOL = "openrealtime";
const KEY_SUBPROTOCOL = "openrealtime.api-key.";
const TOKEN_CHARS = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/; // what a subprotocol name may hold

/**
 * The API key given as ?api_key= in the page's address, taken out of the address at once (so it
 * stays out of history, bookmarks, shared links and Referer headers) and kept for this tab only.
 */
export function takeApiKey() {
  const address = new URL(window.location.href);
  let key = address.searchParams.get("api_key");
  if (key !== null) {
    address.searchParams.delete("api_key");
    window.history.replaceState(window.history.state, "", address.toString());
  }
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else key = sessionStorage.getItem(KEY_STORAGE);
  } catch {
    // storage disabled: the key lasts as long as the page
  }
  return key || null;
}

/**
 * Where and how to open the socket. Browsers cannot set headers on a WebSocket, so the key is offered
 * as a subprotocol (the server selects "openrealtime"); only a key with characters a subprotocol
 * cannot carry falls back to the query parameter.
 */
export function socketTarget(key) {
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  if (!key) return { url: url.toString(), protocols: [] };
  if (TOKEN_CHARS.test(key)) return { url: url.toString(), protocols: [SUBPROTOCOL, KEY_SUBPROTOCOL + key] };
  url.searchParams.set("api_key", key);
  return { url: url.toString(), protocols: [] };
}

export class Connection {
  constructor({ url, protocols }, { onOpen, onMessage, onAudio, onStatus }) {
    this.url = url;
    this.protocols = protocols;
    this.handlers = { onOpen, onMessage, onAudio, onStatus };
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.heartbeat = null;
    this.lastHeard = 0;
    this.stopped = false;
  }

  get open() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.status("connecting");
    const socket = new WebSocket(this.url, this.protocols);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      this.lastHeard = Date.now();
      this.heartbeat = setInterval(() => this.beat(), PING_EVERY_MS);
      this.status("open");
      this.handlers.onOpen();
    };
    socket.onmessage = (event) => {
      this.lastHeard = Date.now();
      this.attempt = 0; // the server talks to us: the next loss starts the backoff again at 1 s
      if (typeof event.data === "string") {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        this.handlers.onMessage(message);
      } else {
        this.handlers.onAudio(event.data);
      }
    };
    socket.onclose = (event) => this.closed(socket, event);
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    clearInterval(this.heartbeat);
    this.socket = null;
    if (this.stopped) return;
    if (event.code === POLICY_VIOLATION) {
      this.status("refused", { reason: event.reason });
      return; // a bad API key does not get better by retrying
    }
    if (event.code === TAKEN_OVER) {
      this.status("taken", { reason: event.reason });
      return; // resuming here would take it back from the other tab, which would take it back again …
    }
    const delay = Math.min(MAX_BACKOFF_S, 2 ** this.attempt);
    this.attempt++;
    this.status("reconnecting", { delay, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this.connect(), delay * 1000);
  }

  beat() {
    if (Date.now() - this.lastHeard > SILENT_LIMIT_MS) {
      this.socket.close(4000, "no answer to pings");
      return;
    }
    this.send({ type: "ping", t: Date.now() });
  }

  status(state, detail = {}) {
    this.handlers.onStatus(state, detail);
  }

  send(message) {
    if (!this.open) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  sendAudio(buffer) {
    if (!this.open) return false;
    this.socket.send(buffer);
    return true;
  }

  /** Close the socket as a lost network would; the usual reconnection follows. */
  drop() {
    if (this.socket) this.socket.close(4001, "dropped by the page");
  }

  /** Reconnect now instead of waiting out the backoff. */
  retryNow() {
    if (this.retryTimer !== null) this.connect();
  }
}
