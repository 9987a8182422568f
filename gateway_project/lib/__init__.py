"""The gateway's own library: pieces every app uses (raw SQL on the request path, settings
readers, the error shape, request ids, client addresses, table versions, admin helpers for
large tables, charts, wording). gateway_project itself only wires things together."""
