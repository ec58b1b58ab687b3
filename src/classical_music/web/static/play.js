// Play along: an on-screen piano (mouse and touch), the computer keyboard and Web MIDI; what is
// played is recorded with its timing and velocity, and after a pause (or the button) the model's
// answer from POST /api/continue is played from the server's rendered WAV.
//
// Sound: the keys you press sound at once from a small Web Audio voice (a server round trip per
// key would be far too late); the model's answer plays the audio the server rendered with the
// SoundFont, the same sound as the downloads (README: "Play along").
"use strict";

const LOW = 48, HIGH = 84;  // C3..C6 on screen, where it fits
const MIN_WHITE_PX = 30;  // narrower than this a finger misses (a phone showed 16-px keys): show fewer
const WHITE_KEYS = ["a", "s", "d", "f", "g", "h", "j", "k", "l", ";", "'"];  // C D E F G A B C D E F
const WHITE_STEPS = [0, 2, 4, 5, 7, 9, 11, 12, 14, 16, 17];
const BLACK_KEYS = { w: 1, e: 3, t: 6, y: 8, u: 10, o: 13, p: 15 };
const KEY_VELOCITY = 90;
const CONTEXT_SECONDS = 55;  // the server takes a span of 60 s; send the latest part
const CONTEXT_NOTES = 2000;

const play = {
  you: [], model: [],  // [pitch, start, end, velocity] on the page clock (seconds)
  down: new Map(),     // pitch -> {start, velocity, voice, source}
  octave: 0, timer: null, busy: false, newNotes: 0, ctx: null, live: { max_seconds: 30 },
};

const now = () => performance.now() / 1000;
const q = (id) => document.getElementById(id);

function say(text) { q("play-status").textContent = text; }
function warn(text) { q("play-message").textContent = text || ""; q("play-message").hidden = !text; }

// -- sound for the keys you press ------------------------------------------------------------

function audio() {
  if (!play.ctx) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    play.ctx = new Ctx();
  }
  if (play.ctx.state === "suspended") play.ctx.resume();
  return play.ctx;
}

function voiceOn(pitch, velocity) {
  const ctx = audio();
  if (!ctx) return null;
  const f = 440 * Math.pow(2, (pitch - 69) / 12), t0 = ctx.currentTime, peak = 0.05 + 0.25 * (velocity / 127);
  const gain = ctx.createGain();
  gain.gain.setValueAtTime(0, t0);
  gain.gain.linearRampToValueAtTime(peak, t0 + 0.005);
  gain.gain.setTargetAtTime(peak * 0.25, t0 + 0.005, 0.6);  // a struck string decays
  const filter = ctx.createBiquadFilter();
  filter.type = "lowpass";
  filter.frequency.value = Math.min(12000, f * (3 + 6 * velocity / 127));
  const oscs = [[1, "triangle", 1], [2, "sine", 0.35], [3, "sine", 0.12]].map(([mult, type, level]) => {
    const o = ctx.createOscillator(), g = ctx.createGain();
    o.type = type; o.frequency.value = f * mult; g.gain.value = level;
    o.connect(g).connect(filter);
    o.start(t0);
    return o;
  });
  filter.connect(gain).connect(ctx.destination);
  return { gain, oscs };
}

function voiceOff(voice) {
  if (!voice) return;
  const t0 = play.ctx.currentTime;
  voice.gain.gain.cancelScheduledValues(t0);
  voice.gain.gain.setTargetAtTime(0, t0, 0.08);
  for (const o of voice.oscs) o.stop(t0 + 0.6);
}

// -- playing and recording --------------------------------------------------------------------

function keyEl(pitch) { return document.querySelector(`.key[data-pitch="${pitch}"]`); }

function noteOn(pitch, velocity, source) {
  if (pitch < 0 || pitch > 127 || play.down.has(pitch)) return;
  clearTimeout(play.timer);
  velocity = Math.max(1, Math.min(127, Math.round(velocity)));
  play.down.set(pitch, { start: now(), velocity, voice: voiceOn(pitch, velocity), source });
  keyEl(pitch)?.classList.add("down");
  warn("");
  say(t("listening", { n: 4 + play.octave }));
}

function noteOff(pitch) {
  const held = play.down.get(pitch);
  if (!held) return;
  play.down.delete(pitch);
  voiceOff(held.voice);
  keyEl(pitch)?.classList.remove("down");
  play.you.push([pitch, held.start, Math.max(now(), held.start + 0.02), held.velocity]);
  play.newNotes += 1;
  q("play").dataset.played = String(play.you.length);
  armPause();
}

function armPause() {
  clearTimeout(play.timer);
  const pause = Number(q("pause_seconds").value);
  if (play.down.size === 0 && pause > 0) play.timer = setTimeout(() => answer(false), pause * 1000);
}

