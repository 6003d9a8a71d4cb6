#!/usr/bin/env python3
"""Run a workflow on a running ComfyUI through ComfyUI's own HTTP API. Python standard library only.

    python clients/comfy_api_client.py --server http://127.0.0.1:8188 \\
        --workflow example_workflows/api/musetalk_basic.json --video clip.mp4 --audio voice.wav --out-dir out/

The steps, each a function you can import (docs/comfyui_api.md shows them in Python):

1. ``check_server``: ``GET /system_stats`` answers (else: which URL, how to start ComfyUI).
2. ``load_workflow``: an API-format file ("Export (API)": ``{node id: {class_type, inputs}}``), or a UI-format one
   converted with the server's ``GET /object_info`` (the server runs only the API format).
3. ``upload_file``: ``POST /upload/image`` (multipart: ``image``, ``type``, ``subfolder``, ``overwrite``) puts the
   video and the voice into ComfyUI's input folder; ``set_media`` sets them on the loader nodes, ``apply_overrides``
   any ``NODE.input=value``.
4. ``WebSocket.connect`` to ``/ws?clientId=...``, then ``queue_prompt`` (``POST /prompt`` with that client id).
5. ``follow_progress``: ``execution_start``, ``executing``, ``progress``, ``executed``, then ``execution_success``,
   ``execution_error`` or ``execution_interrupted`` (binary preview frames are skipped).
6. ``fetch_history`` (``GET /history/{prompt_id}``) and ``download_outputs`` (``GET /view``): every output file into
   a folder, never overwriting a file there.

Exit status: 0 done, 1 the server refused or failed the workflow, 2 server not reachable, 3 bad workflow or input
file, 130 interrupted (the running prompt is interrupted on the server too).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Callable, Dict, Iterator, List, Optional, Tuple

# the file input of each loader node that reads a video / a voice (the uploaded file's name goes there)
VIDEO_INPUTS = {"MuseTalkLoadVideo": "video", "LoadVideo": "file", "VHS_LoadVideo": "video"}
AUDIO_INPUTS = {"MuseTalkLoadAudio": "audio", "LoadAudio": "audio", "VHS_LoadAudioUpload": "audio"}
START_HINT = ("Start it in the ComfyUI folder with `python main.py --listen 127.0.0.1 --port 8188` (add --cpu "
              "without a GPU), or pass the right address with --server.")


class ComfyError(Exception):
    """A failure to report to the user (its text says what happened and what to do)."""
    exit_code = 1


class ServerUnreachable(ComfyError):
    exit_code = 2


class WorkflowError(ComfyError):
    """The workflow file, an override or an input file is wrong (nothing was queued)."""
    exit_code = 3


class PromptRejected(ComfyError):
    """``POST /prompt`` refused the workflow (validation). ``node_errors``: the server's per-node errors."""

    def __init__(self, message: str, node_errors: dict):
        super().__init__(message)
        self.node_errors = node_errors


class ExecutionFailed(ComfyError):
    """A node raised while the workflow ran. ``data``: the ``execution_error`` message."""

    def __init__(self, message: str, data: dict):
        super().__init__(message)
        self.data = data


class ExecutionInterrupted(ComfyError):
    pass


# ---- HTTP ------------------------------------------------------------------------------------------------------------
def server_url(server: str) -> str:
    """``127.0.0.1:8188`` or ``http://host:port/`` -> ``http://host:port``."""
    server = server.strip().rstrip("/")
    return server if "://" in server else "http://" + server


def http_request(server: str, method: str, path: str, body=None, headers=None, timeout: float = 60):
    """The open response of ``method server+path``. Connection failures raise ServerUnreachable; HTTP error
    statuses raise urllib.error.HTTPError (the callers read its body)."""
    req = urllib.request.Request(server + path, data=body, method=method, headers=headers or {})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServerUnreachable(f"ComfyUI is not reachable at {server} ({reason}). {START_HINT}") from e


