"""guarded-rollouts: changes moved out in guarded waves, rolled back on degraded error or order rates."""

__version__ = "0.1.0"
