"""Chapter 2 tokenizers against tiktoken's known ids and the book's printed results."""
import tiktoken

from llm.data import GPTDatasetV1, count_windows, create_dataloader_v1
from llm.tokenizer import (ENDOFTEXT_ID, get_tokenizer, text_to_token_ids, token_ids_to_text,
                           token_pieces, verdict_simple_tokenizer)

BOOK_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."


def test_known_gpt2_ids():
    assert text_to_token_ids("Hello, world") == [15496, 11, 995]
    assert text_to_token_ids("Every effort moves you") == [6109, 3626, 6100, 345]
    assert text_to_token_ids(BOOK_TEXT) == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262,
                                            4252, 18250, 8812, 2114, 286, 617, 34680, 27271, 13]


def test_vocabulary_is_gpt2_and_offline():
    enc = get_tokenizer()
    assert enc.n_vocab == 50257
    assert enc.eot_token == ENDOFTEXT_ID
    assert isinstance(enc, tiktoken.Encoding)


def test_round_trip_over_mixed_unicode():
    corpus = [
        "plain ascii", "  leading and trailing spaces  ", "tabs\tand\nnew\r\nlines\n\n\n",
        "naïve café — “quotes” ‘single’", "日本語のテキスト", "Привет, мир", "مرحبا بالعالم",
        "emoji 🤖🚀 family 👨‍👩‍👧 flags 🇫🇷", "math ∑ x² ≤ ∞", "\u00a0nbsp and zero\u200bwidth",
        "code: def f(x):\n    return x ** 2  # comment", "",
    ]
    for text in corpus:
        assert token_ids_to_text(text_to_token_ids(text)) == text


def test_token_pieces_show_partial_bytes_honestly():
    ids = text_to_token_ids("🤖")
    pieces = token_pieces(ids)
    assert len(pieces) > 1  # one emoji, several tokens
    assert all(p.partial for p in pieces)
    assert "\ufffd" not in "".join(p.text for p in pieces)
    assert b"".join(p.raw for p in pieces) == "🤖".encode()
    assert pieces[0].text.startswith("<0xF0>")


def test_token_pieces_mark_endoftext_as_special():
    pieces = token_pieces(text_to_token_ids("a<|endoftext|>b"))
    assert [p.special for p in pieces] == [False, True, False]
    assert pieces[1].text == "<|endoftext|>"


def test_simple_tokenizer_matches_the_book():
    tokenizer = verdict_simple_tokenizer()
    assert len(tokenizer.str_to_int) == 1132  # 1,130 words + <|endoftext|> + <|unk|> (section 2.4)
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = tokenizer.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tokenizer.decode(ids) == ("<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces "
                                     "of the <|unk|>.")


def test_sliding_window_pairs_are_shifted_by_one():
    ids = list(range(20))
    ds = GPTDatasetV1(ids, max_length=4, stride=4)
    assert len(ds) == count_windows(20, 4, 4) == 4
    x, y = ds[1]
    assert x.tolist() == [4, 5, 6, 7] and y.tolist() == [5, 6, 7, 8]


def test_dataloader_on_the_verdict_matches_section_2_6():
    from llm.paths import ASSETS_DIR
    raw_text = (ASSETS_DIR / "the-verdict.txt").read_text(encoding="utf-8")
    assert len(text_to_token_ids(raw_text)) == 5145
    loader = create_dataloader_v1(raw_text, batch_size=1, max_length=4, stride=1, shuffle=False)
    first = next(iter(loader))
    assert first[0].tolist() == [[40, 367, 2885, 1464]]
    assert first[1].tolist() == [[367, 2885, 1464, 1807]]
