"""`python -m llm finetune-instruct`: teach a GPT to follow instructions (chapter 7).

Runs unchanged under `torchrun --nproc_per_node=N -m llm finetune-instruct ...`
(DistributedDataParallel, `llm.distributed`): --batch-size is per process, losses are means
over the processes, and only rank 0 prints, samples and saves.
"""
from __future__ import annotations

NAME = "finetune-instruct"
HELP = "instruction fine-tune a model on the book's 1,100 Alpaca-style records (chapter 7)"


def add_arguments(parser):
    parser.add_argument("--base", required=True,
                        help="base model: a GPT-2 size, a lab preset (random weights) or a checkpoint path")
    parser.add_argument("--data", default=None,
                        help="your own instruction JSON (list of {instruction, input, output}); "
                             "default: the book's instruction-data.json")
    parser.add_argument("--epochs", type=int, default=None, help="(default: the recipe's; the book: 2)")
    parser.add_argument("--lr", type=float, default=None, help="(default: the recipe's; the book: 5e-5)")
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="(the book: 8)")
    parser.add_argument("--mask-instructions", action="store_true", default=None,
                        help="leave the instruction and input out of the loss (the book's exercise 7.2)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (book: 5)")
    parser.add_argument("--eval-batches", type=int, default=None, help="batches per evaluation (book: 5)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="bf16: mixed precision (autocast) on CUDA GPUs; refused on a CPU")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="shuffle the records with this seed before the 85/5/10 split "
                             "(default: the book's unshuffled split)")
    parser.add_argument("--out", default=None, help="where to save the model (.safetensors)")
    parser.add_argument("--compare-random", action="store_true",
                        help="then fine-tune a random model of the base's shape with the same recipe (not saved) "
                             "and print both validation losses: what pretraining buys")


def run(args) -> int:
    """Under torchrun: one process of several (`llm.distributed.run_command`)."""
    from llm import distributed

    return distributed.run_command(finetune_command, args)


def finetune_command(args) -> int:
    """The recipe follows the base (`llm.recipes.instruct_recipe`); every option given replaces its value."""
    from llm import distributed
    from llm.catalog import load_model
    from llm.commands import follow
    from llm.instruct import INSTRUCTION_DATA, default_checkpoint_name, finetune_instruct, load_instruction_file, \
        split_instruction_data
    from llm.paths import checkpoints_dir
    from llm.recipes import instruct_recipe, is_random_base

    data = load_instruction_file(args.data or INSTRUCTION_DATA)
    splits = split_instruction_data(data, seed=args.split_seed)
    ckpt = load_model(args.base, fresh=True)
    if ckpt.task == "classifier":
        raise ValueError(f"{args.base} is a classifier (its output head has {len(ckpt.labels or [])} classes, "
                         "not the vocabulary); start from a language model or an instruct model")
    recipe = instruct_recipe(is_random_base(args.base), ckpt.model.cfg.num_parameters())
    out = args.out or checkpoints_dir() / default_checkpoint_name(args.base)
    job = finetune_instruct(ckpt.model, splits.train, splits.val, recipe,
                            training={"base": str(args.base), "data": str(args.data or "instruction-data.json"),
                                      "split_seed": args.split_seed},
                            lr=args.lr, weight_decay=args.weight_decay, epochs=args.epochs, max_steps=args.max_steps,
                            eval_every=args.eval_every, eval_batches=args.eval_batches, seed=args.seed,
                            grad_accum=args.grad_accum, precision=args.precision, batch_size=args.batch_size,
                            mask_instructions=args.mask_instructions)
    s = job.settings
    changed = s.changes_from(recipe)
    print(f"recipe: {recipe.note}" + (f"; changed here: {changed}" if changed else "")
          + f"; lr {s.lr:g}, {f'{s.epochs} epochs' if s.epochs else f'{s.max_steps} steps'}, batch {s.batch_size}")
    print(f"data: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test records"
          f" · sequences cut at {job.allowed_max_length} tokens"
          + (f" · {job.dropped} records dropped (instruction fills the context)" if job.dropped else "")
          + f"; memory {job.memory.describe()}")
    follow(job, desc="fine-tuning")
    result = job.finish(out)
    val = result.metrics.get("val_loss")
    if distributed.is_main():
        print(f"saved {result.path}" + (f" (validation loss {val:.3f})" if val is not None else ""))
    if args.compare_random:
        from llm.catalog import random_twin

        twin = finetune_instruct(random_twin(args.base).model, splits.train, splits.val, s)
        follow(twin, desc="same recipe, random weights")
        other = twin.measure().metrics.get("val_loss")
        if distributed.is_main() and other is not None and val is not None:
            print(f"a random model of the same shape, same recipe: validation loss {other:.3f} "
                  f"(pretrained: {val:.3f})")
    return 0
