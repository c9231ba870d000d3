"""badge-bridge: access control bridge daemon."""
