"""The deterministic core: pure functions from (spec, status, observations, now) to decisions.

Nothing in this package performs I/O, reads the clock, sleeps or draws random numbers; the
import-linter contracts in pyproject.toml keep it that way. Time arrives as an argument, which is
what makes every decision replayable from the inputs recorded in status.
"""
