from __future__ import annotations

from django.contrib.auth.views import LogoutView
from django.urls import path

from channels.discord.views import discord_interactions
from channels.slack.views import slack_events, slack_interactions
from channels.telegram.views import telegram_webhook
from channels.web import quiet
from channels.web import views as web

app_name = "channels"

urlpatterns = [
    path("", web.root, name="root"),
    path("api/webhooks/telegram", telegram_webhook, name="telegram"),
    path("api/webhooks/slack/events", slack_events, name="slack-events"),
    path("api/webhooks/slack/interactions", slack_interactions, name="slack-interactions"),
    path("api/webhooks/discord/interactions", discord_interactions, name="discord-interactions"),
    path("console/", web.home, name="console"),
    path("console/login/", web.ConsoleLogin.as_view(), name="console-login"),
    path("console/logout/", LogoutView.as_view(next_page="/console/login/"), name="console-logout"),
    path("console/incidents", web.incidents, name="console-incidents"),
    path("console/incidents/<int:incident_id>", web.incident, name="console-incident"),
    path("console/incidents/<int:incident_id>/close", web.close, name="console-close"),
    path("console/incidents/<int:incident_id>/run", web.run_playbook, name="console-run-playbook"),
    path("console/incidents/<int:incident_id>/silence", quiet.silence_incident, name="console-silence-incident"),
    path("console/runs/<int:run_id>/start", web.start_run, name="console-start-run"),
    path("console/silences", quiet.silences, name="console-silences"),
    path("console/silences/<int:silence_id>/expire", quiet.expire, name="console-expire-silence"),
    path("console/approvals", web.approvals, name="console-approvals"),
    path("console/approvals/<int:approval_id>/decide", web.decide, name="console-decide"),
    path("console/notifications", web.feed, name="console-feed"),
    path("console/chat", web.chat, name="console-chat"),
    path("console/chat/messages", web.chat_messages, name="console-chat-messages"),
]
