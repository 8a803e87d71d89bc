"""Models of the agents app, split by room: tools (MCP, approvals, audit) and llm (models, conversations)."""

from agents.models.llm import *  # noqa: F403
from agents.models.tools import *  # noqa: F403
