// A small Phoenix Channels client (the V2 JSON protocol: each frame an array
// [join_ref, ref, topic, event, payload]) for genapi's pages: no dependencies, no build step.
// Every frame sent and received is handed to `onFrame(direction, text)`.
"use strict";

class PhoenixSocket {
  // url: the socket mount, e.g. ws://host:4000/socket; token: a JWT sent as ?token= (or null)
  constructor(url, { token = null, onFrame = () => {}, onClose = () => {}, event = "phoenix_gen_api" } = {}) {
    const q = new URLSearchParams({ vsn: "2.0.0" });
    if (token) q.set("token", token);
    this.url = url.replace(/\/+$/, "") + "/websocket?" + q.toString();
    this.event = event;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.ref = 0;
    this.replies = new Map(); // ref -> {resolve, reject}
    this.calls = new Map(); // request_id -> callback(payload)
    this.joins = new Map(); // topic -> join_ref
    this.ws = null;
    this.heartbeat = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let open = false;
      ws.onopen = () => {
        open = true;
        this.heartbeat = setInterval(() => this.push("phoenix", "heartbeat", {}, null).catch(() => {}), 30000);
        resolve(this);
      };
      ws.onmessage = (e) => this._receive(e.data);
      ws.onclose = (e) => {
        clearInterval(this.heartbeat);
        const reason = e.reason || (open ? "the connection closed" : "the gateway refused the connection");
        for (const { reject: fail } of this.replies.values()) fail(new Error(reason));
        this.replies.clear();
        if (open) this.onClose(e.code, reason);
        else reject(new Error(reason + " (code " + e.code + ")"));
      };
    });
  }

  disconnect() {
    if (this.ws) this.ws.close(1000);
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  // Sends one frame; resolves with its phx_reply's payload ({status, response}).
  push(topic, event, payload, joinRef = this.joins.get(topic) ?? null) {
    const ref = String(++this.ref);
    const text = JSON.stringify([joinRef, ref, topic, event, payload]);
    return new Promise((resolve, reject) => {
      if (!this.connected) return reject(new Error("not connected"));
      this.replies.set(ref, { resolve, reject });
      this.onFrame("sent", text);
      this.ws.send(text);
    });
  }

  async join(topic, params = {}) {
    const joinRef = String(this.ref + 1);
    this.joins.set(topic, joinRef);
    const reply = await this.push(topic, "phx_join", params, joinRef);
    if (reply.status !== "ok") {
      this.joins.delete(topic);
      throw new Error("join " + topic + " refused: " + JSON.stringify(reply.response));
    }
    return reply.response;
  }

  // Leaving a topic cancels its running calls (a stream stops).
  async leave(topic) {
    const reply = await this.push(topic, "phx_leave", {});
    this.joins.delete(topic);
    return reply;
  }

  // Sends a genapi request on `topic`; `onPush(payload)` gets each push answering it (by request_id).
  // Resolves with the request's phx_reply.
  request(topic, requestId, body, onPush) {
    this.calls.set(requestId, onPush);
    return this.push(topic, this.event, { request_id: requestId, ...body });
  }

  forget(requestId) {
    this.calls.delete(requestId);
  }

  _receive(text) {
    this.onFrame("received", text);
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const [, ref, , event, payload] = frame;
    if (event === "phx_reply" && this.replies.has(ref)) {
      const { resolve } = this.replies.get(ref);
      this.replies.delete(ref);
      resolve(payload);
      return;
    }
    if (event === this.event && payload && this.calls.has(payload.request_id)) {
      this.calls.get(payload.request_id)(payload);
    }
  }
}

window.PhoenixSocket = PhoenixSocket;
