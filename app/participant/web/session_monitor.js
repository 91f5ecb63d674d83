// Session monitor: mounted on every participant page. Re-sends whatever the outbox still holds (after a
// reload, a closed tab or a server restart), records interaction events once per page load, and performs
// the final redirect only when no response is left unacknowledged.
export default function (component) {
  const { data } = component;
  if (!data || !data.ns) return;
  const outbox = outboxFor(data.ns, data.api, data.token);
  outbox.flush();
  window.__alignlabMonitored = window.__alignlabMonitored || {};
  if (!window.__alignlabMonitored[data.ns]) {
    window.__alignlabMonitored[data.ns] = true;
    installListeners(outbox);
  }
  if (data.redirect) redirectWhenSaved(outbox, data.redirect);
}

function browserFacts() {
  const nav = performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
  return {
    user_agent: navigator.userAgent, language: navigator.language,
    screen: { width: screen.width, height: screen.height },
    window: { width: window.innerWidth, height: window.innerHeight },
    device_pixel_ratio: window.devicePixelRatio, navigation: nav ? nav.type : "unknown",
    touch: navigator.maxTouchPoints || 0,
  };
}

function installListeners(outbox) {
  const facts = browserFacts();
  logEvent(outbox, "browser", facts);
  if (facts.navigation === "reload") logEvent(outbox, "reload", { navigation: "reload" });
  window.addEventListener("blur", () => logEvent(outbox, "blur", {}));
  window.addEventListener("focus", () => logEvent(outbox, "focus", {}));
  document.addEventListener("visibilitychange", () =>
    logEvent(outbox, "visibility", { state: document.visibilityState }));
  document.addEventListener("fullscreenchange", () =>
    logEvent(outbox, document.fullscreenElement ? "fullscreen_enter" : "fullscreen_exit", {}));
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => logEvent(outbox, "resize",
      { window: { width: window.innerWidth, height: window.innerHeight }, device_pixel_ratio: window.devicePixelRatio }), 400);
  });
  window.addEventListener("online", () => logEvent(outbox, "online", {}));
  window.addEventListener("offline", () => logEvent(outbox, "offline", {}));
}

function redirectWhenSaved(outbox, url) {
  if (window.__alignlabRedirecting) return;
  window.__alignlabRedirecting = true;
  const attempt = () => {
    if (outbox.pending("r:").length === 0) window.location.assign(url);
    else { outbox.flush(); setTimeout(attempt, 300); }
  };
  setTimeout(attempt, 1500);
}
