"""The lab's Gradio Blocks: a shared model picker and one tab per stage of the book.

Each tab is a module `llm/ui/<name>_tab.py` with `TITLE` (the tab's label) and
`build(ctx)`, where `ctx` is the `llm.ui.shared.LabContext`. To add a tab, write the
module and put its name in `TAB_MODULES` at its place in the book's order.
"""
from __future__ import annotations

import importlib
import os

import gradio as gr

from llm.limits import current

from . import lecture
from .shared import LabContext, explain_all_errors, remove_stale_session_folders


#: Tab modules in the book's order (chapters 2, 2, 3, 4, 4-5, 5, 6, 7, 7).
TAB_MODULES = [
    "llm.ui.tokenize_tab",
    "llm.ui.embeddings_tab",
    "llm.ui.attention_tab",
    "llm.ui.model_tab",
    "llm.ui.generate_tab",
    "llm.ui.pretrain_tab",
    "llm.ui.classify_tab",
    "llm.ui.instruct_tab",
    "llm.ui.judge_tab",
]

INTRO = """# LLM Scratch Lab
The code of *Build a Large Language Model (From Scratch)* (Sebastian Raschka), made interactive:
text → tokens → embeddings → attention → a GPT → pretraining → generation → fine-tuning → evaluation.
Everything runs on this machine's CPU. Pick a model once here; every tab uses it."""

CSS = """
#lab-status p { margin: 0; font-size: 0.9em; }
.token-chips { line-height: 2.3; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
"""


def load_tab_modules(names=None) -> list:
    """Import the tab modules, in the book's order."""
    return [importlib.import_module(name) for name in names or TAB_MODULES]


def build_app(tab_modules=None) -> gr.Blocks:
    """Build the lab: intro, shared model picker and status line, then the tabs."""
    with gr.Blocks(title="LLM Scratch Lab") as demo:
        presenter_switch = lecture.build_intro(INTRO)
        if current().describe():
            gr.Markdown(current().describe(), elem_id="space-limits")
        ctx = LabContext(demo)
        lecture_controls = lecture.LectureControls(ctx, presenter_switch)
        # "wrap": every tab stays visible on a phone (Gradio's default hides most behind "⋯").
        with gr.Tabs(overflow_behavior="wrap") as tabs:
            for module in load_tab_modules(tab_modules):
                short = module.__name__.rsplit(".", 1)[-1].removesuffix("_tab")
                with gr.Tab(module.TITLE, id=short, elem_id=f"tab-{short}"):
                    module.build(ctx)
        ctx.finish()
        lecture_controls.wire(demo, tabs)
    explain_all_errors(demo)  # every failure reaches the visitor as a sentence, never a bare "Error"
    remove_stale_session_folders()  # what a crashed run left in the temporary folder
    # Visitors beyond the queue's size are told to come back later instead of waiting forever.
    demo.queue(max_size=current().queue_size)
    return demo


def launch_kwargs() -> dict:
    """Arguments for `demo.launch` that belong to the page (Gradio 6 moved css there) and the limits."""
    # An int: Gradio's size parser takes whole numbers with a unit only ("1.5gb" fails at launch).
    # Locally 8 GB admits GPT-2 XL (6.4 GB); a Space's 1.5 GB admits GPT-2 medium (1.4 GB).
    kwargs = {"css": CSS + lecture.CSS, "max_file_size": current().upload_bytes}
    # A Space is reached on 0.0.0.0:7860. Gradio's first port is already 7860 (GRADIO_SERVER_PORT wins),
    # so only the address is set, and only where GRADIO_SERVER_NAME does not say otherwise.
    if current().name == "spaces" and not os.environ.get("GRADIO_SERVER_NAME"):
        kwargs["server_name"] = "0.0.0.0"
    return kwargs
