"""Key material kept in files outside the database: the audit signing keys and the PIN pepper.

Layout of the keys folder::

    signing/<key_id>.key   Ed25519 private key (PEM, mode 0600); may be removed once rotated out
    signing/<key_id>.pub   raw public key, hex; keep every one, old checkpoints are signed with them
    signing/current        the key_id that signs new checkpoints
    pin-pepper             32 random bytes; PIN hashes are HMAC-SHA256 under it
    sync-master            32 random bytes; each controller's sync key is HMAC-SHA256(master, controller key)
    console-secret         32 random bytes; signs the console's session cookies
    evidence-key           32 random bytes; AES-256-GCM key of camera snapshots, clips and face data
    osdp/<reader>.scbk     each OSDP reader's secure-channel base key, hex (made by `badge-bridge osdp keygen`)
    console/command.key    Ed25519 private key (PEM, 0600) the console signs operators' door commands with
    console/command.pub    its public key, hex: all the bridge needs (on a split deployment the bridge host
                           gets only this file; to rotate, delete both and run init: a new pair, then
                           copy the .pub and restart console and bridge)
    mqtt/<account>.password  each broker account's password (made by `badge-bridge mqtt broker-config`)
    mqtt/ca.key, ca.crt    the site's broker CA (same command); the key never leaves this folder

The database also stores the public keys, but an auditor trusts the .pub files (or keys handed over out of
band), never the database: whoever can edit the database could add a key of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyMaterialError(Exception):
    """Key material missing or unusable; says which file and what to do."""


def key_id_of(public: Ed25519PublicKey) -> str:
    """A short stable name for a public key: the first 16 bytes of SHA-256 of its raw bytes, hex."""
    return hashlib.sha256(public_hex(public).encode()).hexdigest()[:32]


def public_hex(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def public_from_hex(value: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(value.strip()))
    except ValueError as exc:
        raise KeyMaterialError(f"not an Ed25519 public key in hex: {exc}") from None


def read_public_key(path: Path, what: str) -> Ed25519PublicKey:
    """A public key file (hex); KeyMaterialError naming ``what`` and the file when it cannot be used."""
    try:
        return public_from_hex(path.read_text())
    except OSError as exc:
        raise KeyMaterialError(f"{what}: cannot read {path} ({exc.strerror})") from None
    except KeyMaterialError as exc:
        raise KeyMaterialError(f"{what} {path}: {exc}") from None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Signer:
    """Signs checkpoints with the current key."""

    key_id: str
    private: Ed25519PrivateKey
    trusted: Mapping[str, Ed25519PublicKey] = field(default_factory=dict, compare=False)
    """The public keys of its key store (old keys after a rotation): a writer adopts rows they sign."""

    def sign(self, message: bytes) -> str:
        return self.private.sign(message).hex()

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def verify_signature(public: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class KeyStore:
    """The keys folder."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.signing_dir = directory / "signing"

    def ensure(self) -> list[str]:
        """Create whatever key material is missing; returns what was created, for the operator."""
        created = []
        self.signing_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not (self.signing_dir / "current").exists():
            created.append(f"audit signing key {self.rotate_signing_key()}")
        for name, what in (("pin-pepper", "PIN pepper"), ("sync-master", "controller sync master key"),
                           ("console-secret", "console session key"),
                           ("evidence-key", "evidence encryption key")):
            if not (self.dir / name).exists():
                _write_private(self.dir / name, secrets.token_bytes(32))
                created.append(what)
        if not (self.dir / "console" / "command.pub").exists():  # a bridge host holds only the .pub: keep it
            self.new_console_command_key()
            created.append("console command signing key")
        return created

    def new_console_command_key(self) -> None:
        """A new console command key pair (replacing a private key left without its .pub)."""
        folder = self.dir / "console"
        folder.mkdir(mode=0o700, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        (folder / "command.key").unlink(missing_ok=True)
        _write_private(folder / "command.key", pem)
        tmp = folder / "command.pub.tmp"
        tmp.write_text(public_hex(private.public_key()) + "\n")
        os.replace(tmp, folder / "command.pub")

    def console_command_key(self) -> Ed25519PrivateKey:
        """What the console signs door commands with; only the console host needs it."""
        path = self.dir / "console" / "command.key"
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyMaterialError(f"console command key missing ({path}); run `badge-bridge init`") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyMaterialError(f"{path} is not an Ed25519 key")
        return private

    def console_command_public(self) -> Ed25519PublicKey | None:
        """What the bridge checks console commands with; None when missing (every command is then refused)."""
        try:
            return public_from_hex((self.dir / "console" / "command.pub").read_text())
        except FileNotFoundError:
            return None

    def rotate_signing_key(self) -> str:
        """Generate a new signing key and make it current; the old public key stays trusted."""
        private = Ed25519PrivateKey.generate()
        kid = key_id_of(private.public_key())
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(self.signing_dir / f"{kid}.key", pem)
        (self.signing_dir / f"{kid}.pub").write_text(public_hex(private.public_key()) + "\n")
        tmp = self.signing_dir / "current.tmp"
        tmp.write_text(kid + "\n")
        os.replace(tmp, self.signing_dir / "current")
        return kid

    def signer(self) -> Signer:
        current = self.signing_dir / "current"
        try:
            kid = current.read_text().strip()
            pem = (self.signing_dir / f"{kid}.key").read_bytes()
        except FileNotFoundError as exc:
            raise KeyMaterialError(f"audit signing key missing ({exc.filename}); run `badge-bridge init`") from None
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyMaterialError(f"{self.signing_dir / kid}.key is not an Ed25519 key")
        return Signer(kid, private, self.trusted_public_keys())

    def trusted_public_keys(self) -> dict[str, Ed25519PublicKey]:
        keys = {}
        for pub in sorted(self.signing_dir.glob("*.pub")):
            key = public_from_hex(pub.read_text())
            keys[key_id_of(key)] = key
        return keys

    def _secret(self, name: str, what: str) -> bytes:
        try:
            return (self.dir / name).read_bytes()
        except FileNotFoundError:
            raise KeyMaterialError(f"{what} missing in {self.dir}; run `badge-bridge init`") from None

    def pin_pepper(self) -> bytes:
        return self._secret("pin-pepper", "PIN pepper")

    def osdp_key(self, reader: str) -> bytes | None:
        """The reader's OSDP secure-channel base key (SCBK), or None if it has none yet."""
        try:
            key = bytes.fromhex((self.dir / "osdp" / f"{reader}.scbk").read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            raise KeyMaterialError(f"{self.dir / 'osdp' / reader}.scbk is not a hex key") from None
        if len(key) != 16:
            raise KeyMaterialError(f"{self.dir / 'osdp' / reader}.scbk must hold 16 bytes, not {len(key)}")
        return key

    def new_osdp_key(self, reader: str, *, replace: bool) -> bytes:
        """A fresh SCBK from the OS's CSPRNG. Replacing a reader's key is an operator's decision (the CLI
        audits it): the reader must be re-keyed at the same time, or it goes offline."""
        path = self.dir / "osdp" / f"{reader}.scbk"
        if path.exists() and not replace:
            raise KeyMaterialError(f"reader {reader} already has a key; pass --replace to re-key it")
        path.parent.mkdir(mode=0o700, exist_ok=True)
        key = secrets.token_bytes(16)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        _write_private(tmp, key.hex().encode() + b"\n")
        os.replace(tmp, path)
        return key

    def mqtt_password_file(self, account: str) -> Path:
        """Where the broker password of ``account`` (mqtt_accounts) is kept."""
        return self.dir / "mqtt" / f"{account}.password"

    def mqtt_password(self, account: str) -> str | None:
        """The broker password of ``account``, None until `badge-bridge mqtt broker-config` made it."""
        try:
            return self.mqtt_password_file(account).read_text().strip() or None
        except FileNotFoundError:
            return None

    def ensure_mqtt_password(self, account: str) -> bool:
        """Make ``account``'s broker password unless it has one; True if it was made. Deleting the file and
        running this again rotates it."""
        path = self.mqtt_password_file(account)
        if path.exists():
            return False
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(path, secrets.token_urlsafe(24).encode() + b"\n")
        return True

    def console_secret(self) -> bytes:
        """Signs the console's session cookies; rotating it logs everybody out."""
        return self._secret("console-secret", "console session key")

    def evidence_key(self) -> bytes:
        """Encrypts camera evidence and biometric data at rest; losing it makes them unreadable, so it is
        backed up with the signing keys, never beside the evidence."""
        return self._secret("evidence-key", "evidence encryption key")

    def sync_key(self, controller: str) -> bytes:
        """The key a controller's offline credential list is hashed under; provisioned on that controller
        only, so one stolen controller reveals nothing about the others or the PINs."""
        return hmac.new(self._secret("sync-master", "controller sync master key"), controller.encode(),
                        hashlib.sha256).digest()


def hash_pin(pepper: bytes, pin: str) -> str:
    """PINs are short, so a slow hash would not save them from brute force; a secret pepper does, and HMAC
    is fast enough to check at the door in microseconds."""
    return hmac.new(pepper, pin.encode(), hashlib.sha256).hexdigest()


def check_pin(pepper: bytes, pin: str, pin_hash: str | None) -> bool:
    return pin_hash is not None and hmac.compare_digest(hash_pin(pepper, pin), pin_hash)


def card_digest(sync_key: bytes, fmt: str, number: str) -> str:
    """How a card appears in a controller's offline list: HMAC-SHA256 of ``format:number``."""
    return hmac.new(sync_key, f"{fmt}:{number}".encode(), hashlib.sha256).hexdigest()
