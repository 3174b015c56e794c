"""Lecture mode: the presenter view, the page's layout on phones and projectors, the lecture
script's "Next step" and the "Lecture check" panel (the preflight of `llm.preflight`).

Conventions every tab inherits (no per-tab rules):
- `elem_classes=ADVANCED` ("lab-advanced") on a control, row or column hides it in the
  presenter view (settings a lecture does not change); a tab's settings rows before its main
  action (except text boxes), examples and the checkpoint upload are hidden there too.
- A tab's main action is its first `variant="primary"` button; its main result is the
  element with `elem_classes=RESULT` ("lab-result") or, where none is marked, the first
  element after the main action's row. The layout test (tests/test_layout.py) keeps both
  on the first screen at 1280×720 and 1920×1080, in normal and presenter view.
- A tab with many settings puts them and its main action in a column marked
  `elem_classes=CONTROLS` ("lab-controls") and its main result in a column beside it
  (`RESULT`), both in one `gr.Row`: side by side on a wide screen, stacked on a phone. The
  presenter view hides the settings before the action in that column too (as above).
- The presenter view is the class `presenter` on <html>: the switch (#presenter-switch),
  the URL parameter `?presenter=1` (`=0` turns it off) and the browser's localStorage
  (key `llm-lab-presenter`) set it, so the choice persists per browser.
"""
from __future__ import annotations

import gradio as gr

ADVANCED = "lab-advanced"
RESULT = "lab-result"
CONTROLS = "lab-controls"
STORAGE_KEY = "llm-lab-presenter"

#: Layout of the page at every size, and the presenter view. Rules are written against
#: Gradio's own structure (.tabitem, .row, .block, .gr-accordion) and the conventions above.
CSS = """
#lab-header { align-items: center; }
#lab-intro h1 { font-size: 1.5em; margin: 0; display: inline-block; }
#lab-intro p { margin: 0; font-size: 0.88em; line-height: 1.3; }
#presenter-switch { border: none !important; box-shadow: none !important; padding: 2px 4px;
  flex: 0 0 auto !important; width: auto !important; }
#model-info p { margin: 0; font-size: 0.9em; line-height: 1.35; }
#lab-status p { line-height: 1.35; }
#lab-status-buttons { gap: 8px; }
#lecture-bar { align-items: center; }
#lecture-step p { margin: 0; }
html:not(.presenter) .presenter-only { display: none !important; }

/* Short screens (a 1280x720 projector): a tab's introduction shows its first two lines and the
   page's its first line until hovered, and the picker's hint (its choices say the same) is left
   out, so the tab's main action and result fit on the first screen. */
@media (max-height: 820px) and (min-width: 641px) {
  #lab-intro .prose { display: flex; align-items: baseline; gap: 12px; }
  #lab-intro h1 { flex: 0 0 auto; }
  #lab-intro p { display: -webkit-box; -webkit-line-clamp: 1; -webkit-box-orient: vertical; overflow: hidden; }
  #lab-intro:hover p { -webkit-line-clamp: unset; }
  #model-picker .info-text { display: none; }
}
/* Wide screens: the picker's label sits left of its box, so the header takes two short lines. */
@media (min-width: 641px) {
  #model-picker { padding: 6px 10px; }
  #model-picker > .container { display: flex; flex-wrap: wrap; align-items: center; column-gap: 10px; }
  #model-picker > .container > [data-testid=block-info] { flex: 0 0 auto; margin: 0; }
  #model-picker > .container > .info-text { order: 3; flex: 1 0 100%; }
  #model-picker > .container > .wrap { flex: 1 1 240px; min-width: 0; }
  #lab-bar { gap: 12px; }
  #lab-bar > .column { gap: 6px; }
  /* A tab's settings column: radio choices and gaps a little tighter, so the main action stays high. */
  .lab-controls { --checkbox-label-padding: 4px 10px; gap: 10px !important; }
  .tabitem > .column > .block:first-child .prose > p, .tabitem > .column > .prose:first-child > p {
    display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
  .tabitem > .column > .block:first-child .prose:hover > p, .tabitem > .column > .prose:first-child:hover > p {
    -webkit-line-clamp: unset; }
}

/* Phones and narrow windows: columns stack, words never break, the header stays short. */
@media (max-width: 640px) {
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; }
  #lab-status, #lab-status *, [role=tab] { word-break: normal !important; overflow-wrap: normal !important;
    hyphens: none !important; }
  #lab-intro p { display: none; }
  #model-picker .info, #model-picker [data-testid=block-info] + span { display: none; }
  .tabitem .prose { font-size: 0.95em; }
}

/* Presenter view: a tab's text and plots 1.5x (zoom; the header 1.2x), more contrast, advanced controls hidden. */
html.presenter body, html.presenter .gradio-container {
  --body-text-color: #000; --body-text-color-subdued: #222; --block-label-text-color: #000;
  --block-info-text-color: #222; --border-color-primary: #555; --neutral-400: #555; color: #000;
}
html.presenter .tabitem { zoom: 1.5; }
html.presenter #lab-header, html.presenter #lab-bar, html.presenter #lecture-bar, html.presenter [role=tablist],
html.presenter .tab-wrapper { zoom: 1.2; }
html.presenter .lab-advanced, html.presenter #model-upload,
html.presenter #upload-message, html.presenter #space-limits, html.presenter #lab-intro p,
html.presenter #model-info, html.presenter .column:has(> #lab-status),
html.presenter .tabitem .block:has(> .gallery), html.presenter #model-picker [data-testid=block-info] + *,
html.presenter footer { display: none !important; }
html.presenter .tabitem textarea { max-height: 4.2em; }
/* A tab's settings before its main action (the first primary button) stay as they are but hidden,
   except text boxes (a presenter types a prompt live); the lecture script still fills them.
   (No commas inside parentheses: Gradio splits a custom rule's selector list at every comma. No line
   break inside a selector either: it would be a descendant combinator, hiding the element's contents
   but leaving its empty frame.) */
html.presenter .tabitem > .column > :has(~ * button.primary):not(:has(button.primary)):not(:has(textarea)):not(:has(button.primary) ~ *):not(button.primary ~ *)
  { display: none !important; }
html.presenter .tabitem > .column > :has(~ button.primary):not(:has(button.primary)):not(:has(textarea)):not(:has(button.primary) ~ *):not(button.primary ~ *)
  { display: none !important; }
html.presenter .lab-controls > :has(~ * button.primary):not(:has(button.primary)):not(:has(textarea)):not(:has(button.primary) ~ *):not(button.primary ~ *)
  { display: none !important; }
html.presenter .lab-controls > :has(~ button.primary):not(:has(button.primary)):not(:has(textarea)):not(:has(button.primary) ~ *):not(button.primary ~ *)
  { display: none !important; }
html.presenter .tabitem > .column > .block:first-child:has(.prose), html.presenter .tabitem > .column > .prose:first-child
  { display: none !important; }
"""