def http_json(server: str, method: str, path: str, payload=None, timeout: float = 60):
    body = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    with http_request(server, method, path, body, headers, timeout) as r:
        data = r.read()
    return json.loads(data) if data else None


def check_server(server: str, timeout: float = 10) -> dict:
    """``GET /system_stats``: the server's version and devices; raises ServerUnreachable with how to start it."""
    try:
        return http_json(server, "GET", "/system_stats", timeout=timeout)
    except urllib.error.HTTPError as e:
        raise ServerUnreachable(f"{server} answered HTTP {e.code} to /system_stats: is it ComfyUI? {START_HINT}")
    except ValueError as e:
        raise ServerUnreachable(f"{server} is not a ComfyUI server (/system_stats is not JSON: {e}). {START_HINT}")


# ---- websocket (RFC 6455 client: handshake, masked frames out, ping/pong, close, fragments) --------------------------
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE_BYTES = 256 << 20


class WebSocketClosed(ComfyError):
    pass


def ws_url(server: str, client_id: str) -> str:
    scheme = "wss" if server.startswith("https://") else "ws"
    return f"{scheme}://{server.split('://', 1)[1]}/ws?clientId={urllib.parse.quote(client_id)}"


def ws_accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def mask_bytes(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    n = len(data)
    repeated = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def parse_frame(buf: bytearray) -> Optional[Tuple[bool, int, bytes, int]]:
    """``(fin, opcode, payload, frame length)`` of the first complete frame in ``buf``; None while incomplete."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70:
        raise WebSocketClosed("websocket protocol error: reserved bits set (no extension was negotiated)")
    n, pos = b1 & 0x7F, 2
    if n in (126, 127):
        size = 2 if n == 126 else 8
        if len(buf) < 2 + size:
            return None
        n, pos = int.from_bytes(buf[2:2 + size], "big"), 2 + size
    if n > MAX_MESSAGE_BYTES:
        raise WebSocketClosed(f"websocket frame of {n} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    mask = None
    if b1 & 0x80:  # servers do not mask, but a masked frame is still readable
        if len(buf) < pos + 4:
            return None
        mask, pos = bytes(buf[pos:pos + 4]), pos + 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos:pos + n])
    return bool(b0 & 0x80), b0 & 0x0F, mask_bytes(payload, mask) if mask else payload, pos + n


def build_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame: masked with a fresh key, as RFC 6455 requires of clients."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + mask_bytes(payload, mask)


class WebSocket:
    """A minimal websocket client: ``recv()`` -> ``("text", str)`` or ``("binary", bytes)``; pings are answered,
    a close frame is answered and raises WebSocketClosed. A recv timeout (socket.timeout) loses nothing: partial
    frames stay buffered for the next call."""

    def __init__(self, sock: socket.socket, buffered: bytes = b""):
        self.sock = sock
        self.buf = bytearray(buffered)
        self.fragments: List[bytes] = []
        self.fragment_opcode = 0
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> "WebSocket":
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        try:
            sock = socket.create_connection((parts.hostname, port), timeout=timeout)
            if secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        except OSError as e:
            raise ServerUnreachable(f"cannot open the progress websocket {url} ({e}). {START_HINT}") from e
        key = base64.b64encode(os.urandom(16)).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head, rest = read_http_head(sock)
        status, headers = parse_http_head(head)
        if status != 101 or headers.get("sec-websocket-accept") != ws_accept_key(key):
            sock.close()
            raise ComfyError(f"{url} refused the websocket upgrade (HTTP {status}); is this ComfyUI?")
        return cls(sock, rest)

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(build_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self.send(OP_TEXT, text.encode())

    def recv(self, timeout: Optional[float] = None) -> Tuple[str, object]:
        self.sock.settimeout(timeout)
        while True:
            frame = parse_frame(self.buf)
            if frame is None:
                self._fill()
                continue
            fin, opcode, payload, size = frame
            del self.buf[:size]
            message = self._message(fin, opcode, payload)
            if message is not None:
                return message

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)  # socket.timeout propagates; the buffer keeps what came so far
        if not chunk:
            self.closed = True
            raise WebSocketClosed("the server closed the progress websocket")
        self.buf += chunk

    def _message(self, fin: bool, opcode: int, payload: bytes):
        """A complete message, or None after a control frame or a non-final fragment."""
        if opcode == OP_PING:
            self.send(OP_PONG, payload)
            return None
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self.closed:
                self.closed = True
                try:
                    self.send(OP_CLOSE, payload[:2])
                except OSError:
                    pass
            raise WebSocketClosed(f"the server closed the progress websocket (code {code})")
        if opcode in (OP_TEXT, OP_BINARY):
            self.fragment_opcode, self.fragments = opcode, [payload]
        elif opcode == OP_CONTINUATION and self.fragments:
            self.fragments.append(payload)
        else:
            raise WebSocketClosed(f"websocket protocol error: unexpected opcode {opcode}")
        if not fin:
            return None
        data, self.fragments = b"".join(self.fragments), []
        return ("text", data.decode("utf-8")) if self.fragment_opcode == OP_TEXT else ("binary", data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.send(OP_CLOSE, struct.pack("!H", 1000))
            except OSError:
                pass
        self.sock.close()


def read_http_head(sock: socket.socket) -> Tuple[bytes, bytes]:
    """The response head up to the blank line, and the bytes already read after it (the first frames)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > 65536:
            raise ComfyError("the server closed the connection during the websocket handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_http_head(head: bytes) -> Tuple[int, Dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


# ---- the workflow --------------------------------------------------------------------------------------------------
def is_api_format(workflow) -> bool:
    return isinstance(workflow, dict) and "nodes" not in workflow and bool(workflow) and all(
        isinstance(v, dict) and "class_type" in v for v in workflow.values())


def load_workflow(path: str, server: Optional[str] = None) -> dict:
    """The API-format workflow in ``path``. A UI-format file (as the page saves it) is converted with the server's
    /object_info; without a server it is refused with the way to export the API format."""
    if not os.path.isfile(path):
        raise WorkflowError(f"workflow file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            workflow = json.load(f)
    except (OSError, ValueError) as e:
        raise WorkflowError(f"cannot read the workflow {path}: {e}") from e
    if isinstance(workflow, dict) and is_api_format(workflow.get("prompt")):
        workflow = workflow["prompt"]  # a saved /prompt request body
    if is_api_format(workflow):
        return workflow
    if not (isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list)):
        raise WorkflowError(f"{path} is neither an API-format workflow ({{node id: {{class_type, inputs}}}}) nor a "
                            "UI workflow (with 'nodes')")
    if server is None:
        raise WorkflowError(f"{path} is a UI-format workflow; export it with Workflow > Export (API) in ComfyUI, "
                            "or use its API file in example_workflows/api/")
    return ui_to_api(workflow, http_json(server, "GET", "/object_info"))


def input_slots(spec: dict) -> List[Tuple[str, str]]:
    """``[(input name, "widget" | "control" | "socket")]`` in the page's widget order (/object_info input_order)."""
    declared = {**(spec.get("input") or {}).get("optional", {}), **(spec.get("input") or {}).get("required", {})}
    order = spec.get("input_order") or {k: list((spec.get("input") or {}).get(k, {})) for k in ("required", "optional")}
    slots = []
    for name in list(order.get("required", [])) + list(order.get("optional", [])):
        kind, opts = (declared[name] + [{}])[:2] if isinstance(declared.get(name), list) else (None, {})
        opts = opts if isinstance(opts, dict) else {}
        widget = (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")) and \
            not opts.get("forceInput")
        slots.append((name, "widget" if widget else "socket"))
        control = opts.get("control_after_generate", name in ("seed", "noise_seed")) if kind == "INT" else \
            opts.get("control_after_generate") if kind == "COMBO" or isinstance(kind, list) else False
        if widget and control:
            slots.append((name, "control"))
    return slots


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the page's Export (API) writes for a UI workflow: widget values by input name, links as
    ``[source id, slot]``; notes and muted nodes left out, reroutes followed. Bypassed nodes and subgraphs are
    refused (export those from the page)."""
    if (ui.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("the workflow uses subgraphs: export it with Workflow > Export (API) in ComfyUI")
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    links = {}
    for link in ui.get("links") or []:
        lid, src, slot = (link["id"], link["origin_id"], link["origin_slot"]) if isinstance(link, dict) else link[:3]
        links[lid] = (str(src), slot)
    prompt = {}
    for nid, node in nodes.items():
        ntype = node.get("type")
        if ntype in ("Note", "MarkdownNote", "Reroute", "PrimitiveNode") or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) == 4:
            raise WorkflowError(f"node {nid} ({ntype}) is bypassed: export the workflow with Export (API) instead")
        if ntype not in object_info:
            raise WorkflowError(f"node {nid}: node type {ntype!r} is not installed on the server (a missing or "
                                "failed custom node pack; see the server log)")
        inputs = node_widget_values(node, object_info[ntype])
        for entry in node.get("inputs") or []:
            source = resolve_link(entry.get("link"), links, nodes)
            if source is not None:
                inputs[(entry.get("widget") or {}).get("name") or entry["name"]] = source
        prompt[nid] = {"inputs": inputs, "class_type": ntype,
                       "_meta": {"title": node.get("title") or object_info[ntype].get("display_name") or ntype}}
    return prompt


def node_widget_values(node: dict, spec: dict) -> dict:
    values = node.get("widgets_values")
    if isinstance(values, dict):  # VideoHelperSuite saves its widgets by name
        return {k: v for k, v in values.items() if not isinstance(v, (dict, list))}
    slots = input_slots(spec)
    widgets = [s for s in slots if s[1] != "socket"]
    return {name: v for (name, kind), v in zip(widgets, values or []) if kind == "widget"}


def resolve_link(link_id, links: dict, nodes: dict, depth: int = 0):
    """``[source id, slot]`` of a link (through reroutes), a primitive's value, or None (unconnected, muted)."""
    if link_id is None or link_id not in links or depth > 64:
        return None
    src, slot = links[link_id]
    node = nodes.get(src)
    if node is None or node.get("mode", 0) == 2:
        return None
    if node.get("type") == "Reroute":
        return resolve_link(next((i.get("link") for i in node.get("inputs") or []), None), links, nodes, depth + 1)
    if node.get("type") == "PrimitiveNode":
        return (node.get("widgets_values") or [None])[0]
    return [src, slot]


def loader_nodes(workflow: dict, table: Dict[str, str]) -> List[Tuple[str, str]]:
    """``[(node id, file input)]`` of the workflow's nodes of the classes in ``table``."""
    return [(nid, table[n["class_type"]]) for nid, n in workflow.items() if n.get("class_type") in table]


def media_targets(workflow: dict, what: str) -> List[Tuple[str, str]]:
    """The loader inputs that take a ``"video"`` / ``"audio"`` file; a workflow without one is refused."""
    table = VIDEO_INPUTS if what == "video" else AUDIO_INPUTS
    targets = loader_nodes(workflow, table)
    if not targets:
        raise WorkflowError(f"the workflow has no {what} loader node ({', '.join(table)}): it cannot take "
                            f"--{what}; set another input with --set NODE_ID.input=value")
    return targets


def set_media(workflow: dict, video: Optional[str] = None, audio: Optional[str] = None) -> List[str]:
    """Set an uploaded video / voice (names in ComfyUI's input folder) on every loader node of that kind;
    -> ``["2.video = clip.mp4", ...]``."""
    changes = []
    for name, what in ((video, "video"), (audio, "audio")):
        if name is None:
            continue
        for nid, input_name in media_targets(workflow, what):
            if isinstance(workflow[nid]["inputs"].get(input_name), list):
                continue  # fed by a link, not a file name
            workflow[nid]["inputs"][input_name] = name
            changes.append(f"{nid}.{input_name} = {name}")
    return changes


def parse_override(text: str) -> Tuple[str, str, object]:
    """``"5.frame_load_cap=12"`` / ``"MuseTalkLoadAudio.duration=0.5"`` -> (node id or class, input, value); the
    value is read as JSON when it parses (numbers, true/false, lists), else kept as text."""
    key, sep, raw = text.partition("=")
    target, dot, name = key.strip().rpartition(".")
    if not sep or not dot or not target or not name:
        raise WorkflowError(f"--set {text!r}: expected NODE.input=value (NODE = a node id or a class name)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return target, name, value


def override_targets(workflow: dict, text: str) -> Tuple[List[str], str, object]:
    """(ids of the nodes a ``NODE.input=value`` text names, input, value); an unknown node is refused."""
    target, name, value = parse_override(text)
    ids = [nid for nid, n in workflow.items() if target in (nid, n.get("class_type"))]
    if not ids:
        known = ", ".join(f"{nid} ({n.get('class_type')})" for nid, n in workflow.items())
        raise WorkflowError(f"--set {text!r}: no node {target!r} in the workflow; its nodes: {known}")
    return ids, name, value


def apply_overrides(workflow: dict, overrides) -> List[str]:
    """Apply ``NODE.input=value`` texts (NODE: a node id, or a class name for every node of that class)."""
    changes = []
    for text in overrides or ():
        ids, name, value = override_targets(workflow, text)
        for nid in ids:
            workflow[nid].setdefault("inputs", {})[name] = value
            changes.append(f"{nid}.{name} = {value!r}")
    return changes


# ---- upload, queue ---------------------------------------------------------------------------------------------------
def multipart_body(boundary: str, fields: Dict[str, str], file_field: str, path: str) -> Tuple[Iterator[bytes], int]:
    """A streamed multipart/form-data body (the file is read in chunks) and its length."""
    name = os.path.basename(path).replace('"', "_")
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        yield head
        with open(path, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                yield block
        yield tail

    return chunks(), len(head) + os.path.getsize(path) + len(tail)


def upload_file(server: str, path: str, subfolder: str = "", overwrite: bool = False) -> str:
    """``POST /upload/image``: put a file (any kind: ComfyUI stores it as is) into the server's input folder.
    -> the name to set on a loader (``subfolder/name``; the server renames it ``name (1).ext`` when another file
    has that name, unless ``overwrite``)."""
    if not os.path.isfile(path):
        raise WorkflowError(f"input file not found: {path}")
    boundary = "----comfy-api-client-" + uuid.uuid4().hex
    fields = {"type": "input", "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
    body, size = multipart_body(boundary, fields, "image", path)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(size)}
    try:
        with http_request(server, "POST", "/upload/image", body, headers, timeout=600) as r:
            reply = json.loads(r.read())
    except urllib.error.HTTPError as e:
        hint = " (over the server's upload limit: start ComfyUI with --max-upload-size MB)" if e.code == 413 else ""
        raise ComfyError(f"uploading {path} failed: HTTP {e.code}{hint}") from e
    return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]


def format_node_errors(node_errors: dict, workflow: Optional[dict] = None) -> List[str]:
    """One line per distinct error: ``node ID (Class): message: details``. A node's own validation
    (VALIDATE_INPUTS) is reported once per input with the same text: said once."""
    lines = []
    for nid, err in (node_errors or {}).items():
        cls = err.get("class_type") or ((workflow or {}).get(nid) or {}).get("class_type", "?")
        for e in err.get("errors") or []:
            details = str(e.get("details") or "")
            prefix = f"{(e.get('extra_info') or {}).get('input_name')} - "
            if e.get("type") == "custom_validation_failed" and details.startswith(prefix):
                details = details[len(prefix):]
            details = details if len(details) < 300 else details[:297] + "..."  # (a combo's list of every file)
            line = f"  node {nid} ({cls}): {e.get('message', e)}" + (f": {details}" if details else "")
            if line not in lines:
                lines.append(line)
    return lines


def queue_prompt(server: str, workflow: dict, client_id: str) -> str:
    """``POST /prompt`` -> the prompt id. A refused workflow raises PromptRejected naming each node's errors."""
    try:
        reply = http_json(server, "POST", "/prompt", {"prompt": workflow, "client_id": client_id})
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        try:
            data = json.loads(body)
        except ValueError:
            raise ComfyError(f"POST /prompt failed: HTTP {e.code}: {body[:500]}") from e
        err = data.get("error") or {}
        err = err if isinstance(err, dict) else {"message": str(err)}
        lines = [f"ComfyUI refused the workflow: {err.get('message', 'invalid prompt')}"]
        node_lines = format_node_errors(data.get("node_errors"), workflow)
        lines += node_lines or ([f"  {err['details']}"] if err.get("details") else [])
        raise PromptRejected("\n".join(lines), data.get("node_errors") or {}) from e
    return reply["prompt_id"]


def interrupt(server: str, prompt_id: Optional[str] = None) -> None:
    """``POST /interrupt`` (only that prompt when it is the running one)."""
    http_json(server, "POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})


def queue_state(server: str) -> dict:
    """``GET /queue``: ``{"queue_running": [...], "queue_pending": [...]}``."""
    return http_json(server, "GET", "/queue")


# ---- progress ------------------------------------------------------------------------------------------------------
def history_entry(server: str, prompt_id: str) -> Optional[dict]:
    """``GET /history/{prompt_id}``: the finished prompt's outputs and status, None while it is not finished."""
    return (http_json(server, "GET", f"/history/{urllib.parse.quote(prompt_id)}") or {}).get(prompt_id)


def fetch_history(server: str, prompt_id: str, wait: float = 10.0) -> dict:
    """The history entry, waiting up to ``wait`` s for the server to file it (it does right after the last
    message). Raises ExecutionFailed / ExecutionInterrupted when its status says so."""
    deadline = time.monotonic() + wait
    while True:
        entry = history_entry(server, prompt_id)
        if entry is not None:
            raise_for_status(entry, prompt_id)
            return entry
        if time.monotonic() > deadline:
            raise ComfyError(f"prompt {prompt_id} finished but /history/{prompt_id} has no entry for it")
        time.sleep(0.2)


def raise_for_status(entry: dict, prompt_id: str) -> None:
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return
    for kind, data in status.get("messages") or []:
        if kind == "execution_error":
            raise ExecutionFailed(describe_error(data), data)
        if kind == "execution_interrupted":
            raise ExecutionInterrupted(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
    raise ExecutionFailed(f"prompt {prompt_id} failed (status {status})", {})


def describe_error(data: dict) -> str:
    trace = "".join(data.get("traceback") or [])
    text = (f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_type', 'error')}: "
            f"{str(data.get('exception_message', '')).strip()}")
    return text + (f"\n{trace.rstrip()}" if trace else "")


class ProgressPrinter:
    """An ``on_event`` for follow_progress: one line per node started, progress at most once a second per node,
    and the end, each naming the node (id and class)."""

    def __init__(self, workflow: dict, stream=None, every: float = 1.0):
        self.workflow, self.stream, self.every = workflow, stream or sys.stderr, every
        self.last = {}

    def node(self, nid) -> str:
        return f"{nid} ({(self.workflow.get(str(nid)) or {}).get('class_type', '?')})"

    def __call__(self, kind: str, data: dict) -> None:
        line = None
        if kind == "execution_start":
            line = f"started prompt {data.get('prompt_id')}"
        elif kind == "execution_cached" and data.get("nodes"):
            line = f"cached (not run again): {', '.join(map(str, data['nodes']))}"
        elif kind == "executing" and data.get("node") is not None:
            line = f"running node {self.node(data['node'])}"
        elif kind == "progress":
            now, nid = time.monotonic(), data.get("node")
            if data.get("value") == data.get("max") or now - self.last.get(nid, 0) >= self.every:
                self.last[nid] = now
                line = f"  node {self.node(nid)}: {data.get('value')}/{data.get('max')}"
        elif kind == "executed":
            line = f"done node {self.node(data.get('node'))}"
        elif kind == "execution_success":
            line = "finished"
        if line:
            print(line, file=self.stream, flush=True)


def follow_progress(ws: WebSocket, server: str, prompt_id: str, on_event: Optional[Callable] = None,
                    timeout: float = 3600, poll: float = 5.0) -> None:
    """Read the websocket until the prompt ends: returns on ``execution_success``, raises ExecutionFailed /
    ExecutionInterrupted. Messages of other prompts and binary frames (previews) are skipped. When the socket is
    quiet for ``poll`` s, or closes, /history decides; past ``timeout`` s the prompt is interrupted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kind, payload = ws.recv(timeout=min(poll, max(0.1, deadline - time.monotonic())))
        except (socket.timeout, WebSocketClosed) as e:
            entry = history_entry(server, prompt_id)
            if entry is not None:
                raise_for_status(entry, prompt_id)
                return
            if isinstance(e, WebSocketClosed):
                time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            continue
        if kind != "text":
            continue  # binary frames: preview images (4-byte type + image)
        if message_ends_prompt(json.loads(payload), prompt_id, on_event):
            return
    interrupt(server, prompt_id)
    raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s; it was interrupted")


def message_ends_prompt(msg: dict, prompt_id: str, on_event: Optional[Callable]) -> bool:
    kind, data = msg.get("type"), msg.get("data") or {}
    if data.get("prompt_id") not in (None, prompt_id):
        return False
    if on_event is not None:
        on_event(kind, data)
    if kind == "execution_error":
        raise ExecutionFailed(describe_error(data), data)
    if kind == "execution_interrupted":
        raise ExecutionInterrupted(f"prompt {prompt_id} was interrupted at node {data.get('node_id')} "
                                   f"({data.get('node_type')})")
    return kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                           and data.get("prompt_id") == prompt_id)


# ---- outputs -------------------------------------------------------------------------------------------------------
def output_files(entry: dict, types=("output",)) -> List[dict]:
    """The files a finished prompt lists (``{"filename", "subfolder", "type", "node"}``), any output key (images,
    gifs, audio, ...), of the given folder types (``output``; ``temp`` holds previews)."""
    files, seen = [], set()
    for nid, out in (entry.get("outputs") or {}).items():
        for items in out.values():
            for f in items if isinstance(items, list) else []:
                key = isinstance(f, dict) and (f.get("type", "output"), f.get("subfolder", ""), f.get("filename"))
                if key and key[2] and key[0] in types and key not in seen:
                    seen.add(key)
                    files.append({"filename": key[2], "subfolder": key[1], "type": key[0], "node": nid})
    return files


def open_new_file(out_dir: str, filename: str):
    """Open ``out_dir/filename`` for writing, or ``name_1.ext``, ``name_2.ext``... when taken: never overwrites."""
    stem, ext = os.path.splitext(os.path.basename(filename))
    for i in range(100000):
        path = os.path.join(out_dir, f"{stem}_{i}{ext}" if i else stem + ext)
        try:
            return path, open(path, "xb")
        except FileExistsError:
            continue
    raise ComfyError(f"no free file name for {filename} in {out_dir}")


def download_file(server: str, f: dict, out_dir: str) -> str:
    """``GET /view?filename=&subfolder=&type=`` into a new file of ``out_dir``; -> its path."""
    query = urllib.parse.urlencode({"filename": f["filename"], "subfolder": f.get("subfolder", ""),
                                    "type": f.get("type", "output")})
    try:
        response = http_request(server, "GET", f"/view?{query}", timeout=600)
    except urllib.error.HTTPError as e:
        raise ComfyError(f"downloading {f['filename']} failed: HTTP {e.code}") from e
    path, out = open_new_file(out_dir, f["filename"])
    try:
        with response, out:
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                out.write(block)
    except BaseException:
        os.remove(path)
        raise
    return path


def download_outputs(server: str, entry: dict, out_dir: str, types=("output",)) -> List[str]:
    """Every output file of a finished prompt into ``out_dir`` (made if needed); -> the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    return [download_file(server, f, out_dir) for f in output_files(entry, types)]


# ---- all steps -----------------------------------------------------------------------------------------------------
def prepare_workflow(server: str, path: str, video=None, audio=None, overrides=(), subfolder="", log=None) -> dict:
    """Load the workflow, check the input files, upload them, set them and the overrides; -> the API workflow."""
    log = log or (lambda text: None)
    workflow = load_workflow(path, server)
    for p in (video, audio):
        if p is not None and not os.path.isfile(p):
            raise WorkflowError(f"input file not found: {p}")
    for what, p in (("video", video), ("audio", audio)):  # refused before anything is uploaded
        if p is not None:
            media_targets(workflow, what)
    for text in overrides or ():
        override_targets(workflow, text)
    names = {k: upload_file(server, p, subfolder) for k, p in (("video", video), ("audio", audio)) if p}
    for k, name in names.items():
        log(f"uploaded {k}: {name}")
    for change in set_media(workflow, names.get("video"), names.get("audio")) + apply_overrides(workflow, overrides):
        log(f"set {change}")
    return workflow


def run_prompt(server: str, workflow: dict, out_dir: str, on_event=None, timeout: float = 3600,
               types=("output",)) -> Tuple[str, List[str]]:
    """Queue an API workflow, follow it to the end, download its outputs; -> (prompt id, files written)."""
    client_id = uuid.uuid4().hex
    ws = WebSocket.connect(ws_url(server, client_id))  # before queueing: no message is missed
    try:
        prompt_id = queue_prompt(server, workflow, client_id)
        try:
            follow_progress(ws, server, prompt_id, on_event, timeout)
        except KeyboardInterrupt:
            interrupt(server, prompt_id)
            raise
    finally:
        ws.close()
    entry = fetch_history(server, prompt_id)
    return prompt_id, download_outputs(server, entry, out_dir, types)


def run_workflow(server: str, path: str, video=None, audio=None, out_dir: str = ".", overrides=(),
                 timeout: float = 3600, subfolder: str = "", types=("output",), stream=None) -> List[str]:
    """Every step, printing what happens to ``stream`` (stderr); -> the downloaded files."""
    stream = stream or sys.stderr
    server = server_url(server)
    check_server(server)
    workflow = prepare_workflow(server, path, video, audio, overrides, subfolder,
                                log=lambda text: print(text, file=stream, flush=True))
    _, files = run_prompt(server, workflow, out_dir, ProgressPrinter(workflow, stream), timeout, types)
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run a ComfyUI workflow through ComfyUI's HTTP API: upload a video "
                                             "and a voice, queue, follow the progress, download the outputs.")
    ap.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address (default %(default)s)")
    ap.add_argument("--workflow", required=True, help="API-format workflow (Export (API)); a UI-format one is "
                                                      "converted with the server's /object_info")
    ap.add_argument("--video", help="video file to upload and set on the workflow's video loader(s)")
    ap.add_argument("--audio", help="audio file to upload and set on the workflow's audio loader(s)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.input=value",
                    help="set an input; NODE = node id or class name; value parsed as JSON when it can be (repeat)")
    ap.add_argument("--out-dir", default="comfy_outputs", help="where the output files go (default %(default)s)")
    ap.add_argument("--subfolder", default="", help="subfolder of ComfyUI's input folder for the uploads")
    ap.add_argument("--previews", action="store_true", help="also download preview files (temp folder)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before the run is interrupted")
    a = ap.parse_args(argv)
    types = ("output", "temp") if a.previews else ("output",)
    try:
        files = run_workflow(a.server, a.workflow, a.video, a.audio, a.out_dir, a.overrides, a.timeout,
                             a.subfolder, types)
    except ComfyError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted (the prompt was interrupted on the server)", file=sys.stderr)
        return 130
    for path in files:
        print(path)
    if not files:
        print("the workflow wrote no output files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
