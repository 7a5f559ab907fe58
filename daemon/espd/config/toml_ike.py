"""espd's TOML schema for IKE: ``[ike]``, ``[ike_peer.NAME]`` and a crypto map's ``pfs``.

A mixin of SchemaLoader (toml_schema.py): it uses the loader's located checks (``get``,
``integer``, ``choice``, ``keys``, ``error``) and its key-file reader, so every IKE problem
is reported with FILE:LINE like the rest of the schema. Pre-shared keys are text (as IOS
writes them), inline or in a file with the same permission checks as ESP keys; they are
bytearrays, wiped once the IKE engine holds its copy, and never quoted in a message.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from espd.config.certificate_identity import certificate_identity
from espd.config.ike_algorithms import parse_group_name
from espd.config.key_files import KeyFileError, read_private_key_file, read_secret_file
from espd.config.model import (
    DEFAULT_IKE_LIFETIME,
    DEFAULT_IKE_PROPOSALS,
    Dpd,
    IkeIdentity,
    IkeLimits,
    IkePeer,
    IkeSettings,
    parse_identity,
)
from espd.config.toml_lines import Path
from espd.ike.auth import certificates
from espd.ike.crypto.suites import RECOMMENDED, SuiteError, parse_suite

REAUTH_MIN = 30  # seconds; short for tests, an operator's is hours (strongSwan: 0 or days)

IKE_KNOWN: dict[str, tuple[str, ...]] = {
    "ike": ("proposals", "lifetime", "reauth_time", "dpd", "retransmit", "limits", "key_log",
            "certificate", "private_key", "ca", "crl", "rsa_pss", "fragment_size"),
    "limits": ("cookie_threshold", "cookie_threshold_per_source", "cookie_secret_lifetime",
               "half_open", "half_open_per_source", "ike_sas", "child_sas_per_ike_sa"),
    "dpd": ("interval", "retry", "mode"),
    "retransmit": ("timeout", "tries"),
    "ike_peer": ("address", "psk", "psk_file", "psk_local", "psk_local_file", "psk_remote",
                 "psk_remote_file", "local_id", "remote_id", "auth", "ppk_id", "ppk", "ppk_file",
                 "ppk_required"),
}
PSK_MIN = 8  # bytes; a shorter secret falls to an offline dictionary attack in seconds
PSK_MAX = 1024
# RFC 8784 5.1: a PPK SHOULD have at least 256 bits of entropy; 32 bytes is the least
# that can hold them (text from 'head -c 32 /dev/urandom | base64' has 44 characters)
PPK_MIN, PPK_MAX = 32, 1024
PPK_ID_MAX = 255  # bytes of PPK_ID (charon and IOS name them with short strings)
PKI_FILE_MAX = 1 << 20  # a certificate, CA bundle or CRL file
# [ike] fragment_size: below 256 bytes an IPv6 fragment with the largest IV and ICV holds
# about 100 bytes of payload, too few for a certificate chain in 64 fragments
FRAGMENT_SIZE_MIN, FRAGMENT_SIZE_MAX = 256, 65535


class IkeSchema:
    """The [ike] and [ike_peer.*] sections (mixed into SchemaLoader)."""

    path: str

    # the loader's located checks (toml_schema.SchemaLoader)
    def error(self, path: Path, message: str) -> None: ...
    def keys(self, table: dict[str, Any], path: Path, known: tuple[str, ...]) -> None: ...
    def table(self, parent: dict[str, Any], path: Path) -> dict[str, Any]: ...
    def get(self, table: dict[str, Any], path: Path, kind: type, example: str,
            default: Any = ...) -> Any: ...
    def integer(self, table: dict[str, Any], path: Path, low: int, high: int, example: str,
                default: Any = ..., why: str = "") -> int | None: ...
    def address(self, table: dict[str, Any], path: Path, example: str,
                default: Any = ...) -> Any: ...
    def choice(self, raw: dict[str, Any], path: Path, choices: tuple[str, ...]) -> str | None:
        ...
    def absolute(self, raw: dict[str, Any], path: Path, default: str) -> str | None: ...

    def ike_settings(self, raw: dict[str, Any]) -> IkeSettings:
        path: Path = ("ike",)
        self.keys(raw, path, IKE_KNOWN["ike"])
        default = IkeSettings()
        proposals = self.proposals(raw, path + ("proposals",))
        lifetime = self.integer(raw, path + ("lifetime",), 120, 31_536_000, "86400",
                                DEFAULT_IKE_LIFETIME)
        reauth_time = self.integer(raw, path + ("reauth_time",), 0, 31_536_000, "86400", 0)
        if reauth_time and reauth_time < REAUTH_MIN:
            self.error(path + ("reauth_time",), f"ike.reauth_time must be 0 (off) or from "
                       f"{REAUTH_MIN} to 31536000 seconds, not {reauth_time}; write e.g. "
                       f"'reauth_time = 86400'")
            reauth_time = None
        dpd = self.dpd(self.table(raw, path + ("dpd",)), path + ("dpd",))
        retransmit = self.table(raw, path + ("retransmit",))
        self.keys(retransmit, path + ("retransmit",), IKE_KNOWN["retransmit"])
        timeout = self.get(retransmit, path + ("retransmit", "timeout"), (int, float), "1.0",
                           default.retransmit_timeout)
        if timeout is not None and not 0.05 <= timeout <= 60:
            self.error(path + ("retransmit", "timeout"), "ike.retransmit.timeout must be "
                       f"from 0.05 to 60 seconds, not {timeout}; write e.g. 'timeout = 1.0'")
            timeout = None
        tries = self.integer(retransmit, path + ("retransmit", "tries"), 1, 20, "5",
                             default.retransmit_tries)
        limits = self.limits(self.table(raw, path + ("limits",)), path + ("limits",))
        fragment_size = self.integer(
            raw, path + ("fragment_size",), FRAGMENT_SIZE_MIN, FRAGMENT_SIZE_MAX, "1280",
            default.fragment_size, " bytes (an RFC 7383 fragment's whole IP datagram)")
        key_log = None
        if "key_log" in raw:
            key_log = self.absolute(raw, path + ("key_log",), "/var/lib/espd/ike-keys.log")
        certificate, trust = self.pki(raw, path)
        self.ike_pki = (certificate, trust)  # what ike_peer checks auth = "certificate" by
        return IkeSettings(
            proposals=proposals or DEFAULT_IKE_PROPOSALS,
            lifetime=lifetime or DEFAULT_IKE_LIFETIME,
            reauth_time=reauth_time or 0,
            dpd=dpd or Dpd(),
            retransmit_timeout=float(timeout or default.retransmit_timeout),
            retransmit_tries=tries or default.retransmit_tries,
            limits=limits,
            fragment_size=fragment_size or default.fragment_size,
            key_log=key_log,
            where=self.where(path),  # type: ignore[attr-defined]
            certificate=certificate,
            trust=trust,
        )

    # --- certificates ---

    def pki(self, raw: dict[str, Any], path: Path) -> tuple[object | None, object | None]:
        """``certificate`` (PEM: ours first, then intermediates to send), ``private_key``
        (PEM, a file only root can read), ``ca`` (PEM files of the CAs we trust) and
        ``crl`` (their CRLs): all or none of the first three."""
        given = [k for k in ("certificate", "private_key", "ca") if k in raw]
        self.ike_pki_written = bool(given) or "crl" in raw  # (its errors say what failed)
        if not given and "crl" not in raw:
            return None, None
        missing = [k for k in ("certificate", "private_key", "ca") if k not in raw]
        if missing:
            self.error(path + (given[0] if given else "crl",),
                       f"ike: certificate authentication needs 'certificate', 'private_key' "
                       f"and 'ca'; add {', '.join(repr(m) for m in missing)}")
            return None, None
        chain = self.pem_certificates(raw, path + ("certificate",), "/etc/espd/gw.pem")
        key = self.private_key(raw, path + ("private_key",))
        anchors: list = []
        for i, ca_path in enumerate(self.file_list(raw, path + ("ca",), "/etc/espd/ca.pem")):
            anchors += self.read_pki(ca_path, path + ("ca", i),
                                     certificates.load_trust_anchors) or []
        crls = [crl for i, crl_path in enumerate(self.file_list(
                    raw, path + ("crl",), "/etc/espd/ca.crl"))
                if (crl := self.read_pki(crl_path, path + ("crl", i),
                                         certificates.load_crl)) is not None]
        if chain is None or key is None or not anchors:
            return None, None
        rsa_pss = self.get(raw, path + ("rsa_pss",), bool, "true", False)
        try:
            own = certificates.own_certificate(chain, key, "ike.certificate", bool(rsa_pss))
        except certificates.CertificateError as e:
            self.error(path + ("rsa_pss" if "rsa_pss" in str(e) else "private_key",), str(e))
            return None, None
        return own, certificates.TrustStore(tuple(anchors), tuple(crls))

    def file_list(self, raw: dict[str, Any], path: Path, example: str) -> list[str]:
        value = raw.get(path[-1])
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            self.error(path, f"{'.'.join(str(p) for p in path)} is a file name or a list of "
                             f"them, e.g. '{path[-1]} = [\"{example}\"]'")
            return []
        return [os.path.normpath(os.path.join(os.path.dirname(self.path), v)) for v in items]

    def read_pki(self, full: str, path: Path, load):
        """A public PKI file (certificates, CRL): parsed by ``load``, or None after an
        error at ``path``."""
        where = ".".join(str(p) for p in path)
        try:
            with open(full, "rb") as f:
                data = f.read(PKI_FILE_MAX + 1)
        except OSError as e:
            self.error(path, f"{where}: cannot read {full}: {e.strerror}")
            return None
        if len(data) > PKI_FILE_MAX:
            self.error(path, f"{where}: {full} is larger than {PKI_FILE_MAX} bytes")
            return None
        try:
            return load(data, full)
        except certificates.CertificateError as e:
            self.error(path, f"{where}: {e}")
            return None

    def pem_certificates(self, raw: dict[str, Any], path: Path, example: str):
        [full] = self.file_list(raw, path, example)[:1] or [None]
        return None if full is None else self.read_pki(full, path,
                                                       certificates.load_certificates)

    def private_key(self, raw: dict[str, Any], path: Path):
        value = self.get(raw, path, str, '"/etc/espd/gw.key"')
        if value is None:
            return None
        full = os.path.normpath(os.path.join(os.path.dirname(self.path), value))
        try:
            return read_private_key_file(full)
        except KeyFileError as e:
            for problem in e.problems:
                self.error(path, f"ike.private_key: {problem}")
            return None

    def proposals(self, raw: dict[str, Any], path: Path) -> tuple[str, ...] | None:
        items = self.get(raw, path, list, f'["{RECOMMENDED}"]', None)
        if items is None:
            return None
        if not items:
            self.error(path, f"ike.proposals is empty; list at least one, e.g. "
                             f"'proposals = [\"{RECOMMENDED}\"]'")
            return None
        names = []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                self.error(path + (i,), "ike.proposals: each proposal is a string such as "
                                        f"\"{RECOMMENDED}\"")
                continue
            try:
                names.append(parse_suite(item).name)
            except SuiteError as e:
                self.error(path + (i,), f"ike.proposals: {e}")
        return tuple(names) if len(names) == len(items) else None

    def limits(self, raw: dict[str, Any], path: Path) -> IkeLimits:
        self.keys(raw, path, IKE_KNOWN["limits"])
        default = IkeLimits()
        ranges = {"cookie_threshold": (0, 1_000_000), "cookie_threshold_per_source":
                  (0, 1_000_000), "cookie_secret_lifetime": (10, 86_400),
                  "half_open": (1, 1_000_000), "half_open_per_source": (1, 1_000_000),
                  "ike_sas": (1, 10_000_000), "child_sas_per_ike_sa": (1, 10_000)}
        values = {}
        for name, (low, high) in ranges.items():
            value = self.integer(raw, path + (name,), low, high, str(getattr(default, name)),
                                 getattr(default, name))
            values[name] = getattr(default, name) if value is None else value
        return IkeLimits(**values)

    def dpd(self, raw: dict[str, Any], path: Path) -> Dpd | None:
        self.keys(raw, path, IKE_KNOWN["dpd"])
        default = Dpd()
        interval = self.integer(raw, path + ("interval",), 0, 3600, "30", default.interval)
        retry = self.integer(raw, path + ("retry",), 1, 60, "2", default.retry)
        mode = self.choice(raw, path + ("mode",), ("periodic", "on-demand"))
        if interval is None or retry is None or mode is None:
            return None
        return Dpd(interval, retry, mode)

    def pfs(self, raw: dict[str, Any], path: Path) -> str | None:
        """A crypto map's ``pfs``: a key exchange name ("ecp256", "x25519") or IOS's
        "group19"; absent: no PFS (the Child SA keys come from the IKE SA's SK_d)."""
        value = self.get(raw, path, str, '"ecp256"', None)
        if value is None:
            return None
        try:
            return parse_group_name(value)
        except SuiteError as e:
            self.error(path, f"crypto_map pfs: {e}")
            return None

    def ike_peer(self, name: str, raw: Any) -> IkePeer | None:
        path: Path = ("ike_peer", name)
        if not isinstance(raw, dict):
            self.error(path, f"ike_peer.{name} must be a table; write '[ike_peer.{name}]' "
                             f"with 'address' and 'psk_file' under it")
            return None
        before = len(self.problems)  # type: ignore[attr-defined]
        self.keys(raw, path, IKE_KNOWN["ike_peer"])
        address = self.address(raw, path + ("address",), "192.0.2.2")
        local_id = self.identity(raw, path + ("local_id",))
        remote_id = self.identity(raw, path + ("remote_id",))
        ppk = self.ppk(name, raw, path)
        if "auth" in raw:
            auth = self.choice(raw, path + ("auth",), ("psk", "certificate"))
            if auth == "certificate":
                peer = self.certificate_peer(name, raw, path, address, local_id, remote_id,
                                             before)
                return replace(peer, **ppk) if peer is not None else None
        both = self.secret(raw, path, "psk")
        local = self.secret(raw, path, "psk_local")
        remote = self.secret(raw, path, "psk_remote")
        if both is not None and (local is not None or remote is not None):
            self.error(path, f"ike_peer.{name} has 'psk' and 'psk_local'/'psk_remote'; write "
                             f"one key, or a local and a remote key")
        elif both is None and (local is None) != (remote is None):
            self.error(path, f"ike_peer.{name}: write both 'psk_local' and 'psk_remote' (or "
                             f"one 'psk' for both directions)")
        elif both is None and local is None and len(self.problems) == before:  # type: ignore
            self.error(path, f"ike_peer.{name} needs a pre-shared key: 'psk_file = "
                             f"\"/etc/espd/{name}.psk\"' (a file only root can read), or "
                             f"'psk_local' and 'psk_remote'")
        if len(self.problems) != before or address is None:  # type: ignore[attr-defined]
            return None
        psk_local, psk_remote = (both, both) if both is not None else (local, remote)
        return IkePeer(name, address, psk_local, psk_remote, local_id, remote_id,
                       self.where(path), **ppk)  # type: ignore[attr-defined]

    def ppk(self, name: str, raw: dict[str, Any], path: Path) -> dict[str, Any]:
        """RFC 8784: ``ppk_id`` with ``ppk`` or ``ppk_file``, and ``ppk_required``; the
        IkePeer fields (none when no PPK is written). A key written ``0x...`` is hex, as
        strongSwan's secrets are; otherwise its text's bytes are the key."""
        written = [k for k in ("ppk_id", "ppk", "ppk_file", "ppk_required") if k in raw]
        if not written:
            return {}
        where = f"ike_peer.{name}"
        ppk_id = self.get(raw, path + ("ppk_id",), str, '"gw-ppk-1"', None)
        key = self.secret(raw, path, "ppk", PPK_MIN, PPK_MAX, hex_prefix=True)
        required = self.get(raw, path + ("ppk_required",), bool, "true", True)
        if ppk_id is None and "ppk_id" not in raw:
            self.error(path, f"{where} has {', '.join(written)} but no 'ppk_id' (the name "
                             f"both peers give the post-quantum preshared key)")
        elif ppk_id is not None and not 1 <= len(ppk_id.encode()) <= PPK_ID_MAX:
            self.error(path + ("ppk_id",), f"{where}.ppk_id must have 1-{PPK_ID_MAX} bytes")
            ppk_id = None
        if key is None and "ppk" not in raw and "ppk_file" not in raw:
            self.error(path, f"{where} has a 'ppk_id' but no key: 'ppk_file = "
                             f"\"/etc/espd/{name}.ppk\"' (at least {PPK_MIN} random bytes)")
        if ppk_id is None or key is None:
            return {}
        return {"ppk_id": ppk_id.encode(), "ppk": key, "ppk_required": bool(required)}

    def certificate_peer(self, name: str, raw: dict[str, Any], path: Path, address,
                         local_id: IkeIdentity | None, remote_id: IkeIdentity | None,
                         before: int) -> IkePeer | None:
        """``auth = "certificate"``: no pre-shared key; our identity is one our certificate
        names (by default its first subjectAltName, else its CN)."""
        for key in ("psk", "psk_file", "psk_local", "psk_local_file", "psk_remote",
                    "psk_remote_file"):
            if key in raw:
                self.error(path + (key,), f"ike_peer.{name} authenticates with certificates "
                                          f"(auth = \"certificate\"); remove '{key}'")
        own, _trust = getattr(self, "ike_pki", (None, None))
        if own is None:
            if not getattr(self, "ike_pki_written", False):
                self.error(path + ("auth",), f"ike_peer.{name}: auth = \"certificate\" needs "
                                             f"espd's certificate: set 'certificate', "
                                             f"'private_key' and 'ca' in [ike]")
            return None
        local_id, problem = certificate_identity(own.certificate, local_id)
        if problem:
            self.error(path + ("local_id",), f"ike_peer.{name}: local_id {problem}")
        if len(self.problems) != before or address is None or local_id is None:  # type: ignore
            return None
        return IkePeer(name, address, bytearray(), bytearray(), local_id, remote_id,
                       self.where(path), auth="certificate")  # type: ignore[attr-defined]

    def identity(self, raw: dict[str, Any], path: Path) -> IkeIdentity | None:
        value = self.get(raw, path, str, '"fqdn:gw.example.net"', None)
        if value is None:
            return None
        try:
            return parse_identity(value)
        except ValueError as e:
            self.error(path, f"{'.'.join(str(p) for p in path)}: {e}")
            return None

    def secret(self, raw: dict[str, Any], path: Path, name: str, least: int = PSK_MIN,
               most: int = PSK_MAX, hex_prefix: bool = False) -> bytearray | None:
        """``name = "text"`` or ``name_file = "/path"``; None when neither is written (a
        refusal is reported, and then None too). With ``hex_prefix`` a value ``0x...`` is
        hex digits."""
        file_key = f"{name}_file"
        where = ".".join(str(p) for p in path)
        if name in raw and file_key in raw:
            self.error(path + (file_key,), f"{where} has both '{name}' and '{file_key}'; "
                                           f"keep one")
            return None
        if name in raw:
            value = raw[name]
            if not isinstance(value, str):
                self.error(path + (name,), f"{where}.{name} must be a string")
                return None
            secret = bytearray(value.encode())
        elif file_key in raw:
            value = self.get(raw, path + (file_key,), str, f'"/etc/espd/{path[-1]}.psk"')
            if value is None:
                return None
            full = os.path.normpath(os.path.join(os.path.dirname(self.path), value))
            try:
                secret = read_secret_file(full)
            except KeyFileError as e:
                for problem in e.problems:
                    self.error(path + (file_key,), f"{where}.{file_key}: {problem}")
                return None
        else:
            return None
        which = file_key if file_key in raw else name
        if hex_prefix and secret[:2].lower() == b"0x":
            decoded = _unhex(secret)
            secret[:] = bytes(len(secret))
            if decoded is None:
                self.error(path + (which,), f"{where}.{which}: after '0x' only an even "
                                            f"number of hex digits may follow")
                return None
            secret = decoded
        if not least <= len(secret) <= most:
            kind = "pre-shared key" if name.startswith("psk") else "post-quantum preshared key"
            size = 24 if least == PSK_MIN else least
            self.error(path + (which,), (
                f"{where}: the {kind} has {len(secret)} bytes; use {least} to "
                f"{most} (a short key falls to an offline guess from one captured "
                f"exchange), e.g. from 'head -c {size} /dev/urandom | base64'"))
            return None
        return secret


def _unhex(text: bytearray) -> bytearray | None:
    """``0x`` + hex digits -> the bytes (a new bytearray); None when not hex."""
    digits = text[2:]
    try:
        if len(digits) % 2:
            return None
        return bytearray(bytes.fromhex(digits.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        return None
    finally:
        digits[:] = bytes(len(digits))
