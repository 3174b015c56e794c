"""Embeddings tab (chapter 2, sections 2.7-2.8): token and positional embeddings, a 2-D map, neighbours."""
from __future__ import annotations

import gradio as gr

from llm import viz

from .shared import bounded, clean_text, encode_for_model, get_model, notices_md, random_weights_note

TITLE = "Embeddings"

EXPLAIN = """### Chapter 2 · Token embeddings (2.7) and encoding word positions (2.8)
Each token id selects one row of the model's **token embedding** matrix `tok_emb` (50,257 rows ×
`emb_dim` columns); each position selects a row of the **positional embedding** matrix `pos_emb`. Their
sum is the **input embedding** the transformer blocks read. The 2-D map projects embedding vectors with
PCA; **nearest neighbours** are the rows most similar by cosine similarity.
With **pretrained weights** (GPT-2, or the lab's Wharton GPT) similar words land near each other. A **randomly
initialised lab model** shows noise: nothing has been learned yet — train one in the Pretrain tab and compare."""

EXAMPLES = [
    # Words that Wharton's fiction uses often enough for the bundled model to have placed them (and GPT-2 too).
    ["Every effort moves you", "man, woman, mother, father, London, Paris, France, Italy, morning, evening"],
    ["The cat sat on the mat while the dog slept.", "one, two, three, four, red, white, black, happy, unhappy"],
    ["Your journey starts with one step", "said, answered, replied, house, room, door, horse, carriage, train"],
]
MAX_TOKENS = 64  # tokens drawn in the heatmaps and the map
MAX_WORDS = 40


def _words(words: str | None) -> list[str]:
    return [w.strip() for w in (words or "").replace("\n", ",").split(",") if w.strip()][:MAX_WORDS]


def embeddings(choice, text, words, session_models=None):
    """Heatmaps of token/positional/input embeddings and a PCA map of the text's tokens and a word list."""
    import numpy as np

    from llm.introspect import embedding_views, pca_2d
    from llm.tokenizer import text_to_token_ids, token_pieces

    model = get_model(choice, session_models).model
    ids, notices = encode_for_model(text, model, MAX_TOKENS)
    views = embedding_views(model, ids)
    tokens = [p.text for p in token_pieces(ids)]
    heatmaps = viz.embedding_heatmaps(views, tokens)

    vectors, labels, groups = list(views["token"]), list(tokens), ["tokens of the text"] * len(ids)
    weight = model.tok_emb.weight.detach().float().cpu()
    for word in _words(words):
        word_ids = text_to_token_ids(" " + word)
        vectors.append(weight[word_ids].mean(0).numpy())  # a word split into pieces: the mean of its tokens
        labels.append(word if len(word_ids) == 1 else f"{word} ({len(word_ids)} tokens, mean)")
        groups.append("word list")
    if len(vectors) < 2:
        raise gr.Error("The 2-D map needs at least two tokens or words.")
    coords, explained = pca_2d(np.stack(vectors))
    pca = viz.pca_scatter(coords, labels, groups, explained, f"Token embeddings of {choice}, PCA to 2-D")
    status = "\n\n".join(filter(None, [random_weights_note(choice, session_models), notices_md(notices),
                                       f"{len(ids)} tokens · emb_dim {model.cfg.emb_dim} · "
                                       f"{len(labels) - len(ids)} words on the map"]))
    return status, heatmaps, pca


def neighbours(choice, word, k, session_models=None):
    """The k tokens nearest to `word`'s first token by cosine similarity of their embeddings."""
    from llm.introspect import nearest_neighbours
    from llm.tokenizer import text_to_token_ids, token_pieces

    word, notices = clean_text(word, limit=200, what="word")
    model = get_model(choice, session_models).model
    spaced = word if word.startswith(" ") else " " + word
    ids = text_to_token_ids(spaced)
    if ids[0] >= model.cfg.vocab_size:
        raise gr.Error(f"Token {ids[0]} is outside this model's vocabulary of {model.cfg.vocab_size}.")
    piece = token_pieces(ids[:1])[0].text
    if len(ids) > 1:
        notices.append(f"'{word}' is {len(ids)} tokens ({', '.join(repr(p.text) for p in token_pieces(ids))}); "
                       f"showing the neighbours of the first, {piece!r}.")
    found = nearest_neighbours(model, ids[0], bounded(k, "k"))
    rows = [[n + 1, viz.visible_whitespace(f.piece), f.id, round(f.similarity, 4)] for n, f in enumerate(found)]
    status = "\n\n".join(filter(None, [random_weights_note(choice, session_models), notices_md(notices),
                                       f"Nearest neighbours of {viz.visible_whitespace(piece)!r} (id {ids[0]})"]))
    return status, rows


def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    with gr.Row():
        text = gr.Textbox(label="Text", value=EXAMPLES[0][0], lines=2, elem_id="emb-text", scale=3)
        words = gr.Textbox(label="Word list for the map (comma separated)", value=EXAMPLES[0][1], lines=2,
                           elem_id="emb-words", scale=3)
    run = gr.Button("Show embeddings", variant="primary", elem_id="emb-run")
    gr.Examples(EXAMPLES, inputs=[text, words], label="Try these")
    status = gr.Markdown(elem_id="emb-status")
    heatmaps = gr.Plot(label="Embedding vectors", elem_id="emb-heatmaps")
    pca = gr.Plot(label="2-D map (PCA)", elem_id="emb-pca")
    gr.on([run.click, text.submit], embeddings,
          [ctx.picker, text, words, ctx.session_models], [status, heatmaps, pca], api_name="embeddings")

    gr.Markdown("#### Nearest neighbours by cosine similarity")
    with gr.Row():
        word = gr.Textbox(label="Word or token", value="mother", elem_id="nn-word", scale=3)
        k = gr.Slider(1, 30, value=10, step=1, label="how many", elem_id="nn-k", scale=2)
        find = gr.Button("Find neighbours", elem_id="nn-run", scale=0, min_width=150)
    gr.Examples(["mother", "London", "three", "red", "morning", "said"], inputs=[word], label="Words")
    nn_status = gr.Markdown(elem_id="nn-status")
    table = gr.Dataframe(headers=["rank", "token", "id", "cosine similarity"], interactive=False,
                         elem_id="nn-table")
    gr.on([find.click, word.submit], neighbours,
          [ctx.picker, word, k, ctx.session_models], [nn_status, table], api_name="neighbours")
