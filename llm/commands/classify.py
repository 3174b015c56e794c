"""`python -m llm classify`: label messages with a fine-tuned classifier (chapter 6.8)."""
from __future__ import annotations

from llm.commands import add_precision_argument

NAME = "classify"
HELP = "classify messages as ham or spam with a fine-tuned classifier checkpoint"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="a classifier checkpoint (.safetensors or the book's .pth)")
    parser.add_argument("messages", nargs="*", help="messages to classify")
    parser.add_argument("--file", default=None, help="a CSV/TSV file with a text column (one message a row)")
    parser.add_argument("--explain", action="store_true",
                        help="show how much each token moves the probability (occlusion)")
    add_precision_argument(parser)


def run(args) -> int:
    from llm.commands import CLIError
    from llm.catalog import load_model
    from llm.generation import inference_model
    from llm.classifier import classifier_from_checkpoint, classify_batch, explain_occlusion, read_messages_file

    texts = list(args.messages)
    if args.file:
        texts += read_messages_file(args.file).texts
    if not texts:
        raise CLIError('give one or more messages (python -m llm classify --model M "message") or --file')
    clf = classifier_from_checkpoint(load_model(args.model))
    predictions = classify_batch(inference_model(clf.model, args.precision), texts, clf.max_length, clf.labels)
    for text, pred in zip(texts, predictions):
        probs = "  ".join(f"{label} {p:.1%}" for label, p in pred.probs.items())
        short = text if len(text) <= 70 else text[:67] + "..."
        print(f"{pred.label:>6}  [{probs}]  {short}")
        if pred.truncated:
            print(f"        warning: {pred.warning}")
        if args.explain:
            explanation = explain_occlusion(clf.model, text, clf.max_length, target=clf.labels.index(pred.label))
            top = sorted(explanation.tokens, key=lambda t: -abs(t.delta))[:8]
            print(f"        towards {pred.label}: " + ", ".join(f"{t.piece!r} {t.delta:+.3f}" for t in top))
    return 0
