"""End-to-end journeys. A package, so that its test modules may share basenames with tests/unit (test_cli.py)."""
