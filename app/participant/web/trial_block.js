// Odd-one-out trial block. Python mounts it once per block with the trials still to run; the whole
// block then runs here without a server round trip between trials:
//   fixation (iti_ms) -> three images, revealed only when all are decoded -> onset = performance.now()
//   on the frame after the reveal (double rAF) -> first valid click/tap/key (or the response window ends)
//   -> the response goes to the outbox (POSTed at once) and the next fixation starts immediately.
// When the block is done and saved, the `block_done` trigger carries its responses back to Python.
const KEYS = { ArrowLeft: 0, ArrowDown: 1, ArrowRight: 2, "1": 0, "2": 1, "3": 2 };
const CONTINUE_KEYS = new Set([" ", "Enter"]);
const MESSAGE_MS = 1500;
const instances = new WeakMap();

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  if (!data || !data.trials) return;
  let run = instances.get(parentElement);
  if (run && run.blockKey === data.block_key) {
    run.merge(data);
    return;
  }
  if (run) run.stop("replaced");
  run = createRun(data, parentElement, setTriggerValue);
  instances.set(parentElement, run);
  return () => { const current = instances.get(parentElement); if (current) current.stop("unmounted"); };
}

function emit(name, detail) { window.dispatchEvent(new CustomEvent("alignlab:" + name, { detail })); }

function buildDom(root, data) {
  const box = document.createElement("div");
  box.className = "al-root";
  box.style.setProperty("--al-img", data.image_px + "px");
  box.innerHTML = `
    <div class="al-stage">
      <div class="al-fix" hidden>+</div>
      <div class="al-row" data-testid="al-row"></div>
      <div class="al-msg" data-testid="al-msg" hidden></div>
      <div class="al-intro" data-testid="al-intro" hidden>
        <h3 class="al-intro-title"></h3><p class="al-intro-text"></p><p class="al-timer"></p>
        <button type="button" class="al-continue" data-testid="al-continue">Continue (Space)</button>
      </div>
    </div>
    <div class="al-foot">
      <span class="al-progress" data-testid="al-progress"></span>
      <button type="button" class="al-stop" data-testid="al-stop">Stop the study</button>
    </div>
    <div class="al-confirm" data-testid="al-confirm" hidden>
      <p>Stop the study? Your answers so far are saved and you receive the early-exit code.</p>
      <button type="button" class="al-confirm-yes" data-testid="al-confirm-yes">Yes, stop</button>
      <button type="button" class="al-confirm-no" data-testid="al-confirm-no">No, continue</button>
    </div>`;
  root.appendChild(box);
  const slots = [0, 1, 2].map((position) => {
    const slot = document.createElement("button");
    slot.type = "button";
    slot.className = "al-slot";
    slot.dataset.position = String(position);
    slot.setAttribute("data-testid", "al-slot-" + position);
    box.querySelector(".al-row").appendChild(slot);
    return slot;
  });
  const q = (sel) => box.querySelector(sel);
  return { box, slots, fix: q(".al-fix"), row: q(".al-row"), msg: q(".al-msg"), intro: q(".al-intro"),
           progress: q(".al-progress"), stop: q(".al-stop"), confirm: q(".al-confirm") };
}

