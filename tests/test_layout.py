"""The page's layout at a phone's, a projector's and a large screen's size, in normal and presenter view.

One page per size; every tab that exists is opened by clicking its button, screenshotted to
tests/artifacts/screenshots/layout-<view>-<w>x<h>-<tab>.png and measured from element boxes:
no horizontal page scroll; at 420 px the status line, picker and tab bar readable (no word
broken across lines, every tab button shown) and the tab's content starting on the first
screen; at 1280x720 and 1920x1080 the tab's main action (its first primary button) and main
result (`.lab-result`, else the element after the main action) on the first screen. The
presenter view (switched on by its switch, as a presenter would) must render text at least
1.5x, hide the upload box and advanced controls and raise the text's contrast.
"""
import pytest

from conftest import screenshot

SIZES = [(420, 900), (1280, 720), (1920, 1080)]

#: Boxes and facts of the open tab, measured in the page (CSS pixels of the viewport).
MEASURE_JS = """() => {
  const box = (el) => { if (!el) return null; const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height}; };
  const shown = (el) => el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  // Words broken across lines: a word whose range has boxes on two different lines.
  const brokenWords = (el) => {
    const out = [];
    if (!shown(el)) return out;
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const re = /\\S+/g; let m;
      while ((m = re.exec(node.data))) {
        const range = document.createRange(); range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
        if (tops.size > 1) out.push(m[0]);
      }
    }
    return out;
  };
  const panel = [...document.querySelectorAll('.tabitem')].find(shown);
  const action = panel && [...panel.querySelectorAll('button.primary')].find(shown);
  let result = panel && [...panel.querySelectorAll('.lab-result')].find(shown);
  if (!result && action) {  // the first shown element after the main action's row, in document order
    let el = action;
    while (el.parentElement && el.parentElement !== panel && !el.parentElement.matches('.tabitem > .column')) {
      el = el.parentElement;
    }
    for (el = el.nextElementSibling; el && !shown(el); el = el.nextElementSibling) {}
    result = el;
  }
  const tabs = [...document.querySelectorAll('[role=tab]')];
  return {
    viewport: {width: window.innerWidth, height: window.innerHeight},
    scrollWidth: document.documentElement.scrollWidth,
    presenter: document.documentElement.classList.contains('presenter'),
    panel: box(panel), action: box(action), actionText: action ? action.innerText : null,
    result: box(result), resultId: result ? (result.id || result.className) : null,
    status: box(document.querySelector('#lab-status')), picker: box(document.querySelector('#model-picker')),
    statusShown: shown(document.querySelector('#lab-status')),
    uploadShown: shown(document.querySelector('#model-upload')),
    advancedShown: [...document.querySelectorAll('.lab-advanced')].some(shown),
    broken: {status: brokenWords(document.querySelector('#lab-status')),
             picker: brokenWords(document.querySelector('#model-picker')),
             tabs: tabs.flatMap(brokenWords)},
    tabsHidden: tabs.filter((t) => !shown(t) || t.getBoundingClientRect().right > window.innerWidth + 1)
                    .map((t) => t.innerText),
    actionHeight: action ? action.getBoundingClientRect().height : 0,
    textColor: getComputedStyle(document.querySelector('.tabitem .prose, #lab-intro') || document.body).color,
  };
}"""


def tab_ids(page) -> list[tuple[str, str]]:
    """(data-tab-id, label) of every tab the app has."""
    return page.evaluate("() => [...document.querySelectorAll('[role=tab]')].map(t => [t.dataset.tabId || t.id, "
                         "t.innerText.trim()])")


def open_tab(page, tab_id: str) -> dict:
    page.locator(f"[role=tab][data-tab-id='{tab_id}']").click()
    page.wait_for_function(f"(() => {{ const p = document.querySelector('#tab-{tab_id}'); "
                           "return p && p.getClientRects().length && p.querySelector('.block'); })()")
    page.wait_for_timeout(300)  # the tab's plots and rows settle
    return page.evaluate(MEASURE_JS)


def set_presenter(page, on: bool) -> None:
    switch = page.locator("#presenter-switch input[type=checkbox]")
    if switch.is_checked() != on:
        switch.click()
    page.wait_for_function(f"document.documentElement.classList.contains('presenter') === {str(on).lower()}")
    page.wait_for_timeout(300)


