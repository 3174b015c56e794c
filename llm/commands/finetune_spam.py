"""`python -m llm finetune-spam`: fine-tune a GPT into a spam classifier (chapter 6).

Runs unchanged under `torchrun --nproc_per_node=N -m llm finetune-spam ...` (DistributedDataParallel,
`llm.distributed`): --batch-size is per process, accuracies are means over the processes, and
only rank 0 prints and saves.
"""
from __future__ import annotations

NAME = "finetune-spam"
HELP = "fine-tune a model into a ham/spam classifier on the SMS Spam Collection (chapter 6)"


def add_arguments(parser):
    from llm.recipes import POLICIES

    parser.add_argument("--base", required=True,
                        help="base model: a GPT-2 size, a lab preset (random weights), or a checkpoint path")
    parser.add_argument("--trainable", choices=POLICIES, default=None,
                        help="what trains: last-block (the book's), head, last-k, all, lora "
                             "(default: the recipe's)")
    parser.add_argument("--k", type=int, default=None, help="blocks trained with --trainable last-k")
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (appendix E uses 16)")
    parser.add_argument("--alpha", type=float, default=None, help="LoRA alpha (appendix E uses 16)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="bf16: mixed precision (autocast) on CUDA GPUs; refused on a CPU")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between loss evaluations")
    parser.add_argument("--eval-batches", type=int, default=None, help="batches per evaluation (book: 5)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--balanced", dest="balanced", action="store_true", default=True,
                      help="the book's balanced set: 747 ham + 747 spam (default)")
    data.add_argument("--full", dest="balanced", action="store_false",
                      help="all 5,574 messages (4,827 ham, 747 spam)")
    parser.add_argument("--out", default=None, help="where to save the classifier (.safetensors)")
    parser.add_argument("--compare-random", action="store_true",
                        help="then fine-tune a random model of the base's shape with the same recipe (not saved) "
                             "and print both test accuracies: what pretraining buys (chapter 6)")


def run(args) -> int:
    """Under torchrun: one process of several (`llm.distributed.run_command`)."""
    from llm import distributed

    return distributed.run_command(finetune_command, args)


def finetune_command(args) -> int:
    """The recipe follows the base (`llm.recipes.spam_recipe`); every option given replaces its value."""
    from llm import distributed
    from llm.classifier import finetune_spam
    from llm.commands import follow
    from llm.catalog import load_model
    from llm.recipes import is_random_base, spam_pretraining_gain, spam_recipe

    random_base = is_random_base(args.base)
    recipe = spam_recipe(random_base, None if random_base else load_model(args.base).model.cfg.num_parameters())
    job = finetune_spam(args.base, recipe, out=args.out, policy=args.trainable, k=args.k, rank=args.rank,
                        alpha=args.alpha, balanced=args.balanced, epochs=args.epochs, lr=args.lr,
                        weight_decay=args.weight_decay, batch_size=args.batch_size, eval_every=args.eval_every,
                        eval_batches=args.eval_batches, seed=args.seed, max_steps=args.max_steps,
                        grad_accum=args.grad_accum, precision=args.precision)
    facts, settings = job.training, job.settings
    changed = settings.changes_from(recipe)
    print(f"recipe: {recipe.note}" + (f"; changed here: {changed}" if changed else ""))
    print(f"data: {facts['data']} {facts['sizes']} · padded to {facts['max_length']} tokens · "
          f"truncated {facts['num_truncated']}")
    print(f"trainable parameters: {facts['trainable']:,} of {facts['parameters']:,} ({settings.policy}); "
          f"lr {settings.lr:g}, {settings.epochs} epochs, batch {settings.batch_size}; memory {job.memory.describe()}")
    follow(job, desc="fine-tuning")
    result = job.finish()
    other = None
    if args.compare_random:  # every process runs it (under torchrun the ranks train together)
        from llm.catalog import random_twin

        twin = finetune_spam(random_twin(args.base), settings)
        follow(twin, desc="same recipe, random weights")
        other = twin.measure()
    if not distributed.is_main():
        return 0
    print(f"training accuracy {result.train_acc:.2%} · validation accuracy {result.val_acc:.2%} · "
          f"test accuracy {result.test_acc:.2%}")
    (tn, fp), (fn, tp) = result.confusion
    print(f"test confusion (rows true, columns predicted): ham→ham {tn}, ham→spam {fp}, "
          f"spam→ham {fn}, spam→spam {tp}")
    print(f"saved {result.path}")
    if other is not None:
        print(f"a random model of the same shape, same recipe: test accuracy {other.test_acc:.2%} "
              f"(pretrained: {result.test_acc:.2%}): "
              + spam_pretraining_gain(result.test_acc, other.test_acc, settings.policy))
    return 0
