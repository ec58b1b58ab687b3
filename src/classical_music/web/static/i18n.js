// The studio's words in English and Korean. The browser's language picks one at first; the
// switch at the top changes it and is remembered.
//
// Adding a string: put the key in BOTH tables (en and ko), then either mark the element
// (data-i18n="key" for its text, data-i18n-vars='{"n": 3}' for {n} in it, data-i18n-placeholder
// and data-i18n-aria-label for those attributes), which also re-translates it when the language
// switches, or call t("key", {n: 3}) in code. tests/test_web_i18n.py loads the page as served in
// Korean and fails on any English word left outside proper names, and on a key missing in ko.
"use strict";

const STRINGS = {
  en: {
    language: "Language", title: "Classical Music Studio",
    intro: "An LSTM trained on classical piano composes a new piece. Choose its length and character, then listen.",
    length: "Length", temperature: "Temperature", top_p: "Top-p", seed: "Seed", variations: "Variations",
    wilder: "> 1 wilder, < 1 safer", off: "1 = off", blank_random: "blank = random", primer: "Primer",
    primer_hint: "optional: the piece continues this MIDI file's opening", midi_file: "MIDI file",
    use_first: "Use its first", seconds: "seconds", compose: "Compose",
    seconds_up_to: "seconds, up to {n}", up_to: "up to {n}",
    footer: "Runs on this machine.", api_docs: "API documentation",
    queued: "Waiting in the queue", loading: "Loading the model", composing: "Composing",
    rendering: "Rendering audio and piano rolls", running: "Working", sending: "Sending", done: "Done",
    position: "position {n}", must_be_number: "{name} must be a number", composing_failed: "composing failed",
    variation: "Variation {n}", notes_count: "{n} notes", silent: "This variation came out silent.",
    download: "Download {kind}", piano_roll_of: "Piano roll of variation {n}",
    continuing: "continuing {n} s of a primer",
    play_title: "Play along",
    play_intro: "Play a few notes; when you pause, the model answers. Play again over or after it.",
    answer_length: "Answer length", pause: "Answer after a pause of", pause_unit: "seconds (0 = only the button)",
    next_answer: "takes effect on the next answer",
    keymap: "Computer keys: A S D F G H J K L ; ' are the white keys from C4, W E T Y U O P the black keys; " +
            "Z and X move an octave down and up. A MIDI keyboard works too.",
    your_turn: "Your turn, model", midi_connect: "Use a MIDI keyboard", duet_files: "Download the duet",
    clear: "Start over", listening: "Listening… (octave {n})", thinking: "The model is thinking…",
    answering: "The model answers: {n} notes (ready in {ms} ms)", no_answer: "The model stayed silent; play again.",
    play_first: "Play something first.", midi_on: "MIDI keyboard: {name}", midi_none: "No MIDI keyboard found.",
    duet_ready: "The duet: you and the model on separate tracks.", duet_empty: "Nothing played yet.",
    style: "Style", style_hint: "the values this model learned; Play along uses them too", composer: "Composer",
    period: "Period", kind: "Kind", density: "Density", density_unit: "notes/s, blank = any", key: "Key",
    guidance: "Guidance", guidance_unit: "1 = off, more = follow the style harder", any: "any",
    model: "Model", model_hint: "yours from `finetune --out models/NAME`", shipped_model: "the shipped model",
    finetuned_on: "fine-tuned on {folder}: held-out {a} → {b} nats/event", model_failed: "could not switch models",
    form: "Form", form_hint: "sections, a theme that returns, an ending", form_through: "through-composed",
    form_aba: "ABA (ternary)", form_aaba: "AABA (song form)", form_rondo: "rondo (ABACA)", sections: "Sections",
    form_of: "form {form}", span_seconds: "{a}–{b} s",
    // the page's remaining words (issue 27): menus, summaries, errors, attributes
    choose_file: "Choose a file", no_file: "no file chosen", busy: "The studio is busy; try again in a minute.",
    close: "Close", composer_other: "other composers", density_value: "density {n} notes/s",
    duet_downloads: "Duet downloads", downloads: "Downloads", enlarge: "Click to enlarge",
    failed_detail: "The server refused: {detail}", guidance_value: "guidance {n}",
    key_major: "{n} major", key_minor: "{n} minor", kind_performance: "performance", kind_sequenced: "sequenced",
    must_be_between: "{name} must be between {min} and {max}", must_be_whole: "{name} must be a whole number",
    network: "The studio cannot be reached; is the server still running?",
    period_baroque: "baroque", period_classical: "classical", period_impressionist: "impressionist",
    period_modern: "modern", period_romantic: "romantic", piano_keyboard: "Piano keyboard", piano_roll: "Piano roll",
    primer_bad: "The primer is not a usable MIDI file.", primer_empty: "The primer has no notes in the part used.",
    primer_too_large: "The primer file is too large (at most {n} MB).", random: "random", results: "Results",
    seconds_value: "{n} s", seed_value: "seed {n}", temperature_value: "temperature {n}", top_p_value: "top-p {n}",
    unknown_style: "This model does not know that style value.",
    unknown_model: "No model of that name (the list may have changed: reload the page).",
    not_found: "That result is gone: the studio keeps only its most recent jobs.",
    still_encoding: "The sound is still being encoded; try again in a moment.",
    bad_notes: "The notes played could not be read; play them again.",
    value_refused: "A value is outside what the studio accepts: {detail}",
    advanced: "Advanced", memory: "Memory of the piece",
    memory_unit: "the cache mixes the piece's own past into each next note, so it repeats its motifs more",
    memory_default: "the model's default ({mode})", memory_none: "off", memory_cache: "cache",
    // teaching the model your music (issue 25, web/teach.py)
    teach_title: "Teach it your music",
    teach_intro: "Upload your MIDI files (20-200 pieces is best): the model in use learns them for a few minutes, a fifth of the pieces held out to judge it, and the result joins the Model menu.",
    teach_files: "MIDI files", choose_files: "Choose files", files_chosen: "{n} files chosen",
    teach_name: "Name", teach_name_hint: "letters, digits, - and _", teach_minutes: "Minutes",
    teach_composer_hint: "optional: a name the model learns for your music", teach_start: "Start teaching",
    teach_cancel: "Cancel", teach_preparing: "Reading your files and scoring the model on the held-out pieces…",
    teach_training: "Learning: {n} of {m} min", teach_saving: "Saving the new model…",
    teach_done: "Held-out nats/event: before {a} → yours {b} ({d}) on {n} pieces. \"{name}\" is in the Model menu.",
    teach_cancelled: "Cancelled: nothing was saved.", teach_failed: "Teaching failed: {detail}",
    teach_no_files: "Choose some MIDI files first.", teach_bad_name: "The name may hold letters, digits, - and _ (up to 40).",
    teach_taken: "A model of that name already exists: choose another name.",
    teach_busy: "A fine-tune is already running: wait for it or cancel it.",
    teach_too_many: "At most {n} files, {mb} MB in all.", teach_file_too_large: "{name} is larger than {mb} MB.",
    teach_already: "{n} of your {m} files are music the model had already learned from: it had little to learn there, and the held-out gain says little.",
    teach_blended: "To keep the rest of what the model knew, {p}% of what it learned was kept (the whole change forgot too much).",
  },
  ko: {
    language: "언어", title: "클래식 음악 스튜디오",
    intro: "클래식 피아노를 배운 LSTM이 새 곡을 작곡합니다. 길이와 성격을 고른 뒤 들어 보세요.",
    length: "길이", temperature: "온도", top_p: "누적 확률 상한", seed: "시드", variations: "변주 수",
    wilder: "1보다 크면 과감하게, 작으면 안정적으로", off: "1 = 끔", blank_random: "비우면 무작위", primer: "프라이머",
    primer_hint: "선택: 이 MIDI 파일의 도입부를 이어서 작곡합니다", midi_file: "MIDI 파일",
    use_first: "앞부분 사용", seconds: "초", compose: "작곡하기",
    seconds_up_to: "초, 최대 {n}", up_to: "최대 {n}",
    footer: "이 컴퓨터에서 실행됩니다.", api_docs: "API 문서",
    queued: "대기열에서 기다리는 중", loading: "모델을 불러오는 중", composing: "작곡하는 중",
    rendering: "오디오와 피아노 롤을 만드는 중", running: "작업 중", sending: "보내는 중", done: "완료",
    position: "{n}번째", must_be_number: "{name}에는 숫자를 넣어 주세요", composing_failed: "작곡에 실패했습니다",
    variation: "변주 {n}", notes_count: "음표 {n}개", silent: "이 변주에는 소리가 없습니다.",
    download: "{kind} 내려받기", piano_roll_of: "변주 {n}의 피아노 롤",
    continuing: "프라이머 {n}초에 이어서",
    play_title: "함께 연주하기",
    play_intro: "몇 음을 쳐 보세요. 잠시 멈추면 모델이 대답합니다. 대답 위에, 또는 그 뒤에 다시 연주하세요.",
    answer_length: "대답 길이", pause: "멈춘 뒤 대답까지", pause_unit: "초 (0 = 버튼으로만)",
    next_answer: "다음 대답부터 적용",
    keymap: "컴퓨터 키보드: A S D F G H J K L ; ' 는 C4부터의 흰 건반, W E T Y U O P 는 검은 건반, " +
            "Z와 X는 한 옥타브 아래·위로 옮깁니다. MIDI 건반도 쓸 수 있습니다.",
    your_turn: "모델 차례", midi_connect: "MIDI 건반 사용", duet_files: "이중주 내려받기",
    clear: "처음부터", listening: "듣는 중… (옥타브 {n})", thinking: "모델이 생각하는 중…",
    answering: "모델의 대답: 음표 {n}개 ({ms} ms 만에 준비)", no_answer: "모델이 대답하지 않았습니다. 다시 연주해 보세요.",
    play_first: "먼저 몇 음을 쳐 주세요.", midi_on: "MIDI 건반: {name}", midi_none: "MIDI 건반을 찾지 못했습니다.",
    duet_ready: "이중주: 나와 모델이 서로 다른 트랙에 있습니다.", duet_empty: "아직 연주한 음이 없습니다.",
    style: "스타일", style_hint: "이 모델이 배운 값들입니다. 함께 연주하기에도 쓰입니다", composer: "작곡가",
    period: "시대", kind: "종류", density: "밀도", density_unit: "초당 음표 수, 비우면 아무거나", key: "조성",
    guidance: "가이던스", guidance_unit: "1 = 끔, 클수록 스타일을 더 따릅니다", any: "아무거나",
    model: "모델", model_hint: "`finetune --out models/이름`으로 만든 내 모델", shipped_model: "기본 제공 모델",
    finetuned_on: "{folder}(으)로 미세 조정: 평가용 곡에서 이벤트당 {a} → {b} 나트", model_failed: "모델을 바꾸지 못했습니다",
    form: "형식", form_hint: "여러 부분, 되돌아오는 주제, 마침", form_through: "통작 형식",
    form_aba: "ABA (세도막 형식)", form_aaba: "AABA (가요 형식)", form_rondo: "론도 (ABACA)", sections: "부분",
    form_of: "{form} 형식", span_seconds: "{a}–{b}초",
    // the page's remaining words (issue 27): menus, summaries, errors, attributes
    choose_file: "파일 고르기", no_file: "고른 파일 없음", busy: "스튜디오가 바쁩니다. 1분쯤 뒤에 다시 해 보세요.",
    close: "닫기", composer_other: "그 밖의 작곡가", density_value: "밀도 초당 {n}음",
    duet_downloads: "이중주 내려받기", downloads: "내려받기", enlarge: "눌러서 크게 보기",
    failed_detail: "서버가 요청을 거절했습니다: {detail}", guidance_value: "가이던스 {n}",
    key_major: "{n} 장조", key_minor: "{n} 단조", kind_performance: "연주", kind_sequenced: "시퀀스(악보 입력)",
    must_be_between: "{name}은(는) {min}에서 {max} 사이여야 합니다", must_be_whole: "{name}에는 정수를 넣어 주세요",
    network: "스튜디오에 연결할 수 없습니다. 서버가 아직 실행 중인지 확인해 주세요.",
    period_baroque: "바로크", period_classical: "고전", period_impressionist: "인상주의",
    period_modern: "현대", period_romantic: "낭만", piano_keyboard: "피아노 건반", piano_roll: "피아노 롤",
    primer_bad: "프라이머가 쓸 수 있는 MIDI 파일이 아닙니다.", primer_empty: "프라이머의 사용할 부분에 음표가 없습니다.",
    primer_too_large: "프라이머 파일이 너무 큽니다(최대 {n} MB).", random: "무작위", results: "결과",
    seconds_value: "{n}초", seed_value: "시드 {n}", temperature_value: "온도 {n}", top_p_value: "누적 확률 상한 {n}",
    unknown_style: "이 모델이 모르는 스타일 값입니다.",
    unknown_model: "그런 이름의 모델이 없습니다(목록이 바뀌었을 수 있으니 페이지를 새로 고쳐 주세요).",
    not_found: "그 결과는 이제 없습니다. 스튜디오는 가장 최근 작업만 보관합니다.",
    still_encoding: "소리를 아직 변환하는 중입니다. 잠시 뒤에 다시 해 보세요.",
    bad_notes: "연주한 음을 읽지 못했습니다. 다시 연주해 주세요.",
    value_refused: "스튜디오가 받지 않는 값이 있습니다. 설정 값을 확인해 주세요.",
    advanced: "고급 설정", memory: "곡의 기억",
    memory_unit: "캐시가 곡 자신의 지난 부분을 다음 음마다 섞어, 자기 동기를 더 자주 되풀이합니다",
    memory_default: "모델 기본값 ({mode})", memory_none: "끔", memory_cache: "캐시",
    teach_title: "내 음악 가르치기",
    teach_intro: "MIDI 파일을 올려 주세요(20-200곡이 가장 좋습니다). 지금 쓰는 모델이 몇 분 동안 그 곡들을 배우고, 곡의 5분의 1은 평가용으로 남겨 둡니다. 결과는 모델 메뉴에 들어갑니다.",
    teach_files: "MIDI 파일", choose_files: "파일 고르기", files_chosen: "파일 {n}개를 골랐습니다",
    teach_name: "이름", teach_name_hint: "영문자, 숫자, -와 _", teach_minutes: "분",
    teach_composer_hint: "선택: 모델이 내 음악에 붙여 배울 작곡가 이름", teach_start: "가르치기 시작",
    teach_cancel: "취소", teach_preparing: "파일을 읽고 평가용 곡으로 모델을 채점하는 중…",
    teach_training: "배우는 중: {m}분 중 {n}분", teach_saving: "새 모델을 저장하는 중…",
    teach_done: "평가용 곡의 이벤트당 나트: 전 {a} → 내 모델 {b} ({d}), {n}곡. 모델 메뉴에 \"{name}\"이(가) 있습니다.",
    teach_cancelled: "취소했습니다. 아무것도 저장하지 않았습니다.", teach_failed: "가르치지 못했습니다: {detail}",
    teach_no_files: "먼저 MIDI 파일을 골라 주세요.", teach_bad_name: "이름에는 영문자, 숫자, -와 _만 쓸 수 있습니다(최대 40자).",
    teach_taken: "그 이름의 모델이 이미 있습니다. 다른 이름을 골라 주세요.",
    teach_busy: "이미 가르치는 중입니다. 끝날 때까지 기다리거나 취소해 주세요.",
    teach_too_many: "파일은 최대 {n}개, 모두 합쳐 {mb} MB까지입니다.", teach_file_too_large: "{name} 파일이 {mb} MB보다 큽니다.",
    teach_already: "올린 파일 {m}개 중 {n}개는 모델이 이미 배운 음악입니다. 거기서 더 배울 것이 적어서, 평가용 곡의 점수 변화가 큰 의미가 없습니다.",
    teach_blended: "모델이 원래 알던 음악을 잊지 않도록, 새로 배운 변화의 {p}%만 남겼습니다(변화 전체는 너무 많이 잊었습니다).",
  },
};

