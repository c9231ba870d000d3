"""The `badge-bridge` command as an operator runs it: real processes on both databases.

Every administrative change is an audit event on chain `bridge-1.cli`; every mistake is one clear line on
stderr, a non-zero exit and no traceback, and changes nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge import people
from badge_bridge.config import load_config
from badge_bridge.keys import KeyStore, hash_pin
from badge_bridge.models import AuditEntry, ConsoleUser, Credential, Door, FaceTemplate, Person
from badge_bridge.site_sync import sync_site

CLI = [sys.executable, "-m", "badge_bridge.cli"]
EXAMPLE_SITE = Path(__file__).resolve().parents[1] / "site.example.toml"
CLI_CHAIN = "bridge-1.cli"
FACES = Path(__file__).resolve().parent / "data" / "faces"


def cli(
    site_file: Path, *args: str, stdin: str = "", database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command in a new session: no controlling terminal, so a PIN prompt reads standard input."""
    env = {k: v for k, v in os.environ.items() if k != "BADGE_BRIDGE_DATABASE_URL"}
    env["BADGE_BRIDGE_CONFIG"] = str(site_file)
    if database_url is not None:
        env["BADGE_BRIDGE_DATABASE_URL"] = database_url
    return subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120,
                          start_new_session=True)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, no traceback, and one `Error:` line that says what is wrong."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr
    return errors[0]


def write_site(tmp_path: Path, database_url: str, *replacements: tuple[str, str]) -> Path:
    """The example site with its own database URL and keys folder, and any text replaced."""
    text = EXAMPLE_SITE.read_text()
    text = text.replace('url = "sqlite:///var/badge-bridge.db"', f'url = "{database_url}"')
    text = text.replace('dir = "var/keys"', f'dir = "{tmp_path / "keys"}"')
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def audit_kinds(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(AuditEntry.kind).where(AuditEntry.chain_id == CLI_CHAIN)
                                 .order_by(AuditEntry.seq)))


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {model.__tablename__: conn.scalar(select(func.count()).select_from(model)) or 0
                for model in (ConsoleUser, Person, Credential, AuditEntry)}


# --- init and the happy path ---------------------------------------------------------------------


def test_init_creates_keys_once_and_is_idempotent(site_file: Path, engine: Engine, tmp_path: Path) -> None:
    first = ok(cli(site_file, "init"))
    assert "created audit signing key" in first and "created PIN pepper" in first
    assert "database ready" in first
    signer = KeyStore(tmp_path / "keys").signer()
    second = ok(cli(site_file, "init"))
    assert "created" not in second and "database ready" in second
    assert KeyStore(tmp_path / "keys").signer().key_id == signer.key_id
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Door)) == 5


def test_init_creates_a_new_sqlite_database(tmp_path: Path) -> None:
    site = write_site(tmp_path, "sqlite:///data/new.db")
    (tmp_path / "data").mkdir()
    assert "database ready" in ok(cli(site, "init"))
    assert (tmp_path / "data" / "new.db").is_file()
    ok(cli(site, "person", "list"))


def test_check_config_describes_the_site(site_file: Path) -> None:
    out = ok(cli(site_file, "check-config"))
    assert f"{site_file}: site 'DC1 Frankfurt': 5 doors, 8 readers, 3 controllers, 2 cameras, 5 access levels" in out


