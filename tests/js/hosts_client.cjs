"use strict";
// phoenix.js clients for tests/test_nginx_hosts.py (not a node:test file: the test drives it).
// Reads a plan as JSON on stdin:
//   {"url": "ws://127.0.0.1:PORT/socket",
//    "clients": [{"token": "...", "local": "127.0.0.2"}, ...],   // `local`: the source address
//    "calls": [[client, service, request_type, args], ...],      // in this order, one at a time
//    "relay": {"group": "g", "sends": [[client, n], ...]}}      // optional, after the calls
// opens every client's Socket (each from its own loopback source address, so nginx's
// X-Forwarded-For names it), joins "api:hosts" on each, makes the calls, and prints one JSON
// object: {"answers": [the Response push, or {"reply": status, "response": ...} if none], ...,
// "relayed": [each client's relayed messages, in the order received]}. With "relay": client 0
// creates the public group `chat.<group>`, every other client joins it, then each send in
// order is `chat.handle_relay` of {"from": client, "n": n}; every client (senders included)
// then waits until it has received a copy of every send.

const { Socket } = require("phoenix");
const WebSocket = require("ws");

const EVENT = "phoenix_gen_api";
const T = 10000; // per step (ms): generous, a loaded 2-core machine

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The `ws` transport, connecting from `local` (phoenix.js gives the transport no options). */
function transportFrom(local) {
  return class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { localAddress: local });
    }
  };
}

async function open(url, { token, local }) {
  const socket = new Socket(url, { transport: transportFrom(local), timeout: T, params: { token } });
  const opened = new Promise((resolve, reject) => {
    socket.onOpen(() => resolve());
    socket.onError((err) => reject(new Error(`socket error before open: ${err && (err.message || err)}`)));
  });
  socket.connect();
  await withTimeout(opened, T, `socket open from ${local}`);
  const channel = socket.channel("api:hosts", {});
  await withTimeout(new Promise((resolve, reject) => {
    channel.join()
      .receive("ok", resolve)
      .receive("error", (r) => reject(new Error(`join error: ${JSON.stringify(r)}`)))
      .receive("timeout", () => reject(new Error("join timeout")));
  }), T, "join");
  const relayed = [];
  channel.on(EVENT, (p) => { if (p.kind === "relay") relayed.push(p.result); });
  return { socket, channel, relayed };
}

let seq = 0;

/** One call: resolves with its final Response push (or the reply, when no push comes). */
function call(channel, service, request_type, args) {
  const request_id = `hosts-${process.pid}-${++seq}`;
  return withTimeout(new Promise((resolve) => {
    const ref = channel.on(EVENT, (p) => {
      if (p.kind !== "relay" && p.request_id === request_id && !p.has_more && !(p.async && p.result === null && p.success)) {
        channel.off(EVENT, ref);
        resolve(p);
      }
    });
    channel.push(EVENT, { request_id, service, request_type, args })
      .receive("error", (response) => { channel.off(EVENT, ref); resolve({ reply: "error", response }); })
      .receive("timeout", () => { channel.off(EVENT, ref); resolve({ reply: "timeout" }); });
  }), T, `${service}.${request_type} ${request_id}`);
}

async function main() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const plan = JSON.parse(input);
  const clients = [];
  for (const c of plan.clients) clients.push(await open(plan.url, c));
  const answers = [];
  for (const [i, service, requestType, args] of plan.calls) {
    answers.push(await call(clients[i].channel, service, requestType, args));
  }
  if (plan.relay) {
    const group_id = plan.relay.group;
    answers.push(await call(clients[0].channel, "chat", "create_group", { group_id, group_type: "public" }));
    for (const c of clients.slice(1)) answers.push(await call(c.channel, "chat", "join_group", { group_id }));
    for (const [i, n] of plan.relay.sends) {
      answers.push(await call(clients[i].channel, "chat", "handle_relay", { group_id, message: { from: i, n } }));
    }
    const want = plan.relay.sends.length;
    await withTimeout(new Promise((resolve) => {
      const poll = setInterval(() => {
        if (clients.every((c) => c.relayed.length >= want)) { clearInterval(poll); resolve(); }
      }, 20);
    }), T, `every client receiving ${want} relayed messages`).catch((err) => {
      throw new Error(`${err.message} (received: ${clients.map((c) => c.relayed.length).join(", ")}; answers: ${JSON.stringify(answers.slice(-5))})`);
    });
    await new Promise((resolve) => setTimeout(resolve, 200)); // a duplicate would arrive by now
  }
  for (const { socket } of clients) socket.disconnect();
  process.stdout.write(JSON.stringify({ answers, relayed: clients.map((c) => c.relayed) }) + "\n");
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
