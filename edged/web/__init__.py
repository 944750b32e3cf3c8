"""The local web page and REST API: a sink on the daemon's event stream plus a tap of processed frames
(`edged.web.live`), served by FastAPI + uvicorn (`edged.web.app`, `edged.web.server`), behind a password,
sessions with CSRF tokens and API tokens (`edged.web.auth`)."""
