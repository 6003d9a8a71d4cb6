"""``python <pack> serve``: start the dubbing server (README "Dubbing server")."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import config as C


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musetalk_enhanced serve",
                                description="Dubbing server: REST jobs, live avatars over WebSocket, a web page.")
    p.add_argument("--host", default=C.DEFAULT_HOST, help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=C.DEFAULT_PORT, help="port (0: any free port, printed at start)")
    p.add_argument("--token", default=os.environ.get("MUSETALK_SERVER_TOKEN"),
                   help="bearer token every /v1 request must carry (default $MUSETALK_SERVER_TOKEN, else one made at "
                        f"the first start and kept in the data folder's '{C.TOKEN_FILE}' file)")
    p.add_argument("--no-token", action="store_true",
                   help="no token at all (loopback only; any web page you visit could then queue jobs)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name requests may use besides the bound address and loopback (repeat; needed with "
                        "--host 0.0.0.0, e.g. the machine's name or LAN address)")
    p.add_argument("--data-dir", default=None, help="jobs database, uploads and results (default "
                                                    "$MUSETALK_SERVER_DIR or ~/.cache/musetalk_enhanced/server)")
    p.add_argument("--media-dir", help="a folder whose files jobs may name by relative path (default: uploads only)")
    p.add_argument("--devices", default="auto", help="comma-separated devices, one worker each (e.g. cuda:0,cuda:1)")
    p.add_argument("--max-queue", type=int, default=C.DEFAULT_MAX_QUEUE)
    p.add_argument("--max-upload-mb", type=float, default=C.DEFAULT_MAX_UPLOAD_MB)
    p.add_argument("--max-seconds", type=float, default=C.DEFAULT_MAX_SECONDS,
                   help="longest video/voice accepted, counted from its packets (not its header)")
    p.add_argument("--max-frames", type=int, default=C.DEFAULT_MAX_FRAMES, help="most video frames accepted")
    p.add_argument("--max-pixels", type=int, default=C.DEFAULT_MAX_PIXELS,
                   help="largest picture accepted, width x height")
    p.add_argument("--max-live", type=int, default=C.DEFAULT_MAX_LIVE, help="live avatar sessions at once")
    p.add_argument("--keep-days", type=float, default=C.DEFAULT_KEEP_DAYS,
                   help="remove finished jobs and their files this many days after they end (0: keep all)")
    p.add_argument("--keep-inputs", action="store_true",
                   help="keep the uploads of finished, failed and cancelled jobs (default: removed when a job ends; "
                        "files in --media-dir are never removed)")
    p.add_argument("--models-dir",
                   help="models root (default $MUSETALK_MODELS_DIR or ~/.cache/musetalk_enhanced/models)")
    p.add_argument("--no-download", action="store_true", help="never download weights (jobs fail naming the files)")
    return p


def config_from(args) -> C.ServerConfig:
    cfg = C.ServerConfig(host=args.host, port=args.port, token=args.token or None, no_token=args.no_token,
                         allowed_hosts=tuple(args.allowed_host), media_dir=args.media_dir,
                         devices=tuple(d.strip() for d in args.devices.split(",") if d.strip()) or ("auto",),
                         max_queue=args.max_queue, max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                         max_frames=args.max_frames, max_pixels=args.max_pixels, max_live=args.max_live,
                         auto_download=not args.no_download, keep_days=args.keep_days, keep_inputs=args.keep_inputs)
    if args.data_dir:
        cfg.data_dir = os.path.abspath(args.data_dir)
    return cfg


async def serve(cfg: C.ServerConfig) -> None:
    """Run until SIGINT/SIGTERM; a running job is re-queued for the next start."""
    from aiohttp import web

    from .app import make_app

    runner = web.AppRunner(make_app(cfg), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    host = cfg.host if cfg.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"serving on {url}  (data: {cfg.data_dir})", flush=True)
    if cfg.token:      # once: the page keeps it; scripts send it as 'Authorization: Bearer <token>'
        print(f"open {url}?token={cfg.token}  (the page keeps the token; API clients send 'Authorization: Bearer "
              "<token>')", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.models_dir:
        os.environ["MUSETALK_MODELS_DIR"] = os.path.abspath(args.models_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = config_from(args)
    try:
        cfg.check()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(cfg))
    return 0
