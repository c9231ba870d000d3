"""The `badge-bridge` command. A user mistake is one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from badge_bridge import db, people
from badge_bridge.cliapp import App, fail_cleanly, pass_app
from badge_bridge.config import ConfigError
from badge_bridge.events import Event
from badge_bridge.keys import public_from_hex, key_id_of
from badge_bridge.models import Person
from badge_bridge.site_sync import sync_site

if TYPE_CHECKING:
    from camera.evidence import EvidenceStore

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", envvar="BADGE_BRIDGE_CONFIG", default="site.toml", show_default=True,
              help="Site file (TOML). Also BADGE_BRIDGE_CONFIG.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug lines.")
@click.pass_context
def main(ctx: click.Context, config_path: str, verbose: bool) -> None:
    """badge-bridge: access control for a data center."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = App(config_path)


@main.command()
@pass_app
@fail_cleanly
def init(app: App) -> None:
    """Create or migrate the database, create missing keys, and load the site file into it."""
    engine = app.engine(must_exist=False)
    db.migrate(engine)
    for created in app.keys.ensure():
        click.echo(f"created {created} in {app.keys.dir}")
    with Session(engine) as session, session.begin():
        sync_site(session, app.config)
    click.echo(f"database ready: {engine.url.render_as_string(hide_password=True)}")


@main.command("check-config")
@pass_app
@fail_cleanly
def check_config(app: App) -> None:
    """Validate the site file and say what it describes."""
    c = app.config
    click.echo(f"{app.config_path}: site {c.site.name!r}: {len(c.doors)} doors, {len(c.readers)} readers, "
               f"{len(c.controllers)} controllers, {len(c.cameras)} cameras, {len(c.access_levels)} access levels")


# --- console users ---------------------------------------------------------------------------------


@main.group()
def user() -> None:
    """Console users."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(people.ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_app
@fail_cleanly
def user_add(app: App, username: str, role: str, password_stdin: bool) -> None:
    """Add a console user. Without --password-stdin a strong password is generated and printed once."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(15)
    with app.change() as (session, audited):
        _, event = people.add_user(session, app.actor, username, role, password)
        audited.append(event)
    click.echo(f"console user {username} ({role}) added")
    if not password_stdin:
        click.echo(f"password: {password}")


# --- people ----------------------------------------------------------------------------------------


@main.group()
def person() -> None:
    """People who may hold credentials."""


@person.command("add")
@click.argument("name")
@click.option("--employee-no")
@click.option("--company", default="")
@click.option("--level", "levels", multiple=True, help="Access level key (repeatable).")
@click.option("--lockdown-exempt", is_flag=True, help="Responder who may pass during a lockdown.")
@pass_app
@fail_cleanly
def person_add(app: App, name: str, employee_no: str | None, company: str, levels: tuple[str, ...],
               lockdown_exempt: bool) -> None:
    """Add a person."""
    with app.change() as (session, audited):
        p, event = people.add_person(session, app.actor, name, employee_no=employee_no, company=company,
                                     levels=list(levels), lockdown_exempt=lockdown_exempt)
        audited.append(event)
        pid = p.id
    click.echo(f"person {pid} added: {name}")


@person.command("list")
@pass_app
@fail_cleanly
def person_list(app: App) -> None:
    """List people with their levels and credentials."""
    with Session(app.engine()) as session:
        for p in session.scalars(select(Person).order_by(Person.id)):
            levels = ",".join(lvl.key for lvl in p.levels) or "-"
            creds = ", ".join(f"{c.id}:{c.format}:{c.number}[{c.status}]" for c in p.credentials) or "-"
            click.echo(f"{p.id:>5}  {p.name:<30} {p.status:<7} levels={levels}  credentials={creds}")


