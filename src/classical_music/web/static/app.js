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
                            step: "any", placeholder: t("any"), "data-i18n-placeholder": "any" });
    } else {
      input = el("select", { id: m.name });
      input.append(el("option", { value: "", "data-i18n": "any" }, t("any")));
      for (const value of cond[m.name]) input.append(styleValue("option", m.name, value, { value }, cond));
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
    $("model-note").textContent = `${t("model_failed")}: ${reason(r.detail, response.status)}`;
    return;
  }
  if (CONFIG) CONFIG.conditions = r.conditions;  // first: the menus read the composers' names from it
  showStyle(r.conditions);
  document.dispatchEvent(new CustomEvent("studioconfig", { detail: CONFIG }));
  modelNote();
}

function styleValue(tag, name, value, attrs = {}, cond = null) {
  // a style value as the reader's language says it: composers by their own names, the rest translated
  if (name === "composer") {
    if (value === "other") return tr(tag, "composer_other", null, attrs);
    const names = (cond || (CONFIG && CONFIG.conditions) || {}).composer_names || {};
    return el(tag, attrs, names[value] || value);
  }
  if (name === "key") {
    const [tonic, mode] = String(value).split(" ");
    const pretty = tonic.slice(0, 1) + tonic.slice(1).replace("b", "\u266d").replace("#", "\u266f");
    return tr(tag, mode === "minor" ? "key_minor" : "key_major", { n: pretty }, attrs);
  }
  if (name === "density") return tr(tag, "density_value", { n: value }, attrs);
  return STRINGS.en[`${name}_${value}`] ? tr(tag, `${name}_${value}`, null, attrs) : el(tag, attrs, value);
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
  const mode = CONFIG.memory ? CONFIG.memory.default : "none";
  $("memory-default").textContent = t("memory_default", { mode: t(`memory_${mode}`) });
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
  // the server's one-line reason, said in the page's language where it is one the page knows
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) { /* not JSON: the status line */ }
  return reason(detail, response.status);
}

function reason(detail, status = 422) {
  const mb = CONFIG ? CONFIG.max_upload_bytes / 2 ** 20 : 2;
  if (status === 413) return t("primer_too_large", { n: mb });
  if (status === 429) return t("busy");
  if (/^unknown (composer|period|kind|key)|no .* condition|expected a key|density/.test(detail)) return t("unknown_style");
  if (/primer.*(not a MIDI|not a usable)/.test(detail)) return t("primer_bad");
  if (/primer has no notes/.test(detail)) return t("primer_empty");
  if (/^composing failed/.test(detail)) return t("composing_failed");
  if (/^no model named/.test(detail)) return t("unknown_model");
  if (/still being encoded/.test(detail)) return t("still_encoding");
  if (status === 404 || /^no such (job|file)/.test(detail)) return t("not_found");
  if (/^(notes|you|model)\b.*(\[|notes|span|play at least)/.test(detail)) return t("bad_notes");
  if (/must be|at most|at least|choose one of|does not parse/.test(detail)) return t("value_refused", { detail });
  return t("failed_detail", { detail });
}

function checkFields(fields) {
  // the server's limits (GET /api/config), checked here so the message is in the page's language
  const c = CONFIG || { max_seconds: 120, max_samples: 4, max_primer_seconds: 60 };
  const limits = { seconds: ["length", 0, c.max_seconds], temperature: ["temperature", 0, 100],
                   top_p: ["top_p", 0, 1], num_samples: ["variations", 1, c.max_samples, true],
                   seed: ["seed", 0, 2 ** 31 - 1, true], primer_seconds: ["use_first", 0, c.max_primer_seconds],
                   density: ["density", 0, 32], guidance: ["guidance", 0, 10] };  // 32: the densest bin
  for (const [field, value] of Object.entries(fields)) {
    if (!(field in limits)) continue;
    const [label, min, max, whole] = limits[field];
    if (whole && !Number.isInteger(value)) return t("must_be_whole", { name: t(label) });
    if (!(whole ? value >= min : value > min || (field === "guidance" && value === 0)) || value > max) {
      return t("must_be_between", { name: t(label), min, max });
    }
  }
  return "";
}

async function submit(event) {
  event.preventDefault();
  showMessage("");
  const fields = {};
  for (const name of ["seconds", "temperature", "top_p", "seed", "num_samples"]) {
    const raw = $(name).value.trim();
    if (raw === "" && name === "seed") continue;
    if (raw === "" || Number.isNaN(Number(raw))) { showMessage(t("must_be_number", { name: t(LABELS[name]) })); return; }
    fields[name] = Number(raw);
  }
  Object.assign(fields, styleFields());
  if ($("form").value !== "through") fields.form = $("form").value;
  if ($("memory").value !== "") fields.memory = $("memory").value;
  const file = $("primer").files[0];
  const bad = checkFields({ ...fields, ...(file && $("primer_seconds").value.trim() !== ""
    ? { primer_seconds: Number($("primer_seconds").value) } : {}) });
  if (bad) { showMessage(bad); return; }
  let request;
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
    showMessage(e instanceof TypeError ? t("network") : e.message);  // fetch throws TypeError offline
    $("status").hidden = true;
  } finally {
    $("compose").disabled = false;
  }
}

