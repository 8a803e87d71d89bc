from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from tests.support_tasks import log_and_chain


def enqueue(request: HttpRequest) -> JsonResponse:
    import structlog

    structlog.get_logger("tests.view").info("test_view_enqueued")
    result = log_and_chain.delay(1)
    return JsonResponse({"task_id": result.id})


urlpatterns = [
    path("test/enqueue", enqueue),
    path("", include("aiops_site.urls")),
]
