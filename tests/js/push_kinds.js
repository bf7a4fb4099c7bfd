"use strict";
// The README's push handler ("Telling pushes apart: kind"), run as written by phoenix.js against a
// real gateway that sends it every kind of push. Run by tests/test_push_kinds.py, which starts the
// gateway (GENAPI_URL) and checks what this prints: one JSON object, how the handler classified
// every push of every call, the relayed messages each member got, and the raw payloads' kinds.
// (A plain script, not a `node --test` file: it needs the relay config of test_push_kinds.py.)

const fs = require("fs");
const path = require("path");
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const URL = process.env.GENAPI_URL;
const README = path.join(__dirname, "..", "..", "README.md");
const EVENT = "phoenix_gen_api";
const TOPIC = "room:kinds";
const WAIT = 20000; // ms: generous for a loaded machine; the run takes well under a second

function readmeHandler() {
  const m = /<!-- push-kinds-handler -->\n```js\n([\s\S]*?)```/.exec(fs.readFileSync(README, "utf8"));
  if (!m) throw new Error("README.md has no `<!-- push-kinds-handler -->` js block");
  return m[1];
}

function until(pred, what) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() - t0 > WAIT) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

async function member(name, handler, out) {
  const socket = new Socket(URL, { transport: WebSocket, params: { token: "let-me-in", user: name } });
  socket.connect();
  const channel = socket.channel(TOPIC, {});
  await new Promise((resolve, reject) => {
    channel.join().receive("ok", resolve).receive("error", (r) => reject(new Error(JSON.stringify(r))))
      .receive("timeout", () => reject(new Error("join timeout")));
  });
  const calls = new Map();
  const relays = (out.relays[name] = []);
  const raw = (out.raw[name] = []);
  channel.on(EVENT, (p) => raw.push([p.request_id, p.kind]));
  // the README's block, verbatim, with what it names in scope
  new Function("channel", "calls", "onRelay", handler)(channel, calls, (r) => relays.push([r.from_user_id, r.message]));
  let seq = 0;
  /** Sends one request; what the handler does with its pushes goes to out.events[request_id]. */
  const send = (service, requestType, args) => {
    const rid = `${name}-${requestType}-${++seq}`;
    const log = (out.events[rid] = []);
    let done;
    const finished = new Promise((resolve) => (done = resolve));
    calls.set(rid, {
      resolve: (result) => { log.push(["answer", result]); done(); },
      reject: (err) => { log.push(["error", err.message]); done(); },
      accepted: () => log.push(["accepted"]),
      started: () => log.push(["started"]),
      chunk: (result) => log.push(["chunk", result]),
      end: () => { log.push(["end"]); done(); },
    });
    channel.push(EVENT, { request_id: rid, service, request_type: requestType, args });
    return { rid, finished };
  };
  return { socket, send, relays };
}

async function main() {
  const handler = readmeHandler();
  const out = { events: {}, relays: {}, raw: {} };
  const alice = await member("alice", handler, out);
  const bob = await member("bob", handler, out);
  const settle = async (...calls) => {
    for (const c of calls) await Promise.race([c.finished, until(() => false, c.rid)]);
  };
  await settle(
    alice.send("t", "echo", { text: "hi" }),
    alice.send("t", "echo", { text: 1 }),
    alice.send("t", "slow", { ms: 20 }),
    alice.send("t", "gen", { n: 2 }),
    alice.send("t", "value", { text: "hi" }),
    alice.send("t", "broken", { n: 1 }),
  );
  const group = `kinds-${process.pid}`;
  await settle(alice.send("chat", "create_group", { group_id: group, group_type: "public" }));
  await settle(bob.send("chat", "join_group", { group_id: group }));
  await settle(alice.send("chat", "handle_relay", { group_id: group, message: "Hello!" }));
  await settle(bob.send("chat", "handle_relay", { group_id: group, message: "Hi alice" }));
  await until(() => alice.relays.length >= 2 && bob.relays.length >= 2, "both relayed messages at both members");
  await new Promise((r) => setTimeout(r, 100)); // anything more would show
  alice.socket.disconnect();
  bob.socket.disconnect();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
