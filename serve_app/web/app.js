// The page: wires the microphone, the player, the socket and the conversation view together, and
// speaks the native protocol (shared/PROTOCOL.md, section 1).

import { Connection, socketTarget, takeApiKey } from "./connection.js";
import { ConversationView } from "./conversation.js";
import { HealthMonitor } from "./health.js";
import { PHASE_LABELS, microphoneProblem, serverProblem } from "./messages.js";
import { Microphone } from "./microphone.js";
import { Player } from "./player.js";

const SUPPORTED_RATES = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
const SESSION_KEY = "openrealtime.sessionId";
const TOKEN_KEY = "openrealtime.resumeToken"; // the secret that proves the session is this tab's
const SEND_AS_IS_BYTES = 2 * 1024 * 1024; // larger pictures (phone photos) are scaled down first
const MAX_SIDE_PX = 2048;
const MAX_PENDING = 50;
const MAX_EVENTS = 1000;

const $ = (id) => document.getElementById(id);

// What the page has seen and done; tests read it (and so can anyone, in the console).
const seen = {
  connection: "connecting",
  sessionId: null,
  state: "off",
  phase: "off",
  opens: 0,
  resumes: 0,
  micOpen: false,
  micLevel: 0,
  chunksSent: 0,
  chunksReceived: 0,
  bytesReceived: 0,
  samplesScheduled: 0,
  samplesPlayed: 0,
  samplesDropped: 0,
  sourcesStarted: 0,
  sourcesEnded: 0,
  sourcesStopped: 0,
  droppedAfterStop: 0, // audio frames that arrived after stop_speaking, before the next response
  underruns: 0,
  stopSpeaking: 0,
  stops: [], // at each stop_speaking: {cut, activeAfter, unplayedMs} (taken right after the drop)
  audioCompletes: 0,
  interrupted: [],
  transcripts: [],
  partials: [],
  replies: [],
  tokens: 0,
  toolCalls: [],
  visionResults: [],
  errors: [],
  lastError: null,
  events: [],
};

const app = {
  context: null,
  player: null,
  mic: null,
  talking: false, // Start pressed and not stopped
  sessionWanted: false, // this page asked for a session (Start, a typed message or an image)
  acceptAudio: true, // false from stop_speaking until the next response begins
  pending: [], // messages typed while the socket was down
  retryAt: 0,
  resumeToken: null, // from session_started / session_resumed; a new one each time
};

const view = new ConversationView($("conversation"), $("partial"));
const connection = new Connection(socketTarget(takeApiKey()), {
  onOpen: opened,
  onMessage: received,
  onAudio: audioReceived,
  onStatus: connectionStatus,
});
const health = new HealthMonitor($("services"));

// ---- audio --------------------------------------------------------------------------------

function ensureAudio() {
  if (!app.context) {
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    let context = new AudioContextClass({ latencyHint: "interactive" });
    if (!SUPPORTED_RATES.includes(context.sampleRate)) {
      context.close();
      context = new AudioContextClass({ latencyHint: "interactive", sampleRate: 48000 });
    }
    app.context = context;
    app.player = new Player(context, seen);
    app.player.onIdle = renderPhase;
    seen.sampleRate = context.sampleRate;
  }
  if (app.context.state === "suspended") app.context.resume(); // allowed: we are in a click or key handler
  return app.context;
}

function sessionConfig() {
  // the server resamples the microphone from, and the reply to, the AudioContext's own rate
  const rate = app.context.sampleRate;
  return { inputSampleRate: rate, outputSampleRate: rate, binaryAudio: true };
}

function micChunk(pcm) {
  if (app.talking && app.sessionWanted && connection.sendAudio(pcm)) seen.chunksSent++;
}

function micLevel(level) {
  seen.micLevel = level;
  const percent = Math.round(level * 100);
  $("meter-fill").style.width = `${percent}%`;
  $("meter-fill").parentElement.setAttribute("aria-valuenow", String(percent));
}

function audioReceived(buffer) {
  seen.chunksReceived++;
  seen.bytesReceived += buffer.byteLength;
  if (!app.acceptAudio || !app.player) {
    seen.droppedAfterStop++;
    return;
  }
  app.player.enqueue(buffer);
  renderPhase();
}

