// The microphone: getUserMedia (echo cancellation and noise suppression on) -> AudioWorklet ->
// PCM16 chunks of ~100 ms at the AudioContext's rate, plus a level for the meter.

const PROCESSOR_URL = new URL("./mic-processor.js", import.meta.url);
const loadedContexts = new WeakSet();

export class MicrophoneError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // denied | missing | busy | insecure | unsupported | other
  }
}

function classify(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MicrophoneError("denied", error.message);
    case "NotFoundError":
    case "OverconstrainedError":
      return new MicrophoneError("missing", error.message);
    case "NotReadableError":
    case "AbortError":
      return new MicrophoneError("busy", error.message);
    default:
      return new MicrophoneError("other", String((error && error.message) || error));
  }
}

export class Microphone {
  /** onChunk(ArrayBuffer of PCM16), onLevel(0..1) */
  static async open(context, { onChunk, onLevel }) {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new MicrophoneError("insecure", "getUserMedia is unavailable on an insecure page");
    }
    if (!context.audioWorklet) throw new MicrophoneError("unsupported", "AudioWorklet is unavailable");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (error) {
      throw classify(error);
    }
    if (!loadedContexts.has(context)) {
      await context.audioWorklet.addModule(PROCESSOR_URL);
      loadedContexts.add(context);
    }
    return new Microphone(context, stream, onChunk, onLevel);
  }

  constructor(context, stream, onChunk, onLevel) {
    this.stream = stream;
    this.source = context.createMediaStreamSource(stream);
    this.node = new AudioWorkletNode(context, "pcm16-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { chunkSamples: Math.round(context.sampleRate / 10) },
    });
    // a worklet is only pulled when connected to the destination: connect it through silence
    this.mute = context.createGain();
    this.mute.gain.value = 0;
    this.source.connect(this.node).connect(this.mute).connect(context.destination);
    this.node.port.onmessage = (event) => {
      onChunk(event.data.pcm);
      // -60 dBFS .. 0 dBFS -> 0 .. 1
      const db = 20 * Math.log10(Math.max(event.data.rms, 1e-6));
      onLevel(Math.min(1, Math.max(0, (db + 60) / 60)));
    };
  }

  close() {
    this.node.port.postMessage("stop");
    this.node.port.onmessage = null;
    this.source.disconnect();
    this.node.disconnect();
    this.mute.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}
