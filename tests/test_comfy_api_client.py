"""clients/comfy_api_client.py: a workflow run through ComfyUI's own HTTP API (upload, /prompt, the /ws progress
messages, /history, /view) and the API-format exports in example_workflows/api/.

Most tests talk to a tiny fake ComfyUI on 127.0.0.1 (http.server plus a handwritten websocket endpoint that plays a
scripted run); every wait is bounded. The last tests start the REAL ComfyUI server headless with this pack, when a
checkout from ../shared/tools/comfy_real_setup.sh is on the machine (skipped otherwise, as tests/test_comfy_real.py
is); the long one, a whole example with full-size random weights, needs MUSETALK_TEST_REAL_WORKFLOWS=1."""
import base64
import email.parser
import email.policy
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import comfy_api_client as cc
import comfyharness as ch
import mediakit as mk
import workflow_api
from conftest import ROOT, import_pack

API_DIR = os.path.join(ROOT, "example_workflows", "api")
BASIC = os.path.join(API_DIR, "musetalk_basic.json")
WAIT = 10  # seconds: the longest any fake-server step may take
OUTPUTS = {"9": {"images": [{"filename": "basic_00001.mp4", "subfolder": "MuseTalk", "type": "output"}],
                 "animated": [True]},
           "5": {"images": [{"filename": "preview_0001.png", "subfolder": "", "type": "temp"}]},
           "8": {"text": ["MuseTalk v1.5 on 3 frames"]}}
FILES = {("output", "MuseTalk", "basic_00001.mp4"): b"the lip-synced mp4",
         ("temp", "", "preview_0001.png"): b"a preview png"}


