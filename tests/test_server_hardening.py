"""The server's defences, each reproduced first (loopback only, in-process: aiohttp's test client, the job store, no
model runs): limits on what an upload decodes to, a token by default, no cross-site or rebound-host requests, ranges
at submit, bad paths as 4xx, no server paths in errors, cancels that survive a restart, uploads removed when a job
ends, and progress that says which stage runs."""
import asyncio
import os
import sqlite3
import stat

import numpy as np
import pytest

import mediakit as mk

pytest.importorskip("aiohttp")


def headerless_mkv(path, frames=200, fps=10):
    """A Matroska video whose header says nothing about its length (as written to a pipe): 20 s of frames."""
    import av

    with av.open(path, "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i % 255, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = bytearray(open(path, "rb").read())
    at = data.find(b"\x44\x89")                      # Segment Info > Duration (EBML id 0x4489), an 8-byte float
    assert at > 0 and data[at + 2] == 0x88
    data[at + 3:at + 11] = bytes(8)
    open(path, "wb").write(bytes(data))
    with av.open(path) as c:
        assert c.duration is None and c.streams.video[0].duration is None   # what the header claims: nothing
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("hardening_media")
    mk.write_video(str(d / "small.mp4"), mk.color_frames(12, 64, 64), 25)
    headerless_mkv(str(d / "long.mkv"))
    mk.write_wav(str(d / "voice.wav"), mk.tone(220, 0.5, 16000), 16000)
    return d


def serve(config, scenario):
    """Run ``scenario(client)`` against the app of ``config`` (no worker unless devices are given)."""
    from aiohttp.test_utils import TestClient, TestServer

    from musetalk_enhanced.server.app import make_app

    async def main():
        async with TestClient(TestServer(make_app(config))) as client:
            await scenario(client)

    asyncio.run(main())


def config(tmp_path, media, **kw):
    from musetalk_enhanced.server.config import ServerConfig

    return ServerConfig(data_dir=str(tmp_path / "data"), media_dir=str(media), devices=(), **kw)


# -- 1. limits on what was decoded ---------------------------------------------------------------------------------
def test_the_length_of_a_headerless_mkv_is_counted_not_believed(tmp_path, media):
    from musetalk_enhanced.pipeline.media.probe import measure

    m = measure(str(media / "long.mkv"), video=True)
    assert m.frames == 200 and m.seconds == pytest.approx(20.0, abs=0.2) and (m.width, m.height) == (64, 64)

    async def scenario(client):
        r = await client.post("/v1/jobs", json={"video": "long.mkv"})
        err = (await r.json())["error"]
        assert r.status == 400 and err["field"] == "video" and "20.0 s long: over the limit of 3" in err["message"]
        assert "--max-seconds" in err["fix"]
        import aiohttp

        form = aiohttp.FormData()                           # the same file uploaded
        form.add_field("video", open(media / "long.mkv", "rb").read(), filename="long.mkv")
        r = await client.post("/v1/jobs", data=form)
        err = (await r.json())["error"]
        assert r.status == 400 and err["field"] == "video" and "over the limit" in err["message"], err
        assert not os.listdir(tmp_path / "data" / "jobs")

    serve(config(tmp_path, media, no_token=True, max_seconds=3), scenario)


def test_frame_and_pixel_limits(tmp_path, media):
    async def scenario(client):
        r = await client.post("/v1/jobs", json={"video": "small.mp4"})
        err = (await r.json())["error"]
        assert r.status == 400 and "12 frames: over the limit of 10" in err["message"] and "--max-frames" in err["fix"]

    serve(config(tmp_path, media, no_token=True, max_frames=10), scenario)

    async def pixels(client):
        r = await client.post("/v1/jobs", json={"video": "small.mp4"})
        err = (await r.json())["error"]
        assert r.status == 400 and "64x64 pixels: over the limit" in err["message"] and "--max-pixels" in err["fix"]

    serve(config(tmp_path, media, no_token=True, max_pixels=32 * 32), pixels)


def test_batch_applies_the_same_limits(tmp_path, media):
    from musetalk_enhanced.pipeline.jobs import DubRequest, RequestError
    from musetalk_enhanced.pipeline.jobs.limits import MediaLimits

    request = DubRequest(video=str(media / "long.mkv"), audio=str(media / "voice.wav"), out=str(tmp_path / "o.mp4"))
    MediaLimits().check_request(request)                      # no limit set: nothing measured, nothing refused
    with pytest.raises(RequestError, match="over the limit of 10") as info:
        MediaLimits(max_seconds=10).check_request(request)
    assert info.value.field == "video" and "--max-seconds" in info.value.fix


# -- 2. a token by default, no cross-site requests ------------------------------------------------------------------
def test_a_token_is_made_kept_and_required(tmp_path, media):
    from musetalk_enhanced.server.safety import server_token

    cfg = config(tmp_path, media)
    token_holder = {}

    async def scenario(client):
        token = cfg.token
        token_holder["t"] = token
        assert token and len(token) >= 24
        assert (await client.get("/v1/jobs")).status == 401
        assert (await client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})).status == 200
        assert (await client.get(f"/v1/jobs?access_token={token}")).status == 401     # a header is needed here
        r = await client.get(f"/v1/jobs/nope/result?access_token={token}")         # a <video> may use the query
        assert r.status == 404
        assert (await client.get("/")).status == 200                                # the page itself is public

    serve(cfg, scenario)
    path = tmp_path / "data" / "token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read().strip() == token_holder["t"]
    assert server_token(config(tmp_path, media)) == token_holder["t"]                 # a restart keeps it


