"""`badge-bridge audit verify | seal | prove | consistency | check-proof | prune`: the tamper-evident log for
auditors.

Pruning is the one command that removes audit entries, so it asks for confirmation and is itself audited
(`audit.pruned` on chain `<instance>.cli`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import click

from badge_bridge.audit import segments
from badge_bridge.cli.app import App, fail_cleanly, pass_app
from badge_bridge.cli.export import key_files
from badge_bridge.event_kinds import EventKind
from badge_bridge.events import Event


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
@click.option("--every-signature", is_flag=True,
              help="Check the signature of every checkpoint and stored tree head, not only the newest checkpoints "
                   "and the last head of each hour (each vouches for everything before it).")
@pass_app
@fail_cleanly
def audit_verify(app: App, public_keys: tuple[str, ...], chain: str | None, jobs: int, witnesses: tuple[str, ...],
                 witness_keys: tuple[str, ...], every_signature: bool) -> None:
    """Recompute every hash chain and check the signed checkpoints and tree heads. Exit 1 if anything was
    tampered with."""
    from badge_bridge.audit.verify import verify
    from badge_bridge.audit.witness_check import views

    trusted = key_files(public_keys)
    cosigners = key_files(witness_keys or [str(app.config.path(w.public_key)) for w in app.config.audit.witnesses])
    try:
        held = views(witnesses, cosigners)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    report = verify(app.engine(), app.url, trusted or app.keys.trusted_public_keys(), chain=chain, jobs=jobs,
                    witnesses=held, witness_keys=cosigners or None, every_signature=every_signature)
    for status in report.chains.values():
        pruned = f", entries 1..{status.pruned_through} pruned (signed)" if status.pruned_through else ""
        older = (f"; the signatures of {status.unchecked_signatures} older ones are vouched for by the newer "
                 "(--every-signature checks them)" if status.unchecked_signatures else "")
        click.echo(f"chain {status.chain_id}: {status.entries} entries, head {status.head_seq} "
                   f"{status.head_hash[:16]}…, {status.checkpoints} checkpoints (last at {status.last_checkpoint_seq})"
                   f"{older}{pruned}")
    if report.ok:
        extends = f"; it extends every head {len(held)} witness(es) countersigned" if held else ""
        click.echo("audit log verified: no entry modified, deleted, inserted or reordered; checkpoints valid"
                   + extends + ("" if chain else _tables_note(app)))
        return
    first = report.first
    click.echo(f"TAMPERED: first problem at {first}", err=True)
    for finding in report.findings:
        click.echo(f"  {finding}", err=True)
    sys.exit(1)


def _tables_note(app: App) -> str:
    from badge_bridge.audit import state_check

    with app.engine().connect() as conn:
        recorded = state_check.has_state_records(conn) or not state_check.tables(conn)
    return "; access tables match the log" if recorded else f"\naccess tables NOT checked: {state_check.NO_STATE}"


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


_PUBLIC_KEY = click.option("--public-key", "public_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
                           help="Your own copy of the bridge's public key file (hex); repeatable.")


@audit.command("prove")
@click.argument("event_id")
@click.option("--verify", "check", is_flag=True, help="Check the proof against --public-key too.")
@_PUBLIC_KEY
@pass_app
@fail_cleanly
@_checked
def prove(app: App, event_id: str, check: bool, public_keys: tuple[str, ...]) -> None:
    """Print the proof (JSON) that EVENT_ID is in its signed day, checkable offline with a public key."""
    proof = segments.prove(app.engine(), event_id)
    click.echo(json.dumps(proof, indent=2, sort_keys=True))
    seg = proof["segment"]
    summary = (f"event {event_id} is entry {proof['leaf_index'] + 1} of {seg['size']} in chain {seg['chain_id']}'s "
               f"segment of {seg['day']} (root {seg['root'][:16]}…, key {seg['key_id']})")
    if check:
        if not public_keys:
            raise click.UsageError("--verify checks against your own copy of the key: pass --public-key "
                                   "(the keys folder is what a tamperer could change)")
        segments.verify_proof(proof, key_files(public_keys))
        summary += ": verified"
    click.echo(summary, err=True)


@audit.command("consistency")
@click.option("--chain", required=True)
@click.option("--day", required=True, callback=_day, help="The sealed day, YYYY-MM-DD (UTC).")
@click.option("--old-size", type=int, required=True, help="How many entries the earlier root covered.")
@click.option("--old-root", help="The root (hex) you kept for those entries: refused unless the log's matches.")
@_PUBLIC_KEY
@pass_app
@fail_cleanly
@_checked
def consistency(app: App, chain: str, day: date, old_size: int, old_root: str | None,
                public_keys: tuple[str, ...]) -> None:
    """Print the proof (JSON) that the day's tree of its first OLD_SIZE entries is a prefix of the sealed one."""
    proof = segments.consistency(app.engine(), chain, day, old_size)
    segments.verify_consistency(proof, key_files(public_keys) if public_keys else app.keys.trusted_public_keys(),
                                old_root.strip().lower() if old_root else None)
    click.echo(json.dumps(proof, indent=2, sort_keys=True))
    click.echo(f"chain {chain} {day}: the tree of {old_size} entries (root {proof['old_root'][:16]}…) is a prefix of "
               f"the sealed {proof['segment']['size']}", err=True)


