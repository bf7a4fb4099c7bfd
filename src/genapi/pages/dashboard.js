// genapi's operator dashboard: polls GET /dashboard/state with the admin credential typed in,
// keeps the last minutes of samples in memory to draw calls/s and latency percentiles (own SVG
// charts, nothing fetched from elsewhere), and sends the admin actions (POST /dashboard/action)
// after a confirmation. No build step: this file is served as it is.
"use strict";

(function () {
  const POLL_MS = 2000;
  const WINDOW_MS = 10 * 60 * 1000; // history kept for the charts
  const KEY = "genapi.dashboard.credential";
  const $ = (id) => document.getElementById(id);

  let credential = sessionStorage.getItem(KEY) || "";
  let timer = null;
  let samples = []; // {t, rows: Map("svc.rt" -> row), bounds}
  let last = null; // the last state answered

  // ------------------------------------------------------------------ small DOM helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function facts(id, pairs) {
    const dl = $(id);
    dl.replaceChildren();
    for (const [name, value, key] of pairs) {
      dl.append(el("dt", {}, name), el("dd", { id: `${id}-${key || name}` }, value));
    }
  }
  function rows(id, list) {
    $(id).querySelector("tbody").replaceChildren(...list);
  }
  function say(text, kind) {
    const m = $("message");
    m.textContent = text;
    m.className = kind || "";
  }
  const fmt = (n, digits = 1) => (n === null || n === undefined || Number.isNaN(n) ? "–" : Number(n).toFixed(digits));

  // ------------------------------------------------------------------ the server
  async function ask(path, body) {
    const init = { headers: { Authorization: `Bearer ${credential}` }, cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const text = await r.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = { text };
    }
    return { status: r.status, data };
  }

  async function poll() {
    let got;
    try {
      got = await ask("/dashboard/state");
    } catch (e) {
      say(`The gateway cannot be reached (${e.message}); retrying.`, "error");
      return;
    }
    if (got.status === 200) {
      say(`Live: refreshed ${new Date().toLocaleTimeString()}, every ${POLL_MS / 1000} s.`, "ok");
      $("board").hidden = false;
      $("disconnect").disabled = false;
      render(got.data);
      return;
    }
    stop();
    $("board").hidden = true;
    if (got.status === 401) say(`Refused (401): ${got.data.text || "send an admin credential"}`, "error");
    else if (got.status === 403) say(`Forbidden (403): ${got.data.text || "the token lacks the dashboard role"}`, "error");
    else if (got.status === 404) say("The dashboard is off on this gateway ([gateway] dashboard = false).", "error");
    else say(`Unexpected answer ${got.status}: ${got.data.text || ""}`, "error");
  }

  function start() {
    stop();
    samples = [];
    poll();
    timer = setInterval(poll, POLL_MS);
  }
  function stop() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  // ------------------------------------------------------------------ numbers over time
  function remember(state) {
    const map = new Map();
    for (const r of state.requests) map.set(`${r.service}.${r.request_type}`, r);
    samples.push({ t: state.time_ms, rows: map, bounds: state.latency_buckets });
    while (samples.length > 2 && samples[samples.length - 1].t - samples[0].t > WINDOW_MS) samples.shift();
  }

  function delta(a, b, name) {
    // the change of one function's (or every function's, name null) counters from sample a to b
    const out = { ok: 0, error: 0, buckets: new Array(b.bounds.length + 1).fill(0) };
    const names = name === null ? [...b.rows.keys()] : [name];
    for (const n of names) {
      const rb = b.rows.get(n);
      if (!rb) continue;
      const ra = a.rows.get(n) || { ok: 0, error: 0, buckets: rb.buckets.map(() => 0) };
      out.ok += Math.max(0, rb.ok - ra.ok);
      out.error += Math.max(0, rb.error - ra.error);
      rb.buckets.forEach((v, i) => (out.buckets[i] += Math.max(0, v - (ra.buckets[i] || 0))));
    }
    return out;
  }

  function percentile(buckets, bounds, p) {
    // from a (non-cumulative) histogram: linear within the bucket holding the p-th call, in ms
    const total = buckets.reduce((s, v) => s + v, 0);
    if (!total) return null;
    const want = p * total;
    let seen = 0;
    for (let i = 0; i < buckets.length; i++) {
      if (seen + buckets[i] >= want && buckets[i] > 0) {
        const lo = i === 0 ? 0 : bounds[i - 1];
        const hi = i < bounds.length ? bounds[i] : bounds[bounds.length - 1] * 2;
        return (lo + ((want - seen) / buckets[i]) * (hi - lo)) * 1000;
      }
      seen += buckets[i];
    }
    return bounds[bounds.length - 1] * 1000;
  }

  function series(name) {
    // per poll interval: [t, calls/s, p50, p95, p99]
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      const d = delta(a, b, name);
      const secs = Math.max(0.001, (b.t - a.t) / 1000);
      out.push([b.t, (d.ok + d.error) / secs, ...[0.5, 0.95, 0.99].map((p) => percentile(d.buckets, b.bounds, p))]);
    }
    return out;
  }

  // ------------------------------------------------------------------ charts (SVG)
  function chart(target, points, lines, opts) {
    // points: [[t, v1, v2...]]; lines: [{index, class, label}]
    const w = opts.width || 600;
    const h = opts.height || 160;
    const pad = opts.small ? 2 : 30;
    target.replaceChildren();
    if (points.length < 1) {
      if (!opts.small) target.append(text(w / 2, h / 2, "waiting for a second sample…", "middle"));
      return;
    }
    const t0 = points[0][0];
    const t1 = Math.max(points[points.length - 1][0], t0 + 1);
    let max = 0;
    for (const p of points) for (const l of lines) if (p[l.index] !== null) max = Math.max(max, p[l.index]);
    max = max > 0 ? max * 1.1 : 1;
    const x = (t) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
    const y = (v) => h - pad - (v / max) * (h - 2 * pad);
    if (!opts.small) {
      target.append(svg("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, class: "axis" }));
      target.append(svg("line", { x1: pad, y1: pad, x2: pad, y2: h - pad, class: "axis" }));
      target.append(text(pad - 4, pad + 4, fmt(max, max < 10 ? 2 : 0), "end"));
      target.append(text(pad - 4, h - pad, "0", "end"));
      target.append(text(w - pad, h - 8, `the last ${Math.round((t1 - t0) / 1000)} s`, "end"));
    }
    lines.forEach((l, i) => {
      const d = points
        .filter((p) => p[l.index] !== null)
        .map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[l.index]).toFixed(1)}`)
        .join(" ");
      if (d) target.append(svg("path", { d, class: `line ${l.class}` }));
      if (!opts.small) {
        target.append(svg("rect", { x: w - pad - 150 + i * 50, y: 6, width: 10, height: 10, class: `key ${l.class}` }));
        target.append(text(w - pad - 136 + i * 50, 15, l.label, "start"));
      }
    });
  }
  function text(x, y, s, anchor) {
    const t = svg("text", { x, y, "text-anchor": anchor, class: "label" });
    t.textContent = s;
    return t;
  }

  // ------------------------------------------------------------------ rendering
  function render(state) {
    last = state;
    remember(state);
    const st = state.status;
    facts("host", [
      ["version", st.version],
      ["pid", st.pid],
      ["uptime", `${fmt(st.uptime_s, 0)} s`, "uptime"],
      ["config generation", st.generation, "generation"],
      ["worker restarts", st.restarts, "restarts"],
      ["functions", st.functions, "functions"],
      ["services pushed", st.pushed, "pushed"],
      ...(st.engine ? [["engine reachable", String(st.engine.reachable), "engine"]] : []),
    ]);
    rows(
      "workers",
      st.workers.map((w) =>
        el(
          "tr",
          { class: w.alive ? "" : "bad" },
          ...[w.index, w.pid, w.alive, w.ready, w.generation, w.restarts, w.connections, w.in_flight].map((v) =>
            el("td", {}, v),
          ),
        ),
      ),
    );
    const t = state.totals;
    facts(
      "totals",
      ["connections", "channels", "in_flight", "queued", "accepted", "joins", "relay_delivered", "relay_dropped"].map(
        (k) => [k.replace("_", " "), t[k], k],
      ),
    );
    const calls = state.requests.reduce((s, r) => s + r.ok + r.error, 0);
    const failed = state.requests.reduce((s, r) => s + r.error, 0);
    $("totals").append(el("dt", {}, "calls answered"), el("dd", { id: "totals-calls" }, calls));

    const all = series(null);
    chart($("chart-rate"), all, [{ index: 1, class: "s0", label: "calls/s" }], {});
    chart(
      $("chart-latency"),
      all,
      [
        { index: 2, class: "s0", label: "p50" },
        { index: 3, class: "s1", label: "p95" },
        { index: 4, class: "s2", label: "p99" },
      ],
      {},
    );
    const first = samples[0];
    const newest = samples[samples.length - 1];
    rows(
      "requests",
      state.requests.map((r) => {
        const name = `${r.service}.${r.request_type}`;
        const s = series(name);
        const now = s.length ? s[s.length - 1][1] : null;
        const win = delta(samples.length > 1 ? first : { rows: new Map() }, newest, name);
        const spark = svg("svg", { viewBox: "0 0 120 24", class: "spark", role: "img", "aria-label": `${name} calls/s` });
        chart(spark, s, [{ index: 1, class: "s0" }], { width: 120, height: 24, small: true });
        return el(
          "tr",
          { "data-function": name },
          el("td", {}, name),
          el("td", { class: "ok" }, r.ok),
          el("td", { class: "err" }, r.error),
          el("td", {}, fmt(now)),
          ...[0.5, 0.95, 0.99].map((p) => el("td", {}, fmt(percentile(win.buckets, newest.bounds, p), 2))),
          el("td", {}, spark),
        );
      }),
    );

    facts("errors", [
      ["calls answered with an error", failed, "calls"],
      ...Object.entries(state.errors || {})
        .filter(([, n]) => n)
        .map(([kind, n]) => [`… ${kind.replace(/_/g, " ")}`, n, `kind-${kind}`]),
      ["refused by a rate limit", t.rate_limited, "rate_limited"],
      ["connections aborted (not reading)", t.aborted, "aborted"],
      ["protocol errors", t.protocol_errors, "protocol_errors"],
      ["relay messages dropped", t.relay_dropped, "relay_dropped"],
      ...state.requests
        .filter((r) => r.error)
        .map((r) => [
          r.service === "_unknown" ? "no such function (unknown or disabled)" : `${r.service}.${r.request_type}`,
          r.error,
          `fn-${r.service}.${r.request_type}`,
        ]),
    ]);

    rows(
      "nodes",
      state.nodes.length
        ? state.nodes.map((n) =>
            el(
              "tr",
              { class: n.state === "closed" ? "" : "bad" },
              el("td", {}, n.address),
              el("td", {}, n.connected),
              el("td", {}, n.state),
              el("td", {}, n.in_flight),
              el("td", {}, n.failures),
            ),
          )
        : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no service nodes"))],
    );
    renderFunctions();

    const rl = state.rate_limits;
    $("limits-config").textContent = rl.off ? rl.off : JSON.stringify(rl.config, null, 2);
    $("limit-form").hidden = Boolean(rl.off);
    facts(
      "relay",
      Object.entries(state.relay || {}).map(([k, v]) => [k, v, k]),
    );
  }

  function renderFunctions() {
    if (!last) return;
    const filter = $("filter").value.trim().toLowerCase();
    rows(
      "functions",
      last.functions
        .filter((f) => !filter || `${f.service}.${f.request_type}`.toLowerCase().includes(filter))
        .map((f) => {
          const name = `${f.service}.${f.request_type}`;
          const op = f.disabled ? "enable" : "disable";
          return el(
            "tr",
            { "data-function": name, class: f.disabled ? "bad" : "" },
            el("td", {}, f.service),
            el("td", {}, f.request_type),
            el("td", {}, f.version ?? "–"),
            el("td", {}, f.response_type ?? ""),
            el("td", { class: "state" }, f.disabled ? "disabled" : "enabled"),
            el(
              "td",
              {},
              el(
                "button",
                {
                  type: "button",
                  class: op,
                  "data-op": op,
                  onclick: () =>
                    act(`${op === "disable" ? "Disable" : "Enable"} ${name}${f.version ? ` version ${f.version}` : ""} on every worker?`, op, [
                      f.service,
                      f.request_type,
                      f.version ?? null,
                    ]),
                },
                op,
              ),
            ),
          );
        }),
    );
  }

  // ------------------------------------------------------------------ actions
  function confirmed(question) {
    const dialog = $("confirm");
    $("confirm-text").textContent = question;
    return new Promise((resolve) => {
      // A close event is queued, not dispatched at once: the one from the previous question may
      // arrive after this dialog opened. Only a close that leaves the dialog shut answers.
      const closed = () => {
        if (dialog.open) return;
        dialog.removeEventListener("close", closed);
        resolve(dialog.returnValue === "yes");
      };
      dialog.returnValue = "";
      dialog.showModal();
      dialog.addEventListener("close", closed);
    });
  }

  async function act(question, op, args) {
    if (!(await confirmed(question))) return;
    const got = await ask("/dashboard/action", { op, args });
    if (got.status === 200) say(`${op} done.`, "ok");
    else say(`${op} refused (${got.status}): ${got.data.text || ""}`, "error");
    await poll();
  }

  function limitArgs() {
    const args = [$("limit-key").value.trim(), $("limit-value").value];
    const svc = $("limit-service").value.trim();
    const rt = $("limit-rt").value.trim();
    return svc || rt ? [...args, svc || null, rt || null] : args;
  }

  // ------------------------------------------------------------------ wiring
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    credential = $("credential").value.trim();
    sessionStorage.setItem(KEY, credential);
    start();
  });
  $("disconnect").addEventListener("click", () => {
    stop();
    credential = "";
    sessionStorage.removeItem(KEY);
    $("credential").value = "";
    $("board").hidden = true;
    $("disconnect").disabled = true;
    say("Disconnected.", "");
  });
  $("filter").addEventListener("input", renderFunctions);
  $("limit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const got = await ask("/dashboard/action", { op: "limit_status", args: limitArgs() });
    $("limit-out").textContent = JSON.stringify(got.data.result ?? got.data, null, 2);
  });
  $("limit-reset").addEventListener("click", async () => {
    const [key, value] = limitArgs();
    if (!key) return $("limit-key").focus();
    if (!(await confirmed(`Reset the use of ${key} = ${value} under every limit on ${key}?`))) return;
    const got = await ask("/dashboard/action", { op: "reset", args: [key, value] });
    $("limit-out").textContent = JSON.stringify(got.data.result ?? got.data, null, 2);
  });
  if (credential) {
    $("credential").value = credential;
    start();
  }
})();