const LABELS = { seconds: "length", temperature: "temperature", top_p: "top_p", seed: "seed", num_samples: "variations" };

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
    if (job.status === "error") throw new Error(job.error ? reason(job.error) : t("composing_failed"));
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

function summary(p) {
  // what was asked and used: the density asked (the model's nearest bin is only how it learned it)
  // and the guidance, each part translated
  const bits = [tr("span", "seconds_value", { n: p.seconds }), tr("span", "temperature_value", { n: p.temperature }),
                tr("span", "top_p_value", { n: p.top_p }), tr("span", "seed_value", { n: p.seed })];
  const labels = p.style_labels || {};
  for (const name of STYLE_NAMES) {
    if (name === "density" && p.style && p.style.density != null) bits.push(styleValue("span", name, p.style.density));
    else if (labels[name] != null) bits.push(styleValue("span", name, labels[name]));
  }
  if (p.style && p.guidance != null && p.guidance !== 1) bits.push(tr("span", "guidance_value", { n: p.guidance }));
  if (p.primer_seconds) bits.push(tr("span", "continuing", { n: p.primer_seconds }));
  const FORM_KEYS = { ABA: "form_aba", AABA: "form_aaba", ABACA: "form_rondo" };  // the Form menu's words
  if (p.form && p.form !== "through") bits.push(FORM_KEYS[p.form] ? tr("span", FORM_KEYS[p.form]) : el("span", {}, p.form));
  const h2 = el("h2", { class: "summary" });
  bits.forEach((b, i) => { if (i) h2.append(" · "); h2.append(b); });
  return h2;
}

function showJob(job) {
  const section = el("section", { class: "job", "data-job": job.id });
  section.append(summary(job.params));
  const cards = el("div", { class: "cards" });
  job.variations.forEach((v, i) => cards.append(card(v, i + 1, job.id)));
  section.append(cards);
  $("results").prepend(section);
  section.scrollIntoView({ behavior: "smooth", block: "start" });  // the result, not the form, is news
}

function enlarge(img) {
  const zoom = $("zoom");
  zoom.querySelector("img").src = img.src;
  zoom.querySelector("img").alt = img.alt;
  zoom.showModal();
}

function card(variation, number, jobId) {
  const f = variation.files;
  const article = el("article", { class: "card" });
  const header = el("header");
  const meta = el("span", { class: "meta" });
  meta.append(tr("span", "seconds_value", { n: variation.seconds.toFixed(1) }), " · ",
              tr("span", "notes_count", { n: variation.notes }));
  header.append(tr("h3", "variation", { n: number }), meta);
  article.append(header);
  if (f.mp3 || f.wav) {
    const audio = el("audio", { controls: "", preload: "metadata" });
    if (f.mp3) audio.append(el("source", { src: f.mp3, type: "audio/mpeg" }));
    if (f.wav) audio.append(el("source", { src: f.wav, type: "audio/wav" }));
    article.append(audio);
  } else {
    article.append(tr("p", "silent", null, { class: "meta" }));
  }
  if (f.png) {
    const img = el("img", { src: f.png, class: "roll", tabindex: "0", "data-i18n-title": "enlarge", title: t("enlarge") });
    img.alt = t("piano_roll_of", { n: number });
    img.addEventListener("click", () => enlarge(img));
    img.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); enlarge(img); } });
    document.addEventListener("languagechange", () => { img.alt = t("piano_roll_of", { n: number }); });
    article.append(img);
  }
  if (variation.sections && variation.sections.length) {
    // the plan's sections, as the bands over the piano roll show them
    const bands = el("p", { class: "meta sections" });
    bands.append(tr("span", "sections"), ": ");
    variation.sections.forEach((s, i) => {
      if (i) bands.append(" · ");
      bands.append(`${s.label} `, tr("span", "span_seconds", { a: s.start.toFixed(0), b: s.end.toFixed(0) }));
    });
    article.append(bands);
  }
  const links = el("nav", { class: "downloads", "aria-label": t("downloads"), "data-i18n-aria-label": "downloads" });
  for (const [kind, label] of [["midi", "MIDI"], ["wav", "WAV"], ["mp3", "MP3"]]) {
    if (!f[kind]) continue;
    const name = f[kind].split("/").pop();
    links.append(tr("a", "download", { kind: label }, { href: f[kind], download: `${jobId.slice(0, 8)}-${name}` }));
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
  $("primer").addEventListener("change", () => {  // the chosen file's own name, or the translated "none"
    const f = $("primer").files[0], name = $("primer-name");
    if (f) { delete name.dataset.i18n; name.textContent = f.name; } else { name.dataset.i18n = "no_file"; name.textContent = t("no_file"); }
  });
  $("zoom").addEventListener("click", (e) => { if (e.target === $("zoom")) $("zoom").close(); });  // the backdrop
  document.addEventListener("languagechange", showUnits);
});