#: Runs when the page opens: the URL parameter wins (and is remembered), else the stored choice.
READ_PRESENTER_JS = """() => {
  const q = new URLSearchParams(window.location.search).get('presenter');
  let on = false;
  try { on = localStorage.getItem('%(key)s') === '1'; } catch (e) {}
  if (q !== null) on = !['0', 'false', 'off', 'no'].includes(q.toLowerCase());
  document.documentElement.classList.toggle('presenter', on);
  return on;
}""" % {"key": STORAGE_KEY}

#: Runs when the switch changes (by hand or from READ_PRESENTER_JS).
APPLY_PRESENTER_JS = """(on) => {
  document.documentElement.classList.toggle('presenter', !!on);
  try { localStorage.setItem('%(key)s', on ? '1' : '0'); } catch (e) {}
  window.dispatchEvent(new Event('resize'));  // plots redraw at their new size
}""" % {"key": STORAGE_KEY}

#: Fills a step's inputs by elem_id, as a person would type or click, then presses its button.
APPLY_STEP_JS = """async (step) => {
  if (!step || !step.tab) return;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const find = async (id) => {
    for (let i = 0; i < 150; i++) {
      const el = document.getElementById(id);
      if (el && el.closest('.tabitem') && el.closest('.tabitem').getClientRects().length) return el;
      await sleep(100);
    }
    return document.getElementById(id);
  };
  const fire = (el) => ['input', 'change'].forEach((t) => el.dispatchEvent(new Event(t, {bubbles: true})));
  const fieldsOf = (root) => root.matches('textarea, input') ? [root]
    : [...root.querySelectorAll('textarea, input[type=number], input[type=range], input[type=text], input:not([type])')];
  const setValue = (root, value) => {
    if (typeof value === 'boolean') {
      const box = root.querySelector('input[type=checkbox]');
      if (box && box.checked !== value) box.click();
      return !!box;
    }
    const radio = root.querySelector(`input[type=radio][value="${CSS.escape(String(value))}"]`);
    if (radio) { radio.click(); return true; }
    const fields = fieldsOf(root);
    fields.forEach((f) => { f.value = String(value); fire(f); f.dispatchEvent(new Event('blur')); });
    return fields.length > 0;
  };
  // A tab opened for the first time may still be mounting its fields, which then start from their
  // defaults: the values are checked and set again until they hold.
  const holds = (root, value) => {
    if (typeof value === 'boolean') {
      const box = root.querySelector('input[type=checkbox]');
      return !box || box.checked === value;
    }
    const radio = root.querySelector(`input[type=radio][value="${CSS.escape(String(value))}"]`);
    if (radio) return radio.checked;
    // (a slider's range input shows its value clamped to the slider: its number box decides)
    return fieldsOf(root).filter((f) => f.type !== 'range').every((f) => f.value === String(value));
  };
  const missing = [];
  const entries = Object.entries(step.inputs || {});
  for (const [id, value] of entries) {
    const root = await find(id);
    if (!root || !setValue(root, value)) missing.push(id);
  }
  for (let attempt = 0; attempt < 10; attempt++) {
    await sleep(300);
    const loose = entries.filter(([id, value]) => {
      const root = document.getElementById(id);
      return root && !missing.includes(id) && !holds(root, value);
    });
    if (!loose.length) break;
    loose.forEach(([id, value]) => setValue(document.getElementById(id), value));
  }
  if (step.run) {
    const button = await find(step.run);
    if (button) button.click(); else missing.push(step.run);
  }
  const note = document.getElementById('lecture-missing');
  if (note) note.textContent = missing.length
    ? `⚠️ This step names elements the ${step.tab} tab does not have: ${missing.join(', ')}. Update the lecture script.`
    : '';
}"""


