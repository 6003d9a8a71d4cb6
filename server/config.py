"""The server's settings and their defaults: one home for every server default (the CLI reads them from here), and
the keys under which a running server keeps its state."""
from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass, field
from typing import Optional, Tuple

from aiohttp import web

from ..pipeline.jobs.requests import MachineSettings

DEFAULT_HOST = "127.0.0.1"          # loopback: nothing outside this machine reaches the server by default
DEFAULT_PORT = 8288                 # ComfyUI listens on 8188
DEFAULT_MAX_QUEUE = 16              # queued jobs (not counting running ones) before POST /v1/jobs answers 429
DEFAULT_MAX_UPLOAD_MB = 512         # per uploaded file
DEFAULT_MAX_SECONDS = 600.0         # longest video or voice accepted, in seconds (counted from the packets)
DEFAULT_MAX_FRAMES = 36_000         # most video frames accepted (10 minutes at 60 fps)
DEFAULT_MAX_PIXELS = 3840 * 2160    # largest picture accepted (4K UHD)
DEFAULT_MAX_LIVE = 4                # live avatar connections at once
LIVE_QUEUE_FRAMES = 8               # frames waiting for a slow live client before the oldest are dropped
DEFAULT_KEEP_DAYS = 7.0             # finished jobs (and their files) older than this are removed at start; 0 keeps all
MAX_ATTEMPTS = 2                    # a job interrupted by a server stop this many times fails instead of re-queueing
TOKEN_FILE = "token"                # in the data folder: the generated bearer token, readable by its owner only
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def default_data_dir() -> str:
    """Jobs, uploads and results: ``$MUSETALK_SERVER_DIR`` or ``~/.cache/musetalk_enhanced/server``."""
    return os.environ.get("MUSETALK_SERVER_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                  "musetalk_enhanced", "server")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Optional[str] = None              # None: the one in the data folder (made at the first start)
    no_token: bool = False                   # loopback only: no token at all (scripted local use)
    allowed_hosts: Tuple[str, ...] = ()      # Host names besides the bound address and loopback's
    data_dir: str = field(default_factory=default_data_dir)
    media_dir: Optional[str] = None          # server-side inputs may be named by path only inside this folder
    devices: Tuple[str, ...] = ("auto",)     # one worker per device
    max_queue: int = DEFAULT_MAX_QUEUE
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_seconds: float = DEFAULT_MAX_SECONDS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_live: int = DEFAULT_MAX_LIVE
    auto_download: bool = MachineSettings.auto_download
    keep_days: float = DEFAULT_KEEP_DAYS
    keep_inputs: bool = False                # keep the uploads of finished jobs (default: removed when a job ends)

    def check(self) -> None:
        """Refuse settings that would expose the server or cannot work, naming the flag and the fix."""
        if self.no_token and not is_loopback(self.host):
            raise ValueError(f"--no-token with --host {self.host}: the server would be open to other machines; "
                             "leave out --no-token (a token is made and printed at start) or keep --host 127.0.0.1.")
        if self.no_token and self.token:
            raise ValueError("--token and --no-token: choose one.")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("--token must be at least 8 characters long.")
        if self.media_dir is not None and not os.path.isdir(self.media_dir):
            raise ValueError(f"--media-dir {self.media_dir} is not a folder; create it or leave the flag out.")
        if self.keep_days < 0:
            raise ValueError("--keep-days must be 0 (keep every finished job) or positive.")
        for name in ("max_queue", "max_upload_mb", "max_seconds", "max_frames", "max_pixels", "max_live"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive.")

    @property
    def jobs_dir(self) -> str:
        return os.path.join(self.data_dir, "jobs")

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "jobs.sqlite")

    @property
    def token_path(self) -> str:
        return os.path.join(self.data_dir, TOKEN_FILE)

    def host_names(self) -> Tuple[str, ...]:
        """The names a request's ``Host`` may carry: loopback's, the bound address unless it is a wildcard, and
        every ``--allowed-host`` (DNS rebinding: a page on another name cannot reach the server)."""
        bound = () if self.host in ("0.0.0.0", "::", "") else (self.host.lower(),)
        return tuple(dict.fromkeys(LOOPBACK_NAMES + bound + tuple(h.lower() for h in self.allowed_hosts)))


# Where a running server keeps its state on the aiohttp application (app[CONFIG], ...), read by the routes and the
# live socket.
CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", object)          # jobs.JobStore
WORKERS = web.AppKey("workers", list)        # worker.Worker, one per device
WAKE = web.AppKey("wake", threading.Event)   # set when a job is queued
LIVE = web.AppKey("live", dict)              # live sessions by id
