"""Controllers that speak the contract (``kind = "mqtt"``, docs/mqtt.md): the bridge's commands on their
commands topic, each with its MAC under the controller's sync key (command_mac.py), their offline list
retained on their sync topic, sealed the same way. What they report arrives on the contract's topics, which the bridge's link
reads for every controller (link.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import cached_property

from badge_bridge.config import ControllerConfig
from badge_bridge.controllers import contract as c
from badge_bridge.controllers.command_mac import sealed
from badge_bridge.controllers.driver import Command, Context, Driver
from badge_bridge.snapshot import Snapshot
from badge_bridge.sync import build_sync, sync_key_id


class ContractController(Driver):
    kind = "mqtt"

    def __init__(self, ctx: Context, controller: ControllerConfig) -> None:
        super().__init__(ctx, controller)
        self._synced: str | None = None
        """The version of the offline list last published."""
        ctx.link.receipts.register(controller.key, self.receipt)

    @cached_property
    def _sync_key(self) -> bytes:
        return self.ctx.keys.sync_key(self.controller.key)

    def send(self, command: Command) -> None:
        self.ctx.link.publish(self.ctx.link.topics.controller_commands(self.controller.key),
                              sealed(command, self._sync_key))

    def receipt(self, ids: list[str]) -> None:
        """These events are committed to the audit log (controllers/receipts.py); sealed like a command."""
        receipt = c.Receipt(type="receipt", id=f"r-{uuid.uuid4().hex}", ts=datetime.now(UTC), ids=ids)
        self.ctx.link.publish(self.ctx.link.topics.controller_receipts(self.controller.key),
                              sealed(receipt, self._sync_key))

    def sync(self, snapshot: Snapshot) -> None:
        """Retained, so a controller that reconnects has it."""
        key = self._sync_key
        sync = build_sync(self.ctx.config, snapshot, self.controller.key, key, sync_key_id(key))
        if sync.version != self._synced:
            self.ctx.link.publish(self.ctx.link.topics.controller_sync(self.controller.key), sealed(sync, key),
                                  retain=True)
            self._synced = sync.version
