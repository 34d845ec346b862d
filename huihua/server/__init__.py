"""huihua's HTTP server: AUTOMATIC1111-compatible routes and a durable native job queue (``huihua serve``).

A client of ``huihua.api`` like the CLI: ``create_app(ServerConfig(...))`` builds the FastAPI app.
"""
