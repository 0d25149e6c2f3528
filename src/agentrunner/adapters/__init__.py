"""Adapters: one module per backend of each port, the only place that speaks to drivers."""
