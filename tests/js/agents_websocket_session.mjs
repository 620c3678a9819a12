// One conversation with the server through the OpenAI Agents SDK for JavaScript (@openai/agents),
// over its WebSocket transport, as a Node app would hold it. Driven by tests/test_js_agents_sdk.py.
//
//   node agents_websocket_session.mjs '{"url": "ws://127.0.0.1:PORT/v1/realtime?model=x",
//                                      "speech": "/tmp/question.pcm", "barge_in": "/tmp/interruption.pcm"}'
//
// `speech` and `barge_in` are raw PCM16 LE mono 24 kHz files (the SDK's default input format).
// Steps: a spoken turn with the SDK's default session (semantic_vad, gpt-4o-mini-transcribe), a
// typed turn, a long reply stopped with session.interrupt(), a spoken barge-in over a reply, and a
// tool the agent defines (get_weather) called and answered. After each step the SDK's own
// `session.history` is captured.
//
// Every server event is also parsed with the SDK's own zod schemas (realtimeServerEventSchema, and
// the history item schemas it applies to message and tool items): a failure is recorded, not
// thrown, so one run lists all of them. The report is the last line of stdout, as JSON.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession, tool } from '@openai/agents/realtime';
import { z } from 'zod';

// The schemas are not exported by the package; load them from the file the SDK itself uses.
const require = createRequire(import.meta.url);
const realtimeDist = path.dirname(require.resolve('@openai/agents-realtime'));
const { realtimeServerEventSchema } = await import(path.join(realtimeDist, 'openaiRealtimeEvents.mjs'));
const { realtimeMessageItemSchema, realtimeToolCallItem } = await import(path.join(realtimeDist, 'items.mjs'));

const options = JSON.parse(process.argv[2]);
const STEP_TIMEOUT_MS = options.step_timeout_ms ?? 60000;
const CHUNK_BYTES = 24000 * 2 / 50; // 20 ms of 24 kHz PCM16, what a browser mic worklet sends

const KNOWN_TYPES = new Set(realtimeServerEventSchema.options.map((o) => o.shape.type.value));
const schemaFailures = [];
const received = [];
const errors = [];

/** One line per (event type, schema, problem); repeats are counted, not listed again. */
function fail(type, schema, problem) {
  const known = schemaFailures.find((f) => f.type === type && f.schema === schema && f.problem === problem);
  if (known) known.count += 1;
  else schemaFailures.push({ type, schema, problem, count: 1 });
}

/** Parses each event as the SDK would and records what its schemas reject, before the SDK sees it. */
class CheckedWebSocket extends OpenAIRealtimeWebSocket {
  _onMessage(message) {
    let raw;
    try {
      raw = JSON.parse(message.data.toString());
    } catch {
      fail('(not JSON)', 'JSON', String(message.data).slice(0, 200));
      return;
    }
    received.push(raw.type);
    if (KNOWN_TYPES.has(raw.type)) {
      const parsed = realtimeServerEventSchema.safeParse(raw);
      if (!parsed.success) {
        fail(raw.type, 'realtimeServerEventSchema', z.prettifyError(parsed.error));
      } else {
        checkItem(raw);
      }
    }
    try {
      super._onMessage(message);
    } catch (error) {
      // The SDK throws from its socket listener here: in a Node app the process dies.
      fail(raw.type, 'thrown by the SDK', String(error?.message ?? error).slice(0, 300));
    }
  }
}

function checkItem(event) {
  const item = event.item;
  if (!item) return;
  let parsed;
  if (item.type === 'message' && ['conversation.item.added', 'conversation.item.done',
    'conversation.item.retrieved'].includes(event.type)) {
    parsed = realtimeMessageItemSchema.safeParse({
      itemId: item.id, previousItemId: event.previous_item_id, type: item.type, role: item.role,
      content: item.content, status: item.status ?? 'completed',
    });
  } else if (item.type === 'function_call' && item.status === 'completed') {
    parsed = realtimeToolCallItem.safeParse({
      itemId: item.id, type: item.type, status: 'in_progress', arguments: item.arguments, name: item.name,
      output: null,
    });
  }
  if (parsed && !parsed.success) {
    fail(event.type, 'history item', z.prettifyError(parsed.error));
  }
}