function context() {
  // both parts, in time order, the latest CONTEXT_SECONDS: the model continues the duet
  const all = [...play.you, ...play.model].sort((a, b) => a[1] - b[1]);
  const end = Math.max(...all.map((n) => n[2]));
  const recent = all.filter((n) => n[1] >= end - CONTEXT_SECONDS).slice(-CONTEXT_NOTES);
  return recent.map(([p, s, e, v]) => [p, round(s), round(Math.max(e, s + 0.02)), v]);
}

const round = (x) => Math.round(x * 1000) / 1000;

async function answer(fromButton) {
  if (play.busy) return;
  for (const pitch of [...play.down.keys()]) noteOff(pitch);  // the button ends held notes
  clearTimeout(play.timer);
  if (play.newNotes === 0) { if (fromButton) warn(t("play_first")); return; }
  const asked = Number(q("answer_seconds").value);
  if (q("answer_seconds").value.trim() !== "" && !(asked > 0 && asked <= play.live.max_seconds)) {
    warn(t("must_be_between", { name: t("answer_length"), min: 0, max: play.live.max_seconds }));  // in the page's language
    return;
  }
  const body = { notes: context(), seconds: Number(q("answer_seconds").value) || 8,
                 temperature: Number(q("live_temperature").value) || 1, ...styleFields() };  // read now: live
  play.busy = true;
  play.newNotes = 0;
  q("your-turn").disabled = true;
  say(t("thinking"));
  const sent = now();
  try {
    const response = await fetch("/api/continue", { method: "POST", headers: { "Content-Type": "application/json" },
                                                    body: JSON.stringify(body) });
    if (!response.ok) throw new Error(await errorText(response));
    const ans = await response.json();
    const ready = Math.round(1000 * (now() - sent));
    q("play").dataset.answers = String(Number(q("play").dataset.answers || 0) + 1);
    q("play").dataset.answerNotes = String(ans.notes.length);
    if (!ans.notes.length || !ans.files.wav) { say(t("no_answer")); return; }
    const player = q("answer-audio");
    player.src = ans.files.wav;
    // from the pause to the first sound of the answer (issue 15 asks for under 1 s)
    player.addEventListener("playing", () => { q("play").dataset.soundMs = String(Math.round(1000 * (now() - sent))); },
                            { once: true });
    const started = now();
    await player.play().catch(() => {});  // autoplay may need a gesture; the keys gave one
    // the answer joins the duet at the moment its sound starts
    const shift = started - ans.start;
    for (const [p, s, e, v] of ans.notes) {
      play.model.push([p, s + shift, e + shift, v]);
      setTimeout(() => keyEl(p)?.classList.add("model"), (s - ans.start) * 1000);
      setTimeout(() => keyEl(p)?.classList.remove("model"), (e - ans.start) * 1000);
    }
    say(t("answering", { n: ans.notes.length, ms: ready }));
  } catch (e) {
    warn(e instanceof TypeError ? t("network") : e.message);
    say("");
  } finally {
    play.busy = false;
    q("your-turn").disabled = false;
  }
}

async function duetFiles() {
  const links = q("duet-links");
  links.replaceChildren();
  if (!play.you.length && !play.model.length) { warn(t("duet_empty")); return; }
  const fix = (notes) => notes.slice(-CONTEXT_NOTES).map(([p, s, e, v]) => [p, round(s), round(Math.max(e, s + 0.02)), v]);
  try {
    const response = await fetch("/api/duet", { method: "POST", headers: { "Content-Type": "application/json" },
                                                body: JSON.stringify({ you: fix(play.you), model: fix(play.model) }) });
    if (!response.ok) throw new Error(await errorText(response));
    const { files } = await response.json();
    links.append(tr("span", "duet_ready", null, { class: "meta" }));
    for (const [kind, label] of [["midi", "MIDI"], ["wav", "WAV"], ["mp3", "MP3"]]) {
      links.append(tr("a", "download", { kind: label }, { href: files[kind], download: files[kind].split("/").pop() }));
    }
    links.hidden = false;
  } catch (e) {
    warn(e instanceof TypeError ? t("network") : e.message);
  }
}

// -- inputs ---------------------------------------------------------------------------------------

const isBlack = (p) => [1, 3, 6, 8, 10].includes(p % 12);

function keyRange(px) {
  // C3..C6 when there is room; else from C4 (where the computer keys start) as many white keys as fit
  const all = [];
  for (let p = LOW; p <= HIGH; p++) if (!isBlack(p)) all.push(p);
  if (!px || px / all.length >= MIN_WHITE_PX) return [LOW, HIGH];
  const whites = all.filter((p) => p >= 60).slice(0, Math.max(5, Math.floor(px / MIN_WHITE_PX)));
  return [whites[0], whites[whites.length - 1]];
}

