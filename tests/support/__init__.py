"""What tests, benchmarks and the soak share. Importable as ``support`` once tests/ is on
sys.path (tests/conftest.py puts it there; scripts under tests/ add it themselves)."""
