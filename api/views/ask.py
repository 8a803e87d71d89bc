"""Ask the assistant: post a question, get its id, poll for the answer. The same assistant as
chat (`agents.conversations.submit`, answered by the `agents.answer_message` task on a worker),
with the same read-only tools and the same rule that a change only ever becomes an approval."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from agents.models import Message
from api.models import Scope
from api.views.base import ApiViewSet

CHANNEL = "api"  # the assistant's conversation kind for API questions (its model choice may differ)
MAX_QUESTION = 4000


class AskSerializer(serializers.Serializer):
    question = serializers.CharField(max_length=MAX_QUESTION, help_text="A question about your clusters.")

    def validate_question(self, value: str) -> str:
        if "\x00" in value:
            raise serializers.ValidationError("the question holds a NUL character")
        return value


class AnswerSerializer(serializers.Serializer):
    text = serializers.CharField()
    model = serializers.CharField(allow_blank=True)
    approvals = serializers.ListField(child=serializers.IntegerField(),
                                      help_text="Approvals the assistant requested because you asked for a change.")
    error = serializers.CharField(allow_blank=True, help_text="Why no real answer came (no LLM, time limit), if so.")
    answered_at = serializers.DateTimeField()


class QuestionSerializer(serializers.ModelSerializer):
    question = serializers.CharField(source="content")
    asked_at = serializers.DateTimeField(source="created_at")
    state = serializers.ChoiceField(choices=["pending", "answering", "answered", "failed"])
    answer = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = ["id", "question", "state", "asked_at", "answer"]
        read_only_fields = fields

    @extend_schema_field(AnswerSerializer(allow_null=True))
    def get_answer(self, message: Message) -> dict[str, Any] | None:
        reply = message.answer
        if reply is None:
            return None
        return {"text": reply.content, "model": reply.model, "approvals": list(reply.approval_ids or []),
                "error": reply.error, "answered_at": reply.created_at}


class AskViewSet(ApiViewSet):
    """Questions for the assistant. Only their asker sees them."""

    serializer_class = QuestionSerializer
    filter_backends: list[Any] = []
    pagination_class = None
    scopes = {"create": Scope.READ}

    def get_queryset(self) -> Any:
        return Message.objects.select_related("answer").filter(
            role=Message.Role.USER, conversation__user=self.request.user, conversation__channel_kind=CHANNEL)

    @extend_schema(request=AskSerializer, responses={202: QuestionSerializer})
    def create(self, request: Any) -> Response:
        """Ask; the answer comes from a worker. Poll the question's URL until `state` is `answered`."""
        from agents.conversations import submit

        body = AskSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = submit(request.user, CHANNEL, body.validated_data["question"], reply_to={})
        message = self.get_queryset().get(pk=message.pk)
        response = Response(QuestionSerializer(message).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/ask/{message.pk}/"
        return response

    @extend_schema(responses=QuestionSerializer)
    def retrieve(self, request: Any, pk: str | None = None) -> Response:
        message = self.get_queryset().filter(pk=pk).first() if (pk or "").isdigit() and len(pk or "") < 19 else None
        if message is None:
            raise Http404(f"no question {pk!r} of yours")
        return Response(QuestionSerializer(message).data)
