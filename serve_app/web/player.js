// Gapless playback of the reply: each PCM16 chunk becomes an AudioBuffer scheduled to start exactly
// where the previous one ends. stop() drops everything queued within one render quantum: every
// scheduled source is stopped and the output node they share is silenced and disconnected.

const START_LEAD_S = 0.05; // headroom for the first chunk of a run (and after an underrun)

export class Player {
  constructor(context, counters) {
    this.context = context;
    this.counters = counters;
    this.rate = context.sampleRate;
    this.sources = new Set();
    this.nextStart = 0;
    this.oddByte = null; // a chunk boundary may split a sample
    this.onIdle = null;
    this.output = this.newOutput();
  }

  newOutput() {
    const output = this.context.createGain();
    output.connect(this.context.destination);
    return output;
  }

  get playing() {
    return this.sources.size > 0;
  }

  /** Seconds of audio scheduled but not yet played. */
  get queuedSeconds() {
    return this.sources.size ? Math.max(0, this.nextStart - this.context.currentTime) : 0;
  }

  enqueue(data) {
    let bytes = new Uint8Array(data);
    if (this.oddByte !== null) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this.oddByte;
      joined.set(bytes, 1);
      bytes = joined;
      this.oddByte = null;
    }
    if (bytes.length % 2) {
      this.oddByte = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    const count = bytes.length / 2;
    if (!count) return;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const buffer = this.context.createBuffer(1, count, this.rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) channel[i] = view.getInt16(2 * i, true) / 32768;

    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    const now = this.context.currentTime;
    if (this.nextStart < now + 0.005) {
      if (this.sources.size) this.counters.underruns++;
      this.nextStart = now + START_LEAD_S;
    }
    source.start(this.nextStart);
    this.nextStart += buffer.duration;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      this.counters.sourcesEnded++;
      this.counters.samplesPlayed += count;
      if (!this.sources.size && this.onIdle) this.onIdle();
    };
    this.counters.sourcesStarted++;
    this.counters.samplesScheduled += count;
  }

  /** Drop all queued audio now; returns how many sources were cut. */
  stop() {
    const cut = this.sources.size;
    const unplayed = this.queuedSeconds;
    this.output.gain.value = 0;
    this.output.disconnect();
    for (const source of this.sources) {
      source.onended = null;
      try {
        source.stop();
      } catch {
        // never started: nothing to stop
      }
      source.disconnect();
    }
    this.sources.clear();
    this.output = this.newOutput();
    this.nextStart = 0;
    this.oddByte = null;
    this.counters.sourcesStopped += cut;
    this.counters.samplesDropped += Math.round(unplayed * this.rate);
    if (cut && this.onIdle) this.onIdle();
    return cut;
  }
}
