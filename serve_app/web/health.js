// Each model service's health, from GET /health, shown in the status line.

const EVERY_MS = 15000;
const TIMEOUT_MS = 8000;
const WORDS = { ok: "ok", disabled: "off", timeout: "slow", error: "down" };
const NAMES = { vad: "VAD", stt: "STT", llm: "LLM", tts: "TTS", vision: "Vision", smart_turn: "Turn" };

export class HealthMonitor {
  constructor(list) {
    this.list = list;
    this.timer = null;
  }

  start() {
    this.check();
    this.timer = setInterval(() => this.check(), EVERY_MS);
  }

  async check() {
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(new URL("health", window.location.href), { signal: abort.signal, cache: "no-store" });
      const body = await response.json();
      this.render(body.services || {});
    } catch {
      this.render(null);
    } finally {
      clearTimeout(timeout);
    }
  }

  render(services) {
    this.list.replaceChildren();
    if (services === null) {
      const item = document.createElement("li");
      item.className = "svc unknown";
      item.textContent = "services: unknown";
      this.list.append(item);
      return;
    }
    for (const [name, info] of Object.entries(services)) {
      const status = (info && info.status) || "unknown";
      const item = document.createElement("li");
      item.className = `svc ${status}`;
      item.dataset.service = name;
      item.textContent = `${NAMES[name] || name} ${WORDS[status] || status}`;
      if (info && info.error) item.title = info.error;
      this.list.append(item);
    }
  }
}
