// The studio page: submit a job, poll it, show each variation as a card.
// Plain DOM code, no framework or build step; every string from the server goes in via textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
const STAGES = ["queued", "loading", "composing", "rendering", "running"];  // keys of i18n.js
let CONFIG = null;

async function loadConfig() {
  // Limits come from the server so the form and the API never disagree.
  try {
    const cfg = await (await fetch("/api/config")).json();
    CONFIG = cfg;
    showStyle(cfg.conditions, cfg.style_menus);
    document.dispatchEvent(new CustomEvent("studioconfig", { detail: cfg }));
    $("seconds").max = cfg.max_seconds;
    $("num_samples").max = cfg.max_samples;
    $("primer_seconds").max = cfg.max_primer_seconds;
    showUnits();
    for (const [name, value] of Object.entries(cfg.defaults)) {
      if (value !== null && $(name)) $(name).value = value;
    }
  } catch (e) { /* the built-in values in the form still work */ }
}

let STYLE_MENUS = [];  // the conditions' controls, in the server's order (/api/config style_menus)
let STYLE_NAMES = [];  // those the current model has

function showStyle(cond, menus) {
  // One control per condition the model has, filled from its own values (a menu, or a number for
  // density); the fieldset stays hidden for an unconditioned model. Labels are i18n keys by name.
  if (menus) STYLE_MENUS = menus;
  for (const label of [...document.querySelectorAll("#style [data-cond]")]) label.remove();  // a model chosen later has its own
  const have = STYLE_MENUS.filter((m) => cond && cond[m.name]);
  STYLE_NAMES = have.map((m) => m.name);
  $("style").hidden = have.length === 0;
  const guidance = $("guidance").closest("label");
  for (const m of have) {
    const label = el("label", { "data-cond": m.name });
    label.append(el("span", { "data-i18n": m.name }, t(m.name)));
    let input;
    if (m.menu === "number") {
      label.append(" ", el("span", { class: "unit", "data-i18n": `${m.name}_unit` }, t(`${m.name}_unit`)));
      input = el("input", { id: m.name, type: "number", min: m.gt ?? m.ge ?? "", max: m.le ?? m.lt ?? "",
                            step: "any", placeholder: t("any") });
    } else {
      input = el("select", { id: m.name });
      input.append(el("option", { value: "", "data-i18n": "any" }, t("any")));
      const names = cond[`${m.name}_names`] || {};
      for (const value of cond[m.name]) input.append(el("option", { value }, names[value] || value));
    }
    label.append(input);
    guidance.before(label);
  }
}

let MODELS = [];

function modelNote() {
  const m = MODELS.find((x) => x.name === $("model").value);
  const ft = m && m.finetune;
  $("model-note").textContent = ft && ft.held_out_yours != null
    ? t("finetuned_on", { folder: ft.folder, a: ft.held_out_shipped.toFixed(2), b: ft.held_out_yours.toFixed(2) }) : "";
}

function showModels() {
  const select = $("model");
  select.replaceChildren(...MODELS.map((m) => el("option", { value: m.name }, m.name === "shipped" ? t("shipped_model") : m.name)));
  modelNote();
}

async function loadModels() {
  // the menu shows only when there is a choice: the startup model and at least one in --models_dir
  try {
    const r = await (await fetch("/api/models")).json();
    MODELS = r.models;
    $("model-row").hidden = MODELS.length < 2;
    showModels();
    $("model").value = r.current;
    modelNote();
  } catch (e) { /* one model: nothing to choose */ }
}

async function chooseModel() {
  const response = await fetch("/api/model", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify({ name: $("model").value }) });
  const r = await response.json();
  if (!response.ok) {
    $("model-note").textContent = `${t("model_failed")}: ${r.detail}`;
    return;
  }
  showStyle(r.conditions);
  if (CONFIG) CONFIG.conditions = r.conditions;
  document.dispatchEvent(new CustomEvent("studioconfig", { detail: CONFIG }));
  modelNote();
}

function styleFields() {
  // the style the form asks for: only what is set, so an unconditioned model is never asked
  const out = {};
  if ($("style").hidden) return out;
  for (const name of STYLE_NAMES) {
    const raw = $(name).value.trim();
    if (raw !== "") out[name] = $(name).type === "number" ? Number(raw) : raw;
  }
  const guidance = Number($("guidance").value);
  if (Object.keys(out).length && guidance !== 1 && !Number.isNaN(guidance)) out.guidance = guidance;
  return out;
}

function showUnits() {
  if (!CONFIG) return;
  $("seconds-unit").textContent = t("seconds_up_to", { n: CONFIG.max_seconds });
  $("samples-unit").textContent = t("up_to", { n: CONFIG.max_samples });
}

