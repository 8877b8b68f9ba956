"""The control plane's interfaces: the HTTP+JSON API (server, models, OpenAPI), its async client,
``lbctl``, and the services behind the API (draining, stats for the scaler, hot reload)."""