function createRun(initial, root, setTriggerValue) {
  let data = initial;
  const dom = buildDom(root, data);
  const outbox = outboxFor(data.ns, data.api);
  const images = new Map();  // url -> Promise<HTMLImageElement decoded>
  const done = new Map();  // trial_index -> response body sent from this mount
  let queue = [];
  let current = null;  // {trial, onset, images, answered}
  let phase = "intro";
  let stopped = false;
  let confirmOpen = false;
  let frameMs = 1000 / 60;
  let lastFrame = null;
  const timers = new Set();
  const later = (fn, ms) => { const id = setTimeout(() => { timers.delete(id); if (!stopped) fn(); }, ms); timers.add(id); };

  const setQueue = (trials) => {
    queue = trials.filter((t) => !done.has(t.trial_index) && !outbox.answered("r:" + t.trial_index)
                                  && !(current && current.trial.trial_index === t.trial_index));
  };

  const load = (url) => {
    if (!images.has(url)) {
      const attempt = (src) => { const img = new Image(); img.decoding = "async"; img.src = src; return img.decode().then(() => img); };
      images.set(url, attempt(url).catch(() => attempt(url + (url.includes("?") ? "&" : "?") + "retry=" + Date.now())));
    }
    return images.get(url);
  };
  const preload = (from) => {
    queue.slice(from, from + 2).forEach((t) => t.urls.forEach(load));
    if (queue.length <= from + 2 && data.next_urls) data.next_urls.forEach(load);
  };

  const showOnly = (which) => {
    dom.fix.hidden = which !== "fix";
    dom.msg.hidden = which !== "msg";
    dom.intro.hidden = which !== "intro";
    dom.row.style.visibility = which === "row" ? "visible" : "hidden";
  };
  const updateProgress = () => {
    const answered = data.progress.done + done.size;
    dom.progress.textContent = `${data.progress.label} · trial ${Math.min(answered + 1, data.progress.total)} of ${data.progress.total}`;
  };

  const trackFrames = (ts) => {
    if (lastFrame !== null) { const d = ts - lastFrame; if (d > 4 && d < 50) frameMs = 0.9 * frameMs + 0.1 * d; }
    lastFrame = ts;
  };

  // Fixation from `fixationStart`; the next triplet is revealed with the first frame presented at or after
  // fixationStart + iti_ms, and only once its three images are decoded.
  const nextTrial = (fixationStart) => {
    current = null;
    if (queue.length === 0) { finishBlock(); return; }
    const trial = queue.shift();
    const entry = { trial, onset: null, imgs: null, failed: false, answered: false, earlyLogged: false };
    current = entry;
    phase = "fixation";
    showOnly("fix");
    updateProgress();
    Promise.all(trial.urls.map(load)).then((imgs) => { entry.imgs = imgs; }, () => { entry.failed = true; });
    preload(0);
    const deadline = fixationStart + data.iti_ms;
    const step = (ts) => {
      if (stopped || current !== entry) return;
      trackFrames(ts);
      // a change made in this frame is on screen one frame later: reveal in the first frame whose
      // presentation is not earlier than the end of the fixation
      if ((entry.imgs || entry.failed) && ts + frameMs >= deadline) { reveal(entry); return; }
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  };

  const reveal = (entry) => {
    if (entry.failed) { imageFailed(entry); return; }
    entry.imgs.forEach((img, position) => {
      const slot = dom.slots[position];
      img.alt = "image " + (position + 1);
      slot.replaceChildren(img);
    });
    showOnly("row");
    requestAnimationFrame(() => {
      if (stopped || current !== entry) return;
      entry.onset = performance.now();
      phase = "stimulus";
      emit("onset", { trial_index: entry.trial.trial_index, t: entry.onset });
      if (data.window_ms > 0) later(() => { if (current === entry && !entry.answered) timedOut(entry); }, data.window_ms);
    });
  };

  const record = (entry, body) => {
    entry.answered = true;
    const full = Object.assign({ token: data.token, trial_index: entry.trial.trial_index, shown: entry.trial.shown }, body);
    done.set(entry.trial.trial_index, full);
    outbox.put("r:" + entry.trial.trial_index, "/responses", full);
  };

  const respond = (position, modality) => {
    const now = performance.now();
    const entry = current;
    if (phase !== "stimulus" || !entry || entry.answered || confirmOpen) return;
    const rt = now - entry.onset;
    if (rt < data.min_rt_ms) {  // too early: ignored, the trial goes on; the first such press is logged for QC
      if (!entry.earlyLogged) {
        entry.earlyLogged = true;
        logEvent(outbox, data.token, "early_response", { rt_ms: rt, position, input_modality: modality },
                 entry.trial.trial_index);
      }
      return;
    }
    record(entry, { chosen_position: position, rt_ms: rt, client_onset_ms: performance.timeOrigin + entry.onset,
                    input_modality: modality, timed_out: false });
    emit("response", { trial_index: entry.trial.trial_index, t: now, rt_ms: rt, position });
    nextTrial(now);
  };

  const showMessageThenNext = (text) => {
    phase = "message";
    dom.msg.textContent = text;
    showOnly("msg");
    later(() => nextTrial(performance.now()), MESSAGE_MS);
  };

  const timedOut = (entry) => {
    record(entry, { chosen_position: null, rt_ms: null, client_onset_ms: performance.timeOrigin + entry.onset,
                    input_modality: "none", timed_out: true });
    showMessageThenNext(data.labels.timeout);
  };

  const imageFailed = (entry) => {
    logEvent(outbox, data.token, "image_error", { urls: entry.trial.urls }, entry.trial.trial_index);
    record(entry, { chosen_position: null, rt_ms: null, client_onset_ms: null, input_modality: "none", timed_out: true });
    showMessageThenNext(data.labels.image_error);
  };

  // Block end: wait until every response of this mount is acknowledged (or 10 s passed, in which case the
  // trigger payload carries them over the websocket), then hand the block back to Python.
  const finishBlock = () => {
    phase = "saving";
    dom.msg.textContent = data.labels.saving;
    showOnly("msg");
    const startedAt = performance.now();
    let sends = 0;
    const check = () => {
      const pending = [...done.keys()].filter((i) => outbox.has("r:" + i));
      const waited = performance.now() - startedAt;
      if (pending.length === 0 || waited > 10000) {
        sends += 1;
        setTriggerValue("block_done", { block_key: data.block_key, block: data.block, attempt: sends, responses: [...done.values()] });
        later(check, 5000);  // still mounted after 5 s: the rerun was lost (reconnect); send again
        return;
      }
      if (waited > 3000) dom.msg.textContent = data.labels.offline;
      outbox.flush();
      later(check, 200);
    };
    check();
  };

  const startBlock = () => {
    if (phase !== "intro" || stopped) return;
    logEvent(outbox, data.token, "block_start", { block_key: data.block_key, intro: data.intro.kind,
                                                   intro_ms: performance.now() - introShownAt });
    nextTrial(performance.now());
  };

  let introShownAt = performance.now();
  const showIntro = () => {
    phase = "intro";
    introShownAt = performance.now();
    dom.intro.querySelector(".al-intro-title").textContent = data.intro.title;
    dom.intro.querySelector(".al-intro-text").textContent = data.intro.text;
    showOnly("intro");
    updateProgress();
    preload(0);
    const cap = data.intro.max_seconds;
    if (cap > 0) {
      const tick = () => {
        if (phase !== "intro") return;
        const left = Math.ceil(cap - (performance.now() - introShownAt) / 1000);
        dom.intro.querySelector(".al-timer").textContent = `The study continues by itself in ${left} s.`;
        if (left <= 0) startBlock(); else later(tick, 250);
      };
      tick();
    }
  };

  const onKey = (event) => {
    if (event.repeat || confirmOpen) return;
    if (phase === "intro" && CONTINUE_KEYS.has(event.key)) { event.preventDefault(); startBlock(); return; }
    if (event.key in KEYS) { event.preventDefault(); respond(KEYS[event.key], "keyboard"); }
  };
  window.addEventListener("keydown", onKey);
  dom.slots.forEach((slot, position) => slot.addEventListener("pointerdown", (event) => {
    respond(position, event.pointerType === "touch" || event.pointerType === "pen" ? "touch" : "mouse");
  }));
  dom.intro.querySelector(".al-continue").addEventListener("click", startBlock);
  dom.stop.addEventListener("click", () => { confirmOpen = true; dom.confirm.hidden = false; });
  dom.confirm.querySelector(".al-confirm-no").addEventListener("click", () => { confirmOpen = false; dom.confirm.hidden = true; });
  dom.confirm.querySelector(".al-confirm-yes").addEventListener("click", () => {
    stop("early_exit");
    setTriggerValue("early_exit", { block_key: data.block_key, block: data.block, responses: [...done.values()] });
  });

  const stop = (why) => {
    if (stopped) return;
    stopped = true;
    timers.forEach(clearTimeout);
    window.removeEventListener("keydown", onKey);
    dom.box.remove();
    if (current && current.onset !== null && !current.answered)
      logEvent(outbox, data.token, "trial_interrupted", { why }, current.trial.trial_index);
  };

  setQueue(data.trials);
  showIntro();
  return {
    blockKey: data.block_key,
    stop,
    merge(next) { data = next; if (phase !== "saving") setQueue(next.trials); },
  };
}