def test_cross_site_requests_and_other_hosts_are_refused(tmp_path, media):
    async def scenario(client):
        evil = {"Origin": "http://evil.example"}
        r = await client.post("/v1/jobs", json={"video": "small.mp4"}, headers=evil)
        err = (await r.json())["error"]
        assert r.status == 403 and err["field"] == "Origin" and err["fix"]
        assert not os.listdir(tmp_path / "data" / "jobs")                      # nothing was queued
        r = await client.delete("/v1/jobs/x", headers={"Origin": "null"})
        assert r.status == 403
        own = {"Origin": f"http://{client.host}:{client.port}"}
        assert (await client.post("/v1/jobs", json={"video": "small.mp4"}, headers=own)).status == 202
        assert (await client.post("/v1/jobs", json={"video": "small.mp4"})).status == 202   # a script: no Origin
        r = await client.get("/v1/jobs", headers={"Host": "evil.example"})             # DNS rebinding
        assert r.status == 403 and (await r.json())["error"]["field"] == "Host"
        assert (await client.get("/", headers={"Host": "evil.example:8288"})).status == 403
        assert (await client.get("/v1/jobs", headers={"Host": f"localhost:{client.port}"})).status == 200
        assert (await client.get("/v1/jobs", headers={"Host": "studio.lan:8288"})).status == 200   # --allowed-host
        import aiohttp

        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/v1/avatars/host/live", headers=evil)
        assert info.value.status == 403

    serve(config(tmp_path, media, no_token=True, allowed_hosts=("studio.lan",)), scenario)


def test_no_token_is_for_loopback_only():
    from musetalk_enhanced.server.config import ServerConfig

    with pytest.raises(ValueError, match="--no-token"):
        ServerConfig(host="0.0.0.0", no_token=True).check()
    assert "0.0.0.0" not in ServerConfig(host="0.0.0.0", allowed_hosts=("Studio.lan",)).host_names()
    assert "studio.lan" in ServerConfig(host="0.0.0.0", allowed_hosts=("Studio.lan",)).host_names()


# -- 3./4. ranges, paths, no server paths in errors -----------------------------------------------------------------
@pytest.mark.parametrize("payload, field, words", [
    ({"video": "small.mp4", "options": {"batch_size": 0}}, "options.batch_size", "out of range"),
    ({"video": "small.mp4", "options": {"batch_size": -5}}, "options.batch_size", "out of range"),
    ({"video": "small.mp4", "options": {"batch_size": 100000}}, "options.batch_size", "out of range"),
    ({"video": "small.mp4", "options": {"bbox_shift": 1000000000}}, "options.bbox_shift", "out of range"),
    ({"video": "small.mp4", "options": {"extra_margin": -1000000000}}, "options.extra_margin", "out of range"),
    ({"video": "small.mp4", "options": {"user_box": "1,2,x", "speaker": "user_box"}}, "options.user_box",
     "cannot read"),
    ({"video": "clip.mp4\u0000.txt"}, "video", "NUL byte"),
    ({"video": 123}, "video", "a path is text"),
    ({"video": ["small.mp4"]}, "video", "a path is text"),
    ({"video": "a" * 300 + ".mp4"}, "video", "too long"),
    ({"video": "small.mp4", "audio": "x/" * 600 + "v.wav"}, "audio", "too long"),
])
def test_bad_values_are_refused_at_submit_naming_the_field(tmp_path, media, payload, field, words):
    async def scenario(client):
        r = await client.post("/v1/jobs", json=payload)
        err = (await r.json())["error"]
        assert r.status == 400 and err["field"] == field and words in err["message"] and err["fix"], err
        assert str(tmp_path) not in err["message"] + err["fix"]
        assert not os.listdir(tmp_path / "data" / "jobs")

    serve(config(tmp_path, media, no_token=True), scenario)