def test_admin_changes_are_made_and_audited(site_file: Path, engine: Engine, tmp_path: Path) -> None:
    ok(cli(site_file, "init"))

    out = ok(cli(site_file, "user", "add", "alice", "--role", "supervisor"))
    assert "console user alice (supervisor) added" in out
    passwords = [line.removeprefix("password: ") for line in out.splitlines() if line.startswith("password: ")]
    assert len(passwords) == 1 and len(passwords[0]) >= people.PASSWORD_MIN
    with Session(engine) as session:
        alice = session.scalars(select(ConsoleUser).where(ConsoleUser.username == "alice")).one()
        assert alice.role == "supervisor"
        assert people.hasher.verify(alice.password_hash, passwords[0])

    assert "person 1 added: Ada" in ok(cli(site_file, "person", "add", "Ada", "--level", "staff"))
    assert "credential 1 issued to person 1: wiegand26 12:1001" in ok(
        cli(site_file, "credential", "add", "1", "--card", "12:1001"))
    assert "credential 2 issued to person 1: wiegand26 12:1002" in ok(
        cli(site_file, "credential", "add", "1", "--card", "12:1002", "--pin", stdin="4711\n4711\n"))
    assert "credential 1 revoked" in ok(cli(site_file, "credential", "revoke", "1", "--reason", "lost"))

    listing = ok(cli(site_file, "person", "list"))
    assert "Ada" in listing and "levels=staff" in listing
    assert "1:wiegand26:12:1001[revoked]" in listing and "2:wiegand26:12:1002[active]" in listing

    with Session(engine) as session:
        with_pin = session.get(Credential, 2)
        assert with_pin is not None
        assert with_pin.pin_hash == hash_pin(KeyStore(tmp_path / "keys").pin_pepper(), "4711")
        entries = session.scalars(select(AuditEntry).where(AuditEntry.chain_id == CLI_CHAIN)).all()
    assert audit_kinds(engine) == ["admin.site_synced", "admin.user_added", "admin.person_added",
                                   "admin.credential_added", "admin.credential_added", "admin.credential_revoked"]
    logged = " ".join(e.subject + e.detail for e in entries)
    assert passwords[0] not in logged and "4711" not in logged and '"reason":"lost"' in logged
    assert all(e.source.startswith("cli:") for e in entries)

    verified = ok(cli(site_file, "audit", "verify"))
    assert f"chain {CLI_CHAIN}: 6 entries" in verified and "access tables match the log" in verified


# --- mistakes in administrative commands ---------------------------------------------------------


@pytest.fixture
def populated(site_file: Path, engine: Engine, keys: KeyStore) -> Path:
    """A synced site with console user alice, person 1 (Ada, staff) and credential 1 (wiegand26 12:1001)."""
    with Session(engine) as session, session.begin():
        sync_site(session, load_config(site_file))
        people.add_user(session, "test", "alice", "supervisor", "correct horse battery")
        person, _ = people.add_person(session, "test", "Ada", levels=["staff"])
        cred, _ = people.add_credential(session, "test", person.id, "wiegand26", "12:1001", pepper=keys.pin_pepper())
        assert (person.id, cred.id) == (1, 1)
    return site_file


MISTAKES = {
    "duplicate-user": (["user", "add", "alice", "--role", "guard"], "", "console user 'alice' already exists"),
    "short-password": (["user", "add", "bob", "--role", "guard", "--password-stdin"], "short\n",
                       "at least 12 characters"),
    "unknown-level": (["person", "add", "Bob", "--level", "nope"], "",
                      "unknown access level nope (known: cage-7-acme, hall-a-engineers, hall-a-visits, noc-24x7, staff)"),
    "malformed-card": (["credential", "add", "1", "--card", "12-1001"], "", "expected FACILITY:CARD in decimal"),
    "facility-out-of-range": (["credential", "add", "1", "--card", "300:1"], "",
                              "wiegand26: facility code 300 is over 255"),
    "card-already-issued": (["credential", "add", "1", "--card", "012:1001"], "",
                            "card wiegand26 12:1001 is already issued"),
    "unknown-person": (["credential", "add", "99", "--card", "12:5"], "", "no person with id 99"),
    "short-pin": (["credential", "add", "1", "--card", "12:7", "--pin"], "12\n12\n", "a PIN is 4 to 8 digits"),
    "revoke-unknown": (["credential", "revoke", "99", "--reason", "lost"], "", "no credential with id 99"),
    "enroll-face-unknown-person": (["person", "enroll-face", "99", str(FACES / "obama.jpg")], "",
                                   "no person with id 99"),
    "remove-faces-none-enrolled": (["person", "remove-faces", "1"], "", "person 1 has no enrolled faces"),
}


