"""The dubbing server (server/) on loopback, in a subprocess, with the small test weights, real MTCNN, a real edited
clip and espeak-ng speech: jobs end to end, every refusal's field and fix, tokens, 20 concurrent clients, SIGKILL
and restart, cancel, the live WebSocket and its slow-client policy."""
import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mediakit as mk
import serverkit as sk
from conftest import ROOT

pytest.importorskip("aiohttp")
FACE = {"min_face_size": 30}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    clip = mk.edited_clip((256, 256), (("astronaut", 8), ("rocket", 3), ("astronaut", 3)))
    mk.write_video(str(d / "talk.mp4"), clip, 25, crf=14)
    if mk.have_espeak():
        mk.speech(str(d / "voice.wav"), "Hello friend", speed=220)
    else:  # pragma: no cover
        mk.write_wav(str(d / "voice.wav"), mk.tone(200, 0.8, 16000), 16000)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    return d


@pytest.fixture(scope="module")
def avatars_dir(tmp_path_factory, small_models_dir, media):
    d = str(tmp_path_factory.mktemp("avatars"))
    env = dict(os.environ, MUSETALK_AVATARS_DIR=d)
    r = subprocess.run([sys.executable, ROOT, "avatar", "prepare", "--video", str(media / "talk.mp4"), "--name",
                        "host", "--models-dir", small_models_dir, "--no-download", "--quiet", "--min-face-size", "30"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_models_dir, avatars_dir, media):
    srv = sk.Server(str(tmp_path_factory.mktemp("server")), small_models_dir, avatars_dir, "--media-dir", str(media),
                    "--max-seconds", "30")
    with srv:
        yield srv


def expected_frames(voice) -> int:
    from musetalk_enhanced.pipeline.media.audio import load_audio_file

    return int(np.ceil(load_audio_file(str(voice)).duration * 25 - 1e-6))


def files(media, video="talk.mp4", audio="voice.wav"):
    return {"video": (video, (media / video).read_bytes()), "audio": (audio, (media / audio).read_bytes())}


def check_result(url, job, n, tmp_path, audio=True):
    from musetalk_enhanced.pipeline.media.audio import load_audio_file
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    status, headers, data = sk.request("GET", url + job["result"])
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    out = tmp_path / f"{job['id']}.mp4"
    out.write_bytes(data)
    assert len(VideoFileFrames(str(out))) == n
    if audio:
        assert abs(load_audio_file(str(out)).duration - n / 25) < 0.06


# -- jobs end to end -------------------------------------------------------------------------------------------------
def test_upload_job_runs_to_a_result_with_progress_and_report(server, media, tmp_path):
    status, body = sk.submit(server.url, {**files(media), "options": json.dumps({**FACE, "batch_size": 4,
                                                                                  "mask": True,
                                                                                  "blend_mode": "box"})})
    assert status == 202 and body["state"] == "queued"
    job = sk.wait_for(server.url, body["id"])
    assert job["state"] == "done", job
    n = expected_frames(media / "voice.wav")
    assert job["progress"] == {"stage": "encoding", "done": 1, "total": 1, "fraction": 1.0}   # the last stage
    assert job["report"]["synced"].get("musetalk-v1.5", 0) > 0, job["report"]
    assert job["report"]["frames"] == n and sum(job["report"]["synced"].values()) + \
        len(job["report"]["passed_through"]) == n and job["report"]["passed_through"]      # the rocket cutaway
    assert job["inputs"] == {"video": "video_talk.mp4", "audio": "audio_voice.wav"}       # no server paths shown
    check_result(server.url, job, n, tmp_path)
    check_result(server.url, {**job, "result": job["result"].replace("/result", "/mask"), "id": job["id"] + "_mask"},
                 n, tmp_path, audio=False)                # {"mask": true}: the grey mp4 of the changed pixels
    listed = sk.call("GET", server.url + "/v1/jobs?state=done")[1]["jobs"]
    assert body["id"] in [j["id"] for j in listed]
    # a finished job is deleted with its files by DELETE
    assert sk.call("DELETE", f"{server.url}/v1/jobs/{body['id']}") == (200, {"id": body["id"], "deleted": True})
    assert not os.path.exists(os.path.join(server.data_dir, "jobs", body["id"]))
    assert sk.call("GET", f"{server.url}/v1/jobs/{body['id']}")[0] == 404


def test_media_folder_paths_and_avatar_jobs(server, media, tmp_path):
    status, body = sk.call("POST", server.url + "/v1/jobs", {"avatar": "host", "audio": "voice.wav",
                                                             "options": {"loop": "forward", "loop_range": "0-7"}})
    assert status == 202, body
    job = sk.wait_for(server.url, body["id"])
    assert job["state"] == "done" and job["kind"] == "avatar", job
    n = expected_frames(media / "voice.wav")      # loop_range 0-7: the face shot only, no rocket cutaway
    assert job["report"]["synced"] == {"musetalk-v1.5": n} and job["report"]["passed_through"] == [], job["report"]
    check_result(server.url, job, expected_frames(media / "voice.wav"), tmp_path)
    status, refusal = sk.call("GET", f"{server.url}/v1/jobs/{job['id']}/mask")
    assert status == 409 and "without a mask" in refusal["error"]["message"]
    avatars = sk.call("GET", server.url + "/v1/avatars")[1]["avatars"]
    assert [(a["name"], a["frames"], a["fps"]) for a in avatars] == [("host", 14, 25.0)]


@pytest.mark.parametrize("payload, field, words", [
    ({"video": "../talk.mp4"}, "video", "inside the media folder"),
    ({"video": "/etc/passwd"}, "video", "inside the media folder"),
    ({"video": "outside.mp4"}, "video", "leads out of the media folder"),
    ({"video": "nothere.mp4"}, "video", "no such file"),
    ({"video": "corrupt.mp4"}, "video", "not a readable media file"),
    ({"video": "talk.mp4", "options": {"batch_size": "many"}}, "options.batch_size", "not a whole number"),
    ({"video": "talk.mp4", "options": {"batch_size": 0}}, "options.batch_size", "out of range"),
    ({"video": "talk.mp4", "options": {"bbox_shift": 1000000000}}, "options.bbox_shift", "out of range"),
    ({"video": "talk.mp4", "options": {"steps": 500}}, "options.steps", "out of range"),
    ({"video": "talk.mp4", "options": {"backend": "magic"}}, "options.backend", "not a choice"),
    ({"video": "talk.mp4", "options": {"out": "/tmp/x.mp4"}}, "options.out", "not an option"),
    ({"video": "talk.mp4", "colour": "red"}, "colour", "unknown field"),
    ({"audio": "voice.wav"}, "video", "missing"),
    ({"avatar": "nobody", "audio": "voice.wav"}, "avatar", "nobody"),
    ({"avatar": "host", "video": "talk.mp4", "audio": "voice.wav"}, "avatar", "not both"),
    ({"avatar": "host", "audio": "voice.wav", "options": {"loop": "sideways"}}, "options.loop", "not a choice"),
    ({"video": "talk.mp4", "options": {"on_silence": "mute"}}, "options.on_silence", "not a choice"),
    ({"video": "talk.mp4", "options": {"edge_faces": "crop"}}, "options.edge_faces", "not a choice"),
    ({"video": "talk.mp4", "options": {"feather_px": 500}}, "options.feather_px", "out of range"),
    ({"video": "talk.mp4", "options": {"mask": "yes"}}, "options.mask", "not true or false"),
    ({"video": "talk.mp4", "options": {"mask_out": "/tmp/m.mp4"}}, "options.mask_out", "not an option"),
    ({"avatar": "host", "audio": "voice.wav", "options": {"mask": True}}, "options.mask", "only a dub"),
])
def test_bad_requests_name_the_field_and_the_fix(server, media, payload, field, words):
    link = media / "outside.mp4"
    if not link.exists():
        link.symlink_to(os.path.join(ROOT, "example_workflows", "musetalk_example_face.mp4"))
    before = len(os.listdir(os.path.join(server.data_dir, "jobs")))
    status, body = sk.call("POST", server.url + "/v1/jobs", payload)
    assert 400 <= status < 500, body
    err = body["error"]
    assert err["field"] == field and words in err["message"] and err["fix"], err
    assert len(os.listdir(os.path.join(server.data_dir, "jobs"))) == before      # nothing left behind


def test_other_refusals_are_json_and_the_server_lives_on(server, media):
    status, _, data = sk.request("POST", server.url + "/v1/jobs", b"plain", {"Content-Type": "text/plain"})
    assert status == 415 and json.loads(data)["error"]["field"] == "Content-Type"
    status, _, data = sk.request("POST", server.url + "/v1/jobs", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and json.loads(data)["error"]["field"] == "body"
    status, body = sk.submit(server.url, {"video": ("talk.txt", b"hello")})
    assert status == 400 and body["error"]["field"] == "video" and ".mp4" in body["error"]["fix"]
    assert sk.call("GET", server.url + "/v1/jobs/nope")[0] == 404
    assert sk.call("GET", server.url + "/v1/nothing")[1]["error"]["status"] == 404
    status, body = sk.call("GET", server.url + "/v1/jobs?state=sleeping")
    assert status == 400 and body["error"]["field"] == "state"
    assert sk.call("GET", server.url + "/v1/health")[1]["ok"] is True


def test_openapi_describes_the_options_the_server_accepts(server):
    from musetalk_enhanced.pipeline.backends.selection import BACKEND_CHOICES

    doc = sk.call("GET", server.url + "/openapi.json")[1]
    opts = doc["components"]["schemas"]["DubOptions"]["properties"]
    assert opts["backend"]["enum"] == list(BACKEND_CHOICES) and opts["batch_size"]["type"] == "integer"
    assert "out" not in opts and "device" not in opts
    assert {"/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/result", "/v1/avatars/{name}/live"} <= set(doc["paths"])
    status, _, html = sk.request("GET", server.url + "/")
    assert status == 200 and b"/page/app.js" in html


# -- limits and tokens -----------------------------------------------------------------------------------------------
def test_limits_and_bearer_token(tmp_path, small_models_dir, avatars_dir, media):
    from musetalk_enhanced.server.config import ServerConfig

    with pytest.raises(ValueError, match="--no-token"):
        ServerConfig(host="0.0.0.0", no_token=True).check()
    ServerConfig(host="0.0.0.0", token="long-enough-secret").check()
    ServerConfig(host="0.0.0.0").check()          # a token is made at start
    token = "s3cret-token"
    with sk.Server(str(tmp_path / "srv"), small_models_dir, avatars_dir, "--token", token, "--max-upload-mb", "0.01",
                   "--max-seconds", "0.3", "--max-queue", "1") as srv:
        assert sk.call("GET", srv.url + "/v1/jobs")[0] == 401
        assert sk.call("GET", srv.url + "/v1/jobs", headers={"Authorization": "Bearer wrong-token"})[0] == 401
        assert sk.call("GET", srv.url + "/openapi.json")[0] == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert sk.call("GET", srv.url + "/v1/jobs", headers=auth)[0] == 200
        assert sk.call("GET", srv.url + f"/v1/jobs?access_token={token}")[0] == 401    # a header is needed here
        assert sk.call("GET", srv.url + f"/v1/jobs/nope/result?access_token={token}")[0] == 404   # a <video> URL
        status, body = sk.submit(srv.url, files(media), headers=auth)
        assert status == 413 and body["error"]["field"] == "video" and "--max-upload-mb" in body["error"]["fix"]
        small = mk.write_video(str(tmp_path / "small.mp4"), mk.color_frames(12, 32, 32), 25)
        status, body = sk.submit(srv.url, {"video": ("small.mp4", open(small, "rb").read())}, headers=auth)
        assert status == 400 and "over the limit" in body["error"]["message"], body
        assert "--max-seconds" in body["error"]["fix"]
        assert not os.listdir(os.path.join(srv.data_dir, "jobs"))


def test_a_full_queue_answers_429_and_frees_up_on_cancel(tmp_path, media):
    from aiohttp.test_utils import TestClient, TestServer

    from musetalk_enhanced.server.app import make_app
    from musetalk_enhanced.server.config import ServerConfig

    async def scenario():
        config = ServerConfig(data_dir=str(tmp_path), media_dir=str(media), devices=(), max_queue=2,  # no worker
                              no_token=True)
        async with TestClient(TestServer(make_app(config))) as client:
            ids = []
            for _ in range(2):
                r = await client.post("/v1/jobs", json={"video": "talk.mp4"})
                assert r.status == 202
                ids.append((await r.json())["id"])
            r = await client.post("/v1/jobs", json={"video": "talk.mp4"})
            body = await r.json()
            assert r.status == 429 and r.headers["Retry-After"] and "queue is full" in body["error"]["message"]
            assert len(os.listdir(os.path.join(str(tmp_path), "jobs"))) == 2     # the refused job left nothing
            assert (await (await client.delete(f"/v1/jobs/{ids[0]}")).json())["state"] == "cancelled"
            assert (await client.post("/v1/jobs", json={"video": "talk.mp4"})).status == 202

    asyncio.run(scenario())


# -- the job store after a stop --------------------------------------------------------------------------------------
def test_job_store_recovery_and_pruning(tmp_path):
    from musetalk_enhanced.server.config import MAX_ATTEMPTS
    from musetalk_enhanced.server.jobs import JobStore

    store = JobStore(str(tmp_path / "jobs.sqlite"), str(tmp_path / "jobs"))
    ids = {}
    for name in ("done", "done_lost", "running", "running_again", "old", "queued"):
        ids[name] = store.new_folder()
        store.create(ids[name], "dub", {"video": "v.mp4"}, {"batch_size": 2})
    for name in ("done", "done_lost", "running", "running_again", "old"):
        assert store.claim("cpu").id == ids[name]            # oldest first
    for name in ("done", "old"):
        open(store.result_path(ids[name]), "wb").write(b"mp4")
        store.finish(ids[name], "done", report={"frames": 3})
    store.finish(ids["done_lost"], "done", report={"frames": 3})          # its file never arrived
    for name in ("running", "running_again"):
        os.makedirs(store.folder(ids[name], "work"))
        open(store.folder(ids[name], "work", "result.mp4"), "wb").write(b"half")
        open(store.result_path(ids[name]), "wb").write(b"stale")
    for _ in range(MAX_ATTEMPTS - 1):                                     # interrupted before, re-claimed since
        store.requeue(ids["running_again"], "re-queued")
        assert store.claim("cpu").id == ids["running_again"]
    store.close()

    store = JobStore(str(tmp_path / "jobs.sqlite"), str(tmp_path / "jobs"))   # the restart
    notes = store.recover()
    state = {name: store.get(i) for name, i in ids.items()}
    assert state["done"].state == "done" and os.path.isfile(store.result_path(ids["done"]))
    assert state["done_lost"].state == "failed" and "missing" in state["done_lost"].error
    assert state["running"].state == "queued" and "re-queued" in state["running"].error
    assert state["running_again"].state == "failed" and f"{MAX_ATTEMPTS} times" in state["running_again"].error
    assert state["queued"].state == "queued" and len(notes) == 3
    for name in ("running", "running_again"):
        assert not os.path.exists(store.folder(ids[name], "work"))
        assert not os.path.exists(store.result_path(ids[name]))
    assert store.claim("cpu").id == ids["running"] and store.get(ids["running"]).attempts == 2
    # pruning: only finished jobs past the age, with their folders
    store._db.execute("UPDATE jobs SET finished = finished - 8 * 86400 WHERE id = ?", (ids["old"],))
    assert store.prune(0) == [] and store.get(ids["old"]) is not None
    assert len(store.prune(7)) == 1 and store.get(ids["old"]) is None
    assert not os.path.exists(store.folder(ids["old"])) and store.get(ids["done"]).state == "done"


# -- reliability -----------------------------------------------------------------------------------------------------
def test_twenty_concurrent_clients_and_a_corrupt_upload_fails_alone(tmp_path, small_models_dir, avatars_dir, media):
    short = media / "short.wav"
    if not short.exists():
        mk.write_wav(str(short), mk.tone(180, 0.24, 16000), 16000)
    results, errors = {}, []

    def client(i):
        try:
            video = "corrupt.mp4" if i == 7 else "talk.mp4"
            status, body = sk.submit(srv.url, {**files(media, video, "short.wav"),
                                               "options": json.dumps({**FACE, "batch_size": 8})})
            if status != 202:
                results[i] = ("refused", status, body["error"]["field"])
                return
            job = sk.wait_for(srv.url, body["id"], timeout=600)
            results[i] = (job["state"], job["id"], (job["report"] or {}).get("frames"),
                          (job["report"] or {}).get("synced", {}).get("musetalk-v1.5"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    with sk.Server(str(tmp_path / "srv"), small_models_dir, avatars_dir, "--max-queue", "32") as srv:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        assert not errors, errors
        assert results[7] == ("refused", 400, "video")
        loads = sk.call("GET", srv.url + "/v1/health")[1]["model_loads"]
        assert loads.get("backends.musetalk") == 1 and loads.get("audio.whisper") == 1, loads   # once, 19 jobs
        done = [r for i, r in results.items() if i != 7]
        assert len(done) == 19 and all(r[0] == "done" and r[2] == 6 and r[3] == 6 for r in done), results
        assert sk.call("GET", srv.url + "/v1/health")[1]["ok"]


def long_job(srv, media, batch_size):
    long_voice = media / "long.wav"
    if not long_voice.exists():
        mk.write_wav(str(long_voice), mk.tone(150, 4.0, 16000), 16000)
    status, body = sk.submit(srv.url, {**files(media, "talk.mp4", "long.wav"),
                                       "options": json.dumps({**FACE, "batch_size": batch_size})})
    assert status == 202, body
    return body["id"]


def test_sigkill_mid_job_then_restart_keeps_every_record_consistent(tmp_path, small_models_dir, avatars_dir, media):
    data = str(tmp_path / "srv")
    srv = sk.Server(data, small_models_dir, avatars_dir).start()
    try:
        quick = sk.submit(srv.url, {**files(media), "options": json.dumps(FACE)})[1]["id"]
        assert sk.wait_for(srv.url, quick)["state"] == "done"
        victim = long_job(srv, media, 2)
        queued = long_job(srv, media, 2)
        sk.wait_for(srv.url, victim, states=("running",))
        deadline = time.time() + 300
        while sk.call("GET", f"{srv.url}/v1/jobs/{victim}")[1]["progress"]["done"] < 4 and time.time() < deadline:
            time.sleep(0.2)
    finally:
        srv.stop(signal.SIGKILL)
    assert not os.path.exists(os.path.join(data, "jobs", victim, "result.mp4"))
    with sk.Server(data, small_models_dir, avatars_dir) as srv2:
        job = sk.call("GET", f"{srv2.url}/v1/jobs/{victim}")[1]
        assert job["state"] in ("queued", "running") and "re-queued" in job["error"] and job["result"] is None
        assert sk.call("GET", f"{srv2.url}/v1/jobs/{victim}/result")[0] == 409
        assert sk.call("GET", f"{srv2.url}/v1/jobs/{quick}")[1]["state"] == "done"
        assert sk.request("GET", f"{srv2.url}/v1/jobs/{quick}/result")[0] == 200
        for job_id in (victim, queued):
            finished = sk.wait_for(srv2.url, job_id, timeout=600)
            assert finished["state"] == "done" and finished["report"]["frames"] == 100, finished
        assert sk.call("GET", f"{srv2.url}/v1/jobs/{victim}")[1]["attempts"] == 2


def test_cancel_mid_job_stops_within_a_batch(tmp_path, small_models_dir, avatars_dir, media):
    with sk.Server(str(tmp_path / "srv"), small_models_dir, avatars_dir) as srv:
        job_id = long_job(srv, media, 2)
        deadline = time.time() + 300
        while time.time() < deadline:
            job = sk.call("GET", f"{srv.url}/v1/jobs/{job_id}")[1]
            if job["progress"]["stage"] == "lip-sync" and job["progress"]["done"] >= 4:
                break
            time.sleep(0.05)
        status, body = sk.call("DELETE", f"{srv.url}/v1/jobs/{job_id}")
        assert status == 202 and body["state"] == "cancelling" and body["progress"]["stage"] == "lip-sync"
        at_cancel = body["progress"]["done"]
        job = sk.wait_for(srv.url, job_id, timeout=60)
        assert job["state"] == "cancelled" and job["result"] is None
        assert 0 <= job["progress"]["done"] - at_cancel <= 2, (at_cancel, job["progress"])    # within one batch
        assert job["progress"]["done"] < job["progress"]["total"]
        assert not os.path.exists(os.path.join(srv.data_dir, "jobs", job_id, "result.mp4"))
        assert not os.path.exists(os.path.join(srv.data_dir, "jobs", job_id, "work"))
        queued = long_job(srv, media, 2)          # the worker goes on
        assert sk.call("DELETE", f"{srv.url}/v1/jobs/{queued}")[0] in (200, 202)
        assert sk.wait_for(srv.url, queued, timeout=60)["state"] == "cancelled"


# -- live ------------------------------------------------------------------------------------------------------------
async def live_session(url, voice, chunk_s=0.2, read=True):
    import aiohttp

    frames, texts = [], []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url.replace("http", "ws") + "/v1/avatars/host/live?format=s16",
                                headers=sk.auth_headers(url)) as ws:
            ready = json.loads((await ws.receive()).data)
            step = int(16000 * chunk_s)
            for i in range(0, len(voice), step):
                await ws.send_bytes((voice[i:i + step] * 32767).astype("<i2").tobytes())
            await ws.send_str(json.dumps({"type": "end"}))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames.append(msg.data)
                else:
                    texts.append(json.loads(msg.data))
                    if texts[-1]["type"] in ("end", "error"):
                        break
    return ready, frames, texts


def test_live_websocket_streams_every_frame_in_order(server, media):
    import cv2

    from musetalk_enhanced.pipeline.media.audio import load_audio_file, to_mono

    voice = to_mono(load_audio_file(str(media / "voice.wav")), 16000)
    ready, frames, texts = asyncio.run(live_session(server.url, voice))
    n = int(np.ceil(len(voice) / 16000 * 25 - 1e-6))
    assert ready == {"type": "ready", "avatar": "host", "fps": 25.0, "width": 256, "height": 256}
    assert texts[-1] == {"type": "end", "frames": n, "dropped": 0, "kept_silent": 0}
    heads = [struct.unpack("<Id", f[:12]) for f in frames]
    assert [h[0] for h in heads] == list(range(n)) and heads[-1][1] == pytest.approx((n - 1) / 25)
    from musetalk_enhanced.pipeline.avatars import Avatar
    from musetalk_enhanced.pipeline.lipsync.plan import ping_pong

    os.environ["MUSETALK_AVATARS_DIR"] = server.avatars_dir
    try:
        avatar = Avatar("host")
    finally:
        del os.environ["MUSETALK_AVATARS_DIR"]
    changed = {}
    for k, f in enumerate(frames):
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(f[12:], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        s = ping_pong(k, len(avatar.frames))
        changed[k] = (avatar.faces.frames[s].face is not None,
                      float(np.abs(img.astype(int) - avatar.frames.read([s])[0].astype(int)).mean()))
    cutaway = [d for face, d in changed.values() if not face]
    synced = [d for face, d in changed.values() if face]
    assert cutaway and synced and max(cutaway) < 2.5 < min(synced), changed   # JPEG only vs a new mouth
    status, body = sk.call("GET", server.url + "/v1/avatars/nobody/live")
    assert status == 404 and body["error"]["field"] == "name"
    status, body = sk.call("GET", server.url + "/v1/avatars/host/live?on_silence=mute")
    assert status == 400 and body["error"]["field"] == "on_silence" and "keep_original" in body["error"]["fix"]


def test_live_pcm_split_anywhere_between_messages_is_read_whole():
    from musetalk_enhanced.server import live

    samples = (np.sin(np.arange(801) / 7.0) * 0.5).astype(np.float32)
    for fmt, data in (("s16", (samples * 32768).astype("<i2").tobytes()), ("f32", samples.astype("<f4").tobytes())):
        session = live.LiveSession(None, 25.0, fmt)
        for a, b in ((0, 3), (3, 4), (4, 1001), (1001, len(data))):       # cuts inside samples
            session.add_voice(data[a:b])
        got = np.concatenate(session.pending)
        assert len(got) == 801 and np.allclose(got, samples, atol=1 / 32768) and session.split_sample == b""
        session.close()


def test_a_slow_live_client_loses_old_frames_not_memory():
    from musetalk_enhanced.server import live

    class Speech:                                  # makes 40 frames at once
        kept_silent = []

        def push(self, pcm):
            return [(k, np.full((16, 16, 3), k, np.uint8)) for k in range(40)]

        def close(self):
            return []

    class SlowSocket:
        def __init__(self):
            self.sent, self.texts, self.max_queue = [], [], 0

        async def send_bytes(self, data):
            self.max_queue = max(self.max_queue, session.frames.items.qsize())
            await asyncio.sleep(0.01)
            self.sent.append(struct.unpack("<Id", data[:12])[0])

        async def send_str(self, text):
            self.texts.append(json.loads(text))

    async def scenario():
        global session
        session = live.LiveSession(Speech(), 25.0, "f32")
        ws = SlowSocket()
        session.add_voice(np.zeros(3200, np.float32).tobytes())
        session.end()
        await asyncio.gather(session.make_frames(), live.send_frames(ws, session))
        session.close()
        return ws

    ws = asyncio.run(scenario())
    assert ws.max_queue <= live.LIVE_QUEUE_FRAMES
    assert ws.sent == sorted(ws.sent) and ws.sent[-1] == 39 and len(ws.sent) < 40
    dropped = sum(t["count"] for t in ws.texts if t["type"] == "dropped")
    assert dropped == 40 - len(ws.sent) and ws.texts[-1] == {"type": "end", "frames": len(ws.sent),
                                                              "dropped": dropped, "kept_silent": 0}


# -- the page in a real browser --------------------------------------------------------------------------------------
@pytest.mark.skipif(not sk.chromium_path(), reason="Chromium is not installed (apt-get install chromium)")
def test_page_dubs_a_video_plays_it_and_shows_live_frames(server, media):
    voice = str(media / "voice.wav")
    with sk.chromium("--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream",
                     "--use-fake-ui-for-media-stream") as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + f"/?token={server.token}")
        page.wait_for_selector("body[data-ready='1']", timeout=30000)
        assert page.locator("#options select[name=backend] option").count() >= 2   # from /openapi.json
        page.set_input_files("#video", str(media / "talk.mp4"))
        page.set_input_files("#audio", voice)
        page.click("#dub-form summary")                                  # open Options, as a user
        page.fill("#options input[name=min_face_size]", "30")
        page.click("#submit")
        page.wait_for_function("document.getElementById('status').dataset.state === 'done'", timeout=300000)
        page.wait_for_function("document.getElementById('result').readyState >= 1", timeout=60000)
        n = expected_frames(media / "voice.wav")
        assert page.evaluate("document.getElementById('result').duration") == pytest.approx(n / 25, abs=0.08)
        assert page.evaluate("document.getElementById('result').play().then(() => 'playing', e => String(e))") \
            == "playing"
        assert "?download=1" in page.get_attribute("#download", "href")
        page.click("#tab-live")
        page.select_option("#live-avatar", "host")
        page.set_input_files("#live-audio", voice)
        page.click("#live-start")
        page.wait_for_function("document.getElementById('live-status').dataset.ended === '1'", timeout=300000)
        frames = int(page.text_content("#live-frames"))
        dropped = int(page.text_content("#live-dropped"))
        assert frames + dropped == n and frames > 0
        assert page.evaluate("document.getElementById('live-frame').naturalWidth") == 256
        page.evaluate("document.getElementById('live-status').dataset.ended = ''")
        page.click("#live-mic")                  # Chromium's fake microphone (a beep), streamed live
        page.wait_for_function("Number(document.getElementById('live-frames').textContent) > 0", timeout=300000)
        page.click("#live-stop")
        page.wait_for_function("document.getElementById('live-status').dataset.ended === '1'", timeout=300000)
        assert not errors, errors
