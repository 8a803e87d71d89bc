"""Local fake servers speaking real wire formats (LLM, chat platforms)."""
