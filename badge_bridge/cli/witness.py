"""`badge-bridge witness init|serve`: the witness, run on another host by another operator. It needs no site
file and no database: a folder of its own and the bridges' public keys (docs/witness.md)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from badge_bridge.audit.witness import Witness, WitnessServer, init_dir, listen_address, load_bridge_keys
from badge_bridge.keys import KeyMaterialError

DIR_OPTION = click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
                          help="The witness's own folder: its key and the heads it countersigned.")


@click.group()
def witness() -> None:
    """A witness of the audit log's tree heads (another host, another operator)."""


@witness.command("init")
@DIR_OPTION
def init(directory: Path) -> None:
    """Make the witness's key; prints its public key for the bridge's site file (audit.witnesses)."""
    try:
        public = init_dir(directory)
    except (KeyMaterialError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(public)
    click.echo(f"witness key made in {directory}; give the line above (also in {directory / 'witness.pub'}) to the "
               "bridge's operator, as the file named by audit.witnesses[].public_key", err=True)


@witness.command("serve")
@DIR_OPTION
@click.option("--listen", default="127.0.0.1:8470", show_default=True, help="HOST:PORT (PORT 0: a free one).")
@click.option("--bridge-key", "bridge_keys", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A trusted bridge signing key (keys/signing/<id>.pub); repeat to add a rotated key.")
def serve(directory: Path, listen: str, bridge_keys: tuple[Path, ...]) -> None:
    """Countersign tree heads that extend the last one held; refuse forks."""
    try:
        address = listen_address(listen)
        state = Witness(directory, load_bridge_keys(bridge_keys))
        server = WitnessServer(address, state)
    except (KeyMaterialError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror}") from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: threading.Thread(target=server.shutdown).start())
    host, port = address[0], server.server_address[1]
    click.echo(f"witness {state.signer.key_id} holding {len(state.heads)} chains, listening on "
               f"http://{host}:{port}", err=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        state.close()
