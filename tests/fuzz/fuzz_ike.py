"""atheris harness: the IKEv2 codec (espd.ike.codec) over arbitrary datagrams.

Each input goes through the three receive paths: ``decode_message``, ``decrypt_message``
and ``decrypt_fragment`` (then ``Reassembly.add`` and ``reassemble``), the last two with a
null cipher that follows the SK contract (no IV, no ICV, plaintext = body) so the inner
payload chain is fuzzed too. The oracle: each path returns or raises ParseError (with a
NotifyType or None as its notify and bytes as its data), nothing else; what decodes
re-encodes, and decoding that again gives the same objects; a fragment completes a
Reassembly exactly when it is fragment 1 of 1, to what ``reassemble`` gives. Run through run.sh, or:
    PYTHONPATH=daemon tests/fuzz/build/venv/bin/python tests/fuzz/fuzz_ike.py CORPUS_DIR \
        tests/fuzz/corpus/ike
"""

import sys

import atheris

with atheris.instrument_imports(include=["espd.ike"]):
    from espd.ike.codec import (
        NotifyType,
        ParseError,
        Reassembly,
        decode_message,
        decrypt_fragment,
        decrypt_message,
        encode_message,
        encrypt_message,
        reassemble,
    )
    from espd.ike.codec.limits import MAX_PAYLOADS


class NullCipher:
    """The SK cipher contract with nothing secret: the body is the plaintext."""

    iv_size = 0
    icv_size = 0
    block_size = 1

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, aad: bytes, body: bytes) -> bytes:
        return body


NULL = NullCipher()


class OracleViolation(AssertionError):
    """The codec broke its contract on this input."""


def _parse(path, data):
    try:
        return path(data)
    except ParseError as e:
        if not (e.notify is None or isinstance(e.notify, NotifyType)):
            raise OracleViolation(f"ParseError with notify {e.notify!r}") from e
        if not isinstance(e.data, bytes) or not e.reason:
            raise OracleViolation("ParseError without a reason or with non-bytes data") from e
        return None


def _check_clear(data: bytes) -> None:
    message = _parse(decode_message, data)
    if message is not None and decode_message(encode_message(message)) != message:
        raise OracleViolation("decode(encode(decode(x))) != decode(x)")


def _check_sk(data: bytes) -> None:
    message = _parse(lambda d: decrypt_message(d, NULL), data)
    if message is None or len(message.payloads) > MAX_PAYLOADS:
        return
    again = decrypt_message(encrypt_message(message.header, message.payloads, NULL), NULL)
    if again != message:
        raise OracleViolation("decrypt(encrypt(decrypt(x))) != decrypt(x)")


def _check_skf(data: bytes) -> None:
    fragment = _parse(lambda d: decrypt_fragment(d, NULL), data)
    if fragment is None:
        return
    reassembly = Reassembly(fragment.header.message_id, 0.0)
    whole = _parse(reassembly.add, fragment)
    if (whole is not None) != (fragment.total == 1):
        raise OracleViolation(f"fragment 1 of {fragment.total} completed: {whole is not None}")
    if fragment.total == 1 and _parse(lambda f: reassemble([f]), fragment) != whole:
        raise OracleViolation("Reassembly.add and reassemble disagree")


def test_one_input(data: bytes) -> None:
    _check_clear(data)
    _check_sk(data)
    _check_skf(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