@person.command("enroll-face")
@click.argument("person_id", type=int)
@click.argument("photos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
@fail_cleanly
def person_enroll_face(app: App, person_id: int, photos: tuple[Path, ...]) -> None:
    """Enroll a person's face from photos with exactly one face each. Each photo is enrolled or refused
    with its reason on one line (exit 1 if any was refused); kept, encrypted, only with faces.keep_photos."""
    from badge_bridge import biometrics

    key = app.keys.evidence_key()
    store = _photo_store(app, key) if app.config.faces.keep_photos else None
    refused = 0
    for photo in photos:
        try:  # one transaction per photo: the database is not held while the next photo is encoded
            with app.change() as (session, audited):
                template, event = biometrics.enroll_face(session, app.actor, person_id, photo.read_bytes(),
                                                         key=key, photos=store)
                audited.append(event)
                template_id = template.id
        except biometrics.PhotoRefused as exc:
            click.echo(f"{photo}: {exc}", err=True)
            refused += 1
        else:
            click.echo(f"{photo}: enrolled as face template {template_id} of person {person_id}")
    if refused:
        sys.exit(1)


@person.command("remove-faces")
@click.argument("person_id", type=int)
@pass_app
@fail_cleanly
def person_remove_faces(app: App, person_id: int) -> None:
    """Remove every face enrolled for a person, and their kept photos."""
    from badge_bridge import biometrics

    with app.change() as (session, audited):
        event = biometrics.remove_faces(session, app.actor, person_id,
                                        photos=_photo_store(app, app.keys.evidence_key()))
        audited.append(event)
    click.echo(f"person {person_id}: {event.detail['count']} face(s) removed")


def _photo_store(app: App, key: bytes) -> EvidenceStore:
    """Kept enrollment photos live, encrypted, in the evidence store."""
    from camera.evidence import EvidenceStore

    return EvidenceStore(app.config.path(app.config.evidence.dir), key)


# --- credentials -----------------------------------------------------------------------------------


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected an ISO date or date-time, e.g. 2026-12-31T18:00") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@main.group()
def credential() -> None:
    """Cards, PINs and biometric references."""


@credential.command("add")
@click.argument("person_id", type=int)
@click.option("--card", "number", required=True, help="FACILITY:CARD for Wiegand formats, the text for ascii.")
@click.option("--format", "fmt", default="wiegand26", show_default=True,
              type=click.Choice(["wiegand26", "wiegand34", "wiegand37", "ascii"]))
@click.option("--pin", is_flag=True, help="Prompt for a PIN (stored only as a keyed hash).")
@click.option("--biometric-ref", help="Identity enrolled on a biometric reader.")
@click.option("--valid-from")
@click.option("--valid-until")
@pass_app
@fail_cleanly
def credential_add(app: App, person_id: int, number: str, fmt: str, pin: bool, biometric_ref: str | None,
                   valid_from: str | None, valid_until: str | None) -> None:
    """Issue a credential to a person."""
    pin_value = click.prompt("PIN", hide_input=True, confirmation_prompt=True) if pin else None
    with app.change() as (session, audited):
        cred, event = people.add_credential(
            session, app.actor, person_id, fmt, number, pepper=app.keys.pin_pepper(), pin=pin_value,
            biometric_ref=biometric_ref, valid_from=_when(valid_from), valid_until=_when(valid_until),
        )
        audited.append(event)
        cid = cred.id
    click.echo(f"credential {cid} issued to person {person_id}: {fmt} {number}")


@credential.command("revoke")
@click.argument("credential_id", type=int)
@click.option("--reason", required=True)
@pass_app
@fail_cleanly
def credential_revoke(app: App, credential_id: int, reason: str) -> None:
    """Revoke a credential (final: issue a new one to restore access)."""
    with app.change() as (session, audited):
        _, event = people.set_credential_status(session, app.actor, credential_id, "revoked", reason)
        audited.append(event)
    click.echo(f"credential {credential_id} revoked")


# --- audit -----------------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Trusted public key file (hex); repeatable. Default: the .pub files in the keys folder.")
@click.option("--chain", help="Verify one chain only.")
@click.option("--jobs", type=int, default=0, help="Worker processes for long chains (0: one per core).")
@pass_app
@fail_cleanly
def audit_verify(app: App, public_keys: tuple[str, ...], chain: str | None, jobs: int) -> None:
    """Recompute every hash chain and check the signed checkpoints. Exit 1 if anything was tampered with."""
    from badge_bridge.verify import verify

    trusted = {}
    for path in public_keys:
        key = public_from_hex(Path(path).read_text())
        trusted[key_id_of(key)] = key
    report = verify(app.engine(), app.url, trusted or app.keys.trusted_public_keys(), chain=chain, jobs=jobs)
    for status in report.chains.values():
        pruned = f", entries 1..{status.pruned_through} pruned (signed)" if status.pruned_through else ""
        click.echo(f"chain {status.chain_id}: {status.entries} entries, head {status.head_seq} "
                   f"{status.head_hash[:16]}…, {status.checkpoints} checkpoints (last at {status.last_checkpoint_seq})"
                   f"{pruned}")
    if report.ok:
        click.echo("audit log verified: no entry modified, deleted, inserted or reordered; checkpoints valid")
        return
    first = report.first
    click.echo(f"TAMPERED: first problem at {first}", err=True)
    for finding in report.findings:
        click.echo(f"  {finding}", err=True)
    sys.exit(1)


@main.group("keys")
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
        audited.append(Event(id=Event.new_id("admin.key_rotated"), kind="admin.key_rotated", source=app.actor,
                             ts=now, received_ts=now, detail={"key_id": kid}))
    click.echo(f"new signing key {kid}; give {app.keys.signing_dir / (kid + '.pub')} to the auditors")


# --- the daemon ------------------------------------------------------------------------------------


@main.command()
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="Structured JSON lines, or plain text for a terminal.")
@pass_app
@fail_cleanly
def run(app: App, log_format: str) -> None:
    """Run the bridge until SIGTERM or Ctrl-C."""
    from badge_bridge import logs
    from badge_bridge.bridge import Bridge

    logs.setup(log_format, logging.getLogger().level)
    Bridge(app.config, app.engine(), app.keys).run_forever()


