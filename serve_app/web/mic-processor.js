// AudioWorklet: microphone samples (float, at the AudioContext's rate) -> PCM16 chunks of ~100 ms.
// Runs on the audio rendering thread; each full chunk is transferred (not copied) to the page,
// with its RMS level for the meter.

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.chunkSamples;
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
    this.sumSquares = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const samples = inputs[0] && inputs[0][0];
    if (!samples) return true; // no input connected yet
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      this.sumSquares += s * s;
      this.chunk[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.size) this.flush();
    }
    return true;
  }

  flush() {
    const rms = Math.sqrt(this.sumSquares / this.size);
    this.port.postMessage({ pcm: this.chunk.buffer, rms }, [this.chunk.buffer]);
    this.chunk = new Int16Array(this.size);
    this.filled = 0;
    this.sumSquares = 0;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
