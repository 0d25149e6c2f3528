"""Cache adapters: `memory` (in-process LRU with TTL); Redis arrives with the distributed mode."""
