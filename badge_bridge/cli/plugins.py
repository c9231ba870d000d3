"""Commands that other packages add to `badge-bridge`.

camera, web and firmware_config import badge_bridge, never the reverse, so their commands cannot be
imported here: each is declared as an entry point of the group ``badge_bridge.commands`` in pyproject.toml,
named by where it goes (``console`` at the top, ``person.enroll-face`` under ``person``), and imported only
when it is run or listed, so `badge-bridge audit verify` does not load Flask or OpenCV. A command whose
package fails to import is one line on stderr; the other commands work as before.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

GROUP = "badge_bridge.commands"


@functools.cache
def _declared() -> tuple[EntryPoint, ...]:
    return tuple(entry_points(group=GROUP))


class PluginGroup(click.Group):
    """A command group that also offers the entry points named ``<plugin_path>.<command>`` (the top group's
    plugin_path is empty: its entry points are the bare command names)."""

    def __init__(self, *args: Any, plugin_path: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_path = plugin_path

    def _plugins(self) -> dict[str, EntryPoint]:
        found = {}
        for ep in _declared():
            parent, _, name = ep.name.rpartition(".")
            if parent == self.plugin_path:
                found[name] = ep
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        ep = self._plugins().get(cmd_name)
        if command is not None or ep is None:
            return command
        try:
            return ep.load()
        except Exception as exc:
            click.echo(f"badge-bridge: command '{ep.name.replace('.', ' ')}' is unavailable: {ep.value} cannot be "
                       f"imported ({type(exc).__name__}: {exc})", err=True)
            return None
