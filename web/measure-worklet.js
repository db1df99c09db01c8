// AudioWorklet processor of the measuring mode (?measure=1, measure.js): timestamps the onset of
// each marker tone (a short 2.5 kHz burst, benchmarks/markers.py) in one stream, on the audio
// context's own clock. It runs on the audio rendering thread, so an onset's time is the time of
// the very samples it was found in, not of whenever the page's main thread got round to looking.
//
// A block (about 5 ms) is "tone" when its level is high and the marker frequency holds most of
// its energy (the tone's DFT bin against the whole block); an onset is the first tone block
// after at least QUIET_S of non-tone. The same rule as the Python detector of the load tester.

const MARKER_HZ = 2500;
const BLOCK_S = 0.005;
const MIN_RMS = 2500 / 32768; // the Python detector's level, in full-scale units
const TONE_SHARE = 0.6;
const QUIET_S = 0.1;

class MarkerOnsets extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.label = (options.processorOptions && options.processorOptions.label) || "";
    this.n = Math.max(32, Math.round(sampleRate * BLOCK_S));
    this.cos = new Float32Array(this.n);
    this.sin = new Float32Array(this.n);
    for (let k = 0; k < this.n; k++) {
      this.cos[k] = Math.cos((2 * Math.PI * MARKER_HZ * k) / sampleRate);
      this.sin[k] = Math.sin((2 * Math.PI * MARKER_HZ * k) / sampleRate);
    }
    this.block = new Float32Array(this.n);
    this.fill = 0;
    this.blockStart = 0; // context time of the block's first sample
    this.quietBlocks = Infinity;
    this.quietNeeded = Math.ceil(QUIET_S / BLOCK_S);
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true; // no input connected yet (or the track ended): stay alive
    for (let i = 0; i < channel.length; i++) {
      if (this.fill === 0) this.blockStart = currentTime + i / sampleRate;
      this.block[this.fill++] = channel[i];
      if (this.fill === this.n) {
        this.fill = 0;
        this.judge();
      }
    }
    return true;
  }

  judge() {
    let energy = 0;
    let re = 0;
    let im = 0;
    for (let k = 0; k < this.n; k++) {
      const x = this.block[k];
      energy += x * x;
      re += x * this.cos[k];
      im += x * this.sin[k];
    }
    const tonePower = (2 * (re * re + im * im)) / this.n;
    const rms = Math.sqrt(energy / this.n);
    const tone = rms > MIN_RMS && tonePower > TONE_SHARE * energy;
    if (tone && this.quietBlocks >= this.quietNeeded) {
      this.port.postMessage({ label: this.label, t: this.blockStart });
    }
    this.quietBlocks = tone ? 0 : this.quietBlocks + 1;
  }
}

registerProcessor("marker-onsets", MarkerOnsets);
