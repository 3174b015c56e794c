"""LLM Scratch Lab: the code of *Build a Large Language Model (From Scratch)*, made interactive.

The core library; nothing here imports Gradio (the tabs live in `llm.ui`).
"""
