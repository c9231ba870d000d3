"""`badge-bridge export` and `badge-bridge audit verify-export`: the monthly audit export and its proof."""

from __future__ import annotations

import time
from pathlib import Path

import click

from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.export import verify as export_verify
from badge_bridge.export.format import CSV_NAME
from badge_bridge.export.write import ExportError, export_month, progress_wanted
from badge_bridge.keys import KeyMaterialError, key_id_of, public_from_hex


@click.command()
@click.option("--month", required=True, help="YYYY-MM, in the site's time zone.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new or empty folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_app
@fail_cleanly
def export(app: App, month: str, out: Path, quiet: bool) -> None:
    """Export a month of the audit log (CSV, JSON Lines, PDF report, proof, signed manifest)."""
    started = time.perf_counter()
    try:
        summary = export_month(app.engine(), app.keys, month, out, actor=app.actor, progress=progress_wanted(quiet))
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    state = "chain verified" if summary.verified else f"NOT VERIFIED ({len(summary.problems)} problems)"
    click.echo(f"exported {summary.rows} entries of {summary.month} from {len(summary.chains)} chains to {out} "
               f"in {time.perf_counter() - started:.1f}s; {state}; manifest signed with key {summary.key_id}")
    for problem in summary.problems:
        click.echo(f"problem: {problem}", err=True)
    if not summary.verified:
        raise SystemExit(1)


@click.command("verify-export")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Trusted public key file (hex); repeatable. Default: the keys shipped in the export.")
def verify_export(directory: Path, public_keys: tuple[str, ...]) -> None:
    """Prove an export on its own, without the database. Exit 1 and one line per problem if anything
    was edited, removed or added."""
    trusted = None
    if public_keys:
        try:
            keys = [public_from_hex(Path(p).read_text()) for p in public_keys]
        except KeyMaterialError as exc:
            raise click.ClickException(str(exc)) from None
        trusted = {key_id_of(k): k for k in keys}
    started = time.perf_counter()
    result = export_verify.verify_export(directory, trusted)
    for note in result.notes:
        click.echo(f"note: {note}")
    if not result.ok:
        for problem in result.problems:
            click.echo(problem)
        click.echo(f"export {directory}: TAMPERED, {len(result.problems)} problems", err=True)
        raise SystemExit(1)
    rows = result.rows.get(CSV_NAME, 0)
    click.echo(f"export {directory}: verified {rows} rows on {len(result.chains)} chains, every checkpoint and the "
               f"manifest signature ({time.perf_counter() - started:.1f}s)")