# ---- a fake ComfyUI ------------------------------------------------------------------------------------------------
def server_frame(opcode, payload, fin=True):
    """A server frame (unmasked), with the 16- or 64-bit length forms when needed."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def read_client_frame(rfile):
    """(opcode, payload) of a client frame; clients must mask."""
    b0, b1 = rfile.read(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4)
    data = rfile.read(n)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def text(kind, **data):
    return server_frame(1, json.dumps({"type": kind, "data": data}).encode())


class FakeComfy:
    """The routes the client uses. ``scenario``: "success" | "invalid" (/prompt answers 400 with node errors) |
    "error" (execution_error) | "interrupted" | "quiet" (the socket closes without the end; /history tells)."""

    def __init__(self, scenario="success", taken_inputs=()):
        self.scenario = scenario
        self.taken_inputs = set(taken_inputs)  # names already in the input folder (with other content)
        self.uploads, self.prompts, self.interrupts, self.pongs, self.ws_clients = [], [], [], [], []
        self.history = {}
        self.queued = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.queued.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(WAIT)

    def handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def body(self):
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                if url.path == "/ws":
                    return fake.play(self, query.get("clientId", ""))
                if url.path == "/system_stats":
                    return self.reply(200, {"system": {"comfyui_version": "0.3.64"}, "devices": []})
                if url.path.startswith("/history/"):
                    pid = url.path.rsplit("/", 1)[1]
                    return self.reply(200, {pid: fake.history[pid]} if pid in fake.history else {})
                if url.path == "/view":
                    key = (query.get("type"), query.get("subfolder"), query.get("filename"))
                    if key in FILES:
                        return self.reply(200, FILES[key], "video/mp4")
                    return self.reply(404, b"", "text/plain")
                self.reply(404, b"", "text/plain")

            def do_POST(self):
                if self.path == "/upload/image":
                    return self.reply(200, fake.upload(self.headers["Content-Type"], self.body()))
                if self.path == "/prompt":
                    status, reply = fake.prompt(json.loads(self.body()))
                    return self.reply(status, reply)
                if self.path == "/interrupt":
                    fake.interrupts.append(json.loads(self.body() or b"{}"))
                    return self.reply(200, b"", "text/plain")
                self.reply(404, b"", "text/plain")

        return Handler

    def upload(self, content_type, body):
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields, files = {}, {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                files[name] = (part.get_filename(), part.get_payload(decode=True))
            else:
                fields[name] = part.get_content().strip()
        self.uploads.append((fields, files))
        filename = files["image"][0]
        if filename in self.taken_inputs and fields.get("overwrite") != "true":
            stem, ext = os.path.splitext(filename)
            filename = f"{stem} (1){ext}"
        return {"name": filename, "subfolder": fields.get("subfolder", ""), "type": fields.get("type", "input")}

    def prompt(self, body):
        self.prompts.append(body)
        if self.scenario == "invalid":
            return 400, {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed "
                                   "validation", "details": "", "extra_info": {}},
                         "node_errors": {"9": {"errors": [{"type": "value_bigger_than_max", "message": "Value 999 "
                                                           "bigger than max of 51", "details": "crf",
                                                           "extra_info": {"input_name": "crf"}}],
                                               "dependent_outputs": ["9"], "class_type": "MuseTalkMuxVideo"}}}
        self.prompt_id = "prompt-1"
        self.queued.set()
        return 200, {"prompt_id": self.prompt_id, "number": 0, "node_errors": {}}

    def play(self, handler, client_id):
        """The websocket: handshake, then a run as ComfyUI reports it, with the awkward parts of the protocol (a
        binary preview, a ping, a fragmented message, another prompt's message, 64-bit and 16-bit lengths)."""
        self.ws_clients.append(client_id)
        handler.connection.settimeout(WAIT)
        key = handler.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + cc.WS_GUID).encode()).digest()).decode()
        handler.send_response(101)
        for name, value in (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)):
            handler.send_header(name, value)
        handler.end_headers()
        out = handler.wfile
        out.write(text("status", status={"exec_info": {"queue_remaining": 0}}, sid=client_id))
        if not self.queued.wait(WAIT) or not self.prompts:
            return
        pid = self.prompt_id
        if self.scenario == "quiet":
            self.finish(pid, "success")
            out.write(server_frame(8, struct.pack("!H", 1001)))
            return
        out.write(text("execution_start", prompt_id=pid) + text("execution_cached", nodes=["6"], prompt_id=pid))
        out.write(text("executing", node="2", display_node="2", prompt_id=pid))
        out.write(text("progress", value=1, max=3, node="8", prompt_id=pid))
        out.write(server_frame(2, struct.pack(">I", 1) + b"\x89PNG" + bytes(70000)))  # preview, 16-bit length
        out.write(server_frame(9, b"are you there"))
        self.pongs.append(read_client_frame(handler.rfile))
        out.write(text("executing", node="4", prompt_id="someone-else"))
        message = json.dumps({"type": "progress", "data": {"value": 3, "max": 3, "node": "8", "prompt_id": pid}})
        out.write(server_frame(1, message[:20].encode(), fin=False) + server_frame(0, message[20:].encode()))
        out.write(server_frame(1, json.dumps({"type": "executed", "data": {
            "node": "9", "output": OUTPUTS["9"], "prompt_id": pid, "padding": "x" * 70000}}).encode()))
        self.end(out, pid)
        self.closing = read_client_frame(handler.rfile)

    def end(self, out, pid):
        if self.scenario == "error":
            out.write(text("execution_error", prompt_id=pid, node_id="8", node_type="MuseTalkBatchedLipSync",
                           exception_type="RuntimeError", exception_message="no face in frame 0",
                           traceback=["Traceback (most recent call last):\n", "RuntimeError: no face in frame 0\n"],
                           executed=["2", "3"], current_inputs={}, current_outputs=[]))
            self.finish(pid, "error")
        elif self.scenario == "interrupted":
            out.write(text("execution_interrupted", prompt_id=pid, node_id="8", node_type="MuseTalkBatchedLipSync",
                           executed=[]))
        else:
            out.write(text("execution_success", prompt_id=pid))
            threading.Timer(0.3, self.finish, (pid, "success")).start()  # the server files it just after
        out.write(text("executing", node=None, prompt_id=pid) + server_frame(8, struct.pack("!H", 1000)))

    def finish(self, pid, status):
        messages = [["execution_start", {"prompt_id": pid}]]
        if status == "error":
            messages.append(["execution_error", {"prompt_id": pid, "node_id": "8", "node_type": "X",
                                                 "exception_message": "boom", "exception_type": "RuntimeError"}])
        self.history[pid] = {"prompt": [0, pid, {}, {}, ["9"]], "outputs": OUTPUTS,
                             "status": {"status_str": status, "completed": status == "success",
                                        "messages": messages}}


