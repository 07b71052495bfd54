"""Events out: the transactional outbox, its relay, and webhooks (contract §10, §11)."""
