"""The HTTP side: the app and its routes, body reading and every client-facing limit, access log, metrics, logs."""
