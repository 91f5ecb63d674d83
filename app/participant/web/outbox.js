// Outbox shared by the participant components (one per page and participant, kept on `window`).
// Every response and event is written to localStorage first and deleted only when the server has
// answered (2xx stored/duplicate, or 4xx refused); network errors and 5xx are retried with backoff,
// so a reload, a dropped connection or a server restart loses nothing. Answered ids are remembered after the
// ack too: a page rendered before a re-sent response reached the server must not show that trial again.
const STORAGE_PREFIX = "alignlab-outbox:";
const SETTLED_PREFIX = "alignlab-settled:";

function outboxFor(ns, api) {
  window.__alignlabOutboxes = window.__alignlabOutboxes || {};
  if (!window.__alignlabOutboxes[ns]) window.__alignlabOutboxes[ns] = createOutbox(ns, api);
  return window.__alignlabOutboxes[ns];
}

function createOutbox(ns, api) {
  const storageKey = STORAGE_PREFIX + ns;
  const settledKey = SETTLED_PREFIX + ns;
  const inFlight = new Set();
  const listeners = new Set();
  let retryMs = 250;
  let retryTimer = null;

  const load = () => {
    try { return JSON.parse(localStorage.getItem(storageKey) || "{}"); } catch (e) { return {}; }
  };
  const save = (box) => {
    try { localStorage.setItem(storageKey, JSON.stringify(box)); } catch (e) { /* storage full: memory only */ }
  };
  let memory = load();

  const loadSettled = () => {
    try { return new Set(JSON.parse(localStorage.getItem(settledKey) || "[]")); } catch (e) { return new Set(); }
  };
  const settle = (id) => {
    if (!id.startsWith("r:")) return;  // only responses decide what is shown; events are not remembered
    const settled = loadSettled();
    settled.add(id);
    try { localStorage.setItem(settledKey, JSON.stringify([...settled])); } catch (e) { /* storage full */ }
  };
  const remove = (id) => { settle(id); memory = load(); delete memory[id]; save(memory); };
  const notify = (what) => {
    listeners.forEach((fn) => { try { fn(what); } catch (e) { console.error(e); } });
    window.dispatchEvent(new CustomEvent("alignlab:ack", { detail: what }));
  };

  const scheduleRetry = () => {
    if (retryTimer) return;
    retryTimer = setTimeout(() => { retryTimer = null; flush(); }, retryMs);
    retryMs = Math.min(retryMs * 2, 4000);
  };

  const send = (id, entry) => {
    if (inFlight.has(id)) return;
    inFlight.add(id);
    const startedAt = performance.now();
    fetch(api + entry.path, {
      method: "POST", keepalive: true, headers: { "Content-Type": "application/json" },
      body: JSON.stringify(entry.body),
    }).then(async (reply) => {
      if (reply.ok || (reply.status >= 400 && reply.status < 500 && reply.status !== 408 && reply.status !== 429)) {
        let answer = {};
        try { answer = await reply.json(); } catch (e) { /* keep {} */ }
        remove(id);
        inFlight.delete(id);  // only now: a flush meanwhile must not send it a second time
        retryMs = 250;
        notify({ id, ok: reply.ok, status: answer.status || String(reply.status), reason: answer.reason,
                 latencyMs: performance.now() - startedAt, queuedAt: entry.queuedAt });
      } else {
        inFlight.delete(id);
        scheduleRetry();
      }
    }).catch(() => { inFlight.delete(id); scheduleRetry(); });
  };

  const flush = () => {
    memory = load();
    Object.entries(memory).forEach(([id, entry]) => send(id, entry));
  };

  window.addEventListener("online", flush);
  return {
    put(id, path, body) {
      memory = load();
      memory[id] = { path, body, queuedAt: performance.now() };
      save(memory);
      send(id, memory[id]);
    },
    pending(prefix) { return Object.keys(load()).filter((id) => !prefix || id.startsWith(prefix)); },
    has(id) { return id in load(); },
    answered(id) { return id in load() || loadSettled().has(id); },
    body(id) { const entry = load()[id]; return entry ? entry.body : null; },
    flush,
    subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); },
  };
}

function eventId() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);
}

function logEvent(outbox, token, kind, detail, trialIndex) {
  const id = eventId();
  outbox.put("e:" + id, "/events", {
    token, client_event_id: id, kind, detail: detail || {},
    trial_index: trialIndex === undefined ? null : trialIndex,
    client_time_ms: performance.timeOrigin + performance.now(),
  });
}
