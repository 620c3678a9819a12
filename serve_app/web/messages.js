// Problems in words a person understands. The server's own message is shown beside as the detail.

const MICROPHONE = {
  denied:
    "Microphone access is blocked. To allow it, click the icon at the left of the address bar (a lock " +
    "or a crossed-out microphone), set Microphone to Allow, then press Start again. Meanwhile you can " +
    "type your message below.",
  missing: "No microphone was found. Connect one and press Start again, or type your message below.",
  busy:
    "The microphone is in use by another app or could not be started. Close that app and press Start " +
    "again, or type your message below.",
  insecure:
    "The browser only allows the microphone on a secure page: open this page over https, or as " +
    "http://localhost on this machine. You can type your message below.",
  unsupported:
    "This browser cannot record audio here. Try a current Chrome, Edge, Firefox or Safari, or type " +
    "your message below.",
  other: "The microphone could not be started. You can type your message below.",
};

export function microphoneProblem(error) {
  return MICROPHONE[error.kind] || MICROPHONE.other;
}

const BY_CODE = {
  image_too_large: "That image is too large to analyse. Try a smaller one (under 10 MB).",
  not_an_image: "That file does not look like a picture. Try a PNG, JPEG, GIF or WebP image.",
  bad_audio: "Some microphone audio could not be used.",
  nothing_to_retry: "There is nothing to try again.",
  empty_message: "Type something first.",
};

const BY_PHASE = {
  stt: { text: "I could not turn what you said into text just now.", retry: true },
  llm: { text: "I could not come up with an answer just now.", retry: true },
  tts: { text: "The spoken answer is unavailable right now; you can still read it here." },
  vad: { text: "Voice detection is having trouble, so a simpler way of telling when you stop talking is used." },
  vision: { text: "I could not analyse that image." },
  tools: { text: "A tool the assistant tried to use failed." },
  audio: { text: "Some microphone audio could not be used." },
};

/** {text, retry}: what to tell the person about a server `error` event. */
export function serverProblem({ phase, code }) {
  if (BY_CODE[code]) return { text: BY_CODE[code], retry: false };
  const known = BY_PHASE[phase];
  return known ? { text: known.text, retry: Boolean(known.retry) } : { text: "Something went wrong.", retry: false };
}

export const PHASE_LABELS = {
  off: "Not started",
  offline: "Offline",
  idle: "Paused",
  listening: "Listening",
  transcribing: "Transcribing",
  thinking: "Thinking",
  speaking: "Speaking",
};
