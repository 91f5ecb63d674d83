// Odd-one-out trial block. Python mounts it once per block with the trials still to run; the whole
// block then runs here without a server round trip between trials:
//   intro (all of the block's images are fetched meanwhile, with a progress bar) -> fixation (iti_ms) ->
//   three images, revealed only when all are decoded -> onset = performance.now() on the frame after the
//   reveal (double rAF) -> first valid click/tap/key (or the response window ends) -> the response goes to
//   the outbox (POSTed at once) and the next fixation starts immediately.
// Images never cost an answer: a network error or a server that is down pauses the block ("reconnecting")
// until the images arrive, then the trial starts with a fresh fixation; only an image the server keeps
// answering 404 for is recorded as `unavailable` (the server checks that it really is gone).
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
        <div class="al-loading" data-testid="al-loading" hidden>
          <progress class="al-loading-bar"></progress> <span class="al-loading-text"></span>
        </div>
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
           progress: q(".al-progress"), stop: q(".al-stop"), confirm: q(".al-confirm"), loading: q(".al-loading"),
           loadingBar: q(".al-loading-bar"), loadingText: q(".al-loading-text") };
}

function createRun(initial, root, setTriggerValue) {
  let data = initial;
  const dom = buildDom(root, data);
  const outbox = outboxFor(data.ns, data.api, data.token);
  const loader = createImageLoader((detail) => logEvent(outbox, "image_retry", detail));
  const done = new Map();  // trial_index -> response body sent from this mount
  let queue = [];
  let current = null;  // {trial, onset, images, answered}
  let phase = "intro";
  let stopped = false;
  let confirmOpen = false;
  let frameMs = 1000 / 60;
  let frameSamples = 0;
  let lastFrame = null;
  const timers = new Set();
  const later = (fn, ms) => { const id = setTimeout(() => { timers.delete(id); if (!stopped) fn(); }, ms); timers.add(id); };

  const setQueue = (trials) => {
    queue = trials.filter((t) => !done.has(t.trial_index) && !outbox.answered("r:" + t.trial_index)
                                  && !(current && current.trial.trial_index === t.trial_index));
  };

  const preload = () => {
    queue.forEach((t) => t.urls.forEach(loader.fetch));
    (data.next_urls || []).forEach(loader.fetch);
    queue.slice(0, 2).forEach((t) => loader.trialImages(t.urls));
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
    if (lastFrame !== null) {
      const d = ts - lastFrame;
      if (d > 4 && d < 50) { frameMs = frameSamples === 0 ? d : 0.9 * frameMs + 0.1 * d; frameSamples += 1; }
    }
    lastFrame = ts;
  };

  // Fixation from `fixationStart`; the next triplet is revealed with the first frame presented at or after
  // fixationStart + iti_ms, and only once its three images are decoded. Images late by more than
  // WAIT_NOTICE_MS pause the block with a notice; when they arrive the trial starts with a fresh fixation.
  const nextTrial = (fixationStart) => {
    current = null;
    if (queue.length === 0) { finishBlock(); return; }
    const trial = queue.shift();
    const entry = { trial, onset: null, imgs: null, unavailable: false, answered: false, earlyLogged: false, waiting: false };
    current = entry;
    loader.trialImages(trial.urls).then((result) => {
      if (result.unavailable) entry.unavailable = true; else entry.imgs = result.imgs;
    });
    preload();
    fixate(entry, fixationStart);
  };

  const fixate = (entry, fixationStart) => {
    phase = "fixation";
    showOnly("fix");
    updateProgress();
    const deadline = fixationStart + data.iti_ms;
    const step = (ts) => {
      if (stopped || current !== entry) return;
      trackFrames(ts);
      const ready = entry.imgs || entry.unavailable;
      if (ready && entry.waiting) { entry.waiting = false; fixate(entry, performance.now()); return; }
      // a change made in this frame is on screen one frame later: reveal in the first frame whose
      // presentation is not earlier than the end of the fixation
      if (ready && ts + frameMs >= deadline) { reveal(entry); return; }
      if (!ready && !entry.waiting && ts > deadline + WAIT_NOTICE_MS) {
        entry.waiting = true;
        phase = "waiting";
        dom.msg.textContent = data.labels.reconnecting;
        showOnly("msg");
        logEvent(outbox, "connection_lost", { during: "images" }, entry.trial.trial_index);
      }
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  };

  const reveal = (entry) => {
    if (entry.unavailable) { imageUnavailable(entry); return; }
    reportRefreshRate();
    entry.imgs.forEach((img, position) => {
      const slot = dom.slots[position];
      img.alt = "image " + (position + 1);
      slot.dataset.stimulus = String(entry.trial.shown[position]);  // the image itself is a blob: URL
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
    const full = Object.assign({ trial_index: entry.trial.trial_index, shown: entry.trial.shown }, body);
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
        logEvent(outbox, "early_response", { rt_ms: rt, position, input_modality: modality },
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

  const imageUnavailable = (entry) => {
    logEvent(outbox, "image_unavailable", { urls: entry.trial.urls.map(withoutQuery) }, entry.trial.trial_index);
    record(entry, { chosen_position: null, rt_ms: null, client_onset_ms: null, input_modality: "none",
                    timed_out: false, unavailable: true });
    showMessageThenNext(data.labels.unavailable);
  };

  // The display's frame interval, measured from requestAnimationFrame deltas during the fixations and
  // logged once per block: onsets and RTs are only as precise as one frame.
  let refreshReported = false;
  const reportRefreshRate = () => {
    if (refreshReported || frameSamples < 30) return;
    refreshReported = true;
    logEvent(outbox, "refresh_rate", { frame_ms: Math.round(frameMs * 1000) / 1000, samples: frameSamples });
  };

  // Block end: wait until every response of this mount is acknowledged (or 10 s passed, in which case the
  // trigger payload carries them over the websocket as well), then hand the block back to Python. When the
  // outbox has given up (nothing acknowledged for a long time) the page says so and offers to try again.
  const finishBlock = () => {
    phase = "saving";
    dom.msg.textContent = data.labels.saving;
    showOnly("msg");
    const startedAt = performance.now();
    let sends = 0;
    const check = () => {
      const pending = [...done.keys()].filter((i) => outbox.has("r:" + i));
      const waited = performance.now() - startedAt;
      if (pending.length === 0 || (waited > 10000 && sends === 0)) {
        sends += 1;
        setTriggerValue("block_done", { block_key: data.block_key, block: data.block, attempt: sends, responses: [...done.values()] });
        later(check, 5000);  // still mounted after 5 s: the rerun was lost (reconnect) or answers still wait
        return;
      }
      if (outbox.isStalled()) { showStalled(); return; }
      if (waited > 3000) dom.msg.textContent = data.labels.offline;
      outbox.flush();
      later(check, 200);
    };
    const showStalled = () => {
      logEvent(outbox, "outbox_stalled", { pending: outbox.pending("r:").length });
      dom.msg.textContent = data.labels.stalled + " ";
      const retry = document.createElement("button");
      retry.type = "button";
      retry.textContent = data.labels.retry;
      retry.setAttribute("data-testid", "al-retry");
      retry.addEventListener("click", () => { outbox.resume(); dom.msg.textContent = data.labels.saving; later(check, 200); });
      dom.msg.appendChild(retry);
    };
    check();
  };

  // Full screen is asked for inside the Continue click / Space press (browsers allow it only on a user
  // gesture); a refusal is not an error: the session monitor logs what happens, QC counts the exits.
  const enterFullscreen = () => {
    const root = document.documentElement;
    if (!data.fullscreen || document.fullscreenElement || !root.requestFullscreen) return;
    root.requestFullscreen().catch(() => {});
  };

  const startBlock = () => {
    if (phase !== "intro" || stopped) return;
    enterFullscreen();
    logEvent(outbox, "block_start", { block_key: data.block_key, intro: data.intro.kind,
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
    preload();
    showLoading();
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

  // The intro waits for the block's images (as jsPsych's preload does): a progress bar, Continue enabled once
  // every image is here or known to be gone. A long wait says that the connection is being retried.
  const showLoading = () => {
    const urls = [...new Set(queue.flatMap((t) => t.urls.map(withoutQuery)))];
    const button = dom.intro.querySelector(".al-continue");
    const update = () => {
      if (phase !== "intro" || stopped) return;
      const settled = urls.filter((u) => loader.settled(u)).length;
      const complete = settled === urls.length;
      button.disabled = !complete;
      dom.loading.hidden = complete;
      dom.loadingBar.max = Math.max(urls.length, 1);
      dom.loadingBar.value = settled;
      const slow = performance.now() - introShownAt > WAIT_NOTICE_MS && loader.troubled();
      dom.loadingText.textContent = slow ? data.labels.reconnecting : `${data.labels.loading}: ${settled} of ${urls.length}`;
      if (!complete) later(update, 100);
    };
    update();
  };
  const onKey = (event) => {
    if (event.repeat || confirmOpen) return;
    if (phase === "intro" && CONTINUE_KEYS.has(event.key)) {
      event.preventDefault();
      if (!dom.intro.querySelector(".al-continue").disabled) startBlock();
      return;
    }
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
    loader.stop();
    unsubscribe();
    window.removeEventListener("keydown", onKey);
    dom.box.remove();
    if (current && current.onset !== null && !current.answered)
      logEvent(outbox, "trial_interrupted", { why }, current.trial.trial_index);
  };

  // A response the server refused (409) was not stored: forget it here too, so a later mount may offer the
  // trial again. Connection changes are logged for the researcher.
  const unsubscribe = outbox.subscribe((what) => {
    if (what.id && what.id.startsWith("r:") && what.status === "rejected") done.delete(Number(what.id.slice(2)));
    if (what.connection) logEvent(outbox, "connection_" + what.connection, { reason: what.reason || null });
  });

  setQueue(data.trials);
  showIntro();
  return {
    blockKey: data.block_key,
    stop,
    merge(next) {
      data = next;
      outbox.setToken(next.token);
      next.trials.forEach((t) => t.urls.forEach(loader.fetch));  // newer URLs (a fresh token) for what still loads
      if (phase !== "saving") setQueue(next.trials);
    },
  };
}

const WAIT_NOTICE_MS = 1500;
const RETRY_MIN_MS_IMG = 250;
const RETRY_MAX_MS_IMG = 4000;
const DECODED_KEPT = 12;  // decoded images kept (a few trials' worth): a 330-trial block stays small on phones
const MISSING_ATTEMPTS = 3;  // a 404 this many times in a row means the image is gone, not late

function withoutQuery(url) { return url.split("?")[0]; }
function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

// Images of a block, fetched once as blobs (keyed by URL without its query, so a re-signed URL is the same
// image) and decoded only for the trials about to be shown. Failures are never remembered: a network error,
// a 5xx or a 401 is retried with backoff for as long as the block is mounted; only a repeated 404 (or an
// undecodable file) settles an image as unavailable.
function createImageLoader(onRetry) {
  const latestUrl = new Map();  // key -> newest URL seen (with the current token)
  const blobs = new Map();  // key -> Promise<{blob} | {unavailable: true}>
  const done = new Map();  // key -> {blob} | {unavailable}
  const decoded = new Map();  // key -> Promise<HTMLImageElement>
  let troubleSince = null;
  let stopped = false;

  const attemptFetch = async (key) => {
    const reply = await fetch(latestUrl.get(key), { cache: "force-cache" });
    if (!reply.ok) return { status: reply.status };
    return { blob: await reply.blob() };
  };
  const fetchUntilSettled = async (key) => {
    let wait = RETRY_MIN_MS_IMG;
    let missing = 0;
    for (let attempt = 1; !stopped; attempt++) {
      let outcome;
      try { outcome = await attemptFetch(key); } catch (e) { outcome = { status: 0 }; }
      if (outcome.blob) { troubleSince = null; return outcome; }
      missing = outcome.status === 404 ? missing + 1 : 0;
      if (missing >= MISSING_ATTEMPTS) return { unavailable: true };
      if (outcome.status !== 404 && troubleSince === null) troubleSince = performance.now();
      if (attempt === 1 || attempt % 10 === 0) onRetry({ url: key, attempt, status: outcome.status });
      await sleep(wait);
      wait = Math.min(wait * 2, RETRY_MAX_MS_IMG);
    }
    return new Promise(() => {});  // unmounted: never settles
  };
  const fetchImage = (url) => {
    const key = withoutQuery(url);
    latestUrl.set(key, url);
    if (!blobs.has(key)) blobs.set(key, fetchUntilSettled(key).then((result) => { done.set(key, result); return result; }));
    return blobs.get(key);
  };
  const decode = (key, result) => {
    if (!decoded.has(key)) {
      const img = new Image();
      img.decoding = "async";
      img.src = URL.createObjectURL(result.blob);
      decoded.set(key, img.decode().then(() => img));
    }
    return decoded.get(key);
  };
  return {
    fetch: fetchImage,
    // The three decoded images of a trial, or {unavailable: true} when one of them is gone.
    async trialImages(urls) {
      const results = await Promise.all(urls.map(fetchImage));
      if (results.some((r) => r.unavailable)) return { unavailable: true };
      try {
        const keys = urls.map(withoutQuery);
        const imgs = await Promise.all(keys.map((key, i) => decode(key, results[i])));
        while (decoded.size > DECODED_KEPT) decoded.delete(decoded.keys().next().value);  // oldest first
        return { imgs };
      } catch (e) {
        return { unavailable: true };  // served but not an image
      }
    },
    settled(url) { return done.has(withoutQuery(url)); },
    troubled() { return troubleSince !== null; },
    stop() { stopped = true; },
  };
}
