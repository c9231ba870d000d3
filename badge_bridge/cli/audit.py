"""`badge-bridge audit verify | seal | prove | consistency | prune`: the tamper-evident log for auditors.

Pruning is the one command that removes audit entries, so it asks for confirmation and is itself audited
(`audit.pruned` on chain `<instance>.cli`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from badge_bridge.audit import segments
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event
from badge_bridge.keys import key_id_of, public_from_hex


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Trusted public key file (hex); repeatable. Default: the .pub files in the keys folder.")
@click.option("--chain", help="Verify one chain only.")
@click.option("--jobs", type=int, default=0, help="Worker processes for long chains (0: one per core).")
@click.option("--witness", "witnesses", multiple=True, metavar="URL_OR_FILE",
              help="A witness's URL, or a saved copy of its GET /v1/heads answer: the log must extend every head it "
                   "countersigned. Repeatable.")
@click.option("--witness-key", "witness_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A witness's public key file (hex); repeatable. Default: the site file's audit.witnesses keys.")
@pass_app
@fail_cleanly
def audit_verify(app: App, public_keys: tuple[str, ...], chain: str | None, jobs: int, witnesses: tuple[str, ...],
                 witness_keys: tuple[str, ...]) -> None:
    """Recompute every hash chain and check the signed checkpoints and tree heads. Exit 1 if anything was
    tampered with."""
    from badge_bridge.audit.verify import verify
    from badge_bridge.audit.witness_check import views

    trusted = _keys(public_keys)
    cosigners = _keys(witness_keys or [str(app.config.path(w.public_key)) for w in app.config.audit.witnesses])
    try:
        held = views(witnesses, cosigners)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    report = verify(app.engine(), app.url, trusted or app.keys.trusted_public_keys(), chain=chain, jobs=jobs,
                    witnesses=held, witness_keys=cosigners or None)
    for status in report.chains.values():
        pruned = f", entries 1..{status.pruned_through} pruned (signed)" if status.pruned_through else ""
        click.echo(f"chain {status.chain_id}: {status.entries} entries, head {status.head_seq} "
                   f"{status.head_hash[:16]}…, {status.checkpoints} checkpoints (last at {status.last_checkpoint_seq})"
                   f"{pruned}")
    if report.ok:
        extends = f"; it extends every head {len(held)} witness(es) countersigned" if held else ""
        click.echo(f"audit log verified: no entry modified, deleted, inserted or reordered; checkpoints valid{extends}")
        return
    first = report.first
    click.echo(f"TAMPERED: first problem at {first}", err=True)
    for finding in report.findings:
        click.echo(f"  {finding}", err=True)
    sys.exit(1)


def _keys(paths: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for path in paths:
        try:
            key = public_from_hex(Path(path).read_text())
        except OSError as exc:
            raise click.ClickException(f"cannot read the public key {path}: {exc.strerror}") from None
        keys[key_id_of(key)] = key
    return keys


def _day(_ctx: click.Context, _param: click.Parameter, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-10-05") from None


def _checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Segment errors are user errors: one line, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except segments.SegmentError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@audit.command("seal")
@click.option("--chain", help="Seal one chain only.")
@pass_app
@fail_cleanly
@_checked
def seal(app: App, chain: str | None) -> None:
    """Seal every finished UTC day of every chain: a signed Merkle root per chain and day."""
    made = segments.seal(app.engine(), app.keys.signer(), chain)
    for s in made:
        click.echo(f"sealed chain {s.chain_id} {s.day}: entries {s.first_seq}..{s.last_seq} ({s.size}), root {s.root}")
    if not made:
        click.echo("nothing to seal: every finished day is sealed")


@audit.command("prove")
@click.argument("event_id")
@click.option("--verify", "check", is_flag=True, help="Check the proof against the trusted public keys too.")
@pass_app
@fail_cleanly
@_checked
def prove(app: App, event_id: str, check: bool) -> None:
    """Print the proof (JSON) that EVENT_ID is in its signed day, checkable offline with a public key."""
    proof = segments.prove(app.engine(), event_id)
    click.echo(json.dumps(proof, indent=2, sort_keys=True))
    seg = proof["segment"]
    summary = (f"event {event_id} is entry {proof['leaf_index'] + 1} of {seg['size']} in chain {seg['chain_id']}'s "
               f"segment of {seg['day']} (root {seg['root'][:16]}…, key {seg['key_id']})")
    if check:
        segments.verify_proof(proof, app.keys.trusted_public_keys())
        summary += ": verified"
    click.echo(summary, err=True)


@audit.command("consistency")
@click.option("--chain", required=True)
@click.option("--day", required=True, callback=_day, help="The sealed day, YYYY-MM-DD (UTC).")
@click.option("--old-size", type=int, required=True, help="How many entries the earlier root covered.")
@pass_app
@fail_cleanly
@_checked
def consistency(app: App, chain: str, day: date, old_size: int) -> None:
    """Print the proof (JSON) that the day's tree of its first OLD_SIZE entries is a prefix of the sealed one."""
    proof = segments.consistency(app.engine(), chain, day, old_size)
    segments.verify_consistency(proof, app.keys.trusted_public_keys())
    click.echo(json.dumps(proof, indent=2, sort_keys=True))
    click.echo(f"chain {chain} {day}: the tree of {old_size} entries (root {proof['old_root'][:16]}…) is a prefix of "
               f"the sealed {proof['segment']['size']}", err=True)


@audit.command("prune")
@click.option("--keep-days", type=int, default=None,
              help=f"Keep this many days of entries (at least {segments.MIN_KEEP_DAYS}; default: the site file's "
                   "audit.retention_days).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
@fail_cleanly
@_checked
def prune(app: App, keep_days: int | None, yes: bool) -> None:
    """Delete the entries of sealed days older than KEEP_DAYS; signed segments, checkpoints and keys stay."""
    keep_days = app.config.audit.retention_days if keep_days is None else keep_days
    segments.check_keep_days(keep_days)  # before the prompt: a refused value needs no confirmation
    if not yes:
        click.confirm(f"Delete the audit entries of sealed days older than {keep_days} days?", abort=True)
    with app.change() as (_session, audited):
        report = segments.prune(app.engine(), app.keys.signer(), keep_days=keep_days)
        now = datetime.now(UTC)
        audited.append(Event(id=Event.new_id(EventKind.AUDIT_PRUNED), kind=EventKind.AUDIT_PRUNED,
                             source=app.actor, ts=now,
                             received_ts=now, detail=dict(keep_days=keep_days, cutoff=report.cutoff.isoformat(),
                                                          entries=report.entries, segments=report.segments)))
    for s in report.segments:
        click.echo(f"pruned chain {s['chain_id']} {s['day']}: entries {s['first_seq']}..{s['last_seq']}")
    click.echo(f"pruned {report.entries} entries of {len(report.segments)} segments older than {report.cutoff}")
