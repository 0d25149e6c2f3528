"""Cache adapters: `memory` (in-process LRU with TTL, embedded mode) and `redis` (shared)."""
