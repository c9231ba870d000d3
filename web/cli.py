"""`badge-bridge console`: an entry point of the group ``badge_bridge.commands`` (badge_bridge/cli/plugins.py)."""

from __future__ import annotations

import click

from badge_bridge.cli.app import App, fail_cleanly, pass_app
from web import create_app


@click.command()
@click.option("--port", type=int, help="Override console.port from the site file.")
@pass_app
@fail_cleanly
def console(app: App, port: int | None) -> None:
    """Serve the security-desk console (gunicorn; HTTPS when console.tls_cert and tls_key are set)."""
    from web.serve import ConsoleServer  # gunicorn

    config = app.config
    if port is not None:
        config = config.model_copy(update={"console": config.console.model_copy(update={"port": port})})
    engine = app.engine()  # checked here, so a bad database is one clear line, not a crashing worker
    engine.dispose()
    ConsoleServer(lambda: create_app(config, app.engine(), app.keys), config).run()
