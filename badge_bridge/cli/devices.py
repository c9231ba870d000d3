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


@mqtt.command("broker-config")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for mosquitto.conf, passwd, acl and the TLS files (not the CA key: it stays in the keys folder).")
@click.option("--host", "hosts", multiple=True,
              help="A name clients reach the broker by, for the server certificate (repeatable; default: mqtt.host, "
                   "localhost, 127.0.0.1).")
@click.option("--install-dir", help="Where the files will be on the broker host, for mosquitto.conf (default: --out).")
@click.option("--tls-port", type=int, default=8883, show_default=True)
@click.option("--plain-port", type=int, help="Also a plain listener on this port, bound to 127.0.0.1 only.")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help="Your own CA certificate (with --cert, --key).")
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), help="Your own server certificate.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), help="Your own server key.")
@pass_app
@fail_cleanly
def mqtt_broker_config(app: App, out: Path, hosts: tuple[str, ...], install_dir: str | None, tls_port: int,
                       plain_port: int | None, ca: Path | None, cert: Path | None, key: Path | None) -> None:
    """Write the site's Mosquitto configuration: one account per bridge, console, controller, esp-rfid device,
    camera worker and the firmware tool, an ACL that confines each to its own topics, TLS files, and the
    listeners. Passwords are made once in the keys folder; running it again keeps them."""
    from badge_bridge.broker_config import FILES, OwnTls, generate

    given = [p for p in (ca, cert, key) if p is not None]
    if given and len(given) != 3:
        raise ConfigError("--ca, --cert and --key go together")
    written = generate(app.config, app.keys, out, hosts=list(hosts) or None,
                       own_tls=OwnTls(ca, cert, key) if ca and cert and key else None, install_dir=install_dir,
                       tls_port=tls_port, plain_port=plain_port)
    for name in FILES:
        click.echo(f"wrote {out / name}")
    click.echo(f"accounts: {', '.join(written.accounts)}")
    if written.passwords_made:
        click.echo(f"new passwords in {app.keys.dir / 'mqtt'}: {', '.join(written.passwords_made)}")
    if written.ca_made:
        click.echo(f"new broker CA; its key stays in {app.keys.dir / 'mqtt' / 'ca.key'}")
    if written.server_cert_made:
        click.echo("new server certificate")
    click.echo("install the files on the broker host (passwd and server.key readable by mosquitto only), then "
               "reload it: systemctl reload mosquitto (or kill -HUP)")