@pytest.mark.parametrize("args, stdin, says", MISTAKES.values(), ids=MISTAKES.keys())
def test_admin_mistake_is_one_line_and_changes_nothing(
    args: list[str], stdin: str, says: str, populated: Path, engine: Engine
) -> None:
    before = row_counts(engine)
    assert_user_error(cli(populated, *args, stdin=stdin), says)
    assert row_counts(engine) == before


def test_revoking_twice_is_refused(populated: Path, engine: Engine) -> None:
    ok(cli(populated, "credential", "revoke", "1", "--reason", "lost"))
    assert_user_error(cli(populated, "credential", "revoke", "1", "--reason", "found"),
                      "credential 1 is revoked; issue a new one instead")
    assert audit_kinds(engine) == ["admin.credential_revoked"]


# --- mistakes in the setup: site file, database ----------------------------------------------------


def test_missing_site_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "site.toml"
    for args in (["check-config"], ["person", "list"], ["init"]):
        assert_user_error(cli(missing, *args), f"{missing}: no such site file")
    assert not (tmp_path / "nowhere").exists()


def test_site_file_with_an_unknown_reference(tmp_path: Path) -> None:
    site = write_site(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}", ('area_in = "hall-a"', 'area_in = "hall-x"'))
    for args in (["check-config"], ["init"]):
        assert_user_error(cli(site, *args),
                          f"{site}: doors[1].area_in: unknown area 'hall-x' "
                          "(expected one of: cage-7, hall-a, hall-a-mantrap, lobby, noc, outside)")
    assert not (tmp_path / "bridge.db").exists()


def test_missing_sqlite_database_is_not_created_by_other_commands(tmp_path: Path) -> None:
    site = write_site(tmp_path, "sqlite:///missing.db")
    for args in (["person", "list"], ["person", "add", "Ada"], ["audit", "verify"]):
        assert_user_error(cli(site, *args),
                          f"database file {tmp_path / 'missing.db'} does not exist; create it with `badge-bridge init`")
    assert not (tmp_path / "missing.db").exists()


def test_read_only_sqlite_database(sqlite_url: str, tmp_path: Path, keys: KeyStore) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: root bypasses file permissions, so os.access() reports a 0444 file as "
                    "writable and SQLite does write to it; the read-only check cannot be exercised")
    site = write_site(tmp_path, sqlite_url)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    path.chmod(0o444)
    try:
        assert_user_error(cli(site, "person", "add", "Ada"), f"database file {path} is read-only")
    finally:
        path.chmod(0o644)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A PostgreSQL URL whose port is bound but not listening: connecting is refused, immediately."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"postgresql+psycopg://postgres@127.0.0.1:{sock.getsockname()[1]}/badge_bridge"


@pytest.mark.parametrize("args", [["init"], ["person", "list"], ["person", "add", "Ada"], ["audit", "verify"]],
                         ids=" ".join)
def test_postgresql_refusing_the_connection(args: list[str], refused_url: str, tmp_path: Path) -> None:
    site = write_site(tmp_path, "sqlite:///unused.db")
    assert_user_error(cli(site, *args, database_url=refused_url), "database refused the connection")
    assert not (tmp_path / "unused.db").exists()


