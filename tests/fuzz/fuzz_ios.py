"""atheris harness: espd.config.ios.parse_ios(text, path) over arbitrary text.

Any exception other than espd.config.model.ConfigError is a bug, so is a hang, a problem not
located as FILE:LINE:, or a message that repeats key material (see _oracle.py).
Run through run.sh, or: PYTHONPATH=daemon:tests/fuzz python tests/fuzz/fuzz_ios.py
    -dict=tests/fuzz/dict/ios.dict CORPUS_DIR tests/fuzz/corpus/ios
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["espd"]):
    from espd.config import ios

import _oracle  # noqa: E402

FIXTURES = _oracle.fixture_dir()
PATH = os.path.join(FIXTURES, "router.ios")


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    _oracle.check(lambda: ios.parse_ios(text, PATH), text, PATH, FIXTURES)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
