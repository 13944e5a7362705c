// Headless Chromium using a TURN server for real: one page, two RTCPeerConnections with
// iceTransportPolicy 'relay', so every candidate either side may use is a relayed address on
// the TURN server. Run by tests/tests/chromium.rs against icebreaker; usable by hand too:
//
//   node relay.mjs --url 'turn:127.0.0.1:3478?transport=udp' --username alice --credential secret
//   node relay.mjs --mode gather --url ... --username alice --credential wrong
//
// Options (or the environment variables in brackets):
//   --url URL          the TURN URL [TURN_URL]
//   --username NAME    [TURN_USERNAME]
//   --credential PASS  [TURN_CREDENTIAL]
//   --mode MODE        'connect' (default): data channel both ways, selected pair checked;
//                      'gather': gather candidates only and report how many are relayed
//   --timeout-ms N     the whole run's deadline, default 30000 [RELAY_TIMEOUT_MS]
//   --chromium PATH    the browser, default /usr/bin/chromium [CHROMIUM]
//
// Prints exactly one JSON line on stdout and exits 0 when the mode's expectation holds
// ('connect': connected, every message arrived both ways, the selected pair is relay/relay on
// both sides; 'gather': gathering completed), 1 otherwise, 2 on a usage error. Chromium's own
// log goes to stderr only with RELAY_DEBUG=1.

import { rmSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.TURN_URL },
    username: { type: 'string', default: process.env.TURN_USERNAME },
    credential: { type: 'string', default: process.env.TURN_CREDENTIAL },
    mode: { type: 'string', default: 'connect' },
    'timeout-ms': { type: 'string', default: process.env.RELAY_TIMEOUT_MS ?? '30000' },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    'trust-spki': { type: 'string', default: process.env.TRUST_SPKI },
  },
});
const timeoutMs = Number(opts['timeout-ms']);
if (!opts.url || opts.username === undefined || opts.credential === undefined
    || !['connect', 'gather'].includes(opts.mode) || !(timeoutMs > 0)) {
  console.error('usage: node relay.mjs --url TURN_URL --username NAME --credential PASS '
    + '[--mode connect|gather] [--timeout-ms N]');
  process.exit(2);
}

// Flags for a headless Chromium on a closed machine: no GPU, no QUIC, nothing phoned home
// (background networking, component updates, sync, first-run). Playwright passes some of
// these itself; passing them again is harmless and keeps the list explicit. The fresh, empty
// --user-data-dir is made below and given to launchPersistentContext (Playwright refuses the
// flag in args).
// --allow-loopback-in-peer-connection lets WebRTC use the loopback interface, where the TURN
// server listens. WebRtcHideLocalIpsWithMdns only concerns host candidates, which a 'relay'
// policy never gathers; it is disabled all the same, merged into Playwright's own
// --disable-features list, because Chromium keeps only the last --disable-features switch.
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
  // Chromium 156 still asks two Google services at start despite the flags above (seen with a
  // capture on the machine's other interface: DNS queries for update.googleapis.com, the
  // update_client, and accounts.google.com, Gaia's ListAccounts). Both are pointed at a
  // closed loopback port, so that nothing leaves the machine.
  '--component-updater=url-source=http://127.0.0.1:9',
  '--gaia-url=http://127.0.0.1:9',
];
// A `turns:` server's test certificate is trusted by its public key alone (the base64 SHA-256
// of its SubjectPublicKeyInfo): Chromium honours this switch only with a --user-data-dir, which
// every run has. Any other certificate is still refused.
const trustFlags = opts['trust-spki']
  ? [`--ignore-certificate-errors-spki-list=${opts['trust-spki']}`]
  : [];
const EXTRA_DISABLED_FEATURES = ['WebRtcHideLocalIpsWithMdns'];

const started = Date.now();
let context;
let userDataDir;
let done = false;

function finish(result, ok) {
  if (done) return;
  done = true;
  process.stdout.write(`${JSON.stringify({ ok, ...result, elapsedMs: Date.now() - started })}\n`);
  process.exitCode = ok ? 0 : 1;
}

const deadline = setTimeout(() => {
  finish({ mode: opts.mode, error: `timed out after ${timeoutMs} ms` }, false);
  // The browser may be wedged: Playwright kills it when this process exits.
  process.exit(1);
}, timeoutMs);