function base64Audio(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

function silence() {
  if (app.player) app.player.stop();
  renderPhase();
}

// ---- the session -------------------------------------------------------------------------------

function startMessage() {
  const message = { type: "start_conversation", config: sessionConfig() };
  if (seen.sessionId) {
    message.sessionId = seen.sessionId;
    message.resumeToken = app.resumeToken;
  }
  return message;
}

function ensureSession() {
  if (app.sessionWanted) return;
  app.sessionWanted = true;
  connection.send(startMessage()); // when the socket is down, opened() sends it
}

function sendWhenConnected(message) {
  if (connection.open) connection.send(message);
  else if (app.pending.length < MAX_PENDING) {
    app.pending.push(message);
    view.note("Not connected: this will be sent when the connection is back.", "warn");
  }
}

function opened() {
  seen.opens++;
  if (seen.sessionId) {
    connection.send({ type: "resume_session", sessionId: seen.sessionId, resumeToken: app.resumeToken });
  }
  else if (app.sessionWanted) connection.send(startMessage());
  for (const message of app.pending.splice(0)) connection.send(message);
  health.check();
  renderPhase();
}

function rememberSession(id, token = null) {
  seen.sessionId = id;
  app.resumeToken = id ? token : null;
  try {
    if (id) sessionStorage.setItem(SESSION_KEY, id);
    else sessionStorage.removeItem(SESSION_KEY);
    if (id && token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: a reload starts a new conversation
  }
}

function setState(state) {
  seen.state = state;
  if (state === "thinking") app.acceptAudio = true; // a new response: its audio is wanted
  renderPhase();
}

function received(message) {
  seen.events.push(message.type);
  if (seen.events.length > MAX_EVENTS) seen.events.shift();
  switch (message.type) {
    case "session_started":
      rememberSession(message.sessionId, message.resumeToken);
      break;
    case "session_resumed":
      rememberSession(message.sessionId, message.resumeToken);
      seen.resumes++;
      if (view.isEmpty) view.restore(message.messages || []);
      else view.note("Reconnected. The conversation goes on.");
      setState(message.state);
      break;
    case "state_change":
      setState(message.state);
      break;
    case "transcript_partial":
      seen.partials.push(message.text);
      view.partial(message.text);
      break;
    case "transcript_final":
      seen.transcripts.push(message.text);
      view.userFinal(message.text);
      break;
    case "llm_token":
      seen.tokens++;
      if (message.token) view.token(message.token);
      break;
    case "llm_complete":
      seen.replies.push(message.fullText);
      view.replyComplete(message.fullText);
      break;
    case "audio_chunk":
      audioReceived(base64Audio(message.audio));
      break;
    case "audio_complete":
      seen.audioCompletes++;
      break;
    case "tool_call_start":
      seen.toolCalls.push({ toolName: message.toolName, args: message.args, callId: message.callId });
      view.toolStart(message);
      break;
    case "tool_call_result":
      view.toolResult(message);
      break;
    case "vision_result":
      seen.visionResults.push(message.description);
      view.visionResult(message.description);
      break;
    case "interrupted":
      seen.interrupted.push(message.reason);
      view.replyInterrupted(message.reason);
      break;
    case "stop_speaking": {
      seen.stopSpeaking++;
      app.acceptAudio = false;
      const unplayedMs = app.player ? Math.round(app.player.queuedSeconds * 1000) : 0;
      const cut = app.player ? app.player.stop() : 0;
      seen.stops.push({ cut, unplayedMs, activeAfter: app.player ? app.player.sources.size : 0 });
      renderPhase();
      break;
    }
    case "error":
      serverError(message);
      break;
    default:
      break; // pong, speech_started/stopped: nothing to show
  }
}

function serverError(error) {
  seen.errors.push(error);
  seen.lastError = error;
  if (error.code === "session_not_found" || error.code === "session_forbidden") {
    // the server no longer has it (a new database), or this tab's token is no longer its latest
    // (another tab resumed it since): start afresh, keeping what is on screen
    rememberSession(null);
    if (app.sessionWanted) connection.send(startMessage());
    return;
  }
  if (error.phase === "vision") view.imageFailed();
  const problem = serverProblem(error);
  showNotice(problem.text, `${error.message} (${error.phase}: ${error.code})`, problem.retry);
}

// ---- what a person does ----------------------------------------------------------------------

async function start() {
  ensureAudio();
  app.talking = true;
  app.acceptAudio = true;
  renderControls();
  try {
    app.mic = await Microphone.open(app.context, { onChunk: micChunk, onLevel: micLevel });
    seen.micOpen = true;
  } catch (error) {
    app.talking = false;
    seen.lastError = { phase: "microphone", code: error.kind || "other", message: error.message };
    showNotice(microphoneProblem(error), error.message);
    $("text").focus();
  }
  app.sessionWanted = true;
  connection.send(startMessage()); // listening from now on (also after a Stop)
  renderControls();
  renderPhase();
}

function stop() {
  app.talking = false;
  closeMicrophone();
  connection.send({ type: "stop_conversation" });
  app.acceptAudio = false;
  silence();
  renderControls();
}

function interrupt() {
  connection.send({ type: "interrupt" });
  app.acceptAudio = false; // until the next response begins
  silence();
}

function closeMicrophone() {
  if (app.mic) app.mic.close();
  app.mic = null;
  seen.micOpen = false;
  micLevel(0);
}

function sendText(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  ensureAudio();
  ensureSession();
  sendWhenConnected({ type: "user_message", text });
  input.value = "";
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function smallerImage(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, MAX_SIDE_PX / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.9);
}

async function sendImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showNotice("That file is not a picture. Try a PNG, JPEG, GIF or WebP image.", file.name);
    return;
  }
  ensureAudio();
  ensureSession();
  const input = $("text");
  const prompt = input.value.trim();
  input.value = "";
  let image;
  try {
    image = file.size > SEND_AS_IS_BYTES ? await smallerImage(file) : await readDataUrl(file);
  } catch (error) {
    showNotice("That picture could not be read.", String(error));
    return;
  }
  view.image(image, prompt);
  const message = { type: "upload_image", image };
  if (prompt) message.prompt = prompt;
  sendWhenConnected(message);
}

