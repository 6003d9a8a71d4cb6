"""The dubbing server: REST jobs, live avatar speech over WebSocket and a web page, on the same pipeline as the
nodes and the CLI (``python <pack> serve``; README "Dubbing server").

- ``config``: the server's settings and their defaults, in one place.
- ``errors``: the one JSON error shape (field, message, fix) and the HTTP status for each failure.
- ``safety``: bearer tokens, paths confined to the media folder, upload size and duration limits.
- ``jobs``: the SQLite job store (its schema) and what a restart does to unfinished jobs.
- ``options``: a job's options as the CLI's flags, checked by the CLI's own parser.
- ``worker``: one worker per device, models loaded once; progress, cancel, results written atomically.
- ``live``: ``WS /v1/avatars/{name}/live``: PCM chunks in, JPEG frames out, dropped for slow clients.
- ``app``: the routes; ``openapi``: their description; ``page/``: the web page (plain HTML/JS).
"""