@pytest.fixture
def media(tmp_path):
    video, audio = tmp_path / "clip.mp4", tmp_path / "voice.wav"
    video.write_bytes(b"video bytes " * 1000)
    audio.write_bytes(b"voice bytes")
    return str(video), str(audio)


def run_cli(fake, media, out_dir, *extra):
    video, audio = media
    return cc.main(["--server", fake.url, "--workflow", BASIC, "--video", video, "--audio", audio,
                    "--out-dir", str(out_dir), "--timeout", str(WAIT), *extra])


# ---- the whole run against the fake ----------------------------------------------------------------------------------
def test_a_run_uploads_sets_queues_follows_and_downloads(tmp_path, media, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "basic_00001.mp4").write_bytes(b"an earlier result")
    with FakeComfy(taken_inputs={"voice.wav"}) as fake:
        rc = run_cli(fake, media, out_dir, "--set", "2.frame_load_cap=12", "--set", "MuseTalkLoadAudio.duration=0.5")
    err = capsys.readouterr()
    assert rc == 0, err.err
    # the upload form ComfyUI's /upload/image reads
    (fields, files), (fields2, files2) = fake.uploads
    assert fields == {"type": "input", "subfolder": "", "overwrite": "false"}
    assert files["image"] == ("clip.mp4", b"video bytes " * 1000) and files2["image"][0] == "voice.wav"
    # the prompt: client id of the websocket, uploaded names on the loaders (the renamed one too), the overrides
    body = fake.prompts[0]
    assert body["client_id"] == fake.ws_clients[0]
    inputs = {nid: n["inputs"] for nid, n in body["prompt"].items()}
    assert inputs["2"]["video"] == "clip.mp4" and inputs["3"]["audio"] == "voice (1).wav"
    assert inputs["2"]["frame_load_cap"] == 12 and inputs["3"]["duration"] == 0.5
    assert inputs["8"]["faces"] == ["4", 0]
    # the ping was answered with its payload; the close was answered
    assert fake.pongs == [(cc.OP_PONG, b"are you there")]
    assert fake.closing[0] == cc.OP_CLOSE
    # progress as printed: nodes by id and class; nothing of the other prompt
    assert "running node 2 (MuseTalkLoadVideo)" in err.err
    assert "node 8 (MuseTalkBatchedLipSync): 3/3" in err.err and "node 4" not in err.err
    assert "cached (not run again): 6" in err.err and "finished" in err.err
    # the output, next to the earlier file (never overwritten); the temp preview is not an output
    assert (out_dir / "basic_00001.mp4").read_bytes() == b"an earlier result"
    assert (out_dir / "basic_00001_1.mp4").read_bytes() == FILES[("output", "MuseTalk", "basic_00001.mp4")]
    assert sorted(os.listdir(out_dir)) == ["basic_00001.mp4", "basic_00001_1.mp4"]
    assert err.out.split() == [str(out_dir / "basic_00001_1.mp4")]


def test_previews_on_request_and_history_decides_when_the_socket_goes_quiet(tmp_path, media):
    with FakeComfy("quiet") as fake:
        assert run_cli(fake, media, tmp_path / "out", "--previews") == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["basic_00001.mp4", "preview_0001.png"]


def test_a_refused_workflow_names_the_node_and_its_error(tmp_path, media, capsys):
    with FakeComfy("invalid") as fake:
        rc = run_cli(fake, media, tmp_path / "out", "--set", "9.crf=999")
        assert fake.prompts[0]["prompt"]["9"]["inputs"]["crf"] == 999
    err = capsys.readouterr().err
    assert rc == 1
    assert "ComfyUI refused the workflow: Prompt outputs failed validation" in err
    assert "node 9 (MuseTalkMuxVideo): Value 999 bigger than max of 51: crf" in err
    assert not (tmp_path / "out").exists()


