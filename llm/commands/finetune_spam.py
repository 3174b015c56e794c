"""`python -m llm finetune-spam`: fine-tune a GPT into a spam classifier (chapter 6).

Runs unchanged under `torchrun --nproc_per_node=N -m llm finetune-spam ...` (DistributedDataParallel,
`llm.distributed`): --batch-size is per process, accuracies are means over the processes, and
only rank 0 prints and saves.
"""
from __future__ import annotations

import sys

NAME = "finetune-spam"
HELP = "fine-tune a model into a ham/spam classifier on the SMS Spam Collection (chapter 6)"


def add_arguments(parser):
    from llm.classifier import POLICIES

    parser.add_argument("--base", required=True,
                        help="base model: a GPT-2 size, a lab preset (random weights), or a checkpoint path")
    parser.add_argument("--trainable", choices=POLICIES, default="last-block",
                        help="what trains: last-block (the book's default), head, last-k, all, lora")
    parser.add_argument("--k", type=int, default=2, help="blocks trained with --trainable last-k")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (appendix E uses 16)")
    parser.add_argument("--alpha", type=float, default=16, help="LoRA alpha (appendix E uses 16)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: mixed precision (autocast) on CUDA GPUs; refused on a CPU")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between loss evaluations")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--balanced", dest="balanced", action="store_true", default=True,
                      help="the book's balanced set: 747 ham + 747 spam (default)")
    data.add_argument("--full", dest="balanced", action="store_false",
                      help="all 5,574 messages (4,827 ham, 747 spam)")
    parser.add_argument("--out", default=None, help="where to save the classifier (.safetensors)")


def run(args) -> int:
    """Under torchrun: one process of several (`llm.distributed.run_command`)."""
    from llm import distributed

    return distributed.run_command(finetune_command, args)


def finetune_command(args) -> int:
    from tqdm import tqdm

    from llm import distributed
    from llm.classifier import finetune_spam

    job = finetune_spam(args.base, policy=args.trainable, k=args.k, rank=args.rank, alpha=args.alpha,
                        balanced=args.balanced, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                        batch_size=args.batch_size, eval_every=args.eval_every, seed=args.seed,
                        max_steps=args.max_steps, out=args.out, grad_accum=args.grad_accum,
                        precision=args.precision)
    facts = job.training
    print(f"data: {facts['data']} {facts['sizes']} · padded to {facts['max_length']} tokens · "
          f"truncated {facts['num_truncated']}")
    print(f"trainable parameters: {facts['trainable']:,} of {facts['parameters']:,} ({args.trainable})")
    with tqdm(total=job.run.total_steps, unit="step", desc="fine-tuning", disable=not distributed.is_main()) as bar, \
            distributed.stop_request(distributed_only=True) as stop_asked:
        try:
            for event in job:
                if event.kind == "step":
                    bar.update(1)
                    bar.set_postfix(loss=f"{event.train_loss:.3f}")
                elif event.kind == "eval":
                    bar.write(f"step {event.step:5d}: train loss {event.metrics['train_loss']:.3f}, "
                              f"val loss {event.metrics['val_loss']:.3f}")
                elif event.kind == "epoch":
                    bar.write(f"epoch {event.epoch}: training accuracy {event.metrics['train_acc']:.2%} | "
                              f"validation accuracy {event.metrics['val_acc']:.2%}")
                if stop_asked():  # Ctrl-C under torchrun: every rank stops after the same step
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            print("\ninterrupted: measuring and saving the model as trained so far", file=sys.stderr)
    result = job.finish()
    print(f"training accuracy {result.train_acc:.2%} · validation accuracy {result.val_acc:.2%} · "
          f"test accuracy {result.test_acc:.2%}")
    (tn, fp), (fn, tp) = result.confusion
    print(f"test confusion (rows true, columns predicted): ham→ham {tn}, ham→spam {fp}, "
          f"spam→ham {fn}, spam→spam {tp}")
    print(f"saved {result.path}")
    return 0
