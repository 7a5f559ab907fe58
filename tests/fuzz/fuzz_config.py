"""atheris harness: espd.toml.parse_toml(text, path) over arbitrary text.

Any exception other than espd.config.model.ConfigError is a bug, so is a hang, a problem not
located as FILE:LINE:, or a message that repeats key material (see _oracle.py).
Run through run.sh, or: PYTHONPATH=daemon:tests/fuzz python tests/fuzz/fuzz_config.py
    -dict=tests/fuzz/dict/toml.dict CORPUS_DIR tests/fuzz/corpus/config
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["espd", "tomllib"]):
    import tomllib  # noqa: F401  (instrumented: its branches guide the TOML mutations)

    from espd.config import toml

import _oracle  # noqa: E402

FIXTURES = _oracle.fixture_dir()
PATH = os.path.join(FIXTURES, "espd.toml")


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    _oracle.check(lambda: toml.parse_toml(text, PATH), text, PATH, FIXTURES)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
