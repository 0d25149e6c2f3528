"""HTTP edges: one FastAPI app per role. Thin: parse, call the runtime, shape the answer."""
