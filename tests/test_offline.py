"""Offline in seconds (models/download.py): with the network unreachable (a patched resolver, or a closed loopback
port; never real DNS) the first command answers within seconds with one message that lists every missing file, with
no retry lines and no repeated lines; a download that did start is retried; the network is tried again later."""
import http.server
import os
import socket
import threading
import time

import pytest

import mediakit as mk
from musetalk_enhanced.models import download, registry

HUB_KEYS = ["musetalk.unet", "sd_vae.weights", "whisper_tiny.weights"]


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Downloads allowed, an empty models folder, a fresh network state."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("MUSETALK_MODELS_DIR", str(tmp_path / "models"))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    registry.set_folder_resolver(None)
    download.forget_offline()
    yield tmp_path
    download.forget_offline()


@pytest.fixture
def no_dns(monkeypatch):
    """Every name lookup fails as it does on a machine without a network (the loopback address still resolves);
    counts the failed lookups."""
    calls = []
    real = socket.getaddrinfo

    def fail(host, *args, **kwargs):
        if host == "127.0.0.1":
            return real(host, *args, **kwargs)
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    return calls


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_the_first_command_answers_offline_in_seconds(online, no_dns, monkeypatch, tmp_path, capsys):
    """The dub command with auto_download on and no weights: one message naming every missing file, the reason,
    and where to put them, in seconds; one lookup in all."""
    from musetalk_enhanced import cli

    video = mk.write_video(str(tmp_path / "in.mp4"), mk.edited_clip((128, 128), (("astronaut", 3),)), 25)
    voice = mk.write_wav(str(tmp_path / "v.wav"), mk.tone(200, 0.2, 16000), 16000)
    started = time.monotonic()
    rc = cli.main(["--video", video, "--audio", voice, "--out", str(tmp_path / "out.mp4")])
    seconds = time.monotonic() - started
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc != 0 and seconds < 10, (rc, seconds)
    assert text.count("Missing model weights") == 1
    assert "no network, nothing was downloaded: cannot reach huggingface.co:443 (Name or service not known)" in text
    needed = ["musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/diffusion_pytorch_model.safetensors",
              "whisper/model.safetensors"]                        # (MTCNN's come with facenet-pytorch here)
    for relpath in needed:
        assert os.path.join(str(online / "models"), "musetalk", relpath) in text, relpath
    assert "Retrying" not in text and "LocalEntryNotFoundError" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), "a line was printed twice"
    assert len(no_dns) == 1                                   # the first failed lookup stopped every other try
    assert not os.path.exists(tmp_path / "out.mp4")


def test_a_closed_port_stops_every_download_at_once(online, no_dns, monkeypatch):
    """The hub at a loopback port nobody listens on: the connection is refused once, every file (the hub's and the
    direct downloads') is listed, and nothing more is tried until the pause is over."""
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(registry.MissingWeightsError) as err:
        registry.ensure(HUB_KEYS + ["mtcnn.pnet"], True, log=lambda _line: None)
    assert time.monotonic() - started < 5
    text = str(err.value)
    assert f"cannot reach 127.0.0.1:{port} (Connection refused)" in text and text.count("put it at:") == 4
    assert no_dns == []                                       # github was never looked up
    assert download.offline_reason() is not None
    # the pause ends: the network is tried again
    monkeypatch.setattr(download, "OFFLINE_FOR_S", 0.0)
    download.forget_offline()
    monkeypatch.setattr(download, "_offline", (time.monotonic() - 1, "old"))
    assert download.offline_reason() is None


class FlakyServer(http.server.BaseHTTPRequestHandler):
    """Breaks the first transfer after half the bytes, then serves the file."""

    body = bytes(range(256)) * 64
    requests = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        FlakyServer.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if FlakyServer.requests == 1:
            self.wfile.write(self.body[: len(self.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_a_download_that_started_is_retried(online, tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), FlakyServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/weights.bin"
        dest = download.fetch(url, str(tmp_path / "w" / "weights.bin"))
        assert open(dest, "rb").read() == FlakyServer.body and FlakyServer.requests == 2
        assert not os.path.exists(dest + ".part")
    finally:
        server.shutdown()
        server.server_close()