// ---- what the page shows -----------------------------------------------------------------------

function renderPhase() {
  let phase = seen.state;
  if (!connection.open) phase = "offline";
  else if (app.player && app.player.playing && phase === "listening") phase = "speaking"; // still playing out
  seen.phase = phase;
  let label = PHASE_LABELS[phase] || phase;
  if (phase === "listening" && !app.mic) label = "Ready (microphone off, type below)";
  $("phase").dataset.phase = phase;
  $("phase-label").textContent = label;
  $("interrupt").disabled = !["transcribing", "thinking", "speaking"].includes(phase);
}

function renderControls() {
  $("start").disabled = app.talking;
  $("stop").disabled = !app.talking;
}

function connectionStatus(state, detail) {
  seen.connection = state;
  const line = $("connection");
  line.dataset.state = state;
  $("reconnect").hidden = state !== "reconnecting";
  if (state === "reconnecting") {
    app.retryAt = Date.now() + detail.delay * 1000;
    line.textContent = `Connection lost. Reconnecting in ${detail.delay} s…`;
  } else if (state === "refused") {
    line.textContent = "The server refused the connection: an API key is missing or wrong. Add ?api_key=YOUR_KEY to the address.";
  } else if (state === "taken") {
    line.textContent = "This conversation was resumed in another tab or window. Reload to start a new one here.";
  } else if (state === "open") {
    line.textContent = "Connected";
  } else {
    line.textContent = "Connecting…";
  }
  renderPhase();
}

function tickCountdown() {
  if (seen.connection !== "reconnecting") return;
  const seconds = Math.max(0, Math.ceil((app.retryAt - Date.now()) / 1000));
  $("connection").textContent = `Connection lost. Reconnecting in ${seconds} s…`;
}

function showNotice(text, detail = "", retry = false) {
  $("notice-text").textContent = text;
  $("notice-detail").textContent = detail;
  $("notice-detail").hidden = !detail;
  $("retry").hidden = !retry;
  $("notice").hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

// ---- wiring --------------------------------------------------------------------------------------

function wire() {
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("interrupt").addEventListener("click", interrupt);
  $("composer").addEventListener("submit", sendText);
  $("pick-image").addEventListener("click", () => $("image-input").click());
  $("image-input").addEventListener("change", (event) => {
    sendImage(event.target.files[0]);
    event.target.value = "";
  });
  $("retry").addEventListener("click", () => {
    connection.send({ type: "retry_turn" });
    hideNotice();
  });
  $("dismiss").addEventListener("click", hideNotice);
  $("reconnect").addEventListener("click", () => connection.retryNow());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("interrupt").disabled) interrupt();
  });
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    document.body.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) sendImage(file);
  });
  setInterval(tickCountdown, 1000);
}

function boot() {
  try {
    seen.sessionId = sessionStorage.getItem(SESSION_KEY); // a reload resumes the conversation
    app.resumeToken = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    seen.sessionId = null;
  }
  wire();
  renderControls();
  renderPhase();
  connection.connect();
  health.start();
}

window.openRealtime = Object.assign(seen, {
  debug: {
    dropConnection: () => connection.drop(), // as if the network went away
    receive: (message) => received(message), // feed a server message to the page
    activeSources: () => (app.player ? app.player.sources.size : 0), // scheduled and not yet finished
  },
});

boot();
