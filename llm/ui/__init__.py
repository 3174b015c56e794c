"""The lab's Gradio user interface: one module per tab, built by `llm.ui.app.build_app()`.

Everything outside `llm/ui/` stays free of Gradio; tab handlers are thin and call the core.
"""
