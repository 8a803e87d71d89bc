"""The REST API v1 at /api/v1/: routes, DRF views and serializers over the apps' own services,
the OpenAPI schema, and personal API tokens. No business logic lives here: every decision an
endpoint makes is the same function chat, the console and the admin call."""
