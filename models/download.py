"""Downloading a weight file, and knowing fast when there is no network.

Before the first download from a host, one plain TCP connection to it (or to the proxy the environment names) is
tried with a short timeout (:data:`CONNECT_TIMEOUT_S`). When that fails (no DNS, connection refused, no route), the
host is marked unreachable for :data:`OFFLINE_FOR_S` seconds: every further download from any host in that time
fails at once with the same reason, so an offline machine gets one message listing every missing file within
seconds, instead of a retry storm per file. A download that did start keeps huggingface_hub's own retries; a direct
download is tried :data:`READ_ATTEMPTS` times when it breaks after connecting.

Every caller (the nodes, the commands, install.py, the server, batch and Ray actors) downloads through
models/registry.py ``ensure``, which comes here.
"""
from __future__ import annotations

import http.client
import os
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Optional, Tuple

CONNECT_TIMEOUT_S = 4.0          # a TCP connect to a download host
READ_TIMEOUT_S = 60.0            # a stalled transfer, once connected
OFFLINE_FOR_S = 60.0             # after a failed connect, no download is tried for this long
READ_ATTEMPTS = 3                # a direct download that breaks after connecting
HF_DEFAULT_ENDPOINT = "https://huggingface.co"

_lock = threading.Lock()
_offline: Optional[Tuple[float, str]] = None          # (until, reason)
_reached: set = set()                                 # hosts connected to in this process


class NoNetwork(ConnectionError):
    """The download host (or the proxy) could not be reached; nothing more is tried for a while."""


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def offline_reason() -> Optional[str]:
    """Why downloads are off right now (a connect failed less than :data:`OFFLINE_FOR_S` ago), or None."""
    with _lock:
        if _offline and _offline[0] > time.monotonic():
            return _offline[1]
        return None


def forget_offline() -> None:
    """Try the network again at the next download (tests; a server after its network came back)."""
    global _offline
    with _lock:
        _offline = None
        _reached.clear()


def _proxy_for(scheme: str) -> Optional[str]:
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _address(url: str) -> Tuple[str, int]:
    """The host and port a download of ``url`` first connects to (the proxy's, when one is set for it)."""
    parts = urllib.parse.urlsplit(url)
    proxy = _proxy_for(parts.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def check_reachable(url: str) -> None:
    """Raise :class:`NoNetwork` unless the host of ``url`` accepts a TCP connection (tried once per host per
    process; a failure switches downloads off for :data:`OFFLINE_FOR_S` seconds)."""
    global _offline
    reason = offline_reason()
    if reason:
        raise NoNetwork(reason)
    host, port = _address(url)
    if (host, port) in _reached:
        return
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        reason = f"cannot reach {host}:{port} ({detail})"
        with _lock:
            _offline = (time.monotonic() + OFFLINE_FOR_S, reason)
        raise NoNetwork(reason) from None
    _reached.add((host, port))


def fetch(url: str, dest: str) -> str:
    """``url`` into ``dest`` through a ``.part`` file (renamed when complete); retried when it breaks after
    connecting."""
    check_reachable(url)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".part"
    for attempt in range(READ_ATTEMPTS):
        try:
            with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as r, open(tmp, "wb") as out:
                shutil.copyfileobj(r, out)
                expected, got = r.headers.get("Content-Length"), out.tell()
            if expected is not None and int(expected) != got:     # a connection closed early reads as a short file
                raise ConnectionError(f"the transfer stopped after {got} of {expected} bytes")
            break
        except (OSError, http.client.HTTPException):
            if attempt + 1 == READ_ATTEMPTS:
                raise
            time.sleep(2 ** attempt)
    os.replace(tmp, dest)
    return dest


def fetch_from_hub(repo_id: str, filename: str, dest: str) -> str:
    """``filename`` of the Hugging Face repo ``repo_id`` (through huggingface_hub's cache) copied to ``dest``."""
    from huggingface_hub import hf_hub_download

    check_reachable(hf_endpoint())
    got = hf_hub_download(repo_id=repo_id, filename=filename, etag_timeout=CONNECT_TIMEOUT_S * 2)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.abspath(got) != os.path.abspath(dest):
        tmp = dest + ".part"
        shutil.copyfile(got, tmp)
        os.replace(tmp, dest)
    return dest
