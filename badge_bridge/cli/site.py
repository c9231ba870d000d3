"""Site commands: create the database, check the site file, run the bridge."""

from __future__ import annotations

import logging

import click

from badge_bridge import db, grants
from badge_bridge.audit import state_check
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.site_sync import sync_site


@click.command()
@click.option("--grants", "role", metavar="ROLE",
              help="PostgreSQL: print the grants that leave ROLE (the bridge's) only INSERT and SELECT on the audit "
                   "tables and what it writes elsewhere.")
@click.option("--apply", is_flag=True, help="With --grants: run them as the owner (database.owner_url).")
@pass_app
@fail_cleanly
def init(app: App, role: str | None, apply: bool) -> None:
    """Create or migrate the database (as database.owner_url when set), create missing keys, and load the site
    file into it (audited). The first init of a database from before state records records its rows as the
    baseline (audit baseline)."""
    if apply and role is None:
        raise click.UsageError("--apply needs --grants ROLE")
    engine = app.owner_engine(must_exist=False)
    if role is not None:
        grants.check_postgresql(engine)
        grants.check_role(role)
    db.migrate(engine)
    if role is not None and apply:
        grants.apply(engine, role)
        click.echo(f"granted {role} what the bridge needs; run this again after every upgrade")
    for created in app.keys.ensure():
        click.echo(f"created {created} in {app.keys.dir}")
    with engine.connect() as conn:
        upgraded = state_check.needs_baseline(conn)
    if upgraded:  # the first init after the upgrade to state records: the rows as they stand become the baseline
        _, event = app.admin(lambda session: state_check.baseline(session, app.actor, "upgrade"), engine)
        click.echo(f"recorded the state of {event.detail['rows']} rows of the access tables as the baseline "
                   "(audit.state_baseline): `audit verify` checks the tables against it from now on")
    _, synced = app.admin(lambda session: (None, sync_site(session, app.config, app.actor)), engine)
    if synced is not None:
        click.echo(f"site file applied: {synced.detail['rows']} access levels, schedules or people changed")
    click.echo(f"database ready: {engine.url.render_as_string(hide_password=True)}")
    if role is not None and not apply:
        click.echo(";\n".join(grants.statements(role)) + ";")


@click.command("check-config")
@pass_app
@fail_cleanly
def check_config(app: App) -> None:
    """Validate the site file and say what it describes."""
    c = app.config
    click.echo(f"{app.config_path}: site {c.site.name!r}: {len(c.doors)} doors, {len(c.readers)} readers, "
               f"{len(c.controllers)} controllers, {len(c.cameras)} cameras, {len(c.access_levels)} access levels")


@click.command()
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="Structured JSON lines, or plain text for a terminal.")
@click.option("--partition", default=None, help="The partition to serve (needed when the site has several).")
@click.option("--instance", default=None,
              help="This bridge's name among its partition's bridges (default: the host name).")
@pass_app
@fail_cleanly
def run(app: App, log_format: str, partition: str | None, instance: str | None) -> None:
    """Run a partition's bridge until SIGTERM or Ctrl-C: on PostgreSQL a standby until it holds the
    partition's lease, then active (exits with status 75 if another bridge takes the lease)."""
    from badge_bridge import logs
    from badge_bridge.failover.runner import run_partition

    logs.setup(log_format, logging.getLogger().level)
    run_partition(app.config, app.engine(), app.keys, partition, instance)
