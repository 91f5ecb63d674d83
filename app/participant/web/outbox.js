// Outbox shared by the participant components (one per page and participant, kept on `window`).
// Every response and event is written to localStorage first and sent at once. What the outbox forgets:
//   responses: only what the server stored ("stored"/"duplicate") or refused for good (409 "rejected");
//   events:    the same, plus other 4xx refusals (an event is a log line, not an answer).
// Everything else (network errors, 5xx, 401 after a key change, 404, 408, 429, 400) stays queued and is
// retried with backoff; bodies are signed with the page's *current* token at send time, so a fresh token
// (a rerun after a reconnect, a reload, a server restarted with another key) re-signs and resends the queue.
// Answered ids are remembered after the ack too: a page rendered before a re-sent response reached the
// server must not show that trial again. When nothing has been acknowledged for STALL_MS while answers
// wait, the outbox stops retrying on its own and reports `stalled` to its listeners (the page says what to
// do); `resume()` starts again.
const STORAGE_PREFIX = "alignlab-outbox:";
const SETTLED_PREFIX = "alignlab-settled:";
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 4000;
const STALL_MS = 10 * 60 * 1000;

function outboxFor(ns, api, token) {
  window.__alignlabOutboxes = window.__alignlabOutboxes || {};
  if (!window.__alignlabOutboxes[ns]) window.__alignlabOutboxes[ns] = createOutbox(ns, api);
  const outbox = window.__alignlabOutboxes[ns];
  if (token) outbox.setToken(token);
  return outbox;
}

// What a server reply means for a queued entry: "forget" (settled), or "retry".
function replyVerdict(id, status, answer) {
  if (status >= 200 && status < 300) return "forget";
  if (status === 409 && answer.status === "rejected") return "forget";
  const retryable = status >= 500 || status === 400 || status === 401 || status === 404 || status === 408 || status === 429;
  if (id.startsWith("e:") && status >= 400 && status < 500 && !retryable) return "forget";
  return "retry";
}

function createOutbox(ns, api) {
  const storageKey = STORAGE_PREFIX + ns;
  const settledKey = SETTLED_PREFIX + ns;
  const inFlight = new Set();
  const listeners = new Set();
  let token = null;
  let retryMs = RETRY_MIN_MS;
  let retryTimer = null;
  let lastProgress = performance.now();  // last ack, or the moment the queue became non-empty
  let stalled = false;
  let online = true;  // what the last request said about the connection

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
  const settle = (id) => {  // a response the server holds: never shown again by any later render
    if (!id.startsWith("r:")) return;  // only responses decide what is shown; events are not remembered
    const settled = loadSettled();
    settled.add(id);
    try { localStorage.setItem(settledKey, JSON.stringify([...settled])); } catch (e) { /* storage full */ }
  };
  const remove = (id, stored) => { if (stored) settle(id); memory = load(); delete memory[id]; save(memory); };
  const notify = (what) => {
    listeners.forEach((fn) => { try { fn(what); } catch (e) { console.error(e); } });
    window.dispatchEvent(new CustomEvent("alignlab:ack", { detail: what }));
  };
  const setOnline = (value, reason) => {
    if (online === value) return;
    online = value;
    notify({ connection: value ? "restored" : "lost", reason });
  };

  const scheduleRetry = () => {
    if (retryTimer || stalled) return;
    if (Object.keys(load()).length > 0 && performance.now() - lastProgress > STALL_MS) {
      stalled = true;
      notify({ stalled: true });
      return;
    }
    retryTimer = setTimeout(() => { retryTimer = null; flush(); }, retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  };

  const acknowledged = (id, entry, status, answer, startedAt) => {
    remove(id, status < 300);  // a refused (409) answer was not stored: a later render may offer the trial again
    inFlight.delete(id);  // only now: a flush meanwhile must not send it a second time
    retryMs = RETRY_MIN_MS;
    lastProgress = performance.now();
    setOnline(true);
    notify({ id, ok: status < 300, status: answer.status || String(status), reason: answer.reason,
             latencyMs: performance.now() - startedAt, queuedAt: entry.queuedAt });
  };

  const send = (id, entry) => {
    if (inFlight.has(id) || stalled || !token) return;
    inFlight.add(id);
    const startedAt = performance.now();
    const body = Object.assign({}, entry.body, { token });
    fetch(api + entry.path, {
      method: "POST", keepalive: true, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).then(async (reply) => {
      let answer = {};
      try { answer = await reply.json(); } catch (e) { /* keep {} */ }
      if (replyVerdict(id, reply.status, answer) === "forget") { acknowledged(id, entry, reply.status, answer, startedAt); return; }
      inFlight.delete(id);
      setOnline(reply.status < 500, reply.status === 401 ? "token" : "status " + reply.status);
      scheduleRetry();
    }).catch(() => { inFlight.delete(id); setOnline(false, "network"); scheduleRetry(); });
  };

  const flush = () => {
    memory = load();
    Object.entries(memory).forEach(([id, entry]) => send(id, entry));
  };

  window.addEventListener("online", flush);
  return {
    put(id, path, body) {
      memory = load();
      if (Object.keys(memory).length === 0) lastProgress = performance.now();
      memory[id] = { path, body, queuedAt: performance.now() };
      save(memory);
      send(id, memory[id]);
    },
    // A token handed to a newer render replaces the old one; a changed token resends the queue at once.
    setToken(next) {
      if (!next || next === token) return;
      token = next;
      retryMs = RETRY_MIN_MS;
      flush();
    },
    token() { return token; },
    resume() { stalled = false; lastProgress = performance.now(); retryMs = RETRY_MIN_MS; flush(); },
    isOnline() { return online; },
    isStalled() { return stalled; },
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

function logEvent(outbox, kind, detail, trialIndex) {
  const id = eventId();
  outbox.put("e:" + id, "/events", {
    client_event_id: id, kind, detail: detail || {},
    trial_index: trialIndex === undefined ? null : trialIndex,
    client_time_ms: performance.timeOrigin + performance.now(),
  });
}
