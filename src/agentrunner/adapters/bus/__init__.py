"""EventBus adapters: `memory` (embedded mode); RabbitMQ arrives with the distributed mode."""