function pickLanguage() {
  const saved = localStorage.getItem("studio-lang");
  if (saved && STRINGS[saved]) return saved;
  return (navigator.languages || [navigator.language || "en"]).some((l) => l.toLowerCase().startsWith("ko"))
    ? "ko" : "en";
}

let LANG = pickLanguage();

function t(key, vars = {}) {
  let text = (STRINGS[LANG] && STRINGS[LANG][key]) || STRINGS.en[key] || key;
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{${k}}`, v);
  return text;
}

function vars(node) {
  try { return JSON.parse(node.dataset.i18nVars || "{}"); } catch (e) { return {}; }
}

function translate(root = document) {
  // text, placeholder and aria-label of every marked element (code adds marked ones too)
  const all = (sel) => [...(root.matches?.(sel) ? [root] : []), ...root.querySelectorAll(sel)];
  for (const node of all("[data-i18n]")) node.textContent = t(node.dataset.i18n, vars(node));
  for (const node of all("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of all("[data-i18n-aria-label]")) node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  for (const node of all("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle, vars(node));
  return root;
}

function tr(tag, key, vars = null, attrs = {}) {
  // an element whose text is t(key, vars), re-translated when the language switches
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.dataset.i18n = key;
  if (vars) node.dataset.i18nVars = JSON.stringify(vars);
  node.textContent = t(key, vars || {});
  return node;
}

function applyLanguage(lang) {
  LANG = STRINGS[lang] ? lang : "en";
  document.documentElement.lang = LANG;
  translate(document);
  document.title = t("title");
  const select = document.getElementById("lang");
  if (select) select.value = LANG;
  document.dispatchEvent(new CustomEvent("languagechange"));
}

document.addEventListener("DOMContentLoaded", () => {
  applyLanguage(LANG);
  document.getElementById("lang").addEventListener("change", (e) => {
    localStorage.setItem("studio-lang", e.target.value);
    applyLanguage(e.target.value);
  });
});
