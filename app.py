"""Speech Studio entry point: `python app.py [--host 0.0.0.0] [--port 7860] [--share]`.

Also the Hugging Face Spaces entry (Spaces run `python app.py`).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

# Offline by design: no hub lookups, no telemetry (gradio_client otherwise pings the hub).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def lan_address() -> str:
    """This machine's address on its LAN (no packet leaves: UDP connect only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def share_link(port: int) -> str:
    """Open a Gradio share tunnel to this server; needs internet access to Gradio's share server."""
    import secrets

    from gradio.networking import setup_tunnel

    try:
        return f"Public share link: {setup_tunnel('127.0.0.1', port, secrets.token_urlsafe(32), None, None)}"
    except Exception as error:  # no internet, no frpc binary, server refused: the studio still runs locally
        return f"--share failed ({error}); the studio still serves locally"


def main() -> None:
    parser = argparse.ArgumentParser(description="Speech Studio: UI at / and REST API (docs at /docs)")
    parser.add_argument(
        "--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 for a LAN demo)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    args = parser.parse_args()

    import uvicorn

    from studio.config import Settings
    from studio.server import create_app

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    shown = lan_address() if settings.host == "0.0.0.0" else settings.host
    print(
        f"Speech Studio on http://{shown}:{settings.port}/  (API docs: http://{shown}:{settings.port}/docs)",
        flush=True,
    )
    if args.share:
        print(
            "--share: a public link needs the Gradio share server; it is not reachable offline.", flush=True
        )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
