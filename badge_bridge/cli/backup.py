"""`badge-bridge backup DEST` and `badge-bridge restore SRC`, both audited on the CLI chain.

The restore event is written after restoring, into the restored database: written before, it would be
replaced by the backup's log and the restore would leave no trace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url

from badge_bridge import db
from badge_bridge.audit.backup import backup as make_backup
from badge_bridge.audit.backup import restore as restore_backup
from badge_bridge.audit.writer import AuditWriter
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event


def _audit(app: App, kind: str, detail: dict[str, Any]) -> None:
    """Like App.change, minus the schema check: a restored backup may predate the newest migration, and
    its restore must be audited all the same."""
    engine = db.make_engine(app.url)
    try:
        writer = AuditWriter(engine, f"{app.config.site.instance}.cli", app.keys.signer())
        writer.start()
        now = datetime.now(UTC)
        writer.submit(Event(id=Event.new_id(kind), kind=kind, source=app.actor, ts=now, received_ts=now, detail=detail))
        if not writer.stop(timeout=30):
            raise db.DatabaseError(f"{kind}: done, but its audit event could not be written: {writer.stats.last_error}")
    finally:
        engine.dispose()


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@pass_app
@fail_cleanly
def backup(app: App, dest: Path) -> None:
    """Copy the database into DEST while the bridge runs, and verify the copy. Exit 1 if it does not verify."""
    report = make_backup(app.config, dest)
    _audit(app, EventKind.BACKUP_MADE, {"file": report.path.name, "sha256": report.sha256, "entries": report.entries,
                                        "verified": report.verified})
    if not report.verified:
        first = report.problems[0] if report.problems else "unknown problem"
        raise click.ClickException(f"backup {report.path} does NOT verify (kept for forensics, marked in "
                                   f"{report.manifest_path.name}): {first}")
    click.echo(f"backup {report.path}: {report.entries} entries in {len(report.chains)} chains, verified "
               f"({report.size} bytes, {report.seconds:.1f}s, sha256 {report.sha256[:16]}…)")


@click.command("restore")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Restore even though the database seems to be in use.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
@fail_cleanly
def restore(app: App, src: Path, force: bool, yes: bool) -> None:
    """Replace the database with the verified backup SRC. Stop the bridge first."""
    if not yes:
        shown = db.sqlite_path(app.url) or make_url(app.url).render_as_string(hide_password=True)
        click.confirm(f"replace database {shown} with {src}?", abort=True)
    report = restore_backup(app.config, src, force=force)
    _audit(app, EventKind.BACKUP_RESTORED, {"file": src.name, "entries": report.entries, "forced": force,
                                            "replaced": report.replaced.name if report.replaced else None})
    kept = f"; the replaced database is kept as {report.replaced}" if report.replaced else ""
    click.echo(f"restored {src} into {report.target}: {report.entries} entries in {len(report.chains)} chains, "
               f"verified{kept}")
