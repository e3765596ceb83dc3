// Scores a 16 kHz WAV file with a model exported by `emomon export` and prints the
// emotion shares as JSON: node score.mjs model.onnx speech.wav
// The whole file is one segment (0.3 s to 30 s); an adaptive model starts a fresh session.
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";

function readWav(path) {
  const b = readFileSync(path);
  if (b.toString("ascii", 0, 4) !== "RIFF" || b.toString("ascii", 8, 12) !== "WAVE")
    throw new Error(`${path} is not a WAV file`);
  let fmt, data;
  for (let at = 12; at + 8 <= b.length; ) {
    const id = b.toString("ascii", at, at + 4), size = b.readUInt32LE(at + 4);
    if (id === "fmt ") fmt = { format: b.readUInt16LE(at + 8), channels: b.readUInt16LE(at + 10),
                               rate: b.readUInt32LE(at + 12), bits: b.readUInt16LE(at + 22) };
    if (id === "data") data = b.subarray(at + 8, at + 8 + size);
    at += 8 + size + (size % 2);
  }
  if (!fmt || !data) throw new Error(`${path} has no fmt or data chunk`);
  if (fmt.rate !== 16000) throw new Error(`${path} is ${fmt.rate} Hz; the model takes 16000 Hz`);
  const pcm16 = fmt.format === 1 && fmt.bits === 16, f32 = fmt.format === 3 && fmt.bits === 32;
  if (!pcm16 && !f32) throw new Error(`${path} is neither 16-bit PCM nor 32-bit float`);
  const width = fmt.bits / 8, frames = Math.floor(data.length / (width * fmt.channels));
  const out = new Float32Array(frames);  // channels averaged
  for (let i = 0; i < frames; i++) {
    let sum = 0;
    for (let c = 0; c < fmt.channels; c++) {
      const at = (i * fmt.channels + c) * width;
      sum += pcm16 ? data.readInt16LE(at) / 32768 : data.readFloatLE(at);
    }
    out[i] = sum / fmt.channels;
  }
  return out;
}

const [model, wav] = process.argv.slice(2);
if (!model || !wav) { console.error("usage: node score.mjs model.onnx speech.wav"); process.exit(2); }
try {
  const session = await ort.InferenceSession.create(model);
  const samples = readWav(wav);
  // a batch of one segment: samples (1, N) and its length; a batch of several is zero-padded
  const feeds = {
    samples: new ort.Tensor("float32", samples, [1, samples.length]),
    lengths: new ort.Tensor("int64", BigInt64Array.from([BigInt(samples.length)]), [1]),
  };
  if (session.inputNames.includes("session")) {  // a speaker-adaptive model: a fresh session
    const dim = session.inputMetadata.find((i) => i.name === "session").shape[2];
    feeds.session = new ort.Tensor("float64", new Float64Array(3 * dim), [1, 3, dim]);
    feeds.update = new ort.Tensor("bool", [true], [1]);
  }
  const { shares, emotions } = await session.run(feeds, ["shares", "emotions"]);
  console.log(JSON.stringify(Object.fromEntries(emotions.data.map((e, i) => [e, shares.data[i]]))));
} catch (e) {
  console.error(`score.mjs: ${e.message}`);
  process.exit(1);
}
