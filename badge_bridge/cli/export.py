"""`badge-bridge export` and `badge-bridge audit verify-export`: the monthly audit export and its proof."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.export import verify as export_verify
from badge_bridge.export.format import CSV_NAME
from badge_bridge.export.tenant_review import export_tenant, is_review
from badge_bridge.export.write import ExportError, export_month, progress_wanted
from badge_bridge.keys import KeyMaterialError, key_id_of, read_public_key


def key_files(paths: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """Public key files (hex) by fingerprint; a file that is not a key is a one-line error."""
    try:
        keys = [read_public_key(Path(p), "public key") for p in paths]
    except KeyMaterialError as exc:
        raise click.ClickException(str(exc)) from None
    return {key_id_of(k): k for k in keys}


@click.command()
@click.option("--month", required=True, help="YYYY-MM, in the site's time zone.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new or empty folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--tenant", "tenant_key", help="Instead: one customer's own access review (their data only, signed).")
@pass_app
@fail_cleanly
def export(app: App, month: str, out: Path, quiet: bool, tenant_key: str | None) -> None:
    """Export a month of the audit log (CSV, JSON Lines, PDF report, proof, signed manifest). The manifest
    is signed only if the log verifies over everything exported (rows, segments, tree heads and the
    configured witnesses' cosignatures); otherwise exit 1 with the problems. With --tenant KEY: that
    customer's review of the month (docs/workflows.md), for them to keep."""
    started = time.perf_counter()
    if tenant_key is not None:
        try:
            done = export_tenant(app.engine(), app.keys, app.config, month, tenant_key, out, actor=app.actor)
        except ExportError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"tenant review of {done.tenant} for {done.month}: {done.people} people, {done.credentials} cards, "
                   f"{done.events} events, in {out}; manifest signed")
        return
    witnesses = key_files(tuple(app.config.path(w.public_key) for w in app.config.audit.witnesses))
    try:
        summary = export_month(app.engine(), app.keys, month, out, actor=app.actor, progress=progress_wanted(quiet),
                               witnesses=witnesses)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    state = (f"chain verified; manifest signed with key {summary.key_id}" if summary.verified
             else f"NOT VERIFIED ({len(summary.problems)} problems): manifest NOT signed")
    click.echo(f"exported {summary.rows} entries of {summary.month} from {len(summary.chains)} chains to {out} "
               f"in {time.perf_counter() - started:.1f}s; {state}")
    for note in summary.notes:
        click.echo(f"note: {note}")
    for problem in summary.problems:
        click.echo(f"problem: {problem}", err=True)
    if not summary.verified:
        raise SystemExit(1)


@click.command("verify-export")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Your own copy of the bridge's public key file (hex); repeatable. Required: keys shipped in an "
                   "export are never trusted.")
@click.option("--witness-key", "witness_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A witness's public key file (hex); repeatable. Every tree head must carry its valid cosignature.")
@click.option("--previous", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Last month's export: the two must meet with no gap or overlap.")
def verify_export(directory: Path, public_keys: tuple[str, ...], witness_keys: tuple[str, ...],
                  previous: Path | None) -> None:
    """Prove an export on its own, without the database. Exit 1 and one line per problem if anything
    was edited, removed or added, or if no trusted key is given."""
    trusted, witnesses = key_files(public_keys), key_files(witness_keys)
    started = time.perf_counter()
    result = export_verify.verify_export(directory, trusted, witnesses, previous)
    for note in result.notes:
        click.echo(f"note: {note}")
    if not result.ok:
        for problem in result.problems:
            click.echo(problem)
        click.echo(f"export {directory}: TAMPERED, {len(result.problems)} problems", err=True)
        raise SystemExit(1)
    if is_review(directory):  # a tenant's review: signed files, no rows of the chain
        click.echo(f"export {directory}: verified every file and the manifest signature")
        return
    rows = result.rows.get(CSV_NAME, 0)
    witnessed = f", cosigned by {len(witnesses)} witness(es)" if witnesses else ""
    click.echo(f"export {directory}: verified {rows} rows on {len(result.chains)} chains, every checkpoint, tree head"
               f"{witnessed} and the manifest signature ({time.perf_counter() - started:.1f}s)")

