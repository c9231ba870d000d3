"""`badge-bridge cameras`, `person enroll-face` and `person remove-faces`: entry points of the group
``badge_bridge.commands`` (badge_bridge/cli/plugins.py). OpenCV and dlib load only in the command that
needs them, so listing the commands stays quick.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from badge_bridge import biometrics, logs
from badge_bridge.cli.app import App, fail_cleanly, pass_app

if TYPE_CHECKING:
    from camera.evidence import EvidenceStore


@click.command()
@click.option("--camera", "cameras", multiple=True, help="Run only this camera (repeatable). Default: all.")
@pass_app
@fail_cleanly
def cameras(app: App, cameras: tuple[str, ...]) -> None:
    """Run the camera workers, one process per camera, until SIGTERM or Ctrl-C."""
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


@click.command("enroll-face")
@click.argument("person_id", type=int)
@click.argument("photos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
@fail_cleanly
def person_enroll_face(app: App, person_id: int, photos: tuple[Path, ...]) -> None:
    """Enroll a person's face from photos with exactly one face each. Each photo is enrolled or refused
    with its reason on one line (exit 1 if any was refused); kept, encrypted, only with faces.keep_photos."""
    from camera import enrollment

    key = app.keys.evidence_key()
    store = _photo_store(app, key) if app.config.faces.keep_photos else None
    refused = 0
    for photo in photos:
        try:  # one transaction per photo: the database is not held while the next photo is encoded
            image = photo.read_bytes()
            template, _ = app.admin(lambda session: enrollment.enroll_face(session, app.actor, person_id,
                                                                           image, key=key, photos=store))  # noqa: B023
            template_id = template.id
        except enrollment.PhotoRefused as exc:
            click.echo(f"{photo}: {exc}", err=True)
            refused += 1
        else:
            click.echo(f"{photo}: enrolled as face template {template_id} of person {person_id}")
    if refused:
        sys.exit(1)


@click.command("remove-faces")
@click.argument("person_id", type=int)
@pass_app
@fail_cleanly
def person_remove_faces(app: App, person_id: int) -> None:
    """Remove every face enrolled for a person, and their kept photos."""
    store = _photo_store(app, app.keys.evidence_key())
    _, event = app.admin(lambda session: (None, biometrics.remove_faces(session, app.actor, person_id, photos=store)))
    click.echo(f"person {person_id}: {event.detail['count']} face(s) removed")


def _photo_store(app: App, key: bytes) -> EvidenceStore:
    """Kept enrollment photos live, encrypted, in the evidence store."""
    from camera.evidence import EvidenceStore

    return EvidenceStore(app.config.path(app.config.evidence.dir), key)
