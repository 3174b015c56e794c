"""Start the LLM Scratch Lab: `python app.py [--host HOST] [--port PORT] [--share]`.

Gradio's own environment variables work too (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT,
GRADIO_SHARE, ...), also on a Space (SYSTEM=spaces, which listens on 0.0.0.0); flags win over
them. A port that is taken ends the start with exit code 2 and a sentence. Analytics stay off unless
GRADIO_ANALYTICS_ENABLED is set to True. Nothing is downloaded at start-up: models
load on first use.
"""
from __future__ import annotations

import argparse
import os
import sys

# Read by Gradio at import and when Blocks are built: off unless the user asked for it.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LLM Scratch Lab: the book's LLM, interactive.")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: GRADIO_SERVER_PORT or the first free one from 7860)")
    parser.add_argument("--share", action="store_true", default=None,
                        help="also open a public gradio.live link (needs internet)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from llm.ui.app import build_app, launch_kwargs

    demo = build_app()
    kwargs = launch_kwargs()  # on a Space: 0.0.0.0, port 7860; the environment, then flags, win
    kwargs.update({k: v for k, v in (("server_name", args.host), ("server_port", args.port)) if v is not None})
    try:
        demo.launch(share=args.share, **kwargs)
    except OSError as error:  # the port is taken, or the address is not this machine's
        print(f"app.py: cannot listen there: {error}\nStop what holds that port, or start on another one with "
              "--port N (or GRADIO_SERVER_PORT=N).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
