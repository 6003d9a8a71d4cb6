"""A dubbing server in a subprocess on loopback (``python <pack> serve --port 0``), and small HTTP helpers, for the
server's tests. Every wait is bounded.

A server started without ``--token`` makes its own and prints the page's URL with it; the helpers then send it the
way the page does after opening that URL (``Authorization: Bearer``), unless a call gives its own
``Authorization`` header (``""``: none at all)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from typing import Dict, Optional, Tuple

from conftest import ROOT

TOKENS: Dict[str, str] = {}      # server URL -> the token it printed


class Server:
    """``python <pack> serve`` with a data folder, the test weights and an avatars folder."""

    def __init__(self, data_dir: str, models_dir: str, avatars_dir: str, *extra: str, env: Optional[Dict] = None):
        self.data_dir, self.models_dir, self.avatars_dir, self.extra = data_dir, models_dir, avatars_dir, extra
        self.env = dict(os.environ, MUSETALK_AVATARS_DIR=avatars_dir, OMP_NUM_THREADS="1", **(env or {}))
        self.proc = None
        self.url = ""
        self.token = ""
        self.log_path = os.path.join(data_dir, f"server-{uuid.uuid4().hex[:6]}.log")

    def start(self, timeout: float = 120) -> "Server":
        os.makedirs(self.data_dir, exist_ok=True)
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, ROOT, "serve", "--port", "0", "--data-dir", self.data_dir, "--models-dir",
               self.models_dir, "--no-download", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"serving on (http://[^/ ]+)", line or "")
            if m:
                self.url = m.group(1)
                if "--no-token" not in self.extra:
                    printed = re.search(r"\?token=(\S+)", self.proc.stdout.readline() or "")
                    self.token = printed.group(1) if printed else ""
                    if "--token" not in self.extra:
                        TOKENS[self.url] = self.token
                return self
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"server did not start: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return open(self.log_path).read()[-4000:]

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        TOKENS.pop(self.url, None)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def auth_headers(url: str, headers: Optional[Dict] = None) -> Dict:
    """``headers`` plus the bearer token of the server ``url`` belongs to (an explicit ``Authorization`` wins; an
    empty one sends none)."""
    h = dict(headers or {})
    if "Authorization" not in h:
        token = next((t for base, t in TOKENS.items() if url.startswith(base)), "")
        if token:
            h["Authorization"] = f"Bearer {token}"
    if not h.get("Authorization"):
        h.pop("Authorization", None)
    return h


def request(method: str, url: str, body: Optional[bytes] = None, headers: Optional[Dict] = None,
            timeout: float = 60) -> Tuple[int, Dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=auth_headers(url, headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def call(method: str, url: str, payload=None, headers: Optional[Dict] = None, timeout: float = 60):
    """JSON in, (status, JSON out)."""
    h = dict(headers or {})
    body = None
    if payload is not None:
        body, h["Content-Type"] = json.dumps(payload).encode(), "application/json"
    status, _, data = request(method, url, body, h, timeout)
    return status, json.loads(data) if data else None


def multipart(fields: Dict) -> Tuple[bytes, str]:
    """``{name: str | (filename, bytes)}`` as a multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                       f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        else:
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(out) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def submit(url: str, fields: Dict, headers: Optional[Dict] = None, timeout: float = 60):
    body, ctype = multipart(fields)
    status, _, data = request("POST", url + "/v1/jobs", body, {"Content-Type": ctype, **(headers or {})}, timeout)
    return status, json.loads(data)


def wait_for(url: str, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 300,
             headers: Optional[Dict] = None) -> Dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, job = call("GET", f"{url}/v1/jobs/{job_id}", headers=headers)
        assert status == 200, job
        if job["state"] in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {job}")


def chromium_path() -> Optional[str]:
    import shutil

    return os.environ.get("MUSETALK_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium(*args: str):
    """Debian's Chromium driven by playwright (its own browsers are never downloaded); a browser that cannot start
    skips the test with the reason (the machine, not the page, is at fault)."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium_path(), args=list(args))
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {chromium_path()} did not start: {str(exc)[:300]}")
        try:
            yield browser
        finally:
            browser.close()
