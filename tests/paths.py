"""Where the tests' own files are, from this module's place rather than each test's, so a test can move freely."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
