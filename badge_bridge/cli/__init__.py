"""The `badge-bridge` command: one module per command group, assembled here; the commands of camera, web
and firmware_config are entry points (``plugins.py``).

A user mistake is one clear line and a non-zero exit, never a traceback (``app.fail_cleanly``).
"""

from __future__ import annotations

import importlib.util
import logging
import sys

import click

from badge_bridge.cli import audit, backup, devices, export, people, requests, site, tenants, visitors, wall, witness
from badge_bridge.cli.app import App
from badge_bridge.cli.plugins import PluginGroup


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    _spawn_without_the_script()


def _spawn_without_the_script() -> None:
    """A spawned worker (verify's ranges, the export's JSON Lines, a camera) first re-runs the main module: from
    the `badge-bridge` script that imports this whole command for nothing. Marked as run by ``python -m
    badge_bridge.cli``, the script is left alone, as multiprocessing leaves any ``__main__`` module."""
    script = sys.modules["__main__"]
    if script.__spec__ is None and getattr(script, "main", None) is main:
        script.__spec__ = importlib.util.find_spec("badge_bridge.cli.__main__")


for _command in (site.init, site.check_config, site.run,
                 people.user, people.person, people.credential, wall.wall, audit.audit,
                 devices.keys_group, devices.controller, devices.osdp, devices.mqtt,
                 export.export, backup.backup, backup.restore, witness.witness, requests.request, tenants.tenant):
    main.add_command(_command)
audit.audit.add_command(export.verify_export)
main.add_command(visitors.visitor)
