"""`python -m llm finetune-instruct`: teach a GPT to follow instructions (chapter 7).

Runs unchanged under `torchrun --nproc_per_node=N -m llm finetune-instruct ...`
(DistributedDataParallel, `llm.distributed`): --batch-size is per process, losses are means
over the processes, and only rank 0 prints, samples and saves.
"""
from __future__ import annotations

import sys

NAME = "finetune-instruct"
HELP = "instruction fine-tune a model on the book's 1,100 Alpaca-style records (chapter 7)"


def add_arguments(parser):
    from llm.instruct import BOOK_BATCH_SIZE, BOOK_EPOCHS, BOOK_LR, BOOK_WEIGHT_DECAY

    parser.add_argument("--base", required=True,
                        help="base model: a GPT-2 size, a lab preset (random weights) or a checkpoint path")
    parser.add_argument("--data", default=None,
                        help="your own instruction JSON (list of {instruction, input, output}); "
                             "default: the book's instruction-data.json")
    parser.add_argument("--epochs", type=int, default=BOOK_EPOCHS)
    parser.add_argument("--lr", type=float, default=BOOK_LR)
    parser.add_argument("--weight-decay", type=float, default=BOOK_WEIGHT_DECAY)
    parser.add_argument("--batch-size", type=int, default=BOOK_BATCH_SIZE)
    parser.add_argument("--mask-instructions", action="store_true",
                        help="leave the instruction and input out of the loss (the book's exercise 7.2)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--eval-every", type=int, default=5, help="steps between evaluations (book: 5)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: mixed precision (autocast) on CUDA GPUs; refused on a CPU")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="shuffle the records with this seed before the 85/5/10 split "
                             "(default: the book's unshuffled split)")
    parser.add_argument("--out", default=None, help="where to save the model (.safetensors)")


def run(args) -> int:
    """Under torchrun: one process of several (`llm.distributed.run_command`)."""
    from llm import distributed

    return distributed.run_command(finetune_command, args)


def finetune_command(args) -> int:
    from tqdm import tqdm

    from llm import distributed
    from llm.catalog import load_model
    from llm.instruct import (INSTRUCTION_DATA, default_checkpoint_name, finetune_instruct,
                              instruct_train_config, load_instruction_file, split_instruction_data)
    from llm.paths import checkpoints_dir

    config = instruct_train_config(lr=args.lr, weight_decay=args.weight_decay, epochs=args.epochs,
                                   max_steps=args.max_steps, eval_every=args.eval_every, seed=args.seed,
                                   grad_accum=args.grad_accum, precision=args.precision)
    data = load_instruction_file(args.data or INSTRUCTION_DATA)
    splits = split_instruction_data(data, seed=args.split_seed)
    ckpt = load_model(args.base, fresh=True)
    if ckpt.task == "classifier":
        raise ValueError(f"{args.base} is a classifier (its output head has {len(ckpt.labels or [])} classes, "
                         "not the vocabulary); start from a language model or an instruct model")
    out = args.out or checkpoints_dir() / default_checkpoint_name(args.base)
    run_ = finetune_instruct(ckpt.model, splits.train, splits.val, config, args.batch_size,
                             args.mask_instructions, out=out,
                             training={"base": str(args.base), "data": str(args.data or "instruction-data.json"),
                                       "split_seed": args.split_seed})
    print(f"data: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test records"
          f" · sequences cut at {run_.allowed_max_length} tokens"
          + (f" · {run_.dropped} records dropped (instruction fills the context)" if run_.dropped else ""))
    with tqdm(total=run_.run.total_steps, unit="step", desc="fine-tuning", disable=not distributed.is_main()) as bar, \
            distributed.stop_request(distributed_only=True) as stop_asked:
        try:
            for event in run_:
                if event.kind == "step":
                    bar.update(1)
                    bar.set_postfix(loss=f"{event.train_loss:.3f}")
                elif event.kind == "eval":
                    val = event.metrics.get("val_loss", float("nan"))
                    bar.write(f"step {event.step:5d}: train loss {event.metrics['train_loss']:.3f}, "
                              f"val loss {val:.3f}")
                    if event.sample is not None:
                        bar.write(f"    sample: {event.sample[:200]!r}")
                if stop_asked():  # Ctrl-C under torchrun: every rank stops after the same step
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            print("\ninterrupted: saving the model as trained so far", file=sys.stderr)
            run_.close()
            run_.save(out)
    print(f"saved {run_.checkpoint_path}")
    return 0
