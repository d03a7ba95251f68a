// Drive the official JavaScript SDK (@runware/sdk-js 1.3.2, from npm) against a local server.
//
// Run by tests/compat/test_js_sdk.py with node, never by hand in CI:
//
//   node drive_sdk_js.mjs --sdk <dir>/node_modules/@runware/sdk-js/dist/index.js \
//        --url ws://127.0.0.1:PORT/v1 --api-key KEY --image in.png --scenario upscale \
//        [--output-type URL|base64Data|dataURI] [--step-timeout 30]
//
// Scenarios: "upscale" (one upscale of the image as a data URI), "upload" (imageUpload, then
// an upscale of the returned imageUUID; then mediaStorage, then an upscale of the mediaUUID),
// "wrong-key" (an upscale with a key the server refuses). Every step is bounded by
// --step-timeout. It prints one JSON line: {sdk, version, results, uploads, error, elapsed_s}
// and exits 0 whatever happened; the test reads the line.

import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

function parseArgs(argv) {
  const args = { outputType: null, stepTimeout: 30, scenario: "upscale" };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "").replace(/-(.)/g, (_, c) => c.toUpperCase());
    args[name] = argv[i + 1];
  }
  args.stepTimeout = Number(args.stepTimeout);
  return args;
}

function bounded(step, promise, seconds) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${step} took over ${seconds} s`), { name: "StepTimeout" })), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describe(error, step) {
  // The SDK rejects with the server's error item itself, or with an Error.
  const item = error && typeof error === "object" ? (error.error ?? error) : { message: String(error) };
  return {
    step,
    type: error?.name ?? typeof error,
    code: item?.code ?? null,
    message: item?.message ?? String(error),
    parameter: item?.parameter ?? null,
    taskType: item?.taskType ?? null,
  };
}

const args = parseArgs(process.argv.slice(2));
const started = Date.now();
const report = { sdk: "@runware/sdk-js", version: null, results: [], uploads: [], error: null };
const { RunwareServer, SDK_VERSION } = await import(pathToFileURL(args.sdk).href);
report.version = SDK_VERSION ?? null;
const image = `data:image/png;base64,${readFileSync(args.image).toString("base64")}`;
const runware = new RunwareServer({
  apiKey: args.apiKey,
  url: args.url,
  shouldReconnect: false,
  globalMaxRetries: 1,
  timeoutDuration: args.stepTimeout * 1000,
});
let step = "connect";
try {
  await bounded(step, runware.ensureConnection(), args.stepTimeout);
  const upscale = (inputImage) => {
    const params = { inputImage, upscaleFactor: 2, model: "runware:503@1", deliveryMethod: "sync" };
    if (args.outputType) params.outputType = args.outputType;
    return bounded("upscale", runware.upscale(params), args.stepTimeout);
  };
  if (args.scenario === "upload") {
    step = "imageUpload";
    const uploaded = await bounded(step, runware.imageUpload({ image }), args.stepTimeout);
    report.uploads.push(uploaded);
    step = "upscale";
    report.results.push(await upscale(uploaded.imageUUID));
    step = "mediaStorage";
    const stored = await bounded(step, runware.mediaStorage({ media: image, operation: "upload" }), args.stepTimeout);
    report.uploads.push(stored);
    step = "upscale";
    report.results.push(await upscale(stored.mediaUUID));
  } else {
    step = "upscale";
    report.results.push(await upscale(image));
  }
} catch (error) {
  report.error = describe(error, step);
}
report.elapsed_s = (Date.now() - started) / 1000;
process.stdout.write(JSON.stringify(report) + "\n");
process.exit(0);
