"""Tokenize tab (chapter 2): text → tokens → ids, three tokenizers side by side, sliding windows."""
from __future__ import annotations

import gradio as gr

from llm import viz
from llm.tokenizer import token_pieces

from .shared import bounded, clean_text, notices_md

TITLE = "Tokenize"

EXPLAIN = """### Chapter 2 · Working with text data
An LLM never sees letters: text is split into **tokens**, and each token becomes an integer **id**
(sections 2.2–2.3). Compare three tokenizers: GPT-2's **byte-pair encoding** (section 2.5, 50,257 tokens:
common words are one token, rare words are split into pieces, and any byte can be encoded, so nothing is
ever unknown), the book's **SimpleTokenizerV2** (section 2.4: a regex split with a vocabulary built from
*The Verdict*; unknown words become `<|unk|>`), and plain **characters**.
Spaces show as `·`, newlines as `↵`. A dashed chip is a token that holds only *part* of a character's
UTF-8 bytes (emoji and many non-Latin scripts) — hover a chip for its bytes."""

EXAMPLES = [
    "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.",
    "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough.",
    "Emoji are bytes too: 🤖🚀 ❤️ 👩‍👩‍👧",
    "日本語のテキスト · Привет, мир · مرحبا بالعالم · नमस्ते",
    "def greet(name):\n    return f\"Hello, {name}!\"\n",
    "1234567 + 89 = 1234656 and 3.14159",
]

MAX_CHIPS = 1500  # chips drawn per tokenizer; counts always cover the whole text

WINDOW_EXPLAIN = """#### Section 2.6 · Data sampling with a sliding window
The training data loader cuts the token stream into windows of `max_length` tokens; the **target** is the
same window shifted one token to the right, so at every position the model learns to predict the next
token. `stride` is how far the window moves: stride = max_length gives windows that do not overlap."""


def tokenize(text: str):
    """Tokenize `text` with GPT-2 BPE, the book's simple tokenizer and characters."""
    from llm.introspect import simple_tokens
    from llm.tokenizer import text_to_token_ids

    text, notices = clean_text(text)
    ids = text_to_token_ids(text)
    pieces = token_pieces(ids[:MAX_CHIPS])
    simple = simple_tokens(text)
    unknown = sum(t.unknown for t in simple)
    multi = _multi_token_characters(text, ids)
    if len(ids) > MAX_CHIPS:
        notices.append(f"Showing the first {MAX_CHIPS:,} of {len(ids):,} tokens as chips.")
    counts = (f"**{len(text):,}** characters · **{len(ids):,}** GPT-2 tokens · "
              f"**{len(text) / len(ids):.2f}** characters per token · {len(simple):,} simple tokens "
              f"({unknown} unknown) · {len(text):,} character tokens")
    if multi:
        counts += f"\n\n{len(multi)} character(s) need more than one GPT-2 token: " + ", ".join(
            f"`{ch}` ({n} tokens)" for ch, n in multi[:8])
    html = "".join([
        viz.chips_block(viz.gpt2_chips(pieces), "GPT-2 BPE (tiktoken, section 2.5)", f"{len(ids):,} tokens"),
        viz.chips_block(viz.simple_chips(simple[:MAX_CHIPS]), "SimpleTokenizerV2, vocabulary of The Verdict "
                        "(section 2.4)", f"{len(simple):,} tokens, {unknown} → <|unk|>"),
        viz.chips_block(viz.char_chips(text, MAX_CHIPS), "Characters", f"{len(text):,} tokens"),
    ])
    status = "\n\n".join(filter(None, [notices_md(notices), counts]))
    return status, html, ids


def _multi_token_characters(text: str, ids: list[int]) -> list[tuple[str, int]]:
    """Characters (outside ASCII) whose UTF-8 bytes GPT-2 spreads over several tokens."""
    from llm.tokenizer import text_to_token_ids

    seen = {}
    for ch in dict.fromkeys(text):
        if ord(ch) > 127 and len(seen) < 50:
            n = len(text_to_token_ids(ch))
            if n > 1:
                seen[ch] = n
    return list(seen.items())


def sliding_window(text: str, max_length: int, stride: int):
    """The input/target pairs `GPTDatasetV1` makes from `text` (first 20 shown)."""
    from llm.introspect import sliding_windows
    from llm.tokenizer import text_to_token_ids

    text, notices = clean_text(text)
    max_length, stride = bounded(max_length, "max length", "max_length"), bounded(stride, "stride")
    ids = text_to_token_ids(text)
    pairs, total = sliding_windows(ids, max_length, stride, limit=20)
    rows = []
    for n, (x, y) in enumerate(pairs):
        rows.append([n, _joined(x), str(x), _joined(y), str(y)])
    summary = (f"{len(ids):,} tokens, max_length {max_length}, stride {stride} → **{total:,}** input/target "
               f"pairs" + (f" (first {len(pairs)} shown)" if total > len(pairs) else ""))
    if total == 0:
        summary += f". The text needs more than {max_length} tokens to make one pair."
    return "\n\n".join(filter(None, [notices_md(notices), summary])), rows


def _joined(ids) -> str:
    return "|".join(viz.visible_whitespace(p.text) for p in token_pieces(ids))


def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    with gr.Row():
        text = gr.Textbox(label="Text", lines=4, value=EXAMPLES[0], elem_id="tok-text", scale=4)
    go = gr.Button("Tokenize", variant="primary", elem_id="tok-run")
    gr.Examples(EXAMPLES, inputs=[text], label="Try these")
    status = gr.Markdown(elem_id="tok-status")
    chips = gr.HTML(elem_id="tok-chips")
    with gr.Accordion("GPT-2 token ids", open=False):
        ids = gr.JSON(label="ids", elem_id="tok-ids")
    gr.on([go.click, text.submit], tokenize, [text], [status, chips, ids], api_name="tokenize")

    gr.Markdown(WINDOW_EXPLAIN)
    with gr.Row():
        max_length = gr.Slider(1, 64, value=4, step=1, label="max_length", elem_id="win-max-length")
        stride = gr.Slider(1, 64, value=1, step=1, label="stride", elem_id="win-stride")
        show = gr.Button("Show windows", elem_id="win-run", scale=0, min_width=140)
    window_status = gr.Markdown(elem_id="win-status")
    pairs = gr.Dataframe(headers=["#", "input", "input ids", "target", "target ids"], interactive=False,
                         wrap=True, elem_id="win-pairs")
    gr.on([show.click, max_length.release, stride.release], sliding_window, [text, max_length, stride],
          [window_status, pairs], api_name="sliding_window")