function showMessage(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

function setStatus(text, progress) {
  $("status").hidden = false;
  $("status-text").textContent = text;
  if (progress === null) $("progress").removeAttribute("value");  // indeterminate
  else $("progress").value = progress;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

async function submit(event) {
  event.preventDefault();
  showMessage("");
  const fields = {};
  for (const name of ["seconds", "temperature", "top_p", "seed", "num_samples"]) {
    const raw = $(name).value.trim();
    if (raw === "" && name === "seed") continue;
    if (raw === "" || Number.isNaN(Number(raw))) { showMessage(t("must_be_number", { name })); return; }
    fields[name] = Number(raw);
  }
  Object.assign(fields, styleFields());
  if ($("form").value !== "through") fields.form = $("form").value;
  let request;
  const file = $("primer").files[0];
  if (file) {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) form.append(k, String(v));
    if ($("primer_seconds").value.trim() !== "") form.append("primer_seconds", $("primer_seconds").value.trim());
    form.append("primer", file);
    request = fetch("/api/generate_with_primer", { method: "POST", body: form });
  } else {
    request = fetch("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(fields) });
  }
  $("compose").disabled = true;
  setStatus(t("sending") + "…", null);
  try {
    const response = await request;
    if (!response.ok) throw new Error(await errorText(response));
    const { id } = await response.json();
    await follow(id);
  } catch (e) {
    showMessage(e.message);
    $("status").hidden = true;
  } finally {
    $("compose").disabled = false;
  }
}

async function follow(id) {
  for (;;) {
    const response = await fetch(`/api/jobs/${encodeURIComponent(id)}`);
    if (!response.ok) throw new Error(await errorText(response));
    const job = await response.json();
    if (job.status === "done") {
      setStatus(t("done"), 1);
      showJob(job);
      return;
    }
    if (job.status === "error") throw new Error(job.error || t("composing_failed"));
    let text = STAGES.includes(job.stage) ? t(job.stage) : STAGES.includes(job.status) ? t(job.status) : job.status;
    if (job.status === "queued" && job.queue_position) text += ` (${t("position", { n: job.queue_position })})`;
    if (job.status === "running") text += ` ${Math.round(100 * job.progress)}%`;
    setStatus(text + "…", job.status === "queued" ? null : job.progress);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function showJob(job) {
  const p = job.params;
  const section = el("section", { class: "job", "data-job": job.id });
  const bits = [`${p.seconds} s`, `temperature ${p.temperature}`, `top-p ${p.top_p}`, `seed ${p.seed}`,
                ...Object.values(p.style_labels || {})];
  if (p.primer_seconds) bits.push(t("continuing", { n: p.primer_seconds }));
  if (p.form && p.form !== "through") bits.push(t("form_of", { form: p.form }));
  section.append(el("h2", {}, bits.join(" · ")));
  const cards = el("div", { class: "cards" });
  job.variations.forEach((v, i) => cards.append(card(v, i + 1, job.id)));
  section.append(cards);
  $("results").prepend(section);
}

function card(variation, number, jobId) {
  const f = variation.files;
  const article = el("article", { class: "card" });
  const header = el("header");
  header.append(el("h3", {}, t("variation", { n: number })),
                el("span", { class: "meta" }, `${variation.seconds.toFixed(1)} s · ${t("notes_count", { n: variation.notes })}`));
  article.append(header);
  if (f.mp3 || f.wav) {
    const audio = el("audio", { controls: "", preload: "metadata" });
    if (f.mp3) audio.append(el("source", { src: f.mp3, type: "audio/mpeg" }));
    if (f.wav) audio.append(el("source", { src: f.wav, type: "audio/wav" }));
    article.append(audio);
  } else {
    article.append(el("p", { class: "meta" }, t("silent")));
  }
  if (f.png) article.append(el("img", { src: f.png, alt: t("piano_roll_of", { n: number }) }));
  if (variation.sections && variation.sections.length) {
    // the plan's sections, as the bands over the piano roll show them
    const bands = el("p", { class: "meta sections" }, `${t("sections")}: `);
    bands.append(variation.sections.map((s) => `${s.label} ${s.start.toFixed(0)}–${s.end.toFixed(0)} s`).join(" · "));
    article.append(bands);
  }
  const links = el("nav", { class: "downloads", "aria-label": "Downloads" });
  for (const [kind, label] of [["midi", "MIDI"], ["wav", "WAV"], ["mp3", "MP3"]]) {
    if (!f[kind]) continue;
    const name = f[kind].split("/").pop();
    links.append(el("a", { href: f[kind], download: `${jobId.slice(0, 8)}-${name}` }, t("download", { kind: label })));
  }
  article.append(links);
  return article;
}

document.addEventListener("DOMContentLoaded", () => {
  loadConfig();
  loadModels();
  $("model").addEventListener("change", chooseModel);
  document.addEventListener("languagechange", () => { if (MODELS.length) { const v = $("model").value; showModels(); $("model").value = v; modelNote(); } });
  $("compose-form").addEventListener("submit", submit);
  document.addEventListener("languagechange", showUnits);
});
