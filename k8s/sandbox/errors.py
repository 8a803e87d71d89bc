"""API errors as the Kubernetes API server reports them: an HTTP code and a `Status` body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k8s.sandbox.resources import Resource


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, resource: Resource, name: str) -> ApiError:
        what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        return cls(404, "NotFound", f'{what} "{name}" not found',
                   {"name": name, "group": resource.group, "kind": resource.plural} if resource.group
                   else {"name": name, "kind": resource.plural})

    @classmethod
    def no_route(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    @classmethod
    def already_exists(cls, resource: Resource, name: str) -> ApiError:
        what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        return cls(409, "AlreadyExists", f'{what} "{name}" already exists',
                   {"name": name, "group": resource.group, "kind": resource.plural})

    @classmethod
    def bad_request(cls, message: str, reason: str = "BadRequest") -> ApiError:
        return cls(400, reason, message)

    @classmethod
    def invalid(cls, resource: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
        """422 Invalid; causes are (field, reason, message) like FieldValueInvalid's."""
        what = f"{resource.kind}.{resource.group}" if resource.group else resource.kind
        text = "; ".join(f"{field}: {message}" for field, _, message in causes)
        return cls(
            422, "Invalid", f'{what} "{name}" is invalid: {text}',
            {
                "name": name, "group": resource.group, "kind": resource.kind,
                "causes": [{"reason": reason, "message": message, "field": field} for field, reason, message in causes],
            },
        )

    @classmethod
    def invalid_options(cls, field: str, message: str) -> ApiError:
        """422 for a bad query option, as the API server names PatchOptions."""
        return cls(422, "Invalid", f'PatchOptions.meta.k8s.io "" is invalid: {field}: {message}',
                   {"group": "meta.k8s.io", "kind": "PatchOptions",
                    "causes": [{"reason": "FieldValueRequired", "message": message, "field": field}]})

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})

    @classmethod
    def unauthorized(cls) -> ApiError:
        return cls(401, "Unauthorized", "Unauthorized")

    @classmethod
    def unsupported_media_type(cls, content_type: str, accepted: tuple[str, ...]) -> ApiError:
        return cls(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: '
                   f'{", ".join(accepted)} (got "{content_type}")')

    @classmethod
    def too_many_requests(cls, message: str, causes: list[dict[str, str]] | None = None) -> ApiError:
        return cls(429, "TooManyRequests", message, {"causes": causes or []})