def check_tab(m: dict, view: str, size: tuple[int, int], label: str) -> list[str]:
    """The layout rules for one tab; returns what is wrong (empty when all hold)."""
    width, height = size
    where = f"{view} {width}x{height} {label}:"
    problems = []
    if m["scrollWidth"] > m["viewport"]["width"] + 1:
        problems.append(f"{where} the page scrolls sideways ({m['scrollWidth']} px wide)")
    if m["tabsHidden"]:
        problems.append(f"{where} tab buttons not shown: {m['tabsHidden']}")
    for part, words in m["broken"].items():
        if words:
            problems.append(f"{where} words broken across lines in the {part}: {words[:5]}")
    if m["panel"] is None or m["panel"]["top"] >= height:
        problems.append(f"{where} the tab's content starts below the first screen ({m['panel']})")
    return problems


def check_fold(m: dict, view: str, size: tuple[int, int], label: str) -> list[str]:
    """At 1280x720 and 1920x1080: the tab's main action and the top of its main result on the first screen."""
    width, height = size
    where = f"{view} {width}x{height} {label}:"
    problems = []
    if width >= 1280:
        if m["action"] is None or m["action"]["bottom"] > height:
            problems.append(f"{where} the main action {m['actionText']!r} ends at "
                            f"{m['action'] and round(m['action']['bottom'])} px, below the first screen")
        if m["result"] is None or m["result"]["top"] >= height:
            problems.append(f"{where} the main result ({m['resultId']}) starts at "
                            f"{m['result'] and round(m['result']['top'])} px, below the first screen")
    if view == "normal" and width == 420 and m["status"] and m["status"]["width"] < 0.6 * width:
        problems.append(f"{where} the status line is squeezed to {m['status']['width']:.0f} px")
    if view == "presenter":
        if m["uploadShown"] or m["advancedShown"]:
            problems.append(f"{where} the upload box or an advanced control is shown in presenter view")
        if m["textColor"] not in ("rgb(0, 0, 0)",):
            problems.append(f"{where} text colour {m['textColor']} is not black")
    return problems


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_tab_fits_in_normal_and_presenter_view(lab_url, browser, size):
    width, height = size
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(180_000)
    try:
        page.goto(lab_url + "?presenter=0", wait_until="load")
        page.wait_for_function("(document.querySelector('#lab-status') || {textContent: ''}).textContent"
                               ".includes('models available')")
        tabs = tab_ids(page)
        assert len(tabs) >= 8, tabs
        problems, fold, tab_heights = [], [], {}
        for view in ("normal", "presenter"):
            set_presenter(page, view == "presenter")
            for tab_id, label in tabs:
                m = open_tab(page, tab_id)
                screenshot(page, f"layout-{view}-{width}x{height}-{tab_id}")
                tab_heights.setdefault(view, m["actionHeight"])
                assert m["presenter"] == (view == "presenter")
                problems += check_tab(m, view, size, label)
                fold += check_fold(m, view, size, label)
        # Presenter text is at least 1.5x: the first tab's main action button, rendered in both views.
        assert tab_heights["presenter"] >= 1.45 * tab_heights["normal"], tab_heights
        assert not problems, "\n".join(problems)
        assert not fold, "main action or result below the first screen:\n" + "\n".join(fold)
    finally:
        page.close()


def test_presenter_view_persists_per_browser_and_follows_the_url(lab_url, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        page = context.new_page()
        page.set_default_timeout(180_000)
        page.goto(lab_url + "?presenter=1", wait_until="load")
        page.wait_for_function("document.documentElement.classList.contains('presenter')")
        assert page.locator("#presenter-switch input").is_checked()
        assert page.locator("#lecture-next").is_visible()
        page.goto(lab_url, wait_until="load")  # no parameter: the browser remembers
        page.wait_for_selector("#presenter-switch input", state="attached")
        page.wait_for_function("document.documentElement.classList.contains('presenter')")
        set_presenter(page, False)  # switched off by hand: remembered too
        page.goto(lab_url, wait_until="load")
        page.wait_for_function("(document.querySelector('#lab-status') || {textContent: ''}).textContent"
                               ".includes('models available')")
        assert not page.evaluate("document.documentElement.classList.contains('presenter')")
        assert not page.locator("#lecture-next").is_visible()
    finally:
        context.close()
