"""The studio's layout and words in a real browser (issue 27 items 10 and 11): where the result
appears, menus that show whole names, aligned fields, a favicon, piano rolls that enlarge, keys a
finger can hit on a phone, a summary of what was asked, and a Korean page with no English left.

Needs what tests/test_web_browser.py needs (Python playwright and Debian's chromium, no download);
screenshots are left in the test's tmp_path.
"""

import json
import re

import pytest

from test_web_browser import ARGS, CHROMIUM, serve, sync_api

# composers with long names, so a menu too narrow for them shows
COMPOSERS = {"chopin": 5.0, "bach": 3.0, "tchaikovsky": 2.0, "rachmaninoff": 2.0, "mozart": 1.5}


@pytest.fixture
def long_names_url(tmp_path):
    yield from serve(tmp_path, COMPOSERS)


def launch(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


def compose(page, seconds="2", **style):
    page.wait_for_function("document.querySelectorAll('#composer option').length > 1", timeout=30_000)
    page.fill("#seconds", seconds)
    page.fill("#seed", "3")
    for name, value in style.items():
        (page.select_option if name in ("composer", "period", "kind", "key") else page.fill)(f"#{name}", value)
    page.click("#compose")
    page.wait_for_selector(".card img", timeout=90_000)
    page.wait_for_function("[...document.querySelectorAll('.card img')].every(i => i.naturalWidth > 0)",
                           timeout=30_000)
    page.wait_for_timeout(700)  # the smooth scroll to the result


def test_studio_layout_at_1280x800_and_on_a_phone(long_names_url, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-US")
            failed, errors = [], []
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(long_names_url + "/")
            page.wait_for_function("document.querySelectorAll('#composer option').length > 1", timeout=30_000)
            # a favicon, and no request answered 404 (it used to be /favicon.ico on every load)
            assert page.eval_on_selector("link[rel=icon]", "l => l.href").endswith("/static/favicon.svg")
            assert page.request.get(long_names_url + "/static/favicon.svg").status == 200
            # every composer's whole name fits in the menu ("Frédéric Chopir" was cut off)
            fits = page.evaluate("""() => {
                const s = document.getElementById('composer'), cs = getComputedStyle(s);
                const ctx = document.createElement('canvas').getContext('2d');
                ctx.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
                const widest = Math.max(...[...s.options].map(o => ctx.measureText(o.text).width));
                const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 20;
                return [widest, room, [...s.options].map(o => o.text)];
            }""")
            assert "Sergei Rachmaninoff" in fits[2] and fits[0] <= fits[1], fits
            # the fields of a row line up, whatever their hints say; the density hint is one line
            rows = page.evaluate("""() => [...document.querySelectorAll('#style > label:not([hidden])')].map(l => {
                const box = l.querySelector('input, select').getBoundingClientRect();
                return [Math.round(l.getBoundingClientRect().top), box.bottom, box.left];
            })""")
            by_row = {}
            for top, bottom, _ in rows:
                by_row.setdefault(top, []).append(bottom)
            assert all(max(b) - min(b) < 1.5 for b in by_row.values()), rows
            density_lines = page.evaluate("""() => { const r = document.createRange();
                r.selectNodeContents(document.querySelector('[data-cond=density] .unit'));
                return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; }""")
            assert density_lines == 1

            compose(page, density="6", guidance="2", composer="chopin")
            # the result is where the person is looking: its first card on screen, not 460 px below the fold
            card = page.locator(".card").first.bounding_box()
            assert 0 <= card["y"] and card["y"] + 120 <= 800, card
            # the summary says what was asked and used: density 6 (not its bin, 5.66) and the guidance
            head = page.inner_text(".job h2")
            assert "density 6 notes/s" in head and "guidance 2" in head and "5.66" not in head, head
            assert "Frédéric Chopin" in head and "seed 3" in head
            page.screenshot(path=str(tmp_path / "studio-1280.png"))
            # a piano roll opens large on a click, and closes again
            thumb = page.locator(".card img").first.bounding_box()
            page.click(".card img")
            page.wait_for_selector("#zoom[open] img", timeout=5_000)
            big = page.locator("#zoom img").bounding_box()
            assert big["width"] > 1.8 * thumb["width"], (big, thumb)
            page.screenshot(path=str(tmp_path / "studio-zoom.png"))
            page.keyboard.press("Escape")
            page.wait_for_selector("#zoom:not([open])", state="attached", timeout=5_000)
            assert not failed and not errors, (failed, errors)

            # a phone: keys a finger can hit, C4 among them
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                     is_mobile=True, has_touch=True, locale="en-US")
            phone.goto(long_names_url + "/")
            phone.locator("#keyboard").scroll_into_view_if_needed()
            widths = phone.eval_on_selector_all(".key.white", "ks => ks.map(k => k.getBoundingClientRect().width)")
            assert widths and min(widths) >= 28, widths
            assert phone.locator('.key[data-pitch="60"]').count() == 1
            phone.screenshot(path=str(tmp_path / "studio-phone.png"), full_page=True)
            # turned sideways, it has room for more keys again
            phone.set_viewport_size({"width": 844, "height": 390})
            phone.wait_for_function("document.querySelectorAll('.key.white').length > %d" % len(widths), timeout=5_000)
        finally:
            browser.close()


ALLOWED = {"MIDI", "WAV", "MP3", "LSTM", "API", "English"}  # acronyms and the language switch's own name


def english_words(text: str, proper: set[str]) -> list[str]:
    words = re.findall(r"[A-Za-z][A-Za-z'’-]+", text)
    return [w for w in words if w not in ALLOWED and w not in proper and not w.isupper()]


def page_text(page) -> str:
    """What a reader sees or hears: visible text, menu entries, placeholders, labels, titles, alt."""
    return page.evaluate("""() => {
        const out = [document.body.innerText, document.title];
        for (const o of document.querySelectorAll('select option')) if (!o.closest('[hidden]')) out.push(o.text);
        for (const n of document.querySelectorAll('[placeholder], [aria-label], [title], img[alt]')) {
            if (n.closest('[hidden]')) continue;
            out.push(n.placeholder || '', n.getAttribute('aria-label') || '', n.title || '', n.alt || '');
        }
        return out.join(String.fromCharCode(10));
    }""")


def test_the_korean_studio_shows_no_english_outside_proper_names(long_names_url, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="ko-KR")
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(long_names_url + "/")
            page.wait_for_function("document.querySelectorAll('#composer option').length > 1", timeout=30_000)
            config = json.loads(page.request.get(long_names_url + "/api/config").text())
            proper = {w for name in config["conditions"].get("composer_names", {}).values()
                      for w in re.findall(r"[A-Za-z][A-Za-z'’-]+", name)}
            # every key the page uses is in both tables (a string added in English only fails here)
            missing = page.evaluate("""() => Object.keys(STRINGS.en).filter(k => !(k in STRINGS.ko))
                .concat([...document.querySelectorAll('[data-i18n]')].map(n => n.dataset.i18n).filter(k => !(k in STRINGS.ko)))""")
            assert not missing, missing
            assert english_words(page_text(page), proper) == []

            # the values of every menu (period, kind, key, "other") and the placeholders
            assert page.eval_on_selector("#seed", "i => i.placeholder") == "무작위"
            assert page.locator("#key option[value='D minor']").inner_text() == "D 단조"
            assert page.locator("#composer option[value=other]").inner_text() == "그 밖의 작곡가"
            # a refused value is said in Korean (the form checks the server's limits itself)
            page.fill("#seconds", "500")
            page.click("#compose")
            page.wait_for_selector("#message:not([hidden])", timeout=10_000)
            assert english_words(page.inner_text("#message"), proper) == [] and "120" in page.inner_text("#message")
            # the server's own refusals too: an unknown style value, the queue or a bad primer
            assert page.evaluate("reason(`unknown composer 'x': did you mean chopin?`)") == "이 모델이 모르는 스타일 값입니다."
            assert english_words(page.evaluate("reason('the primer is not a MIDI file (it should start with MThd)')"),
                                 proper) == []
            for detail, status in [("no model named 'x': the studio has shipped, mine", 422),
                                   ("no such job (results are kept only for the most recent jobs)", 404),
                                   ("this file is still being encoded; try again in a moment", 202),
                                   ("notes[3]: pitch must be 0..127, got 200", 422),
                                   ("seconds must be at most 10 for an answer, got 30", 422),
                                   ("temperature must be at least 0.01, got 1e-300", 422)]:
                said = page.evaluate("([d, s]) => reason(d, s)", [detail, status])
                assert said and english_words(said, proper) == [], (detail, said)
            # the model menu's words (shown only with a second model in --models_dir)
            for said in page.evaluate("""() => [t('model'), t('model_hint'), t('shipped_model'), t('model_failed'),
                    t('finetuned_on', {folder: '', a: '2.31', b: '2.12'})]"""):
                assert said and english_words(re.sub(r"`[^`]*`", "", said), proper) == [], said  # a command stays a command
            # an upload that is no MIDI file: its name shown, the refusal in Korean
            (tmp_path / "notes.mid").write_text("just text")
            page.set_input_files("#primer", str(tmp_path / "notes.mid"))
            assert page.inner_text("#primer-name") == "notes.mid"
            page.fill("#seconds", "2")
            page.click("#compose")
            page.wait_for_function("document.getElementById('message').textContent.includes('MIDI')", timeout=10_000)
            assert english_words(page.inner_text("#message"), proper) == [], page.inner_text("#message")
            page.set_input_files("#primer", [])
            # a finished piece: the summary, its card ("Variation 1"), downloads and the zoomed roll
            compose(page, density="6", period="romantic", key="D minor", guidance="2", composer="other")
            page.click(".card img")
            page.wait_for_selector("#zoom[open]", timeout=5_000)
            text = page_text(page)
            assert "변주 1" in text and "밀도 초당 6음" in text and "가이던스 2" in text and "낭만" in text
            assert english_words(text, proper) == [], text
            page.screenshot(path=str(tmp_path / "studio-ko.png"), full_page=True)
            page.keyboard.press("Escape")
            # switching the language re-translates what is already on the page
            page.select_option("#lang", "en")
            assert "Variation 1" in page.inner_text(".card h3") and "density 6 notes/s" in page.inner_text(".job h2")
            assert page.locator("#key option[value='D minor']").inner_text() == "D minor"
            assert not errors, errors
        finally:
            browser.close()
