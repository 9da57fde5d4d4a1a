"use strict";
// Helpers every test page shares (served at /common.js by tests/interop/chromium.py run_page).

const STEP_MS = 20000;

let logChain = Promise.resolve();
function log(message) {
  document.getElementById("log").textContent += message + "\n";
  const body = JSON.stringify(`${(performance.now() / 1000).toFixed(3)}s ${message}`);
  logChain = logChain.then(() => fetch("/log", { method: "POST", body }).catch(() => {}));
}

function hexToBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
  return bytes;
}

function withTimeout(promise, ms, what) {
  let timer;
  const expiry = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout: ${what} (${ms} ms)`)), ms);
  });
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}

// Run `run(config)` with the page's /config.json and POST {ok, result} (or the error) to /report.
async function reportRun(run) {
  try {
    const config = await (await fetch("/config.json")).json();
    const result = await run(config);
    await fetch("/report", { method: "POST", body: JSON.stringify({ ok: true, result }) });
  } catch (error) {
    log(`failed: ${error} ${error?.stack ?? ""}`);
    const body = { ok: false, error: String(error), name: error?.name ?? null, code: error?.code ?? null };
    await fetch("/report", { method: "POST", body: JSON.stringify(body) });
  }
}
