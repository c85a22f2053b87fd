"""Former home of the engine's value objects, kept while imports move: core/observations.py, core/actions.py."""

from guarded.core.actions import *  # noqa: F403
from guarded.core.observations import *  # noqa: F403