const getWeather = tool({
  name: 'get_weather',
  description: 'Get the current weather for a city.',
  parameters: z.object({ city: z.string() }),
  execute: async ({ city }) => {
    toolCalls.push(city);
    return JSON.stringify({ city, temp_c: 21, sky: 'sunny' });
  },
});
const toolCalls = [];

const agent = new RealtimeAgent({
  name: 'Assistant',
  instructions: 'You are a helpful voice assistant. Answer in one short sentence.',
  tools: [getWeather],
});
const transport = new CheckedWebSocket();
const session = new RealtimeSession(agent, { transport, model: 'openrealtime' });
session.on('error', (event) => errors.push(String(event?.error?.error?.message ?? event?.error?.message
  ?? JSON.stringify(event?.error ?? event))));

// ---- helpers --------------------------------------------------------------------------------

function waitFor(name, predicate, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      session.off(name, listener);
      reject(new Error(`timed out waiting for ${what}; received: ${received.slice(-30).join(', ')}`));
    }, STEP_TIMEOUT_MS);
    const listener = (...args) => {
      if (predicate(...args)) {
        clearTimeout(timer);
        session.off(name, listener);
        resolve(args);
      }
    };
    session.on(name, listener);
  });
}

/** Resolves once `session.history` satisfies `predicate` (checked now and on every update). */
function historyWhere(predicate, what) {
  if (predicate(session.history)) return Promise.resolve(session.history);
  return waitFor('history_updated', (history) => predicate(history), what).then(([history]) => history);
}

function nextTransport(type, what = type) {
  return waitFor('transport_event', (event) => event.type === type, what).then(([event]) => event);
}

async function speak(file, { trailingSilenceS = 0 } = {}) {
  const pcm = readFileSync(file);
  const silence = Buffer.alloc(Math.round(24000 * 2 * trailingSilenceS));
  const audio = Buffer.concat([pcm, silence]);
  for (let start = 0; start < audio.length; start += CHUNK_BYTES) {
    const chunk = audio.subarray(start, start + CHUNK_BYTES);
    session.sendAudio(chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength));
  }
}

function snapshot(history) {
  return history.map((item) => JSON.parse(JSON.stringify(item)));
}

const itemsAfter = (history, count) => history.slice(count);
const assistantText = (item) => (item.content ?? []).map((c) => c.transcript ?? c.text ?? '').join('');
const isDone = (item) => item.status === 'completed' || item.status === 'incomplete';

// ---- the conversation ---------------------------------------------------------------------------

