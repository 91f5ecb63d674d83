"""The naive baseline for bench/trial_timing.py: one Streamlit rerun per trial.

Each rerun mounts a one-trial component; it shows the fixation cross, loads the three images, reveals
them after the fixation time (double rAF onset) and sends the response as a trigger value; Python stores
the row and reruns for the next trial. Served by the bench as `streamlit run bench/naive_server.py` (same
image endpoint as the app), opened with `?study=SLUG&pid=ID`.
"""

import streamlit as st

from app.participant.blocks import stimulus_url
from app.resources import get_db, get_token_key
from study.participation import (
    ResponsePayload,
    answered_trials,
    enter_study,
    participant_view,
    record_response,
    trial_plan,
)

JS = """
const state = new WeakMap();
export default function ({ data, parentElement, setTriggerValue }) {
  const old = state.get(parentElement);
  if (old && old.trial === data.trial_index) return;
  if (old) { window.removeEventListener("keydown", old.onKey); old.box.remove(); }
  const mountedAt = performance.now();
  const box = document.createElement("div");
  box.innerHTML =
    '<div class="fix">+</div><div class="row" style="visibility:hidden;display:flex;gap:24px"></div>';
  parentElement.appendChild(box);
  const row = box.querySelector(".row");
  let onset = null, answered = false;
  Promise.all(data.urls.map((u) => { const i = new Image(); i.src = u; return i.decode().then(() => i); }))
    .then((imgs) => {
      const reveal = () => {
        imgs.forEach((img) => { img.width = img.height = 240; row.appendChild(img); });
        row.style.visibility = "visible"; box.querySelector(".fix").hidden = true;
        requestAnimationFrame(() => requestAnimationFrame(() => {
          onset = performance.now();
          const detail = { trial_index: data.trial_index, t: onset };
          window.dispatchEvent(new CustomEvent("alignlab:onset", { detail }));
        }));
      };
      setTimeout(reveal, Math.max(0, data.iti_ms - (performance.now() - mountedAt)));
    });
  const onKey = (e) => {
    const position = { ArrowLeft: 0, ArrowDown: 1, ArrowRight: 2 }[e.key];
    if (onset === null || answered || position === undefined) return;
    answered = true;
    const now = performance.now();
    const detail = { trial_index: data.trial_index, t: now };
    window.dispatchEvent(new CustomEvent("alignlab:response", { detail }));
    setTriggerValue("choice", {
      position, rt_ms: now - onset, client_onset_ms: performance.timeOrigin + onset,
    });
  };
  window.addEventListener("keydown", onKey);
  state.set(parentElement, { trial: data.trial_index, onKey, box });
}
"""


@st.cache_resource
def naive_component():
    return st.components.v2.component("naive_one_trial", js=JS)


def naive_page() -> None:
    db = get_db()
    participant_id = enter_study(db, st.query_params["study"], st.query_params["pid"]).participant_id
    answered = answered_trials(db, participant_id)
    todo = [t for t in trial_plan(db, participant_id) if t.trial_index not in answered]
    if not todo:
        st.write("done")
        return
    trial = todo[0]
    data = {
        "trial_index": trial.trial_index,
        "urls": [stimulus_url(i, get_token_key().token(participant_id)) for i in trial.shown],
        "iti_ms": participant_view(db, participant_id).config.iti_ms,
    }
    result = naive_component()(key="naive", data=data, on_choice_change=lambda: None)
    if result.choice:
        choice = result.choice
        record_response(
            db,
            participant_id,
            ResponsePayload(
                trial.trial_index,
                trial.shown,
                choice["position"],
                choice["rt_ms"],
                choice["client_onset_ms"],
                "keyboard",
            ),
        )
        st.rerun()


naive_page()
