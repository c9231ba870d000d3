"""The tamper-evident audit log: the writer, the chain walk, verification, sealed segments, backups."""
