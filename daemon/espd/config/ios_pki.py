"""The PKI commands of an IOS configuration: trustpoints and their certificate chains.

    crypto pki trustpoint NAME          enrollment terminal|url ... (noted, not acted on),
                                        revocation-check none, rsakeypair|eckeypair LABEL
    crypto pki certificate chain NAME   certificate SERIAL / certificate ca SERIAL, each
                                        followed by its DER in hex and 'quit', as
                                        'show running-config' prints them

A trustpoint's ``certificate ca`` is the CA espd trusts; its other ``certificate`` is the
gateway's own. IOS keeps the private key in NVRAM, outside the running configuration (as
``crypto key import`` takes it in): espd reads it, in PEM, from ``LABEL.key`` next to the
configuration file (LABEL from ``rsakeypair``/``eckeypair``, else the trustpoint's name),
with the permission checks of every key file. espd neither enrolls nor fetches CRLs or asks
OCSP: ``revocation-check crl|ocsp`` is refused (fail closed) with what to write instead.
The seed era's ``crypto ca identity`` (IOS 12.0's trustpoint) is refused with its
replacement named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography import x509

from espd.config.key_files import KeyFileError, read_private_key_file
from espd.config.model import Location

MAX_CERTIFICATE_HEX = 2 * 16384  # one certificate's DER, in hex digits
IGNORED = ("subject-name", "subject-alt-name", "fqdn", "ip-address", "serial-number",
           "password", "usage", "auto-enroll", "hash", "description")  # enrollment only
CA_IDENTITY_REFUSAL = (
    "is IOS 12.0's trustpoint command; espd reads 'crypto pki trustpoint NAME' with its "
    "'crypto pki certificate chain NAME' (as 'show running-config' prints them) and an "
    "IKEv2 profile with 'pki trustpoint NAME' and 'authentication local|remote rsa-sig'")


@dataclass
class TrustpointMode:
    name: str
    where: Location
    keypair: str | None = None
    enrollment: str | None = None


@dataclass
class ChainMode:
    name: str
    where: Location
    certificates: list[tuple[bool, str, Location, list[str]]] = field(default_factory=list)
    open: list[str] | None = None  # hex words of the certificate being read, till 'quit'


class IosPki:
    """The PKI half of the IOS IKE importer; reports through ``ike.error``/``ike.warn``."""

    def __init__(self, ike) -> None:
        self.ike = ike
        self.trustpoints: dict[str, TrustpointMode] = {}
        self.chains: dict[str, ChainMode] = {}

    def command(self, words: list[str]) -> object:
        """``crypto pki ...`` / ``crypto ca ...``: the sub-mode that follows, or None."""
        if words[1] == "ca":
            self.ike.error(f"'{' '.join(words[:3])}' {CA_IDENTITY_REFUSAL}")
            return None
        if words[2:3] == ["trustpoint"] and len(words) == 4:
            return self.trustpoints.setdefault(words[3], TrustpointMode(words[3],
                                                                        self.ike.where))
        if words[2:4] == ["certificate", "chain"] and len(words) == 5:
            chain = ChainMode(words[4], self.ike.where)
            self.chains[words[4]] = chain
            return chain
        self.ike.warn(f"'{' '.join(words[:3])}' is not read by espd; it is ignored")
        return None

    def trustpoint_command(self, mode: TrustpointMode, words: list[str]) -> None:
        name = f"crypto pki trustpoint {mode.name}"
        head = words[0]
        if head == "enrollment":
            mode.enrollment = " ".join(words[1:])
            self.ike.warn(f"{name}: 'enrollment {mode.enrollment}' is noted but espd does "
                          f"not enroll: the certificates are read from 'crypto pki "
                          f"certificate chain {mode.name}'")
        elif head == "revocation-check":
            if words[1:] != ["none"]:
                self.ike.error(f"{name}: 'revocation-check {' '.join(words[1:])}': espd "
                               f"does not fetch CRLs or ask OCSP, and will not pretend to "
                               f"check; write 'revocation-check none', or use the TOML "
                               f"form's [ike] crl files")
        elif head in ("rsakeypair", "eckeypair") and len(words) >= 2:
            mode.keypair = words[1]
        elif head not in IGNORED:
            self.ike.warn(f"{name}: '{head}' is not read by espd; it is ignored")

    def chain_line(self, mode: ChainMode, words: list[str]) -> None:
        """A line inside ``crypto pki certificate chain``: a certificate's header, its hex,
        or the ``quit`` that ends it."""
        if mode.open is not None:
            if words == ["quit"]:
                mode.open = None
                return
            mode.open.extend(words)
            if sum(map(len, mode.open)) > MAX_CERTIFICATE_HEX:
                self.ike.error(f"crypto pki certificate chain {mode.name}: a certificate "
                               f"longer than {MAX_CERTIFICATE_HEX // 2} bytes")
                mode.open = []  # keep reading to its quit; the error stands
            return
        if words[0] == "certificate" and len(words) in (2, 3):
            is_ca = len(words) == 3 and words[1] == "ca"
            if len(words) == 3 and not is_ca:
                self.ike.error(f"crypto pki certificate chain {mode.name}: write "
                               f"'certificate SERIAL' or 'certificate ca SERIAL'")
                return
            mode.open = []
            mode.certificates.append((is_ca, words[-1], self.ike.where, mode.open))
            return
        self.ike.error(f"crypto pki certificate chain {mode.name}: '{words[0]}' is not a "
                       f"certificate line; paste the chain as 'show running-config' prints it")

    def in_chain(self, mode: object) -> bool:
        """Whether every line is the open certificate's hex (or its quit)."""
        return isinstance(mode, ChainMode) and mode.open is not None

    def credentials(self, trustpoint: str, where: Location, config_path: str):
        """(OwnCertificate, TrustStore) of ``trustpoint``, or (None, None) after errors."""
        from espd.ike.auth import certificates

        name = f"pki trustpoint {trustpoint}"
        tp, chain = self.trustpoints.get(trustpoint), self.chains.get(trustpoint)
        if tp is None:
            self.ike.error(f"{name}: no 'crypto pki trustpoint {trustpoint}' is defined",
                           where)
            return None, None
        if chain is None or not chain.certificates:
            self.ike.error(f"{name}: no 'crypto pki certificate chain {trustpoint}' holds "
                           f"its certificates; paste it from 'show running-config'", tp.where)
            return None, None
        if chain.open is not None:
            self.ike.error(f"crypto pki certificate chain {trustpoint}: the last "
                           f"certificate has no 'quit'", chain.where)
            return None, None
        anchors, own = [], []
        for is_ca, serial, at, hexwords in chain.certificates:
            try:
                cert = x509.load_der_x509_certificate(bytes.fromhex("".join(hexwords)))
            except ValueError:
                self.ike.error(f"crypto pki certificate chain {trustpoint}: certificate "
                               f"{serial} is not a DER X.509 certificate in hex", at)
                return None, None
            if f"{cert.serial_number:X}".lstrip("0") != serial.upper().lstrip("0"):
                self.ike.warn(f"crypto pki certificate chain {trustpoint}: certificate "
                              f"{serial} has serial {cert.serial_number:X}", at)
            if is_ca and (problem := certificates.eddsa_ca_problem(cert)):
                self.ike.error(f"crypto pki certificate chain {trustpoint}: {problem}", at)
                return None, None
            (anchors if is_ca else own).append(cert)
        if not anchors or len(own) != 1:
            self.ike.error(f"crypto pki certificate chain {trustpoint}: it needs one "
                           f"'certificate ca' (the CA espd trusts) and one 'certificate' "
                           f"(this gateway's); it has {len(anchors)} and {len(own)}",
                           chain.where)
            return None, None
        label = tp.keypair or trustpoint
        key_path = os.path.join(os.path.dirname(os.path.abspath(config_path)), f"{label}.key")
        try:
            key = read_private_key_file(key_path)
        except KeyFileError as e:
            for problem in e.problems:
                self.ike.error(f"{name}: the private key of key pair '{label}' is read from "
                               f"{label}.key next to the configuration (IOS keeps it out of "
                               f"the running config): {problem}", tp.where)
            return None, None
        try:
            mine = certificates.own_certificate(own, key, f"{label}.key")
        except certificates.CertificateError as e:
            self.ike.error(f"{name}: {e}", tp.where)
            return None, None
        return mine, certificates.TrustStore(tuple(anchors))
