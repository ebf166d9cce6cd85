"""The local web UI and API (DESIGN §10): the aiohttp server and its guard (token, Host, Origin),
the REST routes, and (next) pages and streaming."""