const report = { steps: {}, schema_failures: schemaFailures, errors, tool_calls: toolCalls };
try {
  await session.connect({ apiKey: options.api_key ?? 'sk-local', url: options.url });
  const created = await nextTransport('session.updated', 'the session.update the SDK sends on connect');
  report.session = created.session;

  // 1. a spoken question, with the SDK's default turn detection (semantic_vad)
  let before = session.history.length;
  const voiceEnd = waitFor('agent_end', () => true, 'the answer to the spoken question');
  await speak(options.speech, { trailingSilenceS: 3 });
  const [, , voiceAnswer] = await voiceEnd;
  let history = await historyWhere((h) => {
    const added = itemsAfter(h, before);
    const user = added.find((i) => i.role === 'user');
    const reply = added.find((i) => i.role === 'assistant');
    return user?.content?.[0]?.transcript && reply && isDone(reply) && assistantText(reply);
  }, 'the spoken turn in session.history');
  report.steps.voice = { answer: voiceAnswer, history: snapshot(itemsAfter(history, before)) };

  // 2. a typed question
  before = session.history.length;
  const textEnd = waitFor('agent_end', () => true, 'the answer to the typed question');
  session.sendMessage(options.typed_question ?? 'What is the capital of France?');
  const [, , textAnswer] = await textEnd;
  history = await historyWhere((h) => {
    const reply = itemsAfter(h, before).find((i) => i.role === 'assistant');
    return reply && isDone(reply) && assistantText(reply);
  }, 'the typed turn in session.history');
  report.steps.text = { answer: textAnswer, history: snapshot(itemsAfter(history, before)) };

  // 3. a long reply stopped by the app (a "stop" button): session.interrupt()
  before = session.history.length;
  let audioBytes = 0;
  const onAudio = (event) => { audioBytes += event.data.byteLength; };
  transport.on('audio', onAudio);
  session.sendMessage('Tell me a long story about the sea.');
  await waitFor('transport_event', (event) => event.type === 'response.output_audio.delta' && audioBytes >= 24000 * 2,
    'a second of the long reply');
  const cancelled = nextTransport('response.done', 'the cancelled response');
  const truncated = nextTransport('conversation.item.truncated', 'the truncation');
  session.interrupt();
  const [cancelledDone, truncatedEvent] = await Promise.all([cancelled, truncated]);
  history = await historyWhere((h) => {
    const reply = itemsAfter(h, before).find((i) => i.role === 'assistant');
    return reply && reply.status === 'incomplete';
  }, 'the interrupted reply in session.history');
  // the SDK re-reads the item after `truncated`; wait for the retrieved copy to land
  await nextTransport('conversation.item.retrieved', 'the truncated item re-read').catch(() => null);
  report.steps.interrupt = {
    status: cancelledDone.response.status, reason: cancelledDone.response.status_details?.reason,
    audio_end_ms: truncatedEvent.audio_end_ms, audio_received_ms: audioBytes / 48,
    history: snapshot(itemsAfter(session.history, before)),
  };
  transport.off('audio', onAudio);

  // 4. a spoken barge-in over a reply: the server's VAD cancels it, the SDK truncates what was heard
  before = session.history.length;
  audioBytes = 0;
  transport.on('audio', onAudio);
  session.sendMessage('Tell me another long story about a ship.');
  await waitFor('transport_event', (event) => event.type === 'response.output_audio.delta' && audioBytes >= 24000 * 2,
    'a second of the second long reply');
  const bargedDone = nextTransport('response.done', 'the response the barge-in cancelled');
  const bargedTruncated = nextTransport('conversation.item.truncated', 'the barge-in truncation');
  const answered = waitFor('agent_end', () => true, 'the answer to the barge-in');
  await speak(options.barge_in, { trailingSilenceS: 3 });
  const [bargedEvent, bargedTrunc] = await Promise.all([bargedDone, bargedTruncated]);
  await answered;
  transport.off('audio', onAudio);
  history = await historyWhere((h) => {
    const added = itemsAfter(h, before);
    return added.filter((i) => i.role === 'assistant' && isDone(i)).length >= 2
      && added.some((i) => i.role === 'user' && i.content?.[0]?.transcript);
  }, 'the barge-in turn in session.history');
  report.steps.barge_in = {
    status: bargedEvent.response.status, reason: bargedEvent.response.status_details?.reason,
    audio_end_ms: bargedTrunc.audio_end_ms, history: snapshot(itemsAfter(history, before)),
  };

  // 5. a tool the agent defines: the server calls it, the SDK runs it and asks for the answer
  before = session.history.length;
  const toolEnd = waitFor('agent_tool_end', () => true, 'the tool call');
  session.sendMessage('What is the weather in Paris?');
  await toolEnd;
  history = await historyWhere((h) => {
    const added = itemsAfter(h, before);
    const call = added.find((i) => i.type === 'function_call');
    const reply = added.filter((i) => i.role === 'assistant').at(-1);
    return call?.output && reply && isDone(reply) && assistantText(reply)
      && added.indexOf(reply) > added.indexOf(call);
  }, 'the tool round trip in session.history');
  report.steps.tool = { history: snapshot(itemsAfter(history, before)) };
} catch (error) {
  report.failure = String(error?.stack ?? error);
} finally {
  session.close();
}
report.received_types = [...new Set(received)];
console.log(JSON.stringify(report));
process.exit(0);