def build_intro(intro_md: str) -> gr.Checkbox:
    """The page's title and one-line intro, with the presenter switch beside them."""
    with gr.Row(equal_height=True, elem_id="lab-header"):
        gr.Markdown(intro_md, elem_id="lab-intro")
        switch = gr.Checkbox(False, label="Presenter view", elem_id="presenter-switch", scale=0, min_width=170,
                             container=False)
    return switch


class LectureControls:
    """The presenter's lecture bar and the "Lecture check" panel (built above the tabs)."""

    def __init__(self, ctx, switch: gr.Checkbox):
        self.ctx, self.switch = ctx, switch
        self.index = gr.State(-1)
        with gr.Row(elem_id="lecture-bar", elem_classes=["presenter-only"]):
            self.step_md = gr.Markdown("**Lecture** · press **Next step** to begin.", elem_id="lecture-step")
            self.prev = gr.Button("◀ Back", elem_id="lecture-prev", scale=0, min_width=90, size="sm")
            self.next = gr.Button("Next step ▶", variant="primary", elem_id="lecture-next", scale=0,
                                  min_width=140, size="sm")
        gr.Markdown(elem_id="lecture-missing", elem_classes=["presenter-only"])
        self.step_json = gr.JSON(visible=False, elem_id="lecture-step-json")

    def build_check(self) -> None:
        """The "Lecture check" panel; below the tabs, so the header stays short."""
        with gr.Accordion("Lecture check: will the demos run here, and how long will they take?", open=False,
                          elem_id="lecture-check", elem_classes=[ADVANCED]):
            self.check_btn = gr.Button("Run the lecture check (about 30 s)", elem_id="lecture-check-run")
            self.check_md = gr.Markdown(elem_id="lecture-check-report")

    def wire(self, demo: gr.Blocks, tabs: gr.Tabs) -> None:
        """Build the check panel and connect everything; call after the tabs are built."""
        self.build_check()
        self.switch.change(None, [self.switch], None, js=APPLY_PRESENTER_JS)
        demo.load(None, None, [self.switch], js=READ_PRESENTER_JS)
        outputs = [self.index, self.step_md, self.step_json, tabs, self.ctx.picker]
        self.next.click(lambda i: go_to_step(i, +1), [self.index], outputs, api_name="lecture_next").then(
            None, [self.step_json], None, js=APPLY_STEP_JS)
        self.prev.click(lambda i: go_to_step(i, -1), [self.index], outputs, api_name="lecture_back").then(
            None, [self.step_json], None, js=APPLY_STEP_JS)
        self.check_btn.click(lecture_check, None, [self.check_md], api_name="lecture_check",
                             show_progress_on=[self.check_md], concurrency_limit=1)


def go_to_step(index, delta: int):
    """The next (or previous) step of the lecture script: its text, the step for the browser to
    apply, the tab to show and the model to pick."""
    from llm.lecture import ScriptError, load_script

    try:
        script = load_script()
    except ScriptError as exc:
        raise gr.Error(str(exc)) from None
    index = int(index) if isinstance(index, (int, float)) else -1
    index = min(max(index + delta, 0), len(script.steps) - 1)
    step = script.steps[index]
    text = (f"**{index + 1}/{len(script.steps)} · {step.title}**  \n👉 {step.point}")
    picker = gr.update(value=step.model) if step.model else gr.update()
    return index, text, step.to_dict(), gr.Tabs(selected=step.tab), picker


def lecture_check() -> str:
    """The preflight as Markdown; its warm-up leaves the lecture's models in the shared cache."""
    from llm.preflight import run_preflight

    report = run_preflight()
    return report.markdown()
