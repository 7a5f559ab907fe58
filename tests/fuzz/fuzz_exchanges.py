"""atheris harness: the IKE exchange handlers of an established IKE SA.

Each input is a short sequence of messages (records, see exchange_victim.py) that the
harness seals with the peer's real keys (or sends in the clear, or as two RFC 7383
fragments) and hands to a fresh engine holding one established IKE SA and its Child SA,
so the fuzzer's bytes are the decrypted payload chains that CREATE_CHILD_SA,
INFORMATIONAL, IKE_FOLLOWUP_KE (and, out of state, IKE_AUTH/IKE_INTERMEDIATE) handle.
The oracle is exchange_victim's. Run through run.sh (target ``exchanges``), or:
    PYTHONPATH=daemon:tests/fuzz tests/fuzz/build/venv/bin/python \\
        tests/fuzz/fuzz_exchanges.py CORPUS_DIR tests/fuzz/corpus/exchanges
"""

import sys

import atheris

with atheris.instrument_imports(include=["espd.ike", "exchange_victim"]):
    from exchange_victim import run_one


def test_one_input(data: bytes) -> None:
    run_one(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
