// The fleet page's script (served as /assets/fleet.js): renders the channels,
// their rollouts and the agents from /v1/channels, /v1/rollouts and /v1/fleet,
// refreshes them in place every few seconds, sorts and filters the agents.
// Every value comes from agents or files: it is set with textContent only,
// never parsed as markup, and any field may be missing.
"use strict";

(function () {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const staleAfter = Number(body.dataset.staleAfter) || 900;
  const refreshEvery = (Number(body.dataset.refresh) || 3) * 1000;
  const NONE = "—";
  const ID_SHOWN = 12; // characters of an agent id shown in its cell
  const NOTICE_FOR = 60 * 1000; // how long the outcome of a rollout action stays in the status line

  // The agent columns: key, heading, how a row shows it, how it sorts.
  const COLUMNS = [
    { key: "agent", title: "Agent", cell: agentCell, sort: (a) => a.agent_id },
    { key: "hostname", title: "Host", cell: (a) => text(a.hostname), sort: (a) => a.hostname },
    { key: "channel", title: "Channel", cell: (a) => text(a.channel), sort: (a) => a.channel },
    { key: "agent_version", title: "Agent version", cell: (a) => text(a.agent_version), sort: (a) => a.agent_version },
    { key: "version", title: "Payload version", cell: (a) => text(a.version), sort: (a) => a.version },
    { key: "bank", title: "Bank", cell: (a) => text(a.bank), sort: (a) => a.bank },
    { key: "phase", title: "Phase", cell: phaseCell, sort: (a) => a.phase },
    { key: "previous_version", title: "Previous", cell: (a) => text(a.previous_version), sort: (a) => a.previous_version },
    { key: "bad_versions", title: "Bad versions", cell: badCell, sort: (a) => badVersions(a).map((b) => str(b.version)).join(" ") },
    { key: "pending", title: "Staging", cell: pendingCell, sort: (a) => pendingText(a) },
    { key: "last_error", title: "Last error", cell: errorCell, sort: (a) => a.last_error },
    { key: "restarts", title: "Restarts", cell: restartsCell, sort: (a) => restartCount(a) },
    { key: "last_seen", title: "Last seen", cell: seenCell, sort: (a) => num(a.reported_at) },
  ];

  const page = {
    agents: [],
    channels: [],
    rollouts: [],
    serverNow: Date.now() / 1000,
    sort: { key: "agent", descending: false },
    refreshes: 0,
    notice: null, // the outcome of the last rollout action
  };

  // ---- small helpers ----

  function str(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "string") return v;
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    try { return JSON.stringify(v); } catch (e) { return ""; }
  }
  function num(v) { const n = Number(v); return Number.isFinite(n) ? n : 0; }
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = str(v);
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, str(v));
    }
    for (const child of children || []) if (child) node.append(child);
    return node;
  }
  function text(v) {
    const s = str(v);
    return s === "" ? el("span", { class: "none", text: NONE }) : document.createTextNode(s);
  }
  function badge(word, extra) {
    return el("span", { class: "badge " + str(word).replace(/[^a-z-]/g, "") + (extra ? " " + extra : ""), text: word });
  }
  function isoTime(seconds) {
    const d = new Date(num(seconds) * 1000);
    return Number.isNaN(d.getTime()) ? "" : d.toISOString().replace(".000Z", "Z");
  }
  function ago(seconds) {
    const s = Math.max(0, Math.round(page.serverNow - num(seconds)));
    if (s < 90) return s + " s ago";
    if (s < 90 * 60) return Math.round(s / 60) + " min ago";
    if (s < 36 * 3600) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function badVersions(a) { return Array.isArray(a.bad_versions) ? a.bad_versions : []; }
  function restartCount(a) { return a.restarts && typeof a.restarts === "object" ? num(a.restarts.count) : 0; }
  function isStale(a) { return page.serverNow - num(a.reported_at) > staleAfter; }
  function hasPending(a) { return a.pending !== null && a.pending !== undefined && a.pending !== ""; }

  // The states an agent is in, for the state filter.
  function states(a) {
    const s = [];
    if (a.phase === "trial") s.push("trial");
    else if (a.phase) s.push(str(a.phase));
    if (hasPending(a)) s.push("staging");
    if (a.last_error) s.push("error");
    if (restartCount(a) > 0) s.push("restarting");
    if (badVersions(a).length) s.push("rolled back");
    s.push(isStale(a) ? "stale" : "reporting");
    return s;
  }

  // ---- agent cells ----

  // Agent ids are long random tokens: the start tells them apart, the title has it all.
  function agentCell(a) {
    const id = str(a.agent_id);
    const short = id.length > ID_SHOWN + 2 ? id.slice(0, ID_SHOWN) + "…" : id;
    return el("span", { class: "agent-id", title: id, text: short });
  }
  function phaseCell(a) { return a.phase ? badge(str(a.phase)) : text(null); }
  function badCell(a) {
    const bad = badVersions(a);
    if (!bad.length) return text(null);
    const frag = document.createDocumentFragment();
    bad.forEach((b, i) => {
      if (i) frag.append(", ");
      frag.append(el("span", { class: "bad", title: str(b && b.reason), text: str(b && b.version) }));
    });
    return frag;
  }
  function pendingText(a) {
    if (!hasPending(a)) return "";
    const p = a.pending;
    if (typeof p !== "object") return str(p);
    let out = str(p.version);
    if (p.sequence !== undefined) out += " (seq " + str(p.sequence) + ")";
    if (p.not_before) {
      const at = Date.parse(str(p.not_before)) / 1000;
      out += Number.isFinite(at) && at > page.serverNow ? " not before " + str(p.not_before) : " due";
    }
    return out.trim();
  }
  function pendingCell(a) { const t = pendingText(a); return t ? el("span", { text: t }) : text(null); }
  function errorCell(a) {
    if (!a.last_error) return text(null);
    const frag = document.createDocumentFragment();
    if (a.last_error_kind) frag.append(el("span", { class: "error-kind", text: a.last_error_kind }));
    frag.append(el("span", { class: "error-text", text: a.last_error }));
    return frag;
  }
  function restartsCell(a) {
    const n = restartCount(a);
    if (!n) return el("span", { class: "none", text: "0" });
    return el("span", { title: str(a.restarts.last_exit) + " since " + str(a.restarts.since), text: String(n) });
  }
  function seenCell(a) {
    const frag = document.createDocumentFragment();
    frag.append(el("time", { datetime: isoTime(a.reported_at), title: isoTime(a.reported_at), text: ago(a.reported_at) }));
    if (isStale(a)) frag.append(el("span", { class: "badge stale-marker", text: "stale" }));
    return frag;
  }

  // ---- the agents table ----

  function buildHead() {
    const row = document.querySelector("#agents thead tr");
    row.replaceChildren();
    for (const col of COLUMNS) {
      const button = el("button", { type: "button", text: col.title });
      button.addEventListener("click", () => sortBy(col.key));
      row.append(el("th", { dataset: { col: col.key } }, [button]));
    }
    const sortSelect = el("select", { id: "sort-by" });
    for (const col of COLUMNS) sortSelect.append(el("option", { value: col.key, text: col.title }));
    sortSelect.addEventListener("change", () => { page.sort = { key: sortSelect.value, descending: false }; renderAgents(); });
    const direction = el("button", { type: "button", id: "sort-direction", text: "⇅" });
    direction.addEventListener("click", () => sortBy(page.sort.key));
    document.getElementById("filters").append(el("label", { text: "Sort " }, [sortSelect, direction]));
    for (const id of ["filter-channel", "filter-version", "filter-state"]) {
      document.getElementById(id).addEventListener("change", renderAgents);
    }
    document.getElementById("filter-text").addEventListener("input", renderAgents);
  }

  function sortBy(key) {
    page.sort = page.sort.key === key ? { key, descending: !page.sort.descending } : { key, descending: false };
    renderAgents();
  }

  function compare(x, y) {
    if (typeof x === "number" && typeof y === "number") return x - y;
    const a = str(x), b = str(y);
    if (a === "" && b !== "") return 1; // missing values last
    if (b === "" && a !== "") return -1;
    return a.localeCompare(b, undefined, { numeric: true });
  }

  // Keeps a filter's options in step with the data, keeping the choice.
  function fillOptions(id, values) {
    const select = document.getElementById(id);
    const chosen = select.value;
    const wanted = [...new Set(values.filter((v) => v !== ""))].sort((a, b) => compare(a, b));
    if (chosen && !wanted.includes(chosen)) wanted.push(chosen);
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join("\n") === wanted.join("\n")) return;
    select.replaceChildren(el("option", { value: "", text: "all" }), ...wanted.map((v) => el("option", { value: v, text: v })));
    select.value = chosen;
  }

  function matches(a, channel, version, state, needle) {
    if (channel && str(a.channel) !== channel) return false;
    if (version && str(a.version) !== version) return false;
    if (state && !states(a).includes(state)) return false;
    if (needle) {
      const hay = [a.agent_id, a.hostname, a.channel, a.agent_version, a.version, a.bank, a.phase,
        a.previous_version, a.last_error, a.last_error_kind, pendingText(a), a.remote,
        ...badVersions(a).map((b) => str(b && b.version) + " " + str(b && b.reason))].map(str).join("\n").toLowerCase();
      if (!hay.includes(needle)) return false;
    }
    return true;
  }

  function renderAgents() {
    const agents = page.agents;
    fillOptions("filter-channel", agents.map((a) => str(a.channel)).concat(page.channels.map((c) => str(c.name))));
    fillOptions("filter-version", agents.map((a) => str(a.version)));
    fillOptions("filter-state", agents.flatMap(states));
    const channel = document.getElementById("filter-channel").value;
    const version = document.getElementById("filter-version").value;
    const state = document.getElementById("filter-state").value;
    const needle = document.getElementById("filter-text").value.trim().toLowerCase();
    const col = COLUMNS.find((c) => c.key === page.sort.key) || COLUMNS[0];
    const shown = agents.filter((a) => matches(a, channel, version, state, needle));
    shown.sort((a, b) => {
      const order = compare(col.sort(a), col.sort(b)) || compare(a.agent_id, b.agent_id);
      return page.sort.descending ? -order : order;
    });
    for (const th of document.querySelectorAll("#agents thead th")) {
      if (th.dataset.col === col.key) th.setAttribute("aria-sort", page.sort.descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
    document.getElementById("sort-by").value = col.key;
    const rows = shown.map((a) => {
      const tr = el("tr", { dataset: { agent: str(a.agent_id), states: states(a).join(" ") } });
      if (isStale(a)) tr.className = "stale";
      for (const c of COLUMNS) {
        // One child per cell: at phone width the cell is a grid of its label and this.
        const td = el("td", { dataset: { col: c.key, label: c.title } }, [el("div", { class: "value" }, [c.cell(a)])]);
        if (c.key === "last_error") td.className = "error";
        tr.append(td);
      }
      return tr;
    });
    if (!rows.length) {
      const td = el("td", { colspan: COLUMNS.length, class: "muted", text: agents.length ? "no agent matches the filters" : "no agent has reported yet" });
      rows.push(el("tr", { class: "empty" }, [td]));
    }
    document.querySelector("#agents tbody").replaceChildren(...rows);
    document.getElementById("fleet-count").textContent =
      shown.length === agents.length ? "(" + agents.length + ")" : "(" + shown.length + " of " + agents.length + ")";
  }

  // ---- channels and rollouts ----

  function renderChannels() {
    const byName = new Map();
    for (const c of page.channels) byName.set(str(c.name), { channel: c, rollout: null });
    for (const r of page.rollouts) {
      const name = str(r && r.channel);
      if (!byName.has(name)) byName.set(name, { channel: { name }, rollout: r });
      else byName.get(name).rollout = r;
    }
    const list = [...byName.values()].sort((a, b) => compare(a.channel.name, b.channel.name));
    const cards = list.map(({ channel, rollout }) => {
      const describe = (v, s) => (str(v) === "" ? NONE : str(v) + (s !== undefined && s !== null ? " (seq " + str(s) + ")" : ""));
      const dl = el("dl", {}, [
        el("dt", { text: "current" }), el("dd", { class: "current", text: describe(channel.version, channel.sequence) }),
        el("dt", { text: "previous" }), el("dd", { class: "previous", text: describe(channel.previous_version, channel.previous_sequence) }),
      ]);
      if (channel.published_at) dl.append(el("dt", { text: "published" }), el("dd", { text: channel.published_at }));
      const count = page.agents.filter((a) => str(a.channel) === str(channel.name)).length;
      dl.append(el("dt", { text: "agents" }), el("dd", { text: String(count) }));
      return el("div", { class: "channel", dataset: { channel: str(channel.name) } }, [
        el("h3", { text: channel.name }), dl, rolloutSection(rollout),
      ]);
    });
    if (!page.rollouts.length) cards.push(el("p", { class: "muted no-rollouts", text: "No rollouts." }));
    document.getElementById("channel-list").replaceChildren(...cards);
  }

  function rolloutSection(r) {
    if (!r || typeof r !== "object") {
      return page.rollouts.length ? el("p", { class: "muted no-rollout", text: "no rollout" }) : null;
    }
    const state = str(r.state) || "unknown";
    const head = el("div", {}, [
      el("strong", { text: "Rollout " }), badge(state, "rollout-state"),
      el("span", { text: " " + release(r) }),
    ]);
    const parts = [head];
    if (r.suspended && typeof r.suspended === "object") {
      parts.push(el("div", { class: "suspended", role: "status", text: "Channel suspended by " + str(r.suspended.by) +
        " since " + str(r.suspended.at) + ": nobody new is admitted (console channel resume)" }));
    }
    if (state === "halted" || r.halt_reason) {
      parts.push(el("div", { class: "halt", role: "alert", text: "Halted: " + (str(r.halt_reason) || "no reason given") }));
    }
    const gates = [];
    if (r.success !== undefined) gates.push("opens next wave at " + pct(r.success) + " committed");
    if (r.halt_on !== undefined) gates.push("halts at " + pct(r.halt_on) + " failed");
    if (r.soak_secs !== undefined) gates.push("soak " + str(r.soak_secs) + " s");
    if (gates.length) parts.push(el("div", { class: "muted", text: gates.join(" · ") }));
    parts.push(actions(r, state));
    const waves = Array.isArray(r.waves) ? r.waves : [];
    for (const w of waves) parts.push(waveRow(w || {}));
    if (waves.length) {
      parts.push(el("div", { class: "legend" }, ["committed", "trial", "staging", "failed", "notyet"].map((k) =>
        el("span", { class: k, text: { committed: "committed", trial: "on trial", staging: "staging", failed: "failed", notyet: "not yet" }[k] }))));
    }
    const events = Array.isArray(r.events) ? r.events.slice(-5) : [];
    if (events.length) {
      parts.push(el("ul", { class: "events" }, events.map((e) => el("li", { text: str(e && e.at) + " " + str(e && e.text) }))));
    }
    return el("div", { class: "rollout", dataset: { state } }, parts);
  }
  function release(r) {
    let s = str(r.version) || NONE;
    if (r.sequence !== undefined) s += " (seq " + str(r.sequence) + ")";
    if (r.previous_version) s += " from " + str(r.previous_version);
    return s;
  }
  function pct(v) { return Math.round(num(v) * 1000) / 10 + " %"; }

  function waveRow(w) {
    const c = { committed: num(w.committed), trial: num(w.trial), staging: num(w.staging), failed: num(w.failed) };
    const started = c.committed + c.trial + c.staging + c.failed;
    const notyet = w.pending !== undefined ? num(w.pending) : Math.max(0, num(w.admitted) - started);
    const total = Math.max(num(w.admitted), started + notyet);
    const bar = el("div", { class: "wave-bar", role: "img" });
    for (const [k, n] of [...Object.entries(c), ["notyet", notyet]]) {
      if (n > 0 && total > 0) {
        const seg = el("span", { class: "seg-" + k, dataset: { count: String(n) }, title: k + ": " + n });
        seg.style.flexGrow = String(n); // CSSOM, which the CSP allows (unlike style attributes)
        bar.append(seg);
      }
    }
    const summary = c.committed + " committed, " + c.trial + " on trial, " + c.staging + " staging, " +
      c.failed + " failed, " + notyet + " not yet";
    bar.setAttribute("aria-label", summary);
    const label = el("div", { class: "wave-label" }, [
      el("strong", { text: str(w.percent) + " % " }), badge(str(w.state) || "unknown"),
      el("span", { text: " " + num(w.admitted) + " admitted: " + summary }),
    ]);
    return el("div", { class: "wave", dataset: { percent: str(w.percent), state: str(w.state) } }, [label, bar]);
  }

  function actions(r, state) {
    const wanted = [];
    if (state === "running") wanted.push("pause");
    if (state === "paused" || state === "halted") wanted.push("resume");
    if (state !== "aborted" && state !== "complete") wanted.push("abort");
    const box = el("div", { class: "actions" });
    for (const action of wanted) {
      const button = el("button", { type: "button", class: "rollout-" + action, dataset: { action }, text: action });
      button.addEventListener("click", () => rolloutAction(str(r.channel), action, button));
      box.append(button);
    }
    return box;
  }

  async function rolloutAction(channel, action, button) {
    if (action === "abort" && !window.confirm("Abort the rollout of " + channel + "? Agents admitted so far keep what they run.")) return;
    button.disabled = true;
    try {
      const answer = await fetch("/v1/rollouts/" + encodeURIComponent(channel) + "/" + action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: "csrf=" + encodeURIComponent(csrf),
      });
      if (!answer.ok) throw new Error(action + " " + channel + ": " + answer.status + " " + (await answer.text()).trim());
      page.notice = { text: action + " " + channel + ": done", error: false, until: Date.now() + NOTICE_FOR };
    } catch (e) {
      page.notice = { text: String(e.message || e), error: true, until: Date.now() + NOTICE_FOR };
    } finally {
      button.disabled = false;
      refresh();
    }
  }

  // ---- fetching ----

  function status(message, isError) {
    const node = document.getElementById("status");
    node.textContent = message;
    node.classList.toggle("error", Boolean(isError));
  }

  async function getJson(path, absentIsEmpty) {
    const answer = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (answer.status === 401) throw new Error("the session ended: log in again at /login");
    if (absentIsEmpty && answer.status === 404) return { absent: true, date: answer.headers.get("Date") };
    if (!answer.ok) throw new Error(path + ": " + answer.status);
    return { body: await answer.json(), date: answer.headers.get("Date") };
  }

  async function refresh() {
    try {
      const [fleet, channels, rollouts] = await Promise.all([
        getJson("/v1/fleet"), getJson("/v1/channels", true), getJson("/v1/rollouts", true),
      ]);
      // Ages are measured on the console's clock, not this browser's.
      const date = Date.parse(fleet.date || "");
      page.serverNow = Number.isFinite(date) ? date / 1000 : Date.now() / 1000;
      page.agents = Array.isArray(fleet.body) ? fleet.body.filter((a) => a && typeof a === "object") : [];
      page.channels = channels.body && Array.isArray(channels.body.channels) ? channels.body.channels : [];
      page.rollouts = rollouts.body && Array.isArray(rollouts.body.rollouts) ? rollouts.body.rollouts.filter((r) => r && typeof r === "object") : [];
      renderChannels();
      renderAgents();
      document.getElementById("channels").hidden = false;
      document.getElementById("fleet").hidden = false;
      page.refreshes += 1;
      body.dataset.refreshes = String(page.refreshes);
      const notice = page.notice && page.notice.until > Date.now() ? page.notice : null;
      status("updated " + new Date().toLocaleTimeString() + (notice ? " · " + notice.text : ""), notice && notice.error);
    } catch (e) {
      status("not updated: " + String(e.message || e), true);
    }
  }

  async function loop() {
    await refresh();
    setTimeout(loop, refreshEvery);
  }

  buildHead();
  loop();
})();
