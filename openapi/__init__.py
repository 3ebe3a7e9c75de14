"""openapi: OpenAPI 3.1 documents built from service introspection (not built yet)."""