function buildKeyboard() {
  const board = q("keyboard");
  const [low, high] = keyRange(board.clientWidth);
  if (board.dataset.range === `${low}-${high}`) return;
  board.dataset.range = `${low}-${high}`;
  board.replaceChildren();
  const whites = [];
  for (let p = low; p <= high; p++) if (!isBlack(p)) whites.push(p);
  const width = 100 / whites.length;
  for (let p = low; p <= high; p++) {
    const black = isBlack(p);
    const key = el("div", { class: `key ${black ? "black" : "white"}`, "data-pitch": String(p),
                            role: "button", "aria-label": noteName(p) });
    const left = black ? whites.indexOf(p - 1) + 1 : whites.indexOf(p);
    key.style.left = `${(black ? left - 0.3 : left) * width}%`;
    key.style.width = `${(black ? 0.6 : 1) * width}%`;
    if (p % 12 === 0) key.append(el("span", {}, noteName(p)));
    key.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      key.setPointerCapture?.(e.pointerId);
      const r = key.getBoundingClientRect();  // lower on the key = louder, as on a real one
      noteOn(p, 30 + 97 * Math.min(1, Math.max(0, (e.clientY - r.top) / r.height)), "pointer");
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) key.addEventListener(type, () => noteOff(p));
    board.append(key);
  }
}

function noteName(p) {
  return ["C", "C♯", "D", "D♯", "E", "F", "F♯", "G", "G♯", "A", "A♯", "B"][p % 12] + (Math.floor(p / 12) - 1);
}

function computerKey(e) {
  const k = e.key.toLowerCase();
  if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return null;
  const base = 60 + 12 * play.octave;
  const white = WHITE_KEYS.indexOf(k);
  if (white >= 0) return base + WHITE_STEPS[white];
  if (k in BLACK_KEYS) return base + BLACK_KEYS[k];
  return null;
}

function onKeyDown(e) {
  if (e.repeat) { if (computerKey(e) !== null) e.preventDefault(); return; }
  const k = e.key.toLowerCase();
  if (!e.target.closest("input, select, textarea") && (k === "z" || k === "x")) {
    play.octave = Math.max(-3, Math.min(3, play.octave + (k === "x" ? 1 : -1)));
    say(t("listening", { n: 4 + play.octave }));
    return;
  }
  const pitch = computerKey(e);
  if (pitch === null) return;
  e.preventDefault();
  noteOn(pitch, KEY_VELOCITY, `key:${k}`);
}

function onKeyUp(e) {
  const k = e.key.toLowerCase();
  for (const [pitch, held] of play.down) if (held.source === `key:${k}`) noteOff(pitch);
}

async function connectMidi() {
  try {
    const access = await navigator.requestMIDIAccess();
    const names = [];
    for (const input of access.inputs.values()) {
      names.push(input.name);
      input.onmidimessage = ({ data }) => {
        const [status, pitch, velocity] = data, kind = status & 0xf0;
        if (kind === 0x90 && velocity > 0) noteOn(pitch, velocity, "midi");
        else if (kind === 0x80 || kind === 0x90) noteOff(pitch);
      };
    }
    say(names.length ? t("midi_on", { name: names.join(", ") }) : t("midi_none"));
  } catch (e) {
    warn(e.message);
  }
}

function clearDuet() {
  for (const pitch of [...play.down.keys()]) noteOff(pitch);
  clearTimeout(play.timer);
  Object.assign(play, { you: [], model: [], newNotes: 0 });
  q("answer-audio").pause();
  q("duet-links").hidden = true;
  warn("");
  say("");
}

document.addEventListener("DOMContentLoaded", () => {
  buildKeyboard();
  let resizing = null;  // a phone turned sideways has room for more keys
  window.addEventListener("resize", () => { clearTimeout(resizing); resizing = setTimeout(buildKeyboard, 150); });
  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("keyup", onKeyUp);
  window.addEventListener("blur", () => { for (const pitch of [...play.down.keys()]) noteOff(pitch); });
  q("your-turn").addEventListener("click", () => answer(true));
  q("duet-files").addEventListener("click", duetFiles);
  q("clear").addEventListener("click", clearDuet);
  if (navigator.requestMIDIAccess) {
    q("midi-connect").hidden = false;
    q("midi-connect").addEventListener("click", connectMidi);
  }
  q("pause_seconds").addEventListener("change", armPause);
});

document.addEventListener("studioconfig", (e) => {
  play.live = e.detail.live || play.live;
  q("answer_seconds").max = play.live.max_seconds;
  q("answer-unit").textContent = t("seconds_up_to", { n: play.live.max_seconds });
});
document.addEventListener("languagechange", () => {
  q("answer-unit").textContent = t("seconds_up_to", { n: play.live.max_seconds });
});
