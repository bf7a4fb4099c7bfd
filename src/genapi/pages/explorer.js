// The genapi API explorer (GET /explorer): connect with a token, list what genapi.list_apis shows
// this caller, fill a form generated from a function's JSON Schema, call it and watch the frames.
// No build step, no dependencies but phoenix.js beside it.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v != null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};

const state = { socket: null, topic: "api:explorer", apis: [], selected: null, seq: 0, frames: [] };

function socketUrl() {
  return $("#socket-url").value.trim();
}

function setStatus(text, kind = "") {
  const s = $("#status");
  s.textContent = text;
  s.className = kind;
}

// The claims of a JWT (not verified here: the gateway verified it when it accepted the connect).
// Who the gateway takes the caller for, from its join reply ({"identity": true} asks for it).
function describe(identity) {
  if (!identity || identity.user_id == null) return "anonymously";
  const roles = identity.roles && identity.roles.length ? " (roles: " + identity.roles.join(", ") + ")" : " (no roles)";
  return "as " + identity.user_id + roles + (identity.device_id ? ", device " + identity.device_id : "");
}

function frame(direction, text) {
  state.frames.push((direction === "sent" ? "→ " : "← ") + text);
  const list = $("#frames");
  list.append(el("li", { class: direction, text }));
  while (list.children.length > 500) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

async function connect(event) {
  event.preventDefault();
  if (state.socket) state.socket.disconnect();
  const token = $("#token").value.trim() || null;
  setStatus("Connecting…");
  let joined = null;
  const socket = new PhoenixSocket(socketUrl(), {
    token,
    onFrame: frame,
    onClose: (code, reason) => {
      if (state.socket !== socket) return;
      state.socket = null;
      setStatus("Disconnected: " + reason + " (code " + code + ").");
      $("#connect-button").disabled = false;
      $("#disconnect-button").disabled = true;
    },
  });
  try {
    await socket.connect();
    state.socket = socket;
    joined = await socket.join(state.topic, { identity: true });
  } catch (err) {
    setStatus("Not connected: " + err.message, "failed");
    socket.disconnect();
    state.socket = null;
    return;
  }
  const who = describe(joined && joined.identity);
  setStatus("Connected " + who + ".", "ok");
  $("#identity").textContent = who;
  $("#connect-button").disabled = true;
  $("#disconnect-button").disabled = false;
  await listApis();
}

function disconnect() {
  if (state.socket) state.socket.disconnect();
}

let rid = 0;
const nextId = () => "explorer-" + Date.now().toString(36) + "-" + ++rid;

// One call; resolves with its final push (or the reply for a fire-and-forget function).
function call(service, requestType, args, version, onPush = () => {}) {
  return new Promise((resolve, reject) => {
    const id = nextId();
    const body = { service, request_type: requestType, args };
    if (version) body.version = version;
    let done = false;
    const finish = (payload) => {
      done = true;
      state.socket.forget(id);
      resolve(payload);
    };
    state.socket
      .request(state.topic, id, body, (payload) => {
        onPush(payload);
        if (["answer", "error", "last", "end", "cancelled"].includes(payload.kind)) finish(payload);
      })
      .then((reply) => {
        if (done) return;
        if (reply.status !== "ok") finish({ kind: "error", success: false, error: JSON.stringify(reply.response) });
        else if (reply.response === requestType && state.selectedResponseType === "none" && onPush.noneAck) {
          finish({ kind: "none", success: true, result: null });
        }
      }, reject);
    call.current = id;
  });
}

async function listApis() {
  const box = $("#api-list");
  box.replaceChildren(el("p", { text: "Loading genapi.list_apis…" }));
  let answer;
  try {
    answer = await call("genapi", "list_apis", {});
  } catch (err) {
    box.replaceChildren(el("p", { class: "notice", text: "genapi.list_apis failed: " + err.message }));
    return;
  }
  if (!answer.success) {
    const off = /unsupported|not found|unknown/i.test(answer.error || "");
    const text = off
      ? "Discovery is off on this gateway ([gateway] discovery = false), so there is nothing to list: " + answer.error
      : "genapi.list_apis failed: " + answer.error;
    box.replaceChildren(el("p", { class: "notice", id: "discovery-off", text }));
    return;
  }
  state.apis = answer.result;
  renderList();
}

function matches(api, words) {
  const hay = [api.service, api.request_type, ...(api.versions || []).map(String), ...Object.keys(api.args.properties || {})]
    .join(" ")
    .toLowerCase();
  return words.every((w) => hay.includes(w));
}

function renderList() {
  const words = $("#search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const box = $("#api-list");
  const groups = new Map();
  for (const api of state.apis) {
    if (!matches(api, words)) continue;
    if (!groups.has(api.service)) groups.set(api.service, []);
    groups.get(api.service).push(api);
  }
  const out = [];
  for (const [service, apis] of groups) {
    const list = el("ul", { class: "functions" });
    for (const api of apis) {
      const versions = api.versions.map((v) => (v === null ? "unversioned" : v)).join(", ");
      const button = el("button", {
        type: "button",
        class: "function",
        "data-service": api.service,
        "data-request-type": api.request_type,
        "aria-current": state.selected === api ? "true" : "false",
        onclick: () => select(api),
        text: api.request_type + " · " + versions + " · " + api.response_type + (api.latest ? "" : " (older)"),
      });
      list.append(el("li", {}, button));
    }
    out.push(el("div", { class: "service", "data-service": service }, el("h2", { text: service }), list));
  }
  if (!out.length) out.push(el("p", { text: state.apis.length ? "Nothing matches." : "No functions for this caller." }));
  box.replaceChildren(...out);
}

const KIND_HINT = {
  string: "text",
  num: "a number",
  boolean: "true or false",
  uuid: "a UUID",
  datetime: "ISO 8601 with a UTC offset, e.g. 2026-01-02T03:04:05+00:00",
  naive_datetime: "ISO 8601, e.g. 2026-01-02T03:04:05",
  list_string: "one item a line",
  list_num: "one number a line",
  list_uuid: "one UUID a line",
  map: "a JSON object",
  list_map: "a JSON array of objects",
  list: "a JSON array",
  any: "any JSON value",
};

function fieldInput(name, prop, required) {
  const kind = prop["x-genapi-type"] || "any";
  const id = "arg-" + name;
  const common = { id, name, "data-kind": kind, "aria-describedby": id + "-hint " + id + "-error" };
  if (kind === "boolean") {
    const select = el("select", common);
    if (!required) select.append(el("option", { value: "", text: "(not sent" + ("default" in prop ? ": " + prop.default : "") + ")" }));
    select.append(el("option", { value: "true", text: "true" }), el("option", { value: "false", text: "false" }));
    return select;
  }
  if (["list_string", "list_num", "list_uuid", "map", "list_map", "list", "any"].includes(kind)) {
    return el("textarea", { ...common, rows: 3, placeholder: "default" in prop ? JSON.stringify(prop.default) : "" });
  }
  const input = el("input", {
    ...common,
    type: kind === "num" ? "number" : "text",
    step: kind === "num" ? "any" : null,
    placeholder: "default" in prop ? String(prop.default) : "",
  });
  return input;
}

function select(api) {
  state.selected = api;
  state.selectedResponseType = api.response_type;
  renderList();
  const props = api.args.properties || {};
  const required = new Set(api.args.required || []);
  const fields = [];
  for (const [name, prop] of Object.entries(props)) {
    const kind = prop["x-genapi-type"] || "any";
    // nullable (allow_nil): null among its types; for `any`, the absence of its "not null"
    const nullable = (Array.isArray(prop.type) && prop.type.includes("null")) || (kind === "any" && !prop.not);
    const limits = [];
    if (prop["x-maxBytes"] !== undefined) limits.push("up to " + prop["x-maxBytes"] + " bytes");
    if (prop.maxItems !== undefined) limits.push("up to " + prop.maxItems + " items");
    if (prop.items && prop.items["x-maxBytes"] !== undefined && kind === "list_string") limits.push("each up to " + prop.items["x-maxBytes"] + " bytes");
    if (prop.required) limits.push("keys " + prop.required.join(", ") + " required");
    if (prop.propertyNames) limits.push("keys among " + prop.propertyNames.enum.join(", "));
    if ("default" in prop) limits.push("default " + JSON.stringify(prop.default));
    const extras = [];
    if (nullable) extras.push(el("label", { class: "null" }, el("input", { type: "checkbox", id: "arg-" + name + "-null" }), " null"));
    if (kind === "uuid") {
      extras.push(el("button", { type: "button", text: "New UUID", onclick: () => ($("#arg-" + name).value = crypto.randomUUID()) }));
    }
    if (kind === "datetime") {
      extras.push(el("button", { type: "button", text: "Now", onclick: () => ($("#arg-" + name).value = new Date().toISOString().replace("Z", "+00:00")) }));
    }
    fields.push(
      el(
        "div",
        { class: "field", "data-arg": name },
        el("label", { for: "arg-" + name, text: name + (required.has(name) ? " *" : "") + " (" + kind + ")" }),
        fieldInput(name, prop, required.has(name)),
        ...extras,
        el("div", { class: "hint", id: "arg-" + name + "-hint", text: [KIND_HINT[kind], ...limits].filter(Boolean).join("; ") }),
        el("div", { class: "error", id: "arg-" + name + "-error", role: "alert" }),
      ),
    );
  }
  const label = { sync: "Call", async: "Call (async)", stream: "Start stream", none: "Send (fire and forget)" }[api.response_type] || "Call";
  const versionSelect = el("select", { id: "version" }, ...api.versions.map((v) => el("option", { value: v ?? "", text: v ?? "unversioned" })));
  const form = el(
    "form",
    { id: "call-form", onsubmit: run, oninput: renderSnippets },
    ...fields,
    el("div", { class: "field" }, el("label", { for: "version", text: "Version" }), versionSelect),
    el("button", { id: "call", type: "submit", text: label }),
    el("button", { id: "cancel", type: "button", hidden: true, onclick: cancel, text: "Cancel" }),
  );
  $("#detail").replaceChildren(
    el("h2", { id: "detail-title", text: api.service + "." + api.request_type }),
    el("p", { text: "Response type: " + api.response_type + (api.per_call ? "; decided per call: " + JSON.stringify(api.per_call) : "") }),
    form,
    el("h3", { text: "Result" }),
    el("pre", { id: "result", class: "result", "aria-live": "polite" }),
    el("h3", { text: "The same call with phoenix.js" }),
    el("pre", { id: "snippet-js", class: "snippet" }),
    el("h3", { text: "The same call with genapi.client" }),
    el("pre", { id: "snippet-py", class: "snippet" }),
  );
  renderSnippets();
  // the list was drawn again: keyboard focus goes on to the form (its first field, else its button)
  ($("#call-form [data-kind]") || $("#call")).focus();
}

// The form's args: fields left empty are not sent (the gateway applies defaults, or says what is missing).
function formArgs() {
  const args = {};
  const problems = {};
  for (const field of document.querySelectorAll("#call-form .field[data-arg]")) {
    const name = field.dataset.arg;
    const input = $("#arg-" + name);
    const kind = input.dataset.kind;
    const nul = $("#arg-" + name + "-null");
    if (nul && nul.checked) {
      args[name] = null;
      continue;
    }
    const raw = input.value;
    if (raw === "") continue;
    try {
      if (kind === "num") args[name] = Number(raw);
      else if (kind === "boolean") args[name] = raw === "true";
      else if (kind === "list_string" || kind === "list_uuid") args[name] = raw.split("\n").filter((s) => s !== "");
      else if (kind === "list_num") args[name] = raw.split("\n").filter((s) => s.trim() !== "").map(Number);
      else if (["map", "list_map", "list", "any"].includes(kind)) args[name] = JSON.parse(raw);
      else args[name] = raw;
    } catch (err) {
      problems[name] = "not JSON: " + err.message;
    }
  }
  return { args, problems };
}

function renderSnippets() {
  const api = state.selected;
  if (!api) return;
  const { args } = formArgs();
  const version = $("#version") ? $("#version").value : "";
  const body = { service: api.service, request_type: api.request_type, args };
  if (version) body.version = version;
  const url = socketUrl();
  $("#snippet-js").textContent = [
    'import { Socket } from "phoenix";',
    "",
    "const socket = new Socket(" + JSON.stringify(url.replace(/^wss?:\/\/[^/]+/, "")) + ", { params: { token: TOKEN } });",
    "socket.connect();",
    "const channel = socket.channel(" + JSON.stringify(state.topic) + ");",
    'channel.on("phoenix_gen_api", (push) => console.log(push));',
    "channel.join().receive(\"ok\", () =>",
    '  channel.push("phoenix_gen_api", ' + JSON.stringify({ request_id: "1", ...body }) + "));",
  ].join("\n");
  const pyArgs = JSON.stringify(args).replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None");
  const v = version ? ", version=" + JSON.stringify(version) : "";
  const line =
    api.response_type === "stream"
      ? "    async for push in client.stream(" + JSON.stringify(api.service) + ", " + JSON.stringify(api.request_type) + ", " + pyArgs + v + "):\n        print(push.result)"
      : "    print(await client.call(" + JSON.stringify(api.service) + ", " + JSON.stringify(api.request_type) + ", " + pyArgs + v + "))";
  $("#snippet-py").textContent = [
    "import asyncio",
    "from genapi.client import Client",
    "",
    "async def main():",
    "    client = await Client.connect(" + JSON.stringify(url) + ", token=TOKEN)",
    "    await client.join(" + JSON.stringify(state.topic) + ")",
    line,
    "",
    "asyncio.run(main())",
  ].join("\n");
}

function clearErrors() {
  for (const e of document.querySelectorAll("#call-form .error")) e.textContent = "";
  for (const i of document.querySelectorAll("#call-form [aria-invalid]")) i.removeAttribute("aria-invalid");
}

// The gateway's error names the argument in quotes (`argument "x"`, `for "x"`; else any quoted
// field name, in order): shown beside that field. A map's key in quotes is not taken for a field.
function showFieldError(message) {
  const named = [...message.matchAll(/(?:argument|for) "([^"]+)"/g), ...message.matchAll(/"([^"]+)"/g)];
  for (const m of named) {
    const box = $("#arg-" + CSS.escape(m[1]) + "-error");
    if (box) {
      box.textContent = message;
      const input = $("#arg-" + CSS.escape(m[1]));
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return true;
    }
  }
  return false;
}

async function run(event) {
  event.preventDefault();
  const api = state.selected;
  const result = $("#result");
  clearErrors();
  result.className = "result";
  if (!state.socket) {
    result.textContent = "Connect first.";
    return;
  }
  const { args, problems } = formArgs();
  for (const [name, text] of Object.entries(problems)) $("#arg-" + name + "-error").textContent = text;
  if (Object.keys(problems).length) return;
  const version = $("#version").value || null;
  result.textContent = "";
  result.dataset.state = "running";
  const lines = [];
  const show = (text) => {
    lines.push(text);
    result.textContent = lines.join("\n");
  };
  const onPush = (p) => {
    if (p.kind === "ack") show("acknowledged (async): the answer follows");
    else if (p.kind === "start") {
      show("stream started");
      $("#cancel").hidden = false;
    } else if (p.kind === "chunk" || p.kind === "last") show("chunk: " + JSON.stringify(p.result));
  };
  if (api.response_type === "none") onPush.noneAck = true;
  let final;
  try {
    final = await call(api.service, api.request_type, args, version, onPush);
  } catch (err) {
    final = { kind: "error", success: false, error: err.message };
  }
  $("#cancel").hidden = true;
  if (final.kind === "cancelled") show("cancelled");
  else if (final.kind === "none") show("sent: acknowledged by the gateway (fire and forget: no answer)");
  else if (final.kind === "end") show("stream ended");
  else if (final.success) show("result: " + JSON.stringify(final.result, null, 2));
  else {
    result.classList.add("failed");
    show("error: " + final.error + (final.can_retry ? " (can retry)" : ""));
    showFieldError(final.error || "");
  }
  result.dataset.state = final.kind;
}

// Leaving the topic makes the gateway cancel its running calls (the stream stops); then it is joined again.
async function cancel() {
  const socket = state.socket;
  const id = call.current;
  $("#cancel").hidden = true;
  const pending = socket.calls.get(id);
  socket.forget(id);
  await socket.leave(state.topic);
  await socket.join(state.topic);
  if (pending) pending({ kind: "cancelled", success: true });
}

function copyFrames() {
  const text = state.frames.join("\n");
  const done = () => ($("#copy-frames").textContent = "Copied");
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, () => {});
  else {
    const area = el("textarea", {}, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }
}

function init() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams(location.search);
  $("#socket-url").value = params.get("socket") || scheme + "//" + location.host + "/socket";
  $("#connect").addEventListener("submit", connect);
  $("#disconnect-button").addEventListener("click", disconnect);
  $("#search").addEventListener("input", renderList);
  $("#copy-frames").addEventListener("click", copyFrames);
  window.__explorerReady = true;
}

init();