def test_errors_carry_no_server_paths_or_errno(tmp_path, media):
    from musetalk_enhanced.server.errors import without_paths

    (media / "broken.mp4").write_bytes(b"not a video" * 300)

    async def scenario(client):
        r = await client.post("/v1/jobs", json={"video": "broken.mp4"})
        err = (await r.json())["error"]
        assert r.status == 400 and "broken.mp4 is not a readable media file" in err["message"]
        assert "Errno" not in err["message"] and str(media) not in err["message"]

    serve(config(tmp_path, media, no_token=True), scenario)
    text = ("video: cannot open /srv/data/jobs/ab12/inputs/video_talk.mp4 (InvalidDataError: [Errno 1094995529] "
            "Invalid data: '/srv/data/jobs/ab12/inputs/video_talk.mp4'); weights from https://huggingface.co/x/y")
    clean = without_paths(text)
    assert "/srv" not in clean and "Errno" not in clean and "video_talk.mp4" in clean
    assert "https://huggingface.co/x/y" in clean


def test_a_finished_job_without_a_result_says_so(tmp_path, media):
    async def scenario(client):
        job = (await (await client.post("/v1/jobs", json={"video": "small.mp4"})).json())["id"]
        assert (await (await client.delete(f"/v1/jobs/{job}")).json())["state"] == "cancelled"
        r = await client.get(f"/v1/jobs/{job}/result")
        err = (await r.json())["error"]
        assert r.status == 409 and "never will" in err["message"] and "until its state is done" not in err["fix"]

    serve(config(tmp_path, media, no_token=True), scenario)


# -- 5. cancels persisted, inputs removed ----------------------------------------------------------------------------
def test_a_cancel_survives_a_restart(tmp_path):
    from musetalk_enhanced.server.jobs import JobStore

    store = JobStore(str(tmp_path / "jobs.sqlite"), str(tmp_path / "jobs"))
    job = store.new_folder()
    store.create(job, "dub", {"video": "v.mp4"}, {})
    assert store.claim("cpu").id == job
    assert store.request_cancel(job)
    assert store.get(job).public()["state"] == "cancelling"
    store.close()                                                        # the server dies mid-job
    store = JobStore(str(tmp_path / "jobs.sqlite"), str(tmp_path / "jobs"))
    notes = store.recover()
    assert store.get(job).state == "cancelled" and "cancel" in notes[0]
    assert store.claim("cpu") is None                                   # it never runs again


def test_a_version_1_job_database_opens_and_migrates(tmp_path):
    from musetalk_enhanced.server.jobs import SCHEMA_VERSION, JobStore

    db = sqlite3.connect(str(tmp_path / "jobs.sqlite"))
    db.executescript("""CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
        created REAL NOT NULL, started REAL, finished REAL, inputs TEXT NOT NULL, options TEXT NOT NULL, device TEXT,
        stage TEXT, done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0, report TEXT, error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, kind, state, created, inputs, options) VALUES ('old1', 'dub', 'queued', 1.0,
        '{"video": "v.mp4"}', '{"batch_size": 4}');
        PRAGMA user_version = 1;""")
    db.close()
    store = JobStore(str(tmp_path / "jobs.sqlite"), str(tmp_path / "jobs"))
    job = store.get("old1")
    assert job.options == {"batch_size": 4} and job.fraction == 0 and job.cancel_requested is None
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert store.claim("cpu").id == "old1"


def test_uploads_go_when_a_job_ends_media_files_never(tmp_path, media):
    from musetalk_enhanced.server.jobs import JobStore

    for keep in (False, True):
        store = JobStore(str(tmp_path / f"db{keep}.sqlite"), str(tmp_path / f"jobs{keep}"), keep_inputs=keep)
        ended = []
        for state in ("done", "failed", "cancelled"):
            job = store.new_folder()
            open(store.folder(job, "inputs", "video_a.mp4"), "wb").write(b"upload")
            store.create(job, "dub", {"video": store.folder(job, "inputs", "video_a.mp4"),
                                      "audio": str(media / "voice.wav")}, {})
            store.claim("cpu")
            store.finish(job, state)
            ended.append(job)
        queued = store.new_folder()
        open(store.folder(queued, "inputs", "video_a.mp4"), "wb").write(b"upload")
        store.create(queued, "dub", {"video": store.folder(queued, "inputs", "video_a.mp4")}, {})
        assert store.cancel_queued(queued)
        for job in ended + [queued]:
            assert os.path.isdir(store.folder(job, "inputs")) == keep
        assert (media / "voice.wav").exists()                            # the media folder's file is not the store's


# -- 6. progress that tells the truth ------------------------------------------------------------------------------
def test_each_stage_has_its_share_of_the_bar():
    from musetalk_enhanced.pipeline.jobs.run import STAGE_SHARES, job_fraction

    for kind, stages in STAGE_SHARES.items():
        assert sum(share for _, share in stages) == pytest.approx(1.0)
        points = [job_fraction(kind, stage, done, 4) for stage, _ in stages for done in range(5)]
        assert points == sorted(points) and points[0] == 0.0 and points[-1] == pytest.approx(1.0)
    assert job_fraction("dub", "lip-sync", 0, 10) == pytest.approx(0.40)     # face, whisper and loading done
    assert job_fraction("dub", "something else", 1, 2) is None