def test_database_url_from_the_environment_wins(populated: Path, db_url: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    site = write_site(elsewhere, "sqlite:///not-this.db")
    assert "Ada" in ok(cli(site, "person", "list", database_url=db_url))
    assert not (site.parent / "not-this.db").exists()


# --- commands of camera, web and firmware_config ---------------------------------------------------


def test_the_other_packages_add_their_commands(tmp_path: Path) -> None:
    site_file = write_site(tmp_path, "sqlite:///unused.db")
    top, person = ok(cli(site_file, "--help")), ok(cli(site_file, "person", "--help"))
    assert {"cameras", "console", "firmware"} <= set(commands(top))
    assert {"add", "list", "enroll-face", "remove-faces"} <= set(commands(person))


def test_a_plugin_that_cannot_be_imported_costs_only_its_commands(tmp_path: Path) -> None:
    """An installed package declaring commands it cannot import: one line names it, the rest work."""
    site_file = write_site(tmp_path, "sqlite:///unused.db")
    dist = tmp_path / "plugins" / "broken_plugin-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[badge_bridge.commands]\nbroken = no_such_package.cli:command\n"
                                           "person.gone = no_such_package.cli:command\n")
    env = {**os.environ, "BADGE_BRIDGE_CONFIG": str(site_file),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(dist.parent), os.environ.get("PYTHONPATH")]))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)

    unavailable = "is unavailable: no_such_package.cli:command cannot be imported (ModuleNotFoundError: No module "
    listing = run("--help")
    assert listing.stderr.splitlines() == [f"badge-bridge: command 'broken' {unavailable}named 'no_such_package')"]
    assert {"audit", "cameras", "console", "firmware", "person"} <= set(commands(ok(listing)))
    person = run("person", "--help")
    assert person.stderr.splitlines() == [f"badge-bridge: command 'person gone' {unavailable}named 'no_such_package')"]
    assert {"add", "enroll-face"} <= set(commands(ok(person)))
    broken = run("broken")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert broken.stderr.splitlines()[0] == f"badge-bridge: command 'broken' {unavailable}named 'no_such_package')"
    assert "Error: No such command 'broken'." in broken.stderr
    assert "site 'DC1 Frankfurt'" in ok(run("check-config"))


def commands(help_text: str) -> list[str]:
    """The command names of a --help page."""
    listed = help_text.partition("Commands:\n")[2]
    return [line.split()[0] for line in listed.splitlines() if line.startswith("  ") and not line.startswith("   ")]


# --- faces -----------------------------------------------------------------------------------------


def face_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(FaceTemplate)) or 0


def test_enroll_and_remove_faces(populated: Path, engine: Engine) -> None:
    out = ok(cli(populated, "person", "enroll-face", "1", str(FACES / "obama.jpg"), str(FACES / "obama2.jpg")))
    assert out.splitlines() == [f"{FACES / 'obama.jpg'}: enrolled as face template 1 of person 1",
                                f"{FACES / 'obama2.jpg'}: enrolled as face template 2 of person 1"]
    assert face_count(engine) == 2
    assert "person 1: 2 face(s) removed" in ok(cli(populated, "person", "remove-faces", "1"))
    assert face_count(engine) == 0
    assert audit_kinds(engine) == ["admin.face_enrolled", "admin.face_enrolled", "admin.face_removed"]


def test_a_refused_photo_is_one_line_and_the_others_are_enrolled(populated: Path, engine: Engine) -> None:
    no_face, good = FACES / "no_face_coffee.png", FACES / "obama.jpg"
    result = cli(populated, "person", "enroll-face", "1", str(no_face), str(good))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (refusal,) = [line for line in result.stderr.splitlines() if "refused" in line]
    assert refusal.startswith(f"{no_face}: photo refused (no_face): "), refusal
    assert result.stdout.splitlines() == [f"{good}: enrolled as face template 1 of person 1"]
    assert face_count(engine) == 1
    assert audit_kinds(engine) == ["admin.face_enrolled"]


# --- the process the command runs in ---------------------------------------------------------------


def test_a_spawned_worker_does_not_import_the_command_again(tmp_path: Path) -> None:
    """Run as the installed `badge-bridge` script is (a file importing ``main``), a command's spawned workers
    (verify's ranges, the export's JSON Lines) start without re-running that script, which would import the
    whole command; run as a module they never do."""
    loaded = "sorted(m for m in __import__('sys').modules if m.startswith('badge_bridge'))"  # in the worker
    script = tmp_path / "badge-bridge"
    script.write_text("import multiprocessing, sys\nfrom badge_bridge.cli import main\nif __name__ == '__main__':\n"
                      "    main(sys.argv[1:], standalone_mode=False)\n"
                      "    with multiprocessing.get_context('spawn').Pool(1) as pool:\n"
                      f"        print(pool.apply(eval, ({loaded!r},)))\n")
    run = subprocess.run([sys.executable, str(script), "-c", str(tmp_path / "unused.toml"), "audit", "--help"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"
