"""``l2loop api``: the one HTTP service for people and clients.

Each concern is a router module beside this one (reports, windows and alerts, the dashboard),
sharing the clients and error shape of ``context``; ``app.create_api`` mounts them, so that
the OpenAPI document at ``/openapi.json`` is generated from their pydantic models.
"""
