"""`badge-bridge firmware validate | diff | push`: the controllers' configuration from ``firmware.toml``.

push shows the diff, asks before sending anything (unless --yes), and audits one ``firmware.pushed`` event
per controller it changed, on the CLI's chain ``<instance>.cli``, with the fields and their old and new
values. A file with any validation or safety problem is refused whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import click

from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.firmware.profiles import EspRfidProfile, MqttProfile, OsdpProfile
from badge_bridge.firmware.validate import Firmware, default_path, load_firmware
from firmware_config import devices
from firmware_config.devices import DeviceError, Fields


@dataclass
class Target:
    """One controller: what it reports, what it should run, and how to get it there."""

    key: str
    profile: str
    reported: Fields | None
    desired: Fields
    push: Callable[[], object]
    about: dict[str, Any] = field(default_factory=dict)
    always_sent: Fields = field(default_factory=dict)
    """Sent with every push but not readable back (an OSDP reader's LED state)."""

    @property
    def changes(self) -> dict[str, tuple[Any, Any]]:
        return devices.diff(self.reported, self.desired)


def _load(app: App, path: str | None) -> Firmware:
    return load_firmware(path or default_path(app.config), app.config)


@contextmanager
def _targets(app: App, fw: Firmware, only: str | None) -> Iterator[list[Target]]:
    """Read every selected controller; the connections stay open for the push."""
    site = app.config
    chosen = [fw.controller(only)] if only else fw.controllers
    site_ctls = {c.key: c for c in site.controllers}
    with ExitStack() as stack:
        link: devices.Link | None = None
        if any(isinstance(c, MqttProfile | EspRfidProfile) for c in chosen):
            link = stack.enter_context(devices.Link(site))
        targets = []
        for ctl in chosen:
            site_ctl = site_ctls[ctl.key]
            if isinstance(ctl, MqttProfile):
                assert link is not None
                report = devices.mqtt_read(link, ctl.key)
                targets.append(Target(
                    ctl.key, ctl.profile,
                    devices.flatten(report.config.model_dump()) if report else None,
                    devices.flatten(devices.mqtt_settings(ctl).model_dump()),
                    partial(devices.mqtt_push, link, ctl)))
            elif isinstance(ctl, EspRfidProfile):
                assert link is not None
                desired = devices.esp_desired(ctl)
                configfile = devices.esp_read(link, site_ctl)
                targets.append(Target(ctl.key, ctl.profile, devices.esp_reported(configfile, desired), desired,
                                      partial(devices.esp_push, link, site_ctl, ctl)))
            else:
                assert isinstance(ctl, OsdpProfile)
                bus = stack.enter_context(devices.osdp_session(site, site_ctl, ctl, app.keys))
                reported, about = bus.read()
                targets.append(Target(ctl.key, ctl.profile, reported, devices.osdp_desired(ctl), bus.push, about,
                                      {"led.idle": ctl.led.idle.model_dump()}))
        yield targets


def _show(target: Target) -> None:
    changes = target.changes
    head = f"{target.key} ({target.profile})"
    if target.reported is None:
        head += ": reports no configuration"
    click.echo(f"{head}: {'no difference' if not changes else f'{len(changes)} to change'}")
    for name, (now, want) in changes.items():
        click.echo(f"  {name}: {_fmt(now)} -> {_fmt(want)}")
    for name, value in target.always_sent.items():
        if changes:
            click.echo(f"  {name}: (not readable) -> {_fmt(value)}")
    for reader, info in target.about.items():
        click.echo(f"  reader {reader}: {_fmt(info)}")


def _fmt(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, sort_keys=True)


@click.group()
def firmware() -> None:
    """Controller configuration from firmware.toml (docs/firmware.md)."""


@firmware.command("validate")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@pass_app
@fail_cleanly
def validate_cmd(app: App, file: str | None) -> None:
    """Check FILE (default: firmware.toml next to the site file) against the profiles, the site file and the
    safety rules; exit 1 with every problem, one per line."""
    fw = _load(app, file)
    click.echo(f"{fw.path}: {len(fw.controllers)} controller(s), valid")


@firmware.command("diff")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--controller", "only", help="Only this controller.")
@pass_app
@fail_cleanly
def diff_cmd(app: App, file: str | None, only: str | None) -> None:
    """Show what each controller reports against what FILE wants."""
    fw = _load(app, file)
    try:
        with _targets(app, fw, only) as targets:
            for target in targets:
                _show(target)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None


@firmware.command("push")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--controller", "only", help="Only this controller.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
@fail_cleanly
def push_cmd(app: App, file: str | None, only: str | None, yes: bool) -> None:
    """Send FILE's settings to the controllers that differ, after confirmation; audited."""
    fw = _load(app, file)
    pushed: list[Target] = []
    try:
        with _targets(app, fw, only) as targets:
            for target in targets:
                _show(target)
            todo = [t for t in targets if t.changes]
            if not todo:
                click.echo("nothing to push")
                return
            if not yes and not click.confirm(f"push to {', '.join(t.key for t in todo)}?", default=False):
                raise click.ClickException("nothing pushed")
            for target in todo:
                target.push()
                pushed.append(target)
                click.echo(f"{target.key}: pushed")
    except DeviceError as exc:
        if pushed:
            _audit(app, fw, pushed)
        raise click.ClickException(f"{exc} (pushed before this: {', '.join(t.key for t in pushed) or 'none'})") \
            from None
    _audit(app, fw, pushed)


def _audit(app: App, fw: Firmware, pushed: list[Target]) -> None:
    now = datetime.now(UTC)
    with app.change() as (_session, audited):
        for t in pushed:
            changes = {name: {"from": now_, "to": want} for name, (now_, want) in t.changes.items()}
            changes.update({name: {"from": None, "to": value} for name, value in t.always_sent.items()})
            audited.append(Event(id=Event.new_id(EventKind.FIRMWARE_PUSHED), kind=EventKind.FIRMWARE_PUSHED,
                                 source=app.actor, ts=now, received_ts=now, subject={"controller": t.key},
                                 detail={"profile": t.profile, "file": str(fw.path), "changes": changes}))

