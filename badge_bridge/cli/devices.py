"""Key commands: signing-key rotation, controller sync keys, OSDP reader keys, the MQTT contract's schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.config import ConfigError
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event


@click.group("keys")
def keys_group() -> None:
    """Key material in the keys folder."""


@keys_group.command("rotate")
@pass_app
@fail_cleanly
def keys_rotate(app: App) -> None:
    """Make a new checkpoint signing key current; old public keys stay trusted. Restart the bridge after."""
    kid = app.keys.rotate_signing_key()
    now = datetime.now(UTC)
    with app.change() as (_session, audited):
        audited.append(Event(id=Event.new_id(EventKind.ADMIN_KEY_ROTATED), kind=EventKind.ADMIN_KEY_ROTATED,
                             source=app.actor, ts=now, received_ts=now, detail={"key_id": kid}))
    click.echo(f"new signing key {kid}; give {app.keys.signing_dir / (kid + '.pub')} to the auditors")


@click.group()
def controller() -> None:
    """Door controllers."""


@controller.command("sync-key")
@click.argument("key")
@pass_app
@fail_cleanly
def controller_sync_key(app: App, key: str) -> None:
    """Print the key to provision on controller KEY for its offline credential list (keep it secret)."""
    from badge_bridge.sync import sync_key_id

    if key not in {ctl.key for ctl in app.config.controllers}:
        raise ConfigError(f"controller {key!r} is not in {app.config_path}")
    secret = app.keys.sync_key(key)
    click.echo(f"{secret.hex()}  (key id {sync_key_id(secret)})")


@click.group()
def osdp() -> None:
    """OSDP readers on RS-485 buses."""


@osdp.command("keygen")
@click.argument("reader")
@click.option("--replace", is_flag=True, help="Re-key a reader that already has a key (it must be re-keyed too).")
@pass_app
@fail_cleanly
def osdp_keygen(app: App, reader: str, replace: bool) -> None:
    """Make READER's secure-channel key (16 bytes from the OS's CSPRNG), audited. Load it into the reader,
    or set `install_mode = true` for the reader once and let the bridge hand it over."""
    import hashlib

    known = {r.key for r in app.config.readers if r.osdp_address is not None}
    if reader not in known:
        raise ConfigError(f"reader {reader!r} is not an OSDP reader in {app.config_path} (known: {', '.join(sorted(known)) or 'none'})")
    key = app.keys.new_osdp_key(reader, replace=replace)
    key_id = hashlib.sha256(key).hexdigest()[:16]
    now = datetime.now(UTC)
    with app.change() as (_session, audited):
        audited.append(Event(id=Event.new_id(EventKind.ADMIN_OSDP_KEY_SET), kind=EventKind.ADMIN_OSDP_KEY_SET,
                             source=app.actor, ts=now, received_ts=now, subject={"reader": reader},
                             detail={"key_id": key_id, "replaced": replace}))
    click.echo(f"reader {reader}: new secure-channel key {key.hex()} (key id {key_id}); restart the bridge")


@click.group()
def mqtt() -> None:
    """The MQTT contract."""


@mqtt.command("schemas")
@click.option("--out", type=click.Path(file_okay=False), default="docs/schemas", show_default=True)
def mqtt_schemas(out: str) -> None:
    """Write the JSON Schema of every contract message (docs/mqtt.md explains them)."""
    from badge_bridge.controllers.schemas import write_schemas

    for path in write_schemas(Path(out)):
        click.echo(f"wrote {path}")
