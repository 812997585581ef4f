"""Audit: see, search, replay and export every session.

- ``export``  ``proctor export``: sessions as JSONL, or as OTLP spans (``otlp``)
- ``replay``  ``proctor replay``: judge recorded sessions again with another policy
- ``ui``      the web UI under ``/ui`` (aiohttp-jinja2 pages, ``templates/``, ``static/``)
- ``queries`` the session list (filters, sorting, keyset paging)
- ``indexes`` the tables, indexes and triggers the views need (``AUDIT_INDEXES``)
- ``search``  the full-text index, kept by the store's writer off the recording path
- ``detail``  one session: timeline, sub-agent tree, totals
- ``stats``   the decision log list and the overview's aggregates
- ``reader``  runs the views' SQL on read connections of their own
- ``charts``  server-side SVG plots
"""
