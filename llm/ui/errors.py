"""Library errors as sentences for the visitor: no event of the lab ever answers a bare "Error".

`explain_all_errors(demo)` (called once by `llm.ui.app.build_app`) routes every event's handler
through `explain_errors` and every input's reading through `explain_input_errors`:

- a handler's exception becomes a `gr.Error` whose message says what was wrong and what to do
  (`as_gr_error`): the library's own sentence for a ValueError (CheckpointError, JudgeError, a
  bound from `llm.bounds`), one for input nested too deeply, for an allocation beyond the
  machine, and for anything unforeseen (named, with "please report it");
- it works the same after a stream started, so REST callers (`/gradio_api/call/...`) and
  gradio_client get the sentence too;
- a value Gradio cannot read before the handler runs ("ten" for a slider, a chat history that is
  not a list) gets a sentence naming the field and what it takes.

`llm.ui.shared` re-exports these for the tabs.
"""
from __future__ import annotations

import gradio as gr

# --- library errors as sentences for the visitor -------------------------------------

def as_sentence(text: str) -> str:
    """`text` as one sentence: whitespace collapsed, a capital first, a full stop last."""
    text = " ".join(str(text).split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?)»”`" else text + "."


def as_gr_error(exc: BaseException, doing: str = "") -> gr.Error:
    """A `gr.Error` whose message tells the visitor what went wrong and what to do.

    Library errors the visitor can fix (ValueError and its kin: CheckpointError,
    JudgeError, a bound from `llm.bounds`) keep their own sentence; input nested too
    deeply, an allocation beyond the machine and anything unforeseen get one. `gr.Error`
    passes through. Every event of the app goes through `explain_errors`, so no visitor
    ever gets Gradio's bare "Error".
    """
    if isinstance(exc, gr.Error):
        return exc
    where = f" while {doing}" if doing else ""
    if isinstance(exc, RecursionError):
        message = ("The input is nested too deeply to read (lists or objects inside each other hundreds of "
                   "levels deep). Send a flat file: a JSON list of records, each a flat object.")
    elif isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
            word in str(exc).lower() for word in ("can't allocate", "not enough memory", "out of memory"))):
        message = (f"This needs more memory than the server can give{where}. Choose a smaller model, a "
                   "shorter text or a smaller batch, or run the lab on your own machine.")
    elif isinstance(exc, (LookupError, ArithmeticError)) or (isinstance(exc, ValueError) and len(str(exc)) < 25):
        message = (f"An input is out of range or unknown{where} ({type(exc).__name__}: {str(exc)[:200]}). "
                   "Check the values and try again.")
    elif isinstance(exc, ValueError) or (isinstance(exc, OSError) and exc.errno is None):  # our own sentences
        message = as_sentence(str(exc))
    elif isinstance(exc, OSError):
        message = f"A file could not be read or written{where} ({as_sentence(exc.strerror or str(exc))}) Try again."
    else:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        message = (f"Something unexpected went wrong{where} ({type(exc).__name__}{': ' + first if first else ''}). "
                   "Check the inputs; if they look right, this is a bug in the lab: please report it.")
    return gr.Error(message)


def explain_errors(fn):
    """`fn` (an event handler: plain, generator or async) with every exception turned into `as_gr_error`.

    Also errors raised after a stream started: they reach the browser and REST callers
    (`/gradio_api/call/...`, gradio_client) with their sentence instead of "Error".
    """
    import functools
    import inspect

    if fn is None or getattr(fn, "_explains_errors", False):
        return fn
    if inspect.isasyncgenfunction(fn):
        async def wrapper(*args, **kwargs):
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence
                raise as_gr_error(exc) from exc
    elif inspect.iscoroutinefunction(fn):
        async def wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise as_gr_error(exc) from exc
    elif inspect.isgeneratorfunction(fn):
        def wrapper(*args, **kwargs):
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001
                raise as_gr_error(exc) from exc
    else:
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise as_gr_error(exc) from exc
    wrapper = functools.wraps(fn)(wrapper)  # Gradio reads the signature (gr.Progress, defaults) through __wrapped__
    wrapper._explains_errors = True
    return wrapper


def explain_input_errors(component) -> None:
    """Make `component.preprocess` (Gradio's reading of an input before the handler runs) name the
    field and what it takes when an API caller sends a value it cannot read ("ten" to a slider, 10^6
    beyond its maximum), instead of Gradio's bare "Error" or a sentence without the field's name."""
    original = getattr(component, "preprocess", None)
    if original is None or getattr(original, "_explains_errors", False):
        return
    label = getattr(component, "label", None) or getattr(component, "elem_id", None) or type(component).__name__
    low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
    if isinstance(component, (gr.Slider, gr.Number)):
        if low is not None and high is not None:
            takes = f"a number between {low:g} and {high:g}"
        elif low is not None:
            takes = f"a number of at least {low:g}"
        else:
            takes = "a number"
    else:
        takes = f"a value a {type(component).__name__} accepts"

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error as exc:  # Gradio's own range check ("Value 0 is less than minimum value 1."): add the name
            raise gr.Error(f"“{label}”: {exc.message} It must be {takes}.") from exc
        except Exception as exc:  # noqa: BLE001
            shown = repr(payload)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise gr.Error(f"“{label}” must be {takes} (got {shown}).") from exc

    preprocess._explains_errors = True
    component.preprocess = preprocess


def explain_all_errors(demo: gr.Blocks) -> None:
    """Route every event of `demo` through `explain_errors` and every input's reading through
    `explain_input_errors`; `build_app` calls this once the Blocks are built."""
    for block_fn in demo.fns.values():
        block_fn.fn = explain_errors(block_fn.fn)
        for component in block_fn.inputs:
            explain_input_errors(component)
    read_inputs = demo.preprocess_data
    if getattr(read_inputs, "_explains_errors", False):
        return

    async def preprocess_data(block_fn, inputs, *args, **kwargs):
        """Gradio checks an input's shape before `preprocess` (a chat history that is not a list)."""
        try:
            return await read_inputs(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()
            raise gr.Error(f"An input of this request has the wrong shape ({first[-1][:160] if first else type(exc).__name__}). "
                           "Send the values the API description lists (view_api).") from exc

    preprocess_data._explains_errors = True
    demo.preprocess_data = preprocess_data
