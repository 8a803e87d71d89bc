"""`manage.py discord_register_commands`: create (or update) the `/aiops` application command,
the only way in on Discord (the agent holds no gateway connection)."""

from __future__ import annotations

from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

AIOPS_COMMAND = {
    "name": "aiops",
    "type": 1,  # CHAT_INPUT
    "description": "Talk to the AIOps agent",
    "options": [{
        "type": 3,  # STRING
        "name": "command",
        "description": "help, incident list, k8s pods <ns>, approve <code>, ask <question> ...",
        "required": True,
        "max_length": 1000,
    }],
}


class Command(BaseCommand):
    help = "Register the /aiops slash command with Discord (bulk overwrite of the application's global commands)."

    def handle(self, *args: Any, **options: Any) -> None:
        from channels.discord.transport import DiscordTransport

        if not DiscordTransport.is_configured():
            raise CommandError("DISCORD_APPLICATION_ID, DISCORD_PUBLIC_KEY and DISCORD_BOT_TOKEN must be set")
        url = f"{settings.DISCORD_API_BASE_URL.rstrip('/')}/applications/{settings.DISCORD_APPLICATION_ID}/commands"
        try:
            response = httpx.put(url, json=[AIOPS_COMMAND], timeout=settings.AIOPS_CHAT_HTTP_TIMEOUT,
                                 headers={"Authorization": f"Bot {settings.DISCORD_BOT_TOKEN}"})
        except httpx.HTTPError as exc:
            raise CommandError(f"Discord is unreachable: {exc}") from None
        if response.status_code >= 400:
            raise CommandError(f"Discord refused the command: HTTP {response.status_code} {response.text[:300]}")
        self.stdout.write(f"Registered /aiops for application {settings.DISCORD_APPLICATION_ID}; point the "
                          f"application's Interactions Endpoint URL at {settings.AIOPS_PUBLIC_URL.rstrip('/')}"
                          "/api/webhooks/discord/interactions")
