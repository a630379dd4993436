"""Layer C: one client's connection (reader loop, lifecycle) and its outbox."""
