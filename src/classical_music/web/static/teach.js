// Teach it your music: upload MIDI files, the server fine-tunes the model in use (POST
// /api/finetune, web/teach.py), this panel polls its progress, and the new model joins the Model
// menu (loadModels in app.js). One fine-tune at a time; Cancel saves nothing.
"use strict";

const teach = { id: null, timer: null, limits: null };
const tq = (id) => document.getElementById(id);

function teachSay(key, vars, progress) {
  tq("teach-status").hidden = false;
  const text = tq("teach-text");
  text.dataset.i18n = key;
  text.dataset.i18nVars = JSON.stringify(vars || {});
  text.textContent = t(key, vars);
  if (progress === null) tq("teach-progress").removeAttribute("value");
  else tq("teach-progress").value = progress;
}

function teachWarn(text) {
  tq("teach-message").textContent = text || "";
  tq("teach-message").hidden = !text;
}

function teachRunning(on) {
  tq("teach-start").disabled = on;
  tq("teach-cancel").hidden = !on;
}

async function teachError(response) {
  // the server's reason in the page's language where the page knows it
  if (response.status === 409) return t("teach_taken");
  if (response.status === 429) return t("teach_busy");
  let detail = `${response.status}`;
  try { const body = await response.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* status */ }
  if (response.status === 413 && / is larger than /.test(detail))
    return t("teach_file_too_large", { name: detail.split(" is larger than ")[0], mb: teach.limits.max_file_bytes / 2 ** 20 });
  if (response.status === 413) return t("teach_too_many", { n: teach.limits.max_files, mb: teach.limits.max_bytes / 2 ** 20 });
  if (detail.startsWith("name must")) return t("teach_bad_name");
  return t("teach_failed", { detail });
}

async function teachStart() {
  teachWarn("");
  const files = [...tq("teach-files").files];
  const name = tq("teach-name").value.trim();
  if (!files.length) return teachWarn(t("teach_no_files"));
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$/.test(name)) return teachWarn(t("teach_bad_name"));
  const bytes = files.reduce((a, f) => a + f.size, 0);
  const big = files.find((f) => f.size > teach.limits.max_file_bytes);
  if (big) return teachWarn(t("teach_file_too_large", { name: big.name, mb: teach.limits.max_file_bytes / 2 ** 20 }));
  if (files.length > teach.limits.max_files || bytes > teach.limits.max_bytes)
    return teachWarn(t("teach_too_many", { n: teach.limits.max_files, mb: teach.limits.max_bytes / 2 ** 20 }));
  const body = new FormData();
  for (const f of files) body.append("files", f, f.name);
  body.append("name", name);
  body.append("minutes", tq("teach-minutes").value);
  const composer = tq("teach-composer").value.trim();
  if (composer) body.append("composer", composer);
  teachRunning(true);
  teachSay("teach_preparing", {}, null);
  let response;
  try {
    response = await fetch("/api/finetune", { method: "POST", body });
  } catch (e) {
    teachRunning(false);
    tq("teach-status").hidden = true;
    return teachWarn(t("network"));
  }
  if (!response.ok) {
    teachRunning(false);
    tq("teach-status").hidden = true;
    return teachWarn(await teachError(response));
  }
  teachFollow((await response.json()).id);
}

function teachFollow(id) {
  teach.id = id;
  clearInterval(teach.timer);
  teach.timer = setInterval(teachPoll, 1000);
}

async function teachPoll() {
  let r;
  try { r = await (await fetch(`/api/finetune/${teach.id}`)).json(); } catch (e) { return; }  // try again next second
  if (r.stage === "preparing") teachSay("teach_preparing", {}, null);
  else if (r.stage === "training") teachSay("teach_training", { n: (r.progress * r.minutes).toFixed(1), m: r.minutes }, r.progress);
  else if (r.stage === "saving") teachSay("teach_saving", {}, null);
  if (r.status === "running") return;
  clearInterval(teach.timer);
  teachRunning(false);
  if (r.status === "done") {
    const h = r.result.held_out, d = h.yours - h.shipped;
    teachSay("teach_done", { a: h.shipped.toFixed(3), b: h.yours.toFixed(3), d: (d > 0 ? "+" : "") + d.toFixed(3),
                             n: h.pieces, name: r.name }, 1);
    // music the model had already learned from teaches it little: say so, as `finetune` does
    const warn = [];
    if (r.result.already_learned) warn.push(t("teach_already", { n: r.result.already_learned, m: r.result.files }));
    // a change that forgot too much of the rest was blended back (finetune's FORGET_BOUND)
    if (r.result.kept_share < 1) warn.push(t("teach_blended", { p: Math.round(100 * r.result.kept_share) }));
    teachWarn(warn.join(" "));
    if (typeof loadModels === "function") await loadModels();
  } else if (r.status === "cancelled") {
    teachSay("teach_cancelled", {}, 0);
  } else {
    tq("teach-status").hidden = true;
    teachWarn(t("teach_failed", { detail: r.error || "" }));
  }
}

async function teachCancel() {
  if (teach.id) await fetch(`/api/finetune/${teach.id}/cancel`, { method: "POST" });
}

function teachCount() {
  const n = tq("teach-files").files.length;
  const label = tq("teach-count");
  label.dataset.i18n = n ? "files_chosen" : "no_file";
  label.dataset.i18nVars = JSON.stringify({ n });
  label.textContent = n ? t("files_chosen", { n }) : t("no_file");
}

document.addEventListener("studioconfig", (e) => {
  const limits = e.detail && e.detail.finetune;
  if (!limits || !limits.available) return;  // a studio without --models_dir keeps no models
  teach.limits = limits;
  tq("teach").hidden = false;
  tq("teach-minutes").max = limits.max_minutes;
  tq("teach-minutes").value = Math.min(Number(tq("teach-minutes").value) || limits.default_minutes, limits.max_minutes);
  const unit = tq("teach-minutes-unit");
  unit.dataset.i18n = "up_to";
  unit.dataset.i18nVars = JSON.stringify({ n: limits.max_minutes });
  unit.textContent = t("up_to", { n: limits.max_minutes });
  if (limits.running && !teach.id) {  // a fine-tune started before this page was (re)loaded: follow it
    teachRunning(true);
    teachSay("teach_preparing", {}, null);
    teachFollow(limits.running);
  }
});

document.addEventListener("DOMContentLoaded", () => {
  tq("teach-start").addEventListener("click", teachStart);
  tq("teach-cancel").addEventListener("click", teachCancel);
  tq("teach-files").addEventListener("change", teachCount);
});
