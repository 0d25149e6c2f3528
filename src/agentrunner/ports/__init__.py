"""The ports: what the runtime needs from the world, as Protocols, one module per port.

Each port has one adapter per backend under `adapters/`, and every adapter passes the same
contract suite in `tests/contract/`, which is how embedded and distributed modes agree.

- `bus`: EventBus, Subscription: topic-routed, at-least-once delivery.
- `state`: the durable records, as facets by consumer (ExecutionStore, SessionStore,
  ScheduleStore, PlanRunStore, ...) and StateStore, the whole a node opens and closes.
- `retention`, `audit`: the purge of old records and the audit log.
- `limits`: Slots and Buckets, shared concurrency and rate limits; `cache`: Cache.
- `providers`: LLMProvider, ProviderCatalog; `tools`: Tool, Repeatable, ToolContext, ToolCatalog.
- `metrics`, `tracing`, `slack`, `webhooks`: the rest of the outside world.

Nothing is re-exported here: import each port from its module, so a reader sees which
port a module depends on.
"""
