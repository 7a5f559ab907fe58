"""atheris harness: IKE SAs with an exchange in flight (a half-open responder awaiting
IKE_AUTH or IKE_INTERMEDIATE; an initiator awaiting its IKE_SA_INIT, IKE_INTERMEDIATE,
IKE_AUTH, CREATE_CHILD_SA or INFORMATIONAL response), which the exchanges target's
established responder never is. The first byte picks the victim, the records (sealed
with the SA's real keys, or in the clear) follow; see pending_victim.py for the format
and the oracle. Run through run.sh (target ``pending``), or:
    PYTHONPATH=daemon:tests/fuzz tests/fuzz/build/venv/bin/python \\
        tests/fuzz/fuzz_pending.py CORPUS_DIR tests/fuzz/corpus/pending
"""

import sys

import atheris

with atheris.instrument_imports(include=["espd.ike", "exchange_victim", "pending_victim"]):
    from pending_victim import run_one


def test_one_input(data: bytes) -> None:
    run_one(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