@main.command()
@click.option("--port", type=int, help="Override console.port from the site file.")
@pass_app
@fail_cleanly
def console(app: App, port: int | None) -> None:
    """Serve the security-desk console (gunicorn; HTTPS when console.tls_cert and tls_key are set)."""
    from web import create_app
    from web.serve import ConsoleServer

    config = app.config
    if port is not None:
        config = config.model_copy(update={"console": config.console.model_copy(update={"port": port})})
    engine = app.engine()  # checked here, so a bad database is one clear line, not a crashing worker
    engine.dispose()
    ConsoleServer(lambda: create_app(config, app.engine(), app.keys), config).run()


@main.command()
@click.option("--camera", "cameras", multiple=True, help="Run only this camera (repeatable). Default: all.")
@pass_app
@fail_cleanly
def cameras(app: App, cameras: tuple[str, ...]) -> None:
    """Run the camera workers, one process per camera, until SIGTERM or Ctrl-C."""
    import signal

    from badge_bridge import logs
    from camera.supervisor import Supervisor

    logs.setup("json", logging.getLogger().level)
    app.keys.evidence_key()  # a missing key is one clear line here, not a crash loop in every worker
    try:
        supervisor = Supervisor(app.config, Path(app.config_path), list(cameras) or None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    supervisor.run()


# --- controllers and the MQTT contract -------------------------------------------------------------


@main.group()
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


@main.group()
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
        audited.append(Event(id=Event.new_id("admin.osdp_key_set"), kind="admin.osdp_key_set", source=app.actor,
                             ts=now, received_ts=now, subject={"reader": reader},
                             detail={"key_id": key_id, "replaced": replace}))
    click.echo(f"reader {reader}: new secure-channel key {key.hex()} (key id {key_id}); restart the bridge")


@main.group()
def mqtt() -> None:
    """The MQTT contract."""


@mqtt.command("schemas")
@click.option("--out", type=click.Path(file_okay=False), default="docs/schemas", show_default=True)
def mqtt_schemas(out: str) -> None:
    """Write the JSON Schema of every contract message (docs/mqtt.md explains them)."""
    from badge_bridge.controllers.schemas import write_schemas

    for path in write_schemas(Path(out)):
        click.echo(f"wrote {path}")


# --- commands kept in their own modules --------------------------------------------------------------

from badge_bridge.audit_cli import consistency, prove, prune, seal  # noqa: E402
from badge_bridge.backup_cli import backup, restore  # noqa: E402
from badge_bridge.export_cli import export, verify_export  # noqa: E402
from firmware_config.cli import firmware  # noqa: E402

for _command in (export, backup, restore, firmware):
    main.add_command(_command)
for _command in (seal, prove, consistency, prune, verify_export):
    audit.add_command(_command)


if __name__ == "__main__":
    main()
