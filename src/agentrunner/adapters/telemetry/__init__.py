"""Tracing adapters."""