def test_an_execution_error_names_the_node_and_the_exception(tmp_path, media):
    with FakeComfy("error") as fake:
        server = cc.server_url(fake.url)
        workflow = cc.prepare_workflow(server, BASIC, *media)
        with pytest.raises(cc.ExecutionFailed) as e:
            cc.run_prompt(server, workflow, str(tmp_path / "out"), timeout=WAIT)
    assert "node 8 (MuseTalkBatchedLipSync) failed: RuntimeError: no face in frame 0" in str(e.value)
    assert e.value.data["executed"] == ["2", "3"]


def test_an_interrupted_run_says_so(tmp_path, media):
    with FakeComfy("interrupted") as fake:
        workflow = cc.prepare_workflow(fake.url, BASIC, *media)
        with pytest.raises(cc.ExecutionInterrupted, match="interrupted at node 8"):
            cc.run_prompt(fake.url, workflow, str(tmp_path / "out"), timeout=WAIT)


def test_an_unreachable_server_names_the_url_and_how_to_start_comfyui(tmp_path, media, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    t0 = time.monotonic()
    rc = cc.main(["--server", url, "--workflow", BASIC, "--video", media[0], "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < WAIT
    assert f"ComfyUI is not reachable at {url}" in err and "python main.py --listen" in err


def test_missing_files_and_wrong_overrides_stop_before_anything_is_uploaded(tmp_path, media, capsys):
    with FakeComfy() as fake:
        assert cc.main(["--server", fake.url, "--workflow", BASIC, "--video", str(tmp_path / "nope.mp4")]) == 3
        assert "input file not found" in capsys.readouterr().err
        assert cc.main(["--server", fake.url, "--workflow", str(tmp_path / "nope.json")]) == 3
        assert "workflow file not found" in capsys.readouterr().err
        assert run_cli(fake, media, tmp_path, "--set", "42.crf=1") == 3
        assert "no node '42' in the workflow; its nodes: 2 (MuseTalkLoadVideo)" in capsys.readouterr().err
        two_faces = os.path.join(API_DIR, "multi_face_speaker_select.json")
        assert cc.main(["--server", fake.url, "--workflow", two_faces, "--audio", media[1]]) == 3
        assert "no audio loader node" in capsys.readouterr().err
        assert fake.uploads == [] and fake.prompts == []


# ---- the websocket client on its own -------------------------------------------------------------------------------
def test_websocket_frames_survive_timeouts_fragments_and_control_frames():
    a, b = socket.socketpair()
    ws = cc.WebSocket(a)
    try:
        big = json.dumps({"type": "x", "data": "y" * 70000}).encode()  # 64-bit length
        wire = server_frame(1, b"hel", fin=False) + server_frame(9, b"p") + server_frame(0, b"lo") + \
            server_frame(2, b"\x00\x00\x00\x01png") + server_frame(1, big)
        b.sendall(wire[:4])  # a partial frame, then the socket goes quiet
        with pytest.raises(socket.timeout):
            ws.recv(timeout=0.2)
        b.sendall(wire[4:])
        assert ws.recv(timeout=WAIT) == ("text", "hello")
        assert ws.recv(timeout=WAIT) == ("binary", b"\x00\x00\x00\x01png")
        assert ws.recv(timeout=WAIT) == ("text", big.decode())
        b.settimeout(WAIT)
        pong = b.recv(64)
        assert pong[0] == 0x80 | cc.OP_PONG and pong[1] == 0x80 | 1
        assert bytes([pong[6] ^ pong[2]]) == b"p"  # masked with the 4-byte key
        b.sendall(server_frame(8, struct.pack("!H", 1001) + b"bye"))
        with pytest.raises(cc.WebSocketClosed, match="code 1001"):
            ws.recv(timeout=WAIT)
        assert b.recv(64)[:1] == bytes([0x80 | cc.OP_CLOSE])
    finally:
        ws.close()
        b.close()


def test_client_frames_are_masked_and_sized():
    for n in (0, 125, 126, 65535, 65536):
        frame = cc.build_frame(cc.OP_TEXT, b"a" * n)
        parsed = cc.parse_frame(bytearray(frame))
        assert parsed == (True, cc.OP_TEXT, b"a" * n, len(frame))
        assert frame[1] & 0x80
    assert cc.parse_frame(bytearray(cc.build_frame(cc.OP_TEXT, b"abc")[:-1])) is None


# ---- the API-format exports ----------------------------------------------------------------------------------------
def object_info_of_builder_nodes():
    """/object_info as ComfyUI would serve it for the nodes of the examples: the pack's INPUT_TYPES, the builder's
    tables of the core and VideoHelperSuite nodes."""
    from workflow_builder import CORE, CORE_OPTIONS, VHS_NODES

    pack = import_pack()
    info = {}
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        info[name] = {"input": {k: {n: list(v) for n, v in spec.get(k, {}).items()} for k in ("required", "optional")},
                      "input_order": {k: list(spec.get(k, {})) for k in ("required", "optional")},
                      "display_name": pack.NODE_DISPLAY_NAME_MAPPINGS.get(name, name)}
    for name, (inputs, _) in {**CORE, **VHS_NODES}.items():
        opts = CORE_OPTIONS.get(name, {})
        required = {n: [(opts.get(n, {}).get("choices") or ["x"]) if t == "COMBO" else t, opts.get(n, {})]
                    for n, t, _ in inputs}
        info[name] = {"input": {"required": required}, "input_order": {"required": list(required)},
                      "display_name": workflow_api.CORE_TITLES.get(name) or workflow_api.VHS_TITLES.get(name)}
    return info


@pytest.mark.parametrize("slug", list(__import__("make_example_media").TEMPLATES))
def test_api_exports_match_their_ui_workflows(slug):
    """Each example_workflows/api/<slug>.json is its UI file converted: by the builder's layout (as written) and by
    the client's /object_info conversion (as a UI file given to the client is run)."""
    import make_example_media as media

    with open(os.path.join(ROOT, "example_workflows", media.TEMPLATES[slug] + ".json"), encoding="utf-8") as f:
        ui = json.load(f)
    with open(os.path.join(API_DIR, slug + ".json"), encoding="utf-8") as f:
        shipped = json.load(f)
    pack = import_pack()
    assert workflow_api.to_api(ui, pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS) == shipped
    assert cc.ui_to_api(ui, object_info_of_builder_nodes()) == shipped
    assert cc.is_api_format(shipped) and not cc.is_api_format(ui)
    assert {n["class_type"] for n in shipped.values()}.isdisjoint({"MarkdownNote", "Note"})
    assert cc.media_targets(shipped, "video")


def test_a_ui_workflow_is_converted_with_the_servers_object_info(tmp_path, media):
    ui = os.path.join(ROOT, "example_workflows", "1. Lip-sync a video to a new voice.json")
    with pytest.raises(cc.WorkflowError, match="Export \\(API\\)"):
        cc.load_workflow(ui)  # no server to ask
    with FakeComfy() as fake:
        info = object_info_of_builder_nodes()
        fake.httpd.RequestHandlerClass.do_GET = wrap_object_info(fake.httpd.RequestHandlerClass.do_GET, info)
        with open(BASIC, encoding="utf-8") as f:
            assert cc.load_workflow(ui, fake.url) == json.load(f)


def wrap_object_info(do_get, info):
    def handler(self):
        if self.path == "/object_info":
            return self.reply(200, info)
        return do_get(self)
    return handler


def test_regenerating_keeps_the_ui_files_and_the_exports(tmp_path):
    """scripts/make_workflows.py writes the same bytes again: the UI files as before, the API files as shipped."""
    out = tmp_path / "example_workflows"
    shutil.copytree(os.path.join(ROOT, "example_workflows"), out, ignore=shutil.ignore_patterns("api"))
    written = workflow_api.write_api_exports(str(out), import_pack())
    for path in written:
        with open(path, "rb") as f, open(os.path.join(API_DIR, os.path.basename(path)), "rb") as g:
            assert f.read() == g.read(), os.path.basename(path)
    assert sorted(os.listdir(API_DIR)) == sorted(os.path.basename(p) for p in written)


# ---- the REAL ComfyUI ------------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def real_comfy(tmp_path_factory):
    """The real ComfyUI server, headless on CPU, loading only this pack (its own base directory: custom_nodes with
    the pack linked in, input, output, user), the harness's shims and network guard, and with
    MUSETALK_TEST_REAL_WORKFLOWS=1 the random test weights (made once: minutes). -> (url, base directory)."""
    base = tmp_path_factory.mktemp("comfy_api")
    os.makedirs(base / "custom_nodes")
    os.symlink(ROOT, base / "custom_nodes" / "musetalk_enhanced")
    weights = ch.test_weights() if ch.REAL else str(base / "models")
    os.makedirs(weights, exist_ok=True)
    (base / "extra_model_paths.yaml").write_text("test_weights:\n    base_path: " + weights + "\n" + "".join(
        f"    {d}: {d}/\n" for d in sorted(os.listdir(weights)) if os.path.isdir(os.path.join(weights, d))))
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([ch.shims_overlay(str(base / "shims")),
                                           os.path.join(ch.TOOLS, "comfy_real_support", "netguard")]),
               PYTHONPYCACHEPREFIX=os.path.join(str(base), "pycache"))
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen([os.path.join(ch.COMFY_HOME, "venv", "bin", "python"), "main.py", "--cpu", "--listen",
                             "127.0.0.1", "--port", str(port), "--disable-auto-launch", "--base-directory", str(base),
                             "--extra-model-paths-config", str(base / "extra_model_paths.yaml")],
                            cwd=ch.COMFY_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, proc, base / "server.log")
        yield url, base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)
        log.close()


def wait_for_server(url, proc, log_path, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("ComfyUI exited:\n" + log_path.read_text(errors="replace")[-4000:])
        try:
            info = cc.http_json(url, "GET", "/object_info/MuseTalkLoadVideo", timeout=5)
            assert info, "the pack did not load:\n" + log_path.read_text(errors="replace")[-4000:]
            return
        except cc.ServerUnreachable:
            time.sleep(1)
    pytest.fail(f"ComfyUI did not answer within {timeout} s:\n" + log_path.read_text(errors="replace")[-4000:])


def small_clip(tmp_path, frames=12):
    video = str(tmp_path / "face_clip.mp4")
    mk.write_video(video, mk.animate(mk.photo("astronaut", (160, 160)), frames), 25, crf=18,
                   audio=mk.tone(300, frames / 25, 44100, 2), audio_rate=44100)
    audio = mk.write_wav(str(tmp_path / "new_voice.wav"), mk.tone(440, 1.0, 16000), 16000)
    return video, audio


def load_mux_workflow(path):
    """Load Video + Load Audio -> Mux Video, in API format (built like the examples, converted like them)."""
    from workflow_builder import Workflow

    w = Workflow(import_pack().NODE_CLASS_MAPPINGS)
    lv = w.node("MuseTalkLoadVideo", {"video": "placeholder.mp4"})
    la = w.node("MuseTalkLoadAudio", {"audio": "placeholder.wav"})
    mx = w.node("MuseTalkMuxVideo", {"filename_prefix": "api_client/load_mux"})
    w.link(lv, "frames", mx, "frames")
    w.link(la, "audio", mx, "audio")
    pack = import_pack()
    workflow_api.save_api(workflow_api.to_api(w.to_json(), pack.NODE_CLASS_MAPPINGS,
                                              pack.NODE_DISPLAY_NAME_MAPPINGS), path)
    return path


def assert_video(path, frames):
    from musetalk_enhanced.pipeline.media.video import probe_video

    info = probe_video(path)
    assert info.frame_count == frames and info.has_audio, info


@ch.needs_comfy
def test_real_comfyui_runs_an_api_workflow_with_new_media(real_comfy, tmp_path, capsys):
    url, base = real_comfy
    video, audio = small_clip(tmp_path)
    out_dir = tmp_path / "out"
    t0 = time.monotonic()
    files = cc.run_workflow(url, load_mux_workflow(str(tmp_path / "load_mux.json")), video, audio, str(out_dir),
                            timeout=600)
    err = capsys.readouterr().err
    assert [os.path.basename(f) for f in files] == ["load_mux_00001.mp4"], err
    assert_video(files[0], 12)
    assert "running node 3 (MuseTalkMuxVideo)" in err and "finished" in err
    assert os.path.isfile(base / "input" / "new_voice.wav")
    print(f"real ComfyUI load+mux run: {time.monotonic() - t0:.1f} s")


@ch.needs_comfy
def test_real_comfyui_reports_validation_and_execution_errors(real_comfy, tmp_path):
    url, _ = real_comfy
    video, audio = small_clip(tmp_path)
    workflow = load_mux_workflow(str(tmp_path / "load_mux.json"))
    with pytest.raises(cc.PromptRejected) as e:
        cc.run_prompt(url, cc.prepare_workflow(url, workflow, video, audio, ["3.crf=999"]), str(tmp_path))
    assert "node 3 (MuseTalkMuxVideo): Value 999 bigger than max of 51: crf" in str(e.value)
    not_audio = tmp_path / "not_audio.wav"
    not_audio.write_bytes(b"this is no audio file")
    with pytest.raises(cc.ExecutionFailed) as e:
        cc.run_prompt(url, cc.prepare_workflow(url, workflow, video, str(not_audio)), str(tmp_path), timeout=300)
    assert "node 2 (MuseTalkLoadAudio) failed" in str(e.value)


@ch.needs_comfy
def test_real_comfyui_object_info_converts_the_ui_examples_to_the_shipped_exports(real_comfy):
    """The client's UI -> API conversion with the real /object_info gives each shipped export (the
    VideoHelperSuite example needs that pack on the server and is left out)."""
    url, _ = real_comfy
    info = cc.http_json(url, "GET", "/object_info")
    import make_example_media as media

    for slug, title in media.TEMPLATES.items():
        if slug == "vhs_lipsync":
            continue
        with open(os.path.join(ROOT, "example_workflows", title + ".json"), encoding="utf-8") as f:
            converted = cc.ui_to_api(json.load(f), info)
        with open(os.path.join(API_DIR, slug + ".json"), encoding="utf-8") as f:
            assert converted == json.load(f), slug


@pytest.mark.skipif(not ch.REAL, reason="set MUSETALK_TEST_REAL_WORKFLOWS=1 to run an example to the end in the real "
                                        "ComfyUI (full-size random weights: minutes to make the first time)")
@ch.needs_comfy
def test_real_comfyui_runs_the_basic_example_from_the_command_line(real_comfy, tmp_path):
    """example_workflows/api/musetalk_basic.json with a new clip and voice, shortened to 12 frames: the CLI
    uploads, queues, follows and downloads an mp4 of 12 frames with the voice."""
    url, _ = real_comfy
    video, audio = small_clip(tmp_path, frames=20)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "clients", "comfy_api_client.py"), "--server", url,
                           "--workflow", BASIC, "--video", video, "--audio", audio, "--out-dir",
                           str(tmp_path / "out"), "--set", "MuseTalkLoadVideo.frame_load_cap=12",
                           "--set", "MuseTalkBatchedLipSync.length_policy=follow_video", "--timeout", "2400"],
                          capture_output=True, text=True, timeout=2700)
    assert proc.returncode == 0, proc.stderr[-6000:]
    files = proc.stdout.split("\n")[:-1]
    assert [os.path.basename(f) for f in files] == ["basic_00001.mp4"], proc.stderr[-3000:]
    assert_video(files[0], 12)
    assert "running node 8 (MuseTalkBatchedLipSync)" in proc.stderr
    print(f"real ComfyUI basic example: {time.monotonic() - t0:.1f} s")
