"""Models of the engine, split by room: incidents (watch loop) and engine (rules, playbooks, runs)."""

from playbooks.models.engine import *  # noqa: F403
from playbooks.models.incidents import *  # noqa: F403
from playbooks.models.quiet import *  # noqa: F403