@audit.command("baseline")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
@fail_cleanly
def baseline(app: App, yes: bool) -> None:
    """Record every row of the access tables as it stands, audited with who ran it: once after upgrading a
    database from before state records (init does it then), or to attest rows changed around the audited
    commands once they were reviewed. `audit verify` then checks the tables against it."""
    from badge_bridge.audit import state_check

    if not yes:
        click.confirm("Attest people, credentials, levels, schedules, console users and faces as they are now?",
                      abort=True)
    differed, event = app.admin(lambda session: state_check.baseline(session, app.actor, "operator"))
    click.echo(f"baseline recorded: {event.detail['rows']} rows, {differed} of them differed from the log")


@audit.command("check-proof")
@click.argument("proof_file", type=click.File("r"))
@_PUBLIC_KEY
@click.option("--old-root", help="For a consistency proof: the root (hex) you kept.")
@_checked
def check_proof(proof_file: Any, public_keys: tuple[str, ...], old_root: str | None) -> None:
    """Check an inclusion proof (`audit prove`) or a consistency proof (`audit consistency`) with only your
    public key: no database, no keys folder. Exit 1 if it does not verify."""
    from badge_bridge.audit.proof_check import check_proof as check

    try:
        proof = json.load(proof_file)
    except ValueError as exc:
        raise click.ClickException(f"{proof_file.name}: not JSON ({exc})") from None
    click.echo(check(proof, key_files(public_keys), old_root.strip().lower() if old_root else None))


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
    from badge_bridge.audit import state_check

    # The log's states of the access tables, carried past the cut, so `audit verify` can still replay them.
    app.admin(lambda session: (None, state_check.carried(session, app.actor, "prune")))
    with app.change() as (_session, audited):
        report = segments.prune(app.owner_engine(), app.keys.signer(), keep_days=keep_days)  # DELETE: the owner's
        now = datetime.now(UTC)
        audited.append(Event(id=Event.new_id(EventKind.AUDIT_PRUNED), kind=EventKind.AUDIT_PRUNED,
                             source=app.actor, ts=now,
                             received_ts=now, detail=dict(keep_days=keep_days, cutoff=report.cutoff.isoformat(),
                                                          entries=report.entries, segments=report.segments)))
    for s in report.segments:
        click.echo(f"pruned chain {s['chain_id']} {s['day']}: entries {s['first_seq']}..{s['last_seq']}")
    click.echo(f"pruned {report.entries} entries of {len(report.segments)} segments older than {report.cutoff}")
