"""ModelAlias, UserPreference, Conversation, Message (the LLM room)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from k8s.names import FullMatchValidator

__all__ = ["Conversation", "Message", "ModelAlias", "UserPreference"]

ALIAS_NAME = FullMatchValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
    "Letters, digits, '.', '_' and '-', starting with a letter or digit (what people type after /model).",
)


class ModelAlias(models.Model):
    """A name people type (`/model claude`) for a provider's model id, editable in the admin.

    Rows add to the aliases in LLM_MODEL_ALIASES and override one of the same name. A row with
    its own base URL talks to another OpenAI-compatible endpoint (a local Ollama, vLLM or
    llama.cpp server), with no API key unless `api_key_variable` names the environment
    variable that holds one: keys never live in the database.
    """

    name = models.CharField(max_length=63, unique=True, validators=[ALIAS_NAME])
    model = models.CharField(max_length=200, help_text="The provider's model id, e.g. openai/gpt-4o.")
    base_url = models.URLField(blank=True, help_text="Empty: LLM_BASE_URL.")
    api_key_variable = models.CharField(
        max_length=100,
        blank=True,
        validators=[FullMatchValidator(r"^[A-Z_][A-Z0-9_]*$", "An environment variable name, e.g. OLLAMA_API_KEY.")],
        help_text="Environment variable holding this endpoint's API key. Empty: LLM_API_KEY for the "
        "default endpoint, none for an endpoint of its own.",
    )
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True, help_text="Disabled: the alias cannot be chosen (hides a settings alias too).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "LLM model alias"
        verbose_name_plural = "LLM model aliases"

    def __str__(self) -> str:
        return f"{self.name} -> {self.model}"


class UserPreference(models.Model):
    """A person's preferred model, used when their conversation has no override."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="llm_preference")
    model_alias = models.CharField(max_length=63, blank=True, help_text="An alias; empty: the channel or system default.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "LLM user preference"

    def __str__(self) -> str:
        return f"{self.user} prefers {self.model_alias or 'the default'}"


class Conversation(models.Model):
    """One person's running conversation on one kind of channel; `/reset` starts a new one."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="llm_conversations")
    channel_kind = models.CharField(max_length=20, help_text="telegram, slack, discord, web ...")
    model_override = models.CharField(max_length=63, blank=True, help_text="Set by /model; wins over every default.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Two messages arriving at once must not start two conversations.
            models.UniqueConstraint(
                fields=["user", "channel_kind"], condition=models.Q(active=True), name="agents_one_active_conversation"
            ),
        ]
        indexes = [models.Index(fields=["user", "channel_kind", "active"])]

    def __str__(self) -> str:
        return f"{self.user} on {self.channel_kind} #{self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    class State(models.TextChoices):
        # Only a person's message has a life cycle: queued for an answer, being answered, done.
        PENDING = "pending"
        ANSWERING = "answering"
        ANSWERED = "answered"
        FAILED = "failed"
        NONE = ""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="Alias and provider model id that wrote it.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    # Assistant: the tool calls it made [{id, name, arguments, outcome}]; tool: its call id.
    tool_calls = models.JSONField(default=list, blank=True)
    tool_call_id = models.CharField(max_length=100, blank=True)
    approval_ids = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.NONE, blank=True)
    # Whatever the channel needs to deliver the answer (chat id, thread ts); given back untouched.
    reply_to = models.JSONField(default=dict, blank=True)
    answer = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="question", help_text="The reply to this message."
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