// Playwright's own --disable-features list, so that ours can be merged into it: Chromium reads
// only the last occurrence of the switch. Read from the arguments Playwright would pass,
// through a launch of a stand-in "browser" that prints them and exits.
async function playwrightDisabledFeatures() {
  const dir = await mkdtemp(join(tmpdir(), 'relay-args-'));
  const fake = join(dir, 'print-args');
  const out = join(dir, 'args');
  await writeFile(fake, `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done > '${out}'\nexit 1\n`);
  await chmod(fake, 0o755);
  try {
    await chromium.launch({ executablePath: fake, headless: true, timeout: 5000 });
  } catch {
    // Expected: the stand-in exits at once.
  }
  let switchValue = '';
  try {
    const args = (await readFile(out, 'utf8')).split('\n');
    switchValue = args.filter((a) => a.startsWith('--disable-features=')).at(-1) ?? '';
  } catch {
    // No arguments written: fall back to ours alone.
  }
  await rm(dir, { recursive: true, force: true });
  return switchValue;
}

// Runs in the page. Everything WebRTC happens here; the result is plain data.
async function inPage({ mode, iceServers, timeoutMs }) {
  const config = { iceServers, iceTransportPolicy: 'relay' };
  const deadline = Date.now() + timeoutMs;
  const left = () => Math.max(0, deadline - Date.now());
  const withTimeout = (promise, what) => Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), left())),
  ]);
  const track = (pc, name, out) => {
    out[name] = { candidates: [], errors: [], gathered: null };
    const gathered = new Promise((resolve) => {
      pc.addEventListener('icecandidate', (e) => {
        if (e.candidate) {
          out[name].candidates.push({ type: e.candidate.type, address: e.candidate.address,
            port: e.candidate.port, protocol: e.candidate.protocol });
        } else {
          resolve();
        }
      });
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
    });
    pc.addEventListener('icecandidateerror', (e) => {
      out[name].errors.push({ url: e.url, errorCode: e.errorCode, errorText: e.errorText });
    });
    return gathered;
  };

  if (mode === 'gather') {
    const out = {};
    const pc = new RTCPeerConnection(config);
    const gathered = track(pc, 'a', out);
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    let complete = true;
    try {
      await withTimeout(gathered, 'ICE gathering');
    } catch {
      complete = false;
    }
    const candidates = out.a.candidates;
    pc.close();
    return {
      gatheringComplete: complete,
      candidates: candidates.length,
      relayCandidates: candidates.filter((c) => c.type === 'relay').length,
      candidateErrors: out.a.errors,
    };
  }

  const out = {};
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  track(a, 'a', out);
  track(b, 'b', out);
  // Trickle ICE inside the page: each side's candidates go straight to the other.
  a.addEventListener('icecandidate', (e) => { if (e.candidate) b.addIceCandidate(e.candidate).catch(() => {}); });
  b.addEventListener('icecandidate', (e) => { if (e.candidate) a.addIceCandidate(e.candidate).catch(() => {}); });

  const COUNT = 5;
  const received = { ab: [], ba: [] };
  const channelA = a.createDataChannel('chat');
  const channelB = new Promise((resolve) => b.addEventListener('datachannel', (e) => resolve(e.channel)));
  const allArrived = (list) => new Promise((resolve) => {
    const check = () => { if (list.length >= COUNT) resolve(); };
    list.check = check;
  });
  const abDone = allArrived(received.ab);
  const baDone = allArrived(received.ba);

  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);

  const result = { connected: false, messagesAB: 0, messagesBA: 0 };
  try {
    await withTimeout(new Promise((resolve) => {
      if (channelA.readyState === 'open') resolve();
      channelA.addEventListener('open', () => resolve(), { once: true });
    }), 'data channel open on A');
    const chB = await withTimeout(channelB, 'data channel on B');
    await withTimeout(new Promise((resolve) => {
      if (chB.readyState === 'open') resolve();
      chB.addEventListener('open', () => resolve(), { once: true });
    }), 'data channel open on B');
    result.connected = true;
    chB.addEventListener('message', (e) => { received.ab.push(e.data); received.ab.check(); });
    channelA.addEventListener('message', (e) => { received.ba.push(e.data); received.ba.check(); });
    for (let i = 0; i < COUNT; i++) {
      channelA.send(`a->b ${i}`);
      chB.send(`b->a ${i}`);
    }
    await withTimeout(Promise.all([abDone, baDone]), 'messages');
  } catch (e) {
    result.error = String(e.message ?? e);
  }
  const expect = (prefix) => Array.from({ length: COUNT }, (_, i) => `${prefix} ${i}`);
  result.messagesAB = received.ab.length;
  result.messagesBA = received.ba.length;
  result.messagesIntact = JSON.stringify(received.ab) === JSON.stringify(expect('a->b'))
    && JSON.stringify(received.ba) === JSON.stringify(expect('b->a'));

  // The selected candidate pair of each side, from getStats().
  const selectedNow = async (pc) => {
    const stats = await pc.getStats();
    let pair;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
      });
    }
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      state: pair.state,
      localType: local?.candidateType,
      remoteType: remote?.candidateType,
      local: local && `${local.address}:${local.port}`,
      remote: remote && `${remote.address}:${remote.port}`,
      relayProtocol: local?.relayProtocol,
      url: local?.url,
      bytesSent: pair.bytesSent,
      bytesReceived: pair.bytesReceived,
    };
  };
  // The controlled side selects a pair when the peer nominates it, and its own check of that
  // pair (over TLS, slow on a loaded machine) may still be in progress then: give the check
  // up to 5 s to end before the pair is reported.
  const selected = async (pc) => {
    for (let tries = 1; ; tries++) {
      const pair = await selectedNow(pc);
      if (pair?.state === 'succeeded' || tries === 50) return pair;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  result.pairA = await selected(a);
  result.pairB = await selected(b);
  result.localType = result.pairA?.localType ?? null;
  result.remoteType = result.pairA?.remoteType ?? null;
  const all = [...out.a.candidates, ...out.b.candidates];
  result.candidates = all.length;
  result.relayCandidates = all.filter((c) => c.type === 'relay').length;
  result.relayCandidatesA = out.a.candidates.filter((c) => c.type === 'relay');
  result.relayCandidatesB = out.b.candidates.filter((c) => c.type === 'relay');
  result.candidateErrors = [...out.a.errors, ...out.b.errors];
  result.iceStates = [a.iceConnectionState, b.iceConnectionState];
  a.close();
  b.close();
  return result;
}

try {
  const playwrightFeatures = await playwrightDisabledFeatures();
  const disabled = [playwrightFeatures.replace(/^--disable-features=/, ''), ...EXTRA_DISABLED_FEATURES]
    .filter(Boolean).join(',');
  // The exact default switch is dropped and the merged one passed instead.
  const ignoreDefaultArgs = playwrightFeatures ? [playwrightFeatures] : [];
  userDataDir = await mkdtemp(join(tmpdir(), 'relay-chromium-'));
  // Also on the deadline's exit and after SIGTERM (Playwright closes the browser, then exits).
  process.on('exit', () => rmSync(userDataDir, { recursive: true, force: true }));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args: [...CHROMIUM_FLAGS, ...trustFlags, `--disable-features=${disabled}`],
    ignoreDefaultArgs,
    timeout: Math.min(timeoutMs, 20000),
    ...(process.env.RELAY_DEBUG ? { env: { ...process.env }, logger: {
      isEnabled: () => true,
      log: (name, severity, message) => console.error(`[${name}] ${message}`),
    } } : {}),
  });
  const page = context.pages()[0] ?? await context.newPage();
  if (process.env.RELAY_DEBUG) page.on('console', (m) => console.error(`[page] ${m.text()}`));
  const iceServers = [{ urls: opts.url, username: opts.username, credential: opts.credential }];
  const inPageTimeout = Math.max(1000, timeoutMs - (Date.now() - started) - 2000);
  const result = await page.evaluate(inPage, { mode: opts.mode, iceServers, timeoutMs: inPageTimeout });
  let ok;
  if (opts.mode === 'gather') {
    ok = result.gatheringComplete;
  } else {
    ok = result.connected && result.messagesAB === 5 && result.messagesBA === 5
      && result.messagesIntact
      && [result.pairA, result.pairB].every((p) => p && p.localType === 'relay' && p.remoteType === 'relay');
  }
  finish({ mode: opts.mode, ...result }, ok);
} catch (e) {
  finish({ mode: opts.mode, error: String(e?.message ?? e) }, false);
} finally {
  clearTimeout(deadline);
  await context?.close().catch(() => {});
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}
