"""Device drivers: one module per protocol; nothing else knows a protocol's bytes or topics."""
