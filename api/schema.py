"""The OpenAPI document's shared parts: the problem-detail error responses every operation may
answer, and the bearer-token security scheme."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

PROBLEM = {
    "type": "object",
    "description": "An RFC 9457 problem detail.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Validation errors, one per field at fault.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "description": "The field, e.g. `priority` or `steps[1].tool`."},
                    "message": {"type": "string"},
                    "line": {"type": "integer", "description": "YAML import: the line in the file."},
                },
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}
OUTAGE = {
    "type": "object",
    "description": "A dependency (PostgreSQL, Redis, the broker) is down; retry after `retry_after` seconds.",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "error": {"type": "string"}, "dependency": {"type": "string"},
        "retry_after": {"type": "integer"},
    },
    "required": ["error", "dependency", "retry_after"],
}
ERRORS = {
    "400": "The request is invalid; `errors` names each field at fault.",
    "401": "No valid token or session.",
    "403": "The token lacks the scope, or the user the right.",
    "404": "No such object.",
    "405": "The method is not allowed here.",
    "406": "The Accept header asks for a type this endpoint cannot give.",
    "409": "The object's state refuses this request (already decided, expired, in use).",
    "415": "The body's Content-Type is not accepted here.",
    "429": "Too many requests from this token; see Retry-After.",
}


def add_problem_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: every operation documents the problem responses it may give."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM
    components["schemas"]["Outage"] = OUTAGE
    problem_ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code, description in ERRORS.items():
                responses.setdefault(code, {"description": description, "content": problem_ref})
            responses.setdefault("503", {
                "description": "A dependency is down.",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Outage"}},
                            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Outage"}}},
            })
    return result


class TokenScheme(OpenApiAuthenticationExtension):  # registered by being defined (api.apps imports this module)
    target_class = "api.tokens.TokenAuthentication"
    name = "token"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer",
                "description": "A personal API token (`aiops_...`): console → API tokens, or the admin."}
