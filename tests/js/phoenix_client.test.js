"use strict";
// phoenix.js (npm `phoenix`, 1.8.x) against a running genapi gateway serving the embedded demo.
// Run: GENAPI_URL=ws://127.0.0.1:PORT/socket GENAPI_TOKEN=$(genapi token --sub js-user) node --test tests/js/
// (tests/test_js_client.py starts the gateway and runs this for you.)
//
// Node 20 has no global WebSocket, so every Socket gets `transport: require("ws")`; without it
// phoenix.js silently falls back to LongPoll (see reference/phoenix-protocol.md section 7).

const { test } = require("node:test");
const assert = require("node:assert/strict");
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const URL = process.env.GENAPI_URL;
const TOKEN = process.env.GENAPI_TOKEN; // signed with the demo's jwt_secret
const EVENT = "phoenix_gen_api";
const SERVICE = "demo";
const T = 5000; // per-test timeout (ms); the whole file runs in ~2 s

if (!URL) {
  throw new Error("GENAPI_URL is not set (e.g. ws://127.0.0.1:4000/socket); run via tests/test_js_client.py");
}

let seq = 0;
const uid = (prefix) => `${prefix}-${process.pid}-${Date.now()}-${++seq}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects after `ms` with a message, so a missing frame fails fast with context. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Opens a phoenix Socket over `ws` and resolves once the transport is open. */
function openSocket(t, opts = {}) {
  const socket = new Socket(URL, { transport: WebSocket, timeout: 3000, ...opts });
  t.after(() => socket.disconnect());
  const opened = new Promise((resolve, reject) => {
    socket.onOpen(() => resolve(socket));
    socket.onError((err) => reject(new Error(`socket error before open: ${err && (err.message || err)}`)));
  });
  socket.connect();
  return withTimeout(opened, 3000, "socket open");
}

/** Joins `topic`; resolves with {channel, response} on ok, rejects on error/timeout. */
function join(socket, topic = uid("js:test")) {
  const channel = socket.channel(topic, {});
  return withTimeout(new Promise((resolve, reject) => {
    channel.join()
      .receive("ok", (response) => resolve({ channel, response }))
      .receive("error", (response) => {
        channel.leave(); // otherwise phoenix.js retries the join forever
        reject(new Error(`join error: ${JSON.stringify(response)}`));
      })
      .receive("timeout", () => reject(new Error("join timeout")));
  }), 4000, `join ${topic}`);
}

async function connectAndJoin(t, opts) {
  const socket = await openSocket(t, opts);
  const { channel, response } = await join(socket);
  return { socket, channel, response };
}

/**
 * Records every frame the channel sees on EVENT, in arrival order, interleaved with the
 * reply/timeouts of our own pushes: entries are {kind: "push", payload} or
 * {kind: "reply", status, response, request_id}.
 */
function recorder(channel) {
  const log = [];
  channel.on(EVENT, (payload) => log.push({ kind: "push", payload }));
  const waiters = new Set();
  const notify = () => waiters.forEach((w) => w());
  const origPush = log.push.bind(log);
  log.push = (...items) => { const n = origPush(...items); notify(); return n; };
  /** Resolves once pred(log) is truthy. */
  log.until = (pred, what, ms = 3000) => withTimeout(new Promise((resolve) => {
    const check = () => {
      const v = pred(log);
      if (v) { waiters.delete(check); resolve(v); }
    };
    waiters.add(check);
    check();
  }), ms, `${what}; log so far: ${JSON.stringify(log)}`);
  log.forRequest = (id) => log.filter((e) => (e.kind === "push" ? e.payload.request_id : e.request_id) === id);
  return log;
}

/** Pushes one gen_api request, logging its phx_reply into `log`. Returns the request_id. */
function request(channel, log, request_type, args, extra = {}) {
  const request_id = extra.request_id === undefined ? uid(request_type) : extra.request_id;
  const payload = { request_id, service: SERVICE, request_type, args, version: "1.0.0", ...extra };
  if (payload.request_id === null) delete payload.request_id;
  const tag = payload.request_id === undefined ? `no-id-${request_type}` : request_id;
  channel.push(EVENT, payload)
    .receive("ok", (response) => log.push({ kind: "reply", status: "ok", response, request_id: tag }))
    .receive("error", (response) => log.push({ kind: "reply", status: "error", response, request_id: tag }))
    .receive("timeout", () => log.push({ kind: "reply", status: "timeout", request_id: tag }));
  return tag;
}

const replyFor = (id) => (log) => log.find((e) => e.kind === "reply" && e.request_id === id);

/** The seven keys every Response carries, and genapi's `kind` beside them. */
function assertResponseShape(p) {
  assert.deepEqual(Object.keys(p).sort(),
    ["async", "can_retry", "error", "has_more", "kind", "request_id", "result", "success"]);
}

test("connect and join: ok reply", { timeout: T }, async (t) => {
  const { socket, channel, response } = await connectAndJoin(t);
  assert.ok(socket.isConnected());
  assert.equal(socket.connectionState(), "open");
  assert.ok(channel.state === "joined", `channel state ${channel.state}`);
  assert.deepEqual(response, {});
  assert.match(socket.endPointURL(), /\/socket\/websocket\?vsn=2\.0\.0$/);
});

test("sync echo: Response push arrives before the ok reply", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const id = request(channel, log, "echo", { text: "hello", n: 2 });
  await log.until(replyFor(id), "echo reply");
  const entries = log.forRequest(id);
  assert.equal(entries.length, 2, JSON.stringify(entries));
  const [push, reply] = entries;
  assert.equal(push.kind, "push", "the push must come before the phx_reply");
  assertResponseShape(push.payload);
  assert.deepEqual(push.payload, {
    kind: "answer", request_id: id, result: { text: "hello", n: 2 }, success: true, error: null,
    async: false, has_more: false, can_retry: false,
  });
  assert.deepEqual(reply, { kind: "reply", status: "ok", response: "echo", request_id: id });
});

test("async slow_echo: ack push, ok reply, then the final push", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const id = request(channel, log, "slow_echo", { text: "later", delay_ms: 150 });
  await log.until((l) => l.filter((e) => e.kind === "push" && e.payload.request_id === id).length >= 2,
    "slow_echo final push");
  const entries = log.forRequest(id);
  assert.equal(entries.length, 3, JSON.stringify(entries));
  const [ack, reply, final] = entries;
  assert.equal(ack.kind, "push");
  assert.deepEqual(ack.payload, {
    kind: "ack", request_id: id, result: null, success: true, error: null,
    async: true, has_more: false, can_retry: false,
  });
  assert.deepEqual(reply, { kind: "reply", status: "ok", response: "slow_echo", request_id: id });
  assert.equal(final.kind, "push");
  assert.deepEqual(final.payload, {
    kind: "answer", request_id: id, result: { text: "later", delay_ms: 150 }, success: true, error: null,
    async: false, has_more: false, can_retry: false,
  });
});

test("stream count n=3: init, 1, 2, 3, end", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const id = request(channel, log, "count", { n: 3 });
  await log.until((l) => replyFor(id)(l)
    && l.some((e) => e.kind === "push" && e.payload.request_id === id && !e.payload.has_more),
  "count stream end");
  await sleep(50); // nothing may follow the end
  const pushes = log.forRequest(id).filter((e) => e.kind === "push").map((e) => e.payload);
  pushes.forEach(assertResponseShape);
  assert.deepEqual(pushes.map((p) => [p.kind, p.result, p.has_more]),
    [["start", "init", true], ["chunk", 1, true], ["chunk", 2, true], ["chunk", 3, true], ["end", null, false]]);
  for (const p of pushes) {
    assert.equal(p.success, true);
    assert.equal(p.async, true);
    assert.equal(p.error, null);
  }
  // The first push ("init") precedes the reply.
  const entries = log.forRequest(id);
  assert.equal(entries[0].kind, "push");
  assert.equal(entries[0].payload.result, "init");
  assert.equal(entries[1].kind, "reply");
  assert.equal(entries[1].status, "ok");
  assert.equal(entries[1].response, "count");
});

test("fire-and-forget note: ok reply, no push; notes then lists the text", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const text = uid("note-text");
  const id = request(channel, log, "note", { text });
  await log.until(replyFor(id), "note reply");
  assert.deepEqual(replyFor(id)(log), { kind: "reply", status: "ok", response: "note", request_id: id });

  // The note runs in the worker pool: poll `notes` until it shows up.
  let found = false;
  for (let i = 0; i < 20 && !found; i++) {
    const nid = request(channel, log, "notes", {});
    await log.until(replyFor(nid), "notes reply");
    const [push] = log.forRequest(nid);
    assert.equal(push.kind, "push");
    assert.equal(push.payload.success, true, JSON.stringify(push.payload));
    assert.ok(Array.isArray(push.payload.result));
    found = push.payload.result.includes(text);
    if (!found) await sleep(50);
  }
  assert.ok(found, `notes never contained ${text}`);
  assert.deepEqual(log.forRequest(id).filter((e) => e.kind === "push"), [], "note must not push");
});

test("wrong argument type: success false, Invalid argument error", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const id = request(channel, log, "echo", { text: 123 });
  await log.until(replyFor(id), "echo reply");
  const [push, reply] = log.forRequest(id);
  assert.equal(push.kind, "push");
  assertResponseShape(push.payload);
  assert.equal(push.payload.request_id, id);
  assert.equal(push.payload.success, false);
  assert.equal(push.payload.result, null);
  assert.ok(push.payload.error.startsWith("Invalid argument: "), push.payload.error);
  assert.match(push.payload.error, /"text"/);
  assert.deepEqual(reply, { kind: "reply", status: "ok", response: "echo", request_id: id });
});

test("unknown function: unsupported function error", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const id = request(channel, log, "no_such_fn", {});
  await log.until(replyFor(id), "no_such_fn reply");
  const [push, reply] = log.forRequest(id);
  assert.equal(push.kind, "push");
  assertResponseShape(push.payload);
  assert.equal(push.payload.success, false);
  assert.equal(push.payload.error, "unsupported function: no_such_fn version 1.0.0");
  assert.deepEqual(reply, { kind: "reply", status: "ok", response: "no_such_fn", request_id: id });
});

test("permission: anonymous whoami is denied", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const id = request(channel, log, "whoami", {});
  await log.until(replyFor(id), "whoami reply");
  const [push, reply] = log.forRequest(id);
  assert.equal(push.kind, "push");
  assert.equal(push.payload.success, false);
  assert.equal(push.payload.error, "Permission denied");
  assert.equal(reply.status, "ok");
});

test("missing request_id: error push, then error reply", { timeout: T }, async (t) => {
  const { channel } = await connectAndJoin(t);
  const log = recorder(channel);
  const msg = "Invalid request: Missing required fields: request_id";
  const tag = request(channel, log, "echo", { text: "x" }, { request_id: null });
  await log.until(replyFor(tag), "error reply");
  assert.deepEqual(replyFor(tag)(log), { kind: "reply", status: "error", response: msg, request_id: tag });
  const pushes = log.forRequest("unknown");
  assert.equal(pushes.length, 1, JSON.stringify(log));
  assert.ok(log.indexOf(pushes[0]) < log.indexOf(replyFor(tag)(log)), "push must precede the reply");
  assert.deepEqual(pushes[0].payload, {
    kind: "error", request_id: "unknown", result: null, success: false, error: msg,
    async: false, has_more: false, can_retry: false,
  });
  // The channel is still usable afterwards.
  const id = request(channel, log, "echo", { text: "after" });
  await log.until(replyFor(id), "echo reply after the error");
  assert.equal(replyFor(id)(log).status, "ok");
});

// Every topic is joinable in the demo (topics = ["*"]), so "unmatched topic" is not tested here.

test("authToken: a token from `genapi token` connects (Sec-WebSocket-Protocol: phoenix) and names the user", { timeout: T }, async (t) => {
  const errors = [];
  assert.ok(TOKEN, "GENAPI_TOKEN is not set (tests/test_js_client.py sets it with `genapi token`)");
  const socket = await openSocket(t, { authToken: TOKEN });
  socket.onError((e) => errors.push(e));
  assert.equal(socket.conn.protocol, "phoenix", "server must select the 'phoenix' subprotocol");
  const { channel } = await join(socket);
  const log = recorder(channel);
  const id = request(channel, log, "echo", { text: "with token" });
  await log.until(replyFor(id), "echo reply");
  const [push] = log.forRequest(id);
  assert.equal(push.payload.success, true);
  assert.deepEqual(push.payload.result, { text: "with token", n: 1 });
  const who = request(channel, log, "whoami", {});
  await log.until(replyFor(who), "whoami reply");
  assert.equal(log.forRequest(who)[0].payload.result.user_id, "js-user");
  assert.deepEqual(errors, []);
});

test("heartbeat every 300 ms keeps the socket and channel alive", { timeout: T }, async (t) => {
  const socket = await openSocket(t, { heartbeatIntervalMs: 300 });
  const events = [];
  let heartbeatReplies = 0;
  socket.onError((e) => events.push(["socket error", String(e && (e.message || e))]));
  socket.onClose((e) => events.push(["socket close", e && e.code]));
  socket.onMessage((m) => {
    if (m.topic === "phoenix" && m.event === "phx_reply") {
      assert.equal(m.payload.status, "ok");
      heartbeatReplies++;
    }
  });
  const { channel } = await join(socket);
  channel.onError((reason) => events.push(["channel error", reason]));
  channel.onClose(() => events.push(["channel close"]));

  await sleep(1250);
  assert.deepEqual(events, [], "no heartbeat_timeout, error or close expected");
  assert.ok(heartbeatReplies >= 3, `expected >= 3 heartbeat replies, got ${heartbeatReplies}`);
  assert.ok(socket.isConnected());
  assert.equal(channel.state, "joined");

  const log = recorder(channel);
  const id = request(channel, log, "echo", { text: "still here" });
  await log.until(replyFor(id), "echo reply after heartbeats");
  assert.deepEqual(log.forRequest(id)[0].payload.result, { text: "still here", n: 1 });
});

// phoenix.js `socket.disconnect()` closes the WebSocket without a status code (empty close
// payload). RFC 6455 5.5.1/7.4: the server's answering close frame must then carry a valid
// code (the gateway answers 1000) and the client reports 1005.
test("disconnect without a code closes cleanly (no invalid close code)", { timeout: T }, async (t) => {
  const socket = await openSocket(t);
  await join(socket);
  const closed = new Promise((resolve) => socket.onClose((e) => resolve(e.code)));
  const conn = socket.conn;
  const transportErrors = [];
  const code = await withTimeout(new Promise((resolve) => {
    // phoenix.js silences onerror while closing; listen on the ws instance directly.
    conn.on("error", (e) => transportErrors.push(e.message));
    socket.disconnect();
    closed.then(resolve);
  }), 3000, "close event");
  assert.deepEqual(transportErrors, []);
  assert.ok([1000, 1005].includes(code), `close code ${code}`);
});

test("burst: 10 clients x 200 pipelined calls to a plain function all succeed", { timeout: 20000 }, async (t) => {
  // 200 at once is twice the default max_in_flight (100): the rest wait in the connection's
  // queue and run as slots free; none is refused.
  const clients = await Promise.all(Array.from({ length: 10 }, () => connectAndJoin(t)));
  const results = await Promise.all(clients.map(async ({ channel }) => {
    const log = recorder(channel);
    const ids = Array.from({ length: 200 }, (_, i) => request(channel, log, "blocking_sleep", { ms: 1 },
      { request_id: uid(`burst${i}`) }));
    await log.until((l) => l.filter((e) => e.kind === "reply").length === 200, "200 replies", 15000);
    return { log, ids };
  }));
  for (const { log, ids } of results) {
    const pushes = log.filter((e) => e.kind === "push").map((e) => e.payload);
    const failed = pushes.filter((p) => !p.success);
    assert.equal(failed.length, 0, `refused: ${JSON.stringify(failed.slice(0, 3))}`);
    assert.equal(pushes.length, 200);
    assert.ok(log.filter((e) => e.kind === "reply").every((r) => r.status === "ok"));
    assert.deepEqual(new Set(pushes.map((p) => p.request_id)), new Set(ids));
  }
});
