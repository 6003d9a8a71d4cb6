"""The server's page in headless Chromium against stubbed answers (playwright routes every request; no server, no
network): the defects users met, each reproduced — an empty player and report box while a job runs, a token error
that stayed, "1/1" on a failed job, a cancel that showed nothing until the next poll, a delete without asking."""
import json
import os

import pytest

import serverkit as sk
from conftest import ROOT

BASE = "http://127.0.0.1:9"          # never contacted: every request is answered by the route below
PAGE = os.path.join(ROOT, "server", "page")


class StubServer:
    """The answers of a server with the token ``tok``, one job at a time, recording the requests it got."""

    def __init__(self):
        from musetalk_enhanced.server.config import ServerConfig
        from musetalk_enhanced.server.openapi import describe

        self.schema = describe(ServerConfig(no_token=True))
        self.job = None          # the job's state as GET shows it
        self.requests = []

    def job_body(self, state, stage="lip-sync", done=2, total=10, fraction=0.5, error=None):
        return {"id": "a1b2c3d4e5", "kind": "dub", "state": state, "created": 1.0, "error": error,
                "progress": {"stage": stage, "done": done, "total": total, "fraction": fraction}, "report": None,
                "result": None, "inputs": {}, "options": {}}

    def handle(self, route):
        req = route.request
        path = req.url[len(BASE):].split("?")[0]
        self.requests.append((req.method, path))
        if path in ("/", "/page/app.js", "/page/style.css"):
            name = "index.html" if path == "/" else path.split("/")[-1]
            kind = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.split(".")[-1]]
            return route.fulfill(status=200, content_type=kind, body=open(os.path.join(PAGE, name)).read())
        if req.headers.get("authorization") != "Bearer tok":
            return self.json(route, 401, {"error": {"status": 401, "field": "Authorization", "message":
                                                    "this server needs a bearer token", "fix": "send the token"}})
        if path == "/openapi.json":
            return self.json(route, 200, self.schema)
        if path == "/v1/avatars":
            return self.json(route, 200, {"avatars": []})
        if path == "/v1/jobs" and req.method == "POST":
            self.job = self.job_body("running")
            return self.json(route, 202, {"id": "a1b2c3d4e5", "state": "queued", "url": "/v1/jobs/a1b2c3d4e5"})
        if path == "/v1/jobs" and req.method == "GET":
            return self.json(route, 200, {"jobs": [self.job_body("failed", "lip-sync", 1, 1, 0.4, "boom")],
                                          "queued": 0})
        if path == "/v1/jobs/a1b2c3d4e5" and req.method == "DELETE":
            if self.job and self.job["state"] == "running":
                self.job = self.job_body("cancelling")
                return self.json(route, 202, {"id": "a1b2c3d4e5", "state": "cancelling"})
            return self.json(route, 200, {"id": "a1b2c3d4e5", "deleted": True})
        if path == "/v1/jobs/a1b2c3d4e5":
            return self.json(route, 200, self.job)
        return self.json(route, 404, {"error": {"status": 404, "field": None, "message": "no", "fix": ""}})

    @staticmethod
    def json(route, status, body):
        return route.fulfill(status=status, content_type="application/json", body=json.dumps(body))


@pytest.mark.skipif(not sk.chromium_path(), reason="Chromium is not installed (apt-get install chromium)")
def test_the_page_shows_what_is_true(tmp_path):
    stub = StubServer()
    with sk.chromium() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(BASE + "/**", stub.handle)
        page.goto(BASE + "/")
        page.wait_for_function("document.getElementById('dub-error').textContent.includes('bearer token')")
        page.fill("#token", "tok")
        page.dispatch_event("#token", "change")
        page.wait_for_selector("body[data-ready='1']")
        assert page.text_content("#dub-error") == ""                 # the answered token error is gone

        # a running job: no empty player, no empty report box; the bar is the job's share done
        page.set_input_files("#video", {"name": "v.mp4", "mimeType": "video/mp4", "buffer": b"0" * 64})
        page.click("#submit")
        page.wait_for_function("document.getElementById('status').dataset.state === 'running'")
        assert not page.is_visible("#result") and not page.is_visible("#report")
        assert "lip-sync 2/10" in page.text_content("#status")
        assert page.evaluate("document.getElementById('progress').value") == pytest.approx(0.5)

        # cancel: shown at once from DELETE's answer
        page.click("#cancel")
        page.wait_for_function("document.getElementById('status').dataset.state === 'cancelling'", timeout=600)
        assert not page.is_visible("#cancel")

        # a failed job: its error, no "1/1"
        stub.job = stub.job_body("failed", "lip-sync", 1, 1, 0.4, "boom")
        page.wait_for_function("document.getElementById('status').dataset.state === 'failed'")
        status = page.text_content("#status")
        assert "boom" in status and "1/1" not in status, status

        # the jobs list: no "1/1" either, and Delete asks first
        page.click("#tab-jobs")
        page.wait_for_selector("#job-rows button")
        assert page.locator("#job-rows tr td").nth(3).text_content() == ""     # progress: none when ended
        answers = iter([False, True])
        page.on("dialog", lambda d: d.accept() if next(answers) else d.dismiss())
        deletes = lambda: [r for r in stub.requests if r[0] == "DELETE"]         # noqa: E731
        before = len(deletes())
        page.click("#job-rows button:has-text('Delete')")
        page.wait_for_timeout(300)
        assert len(deletes()) == before                                  # dismissed: nothing deleted
        page.click("#job-rows button:has-text('Delete')")
        page.wait_for_function("true")
        page.wait_for_timeout(300)
        assert len(deletes()) == before + 1
        assert not errors, errors


@pytest.mark.skipif(not sk.chromium_path(), reason="Chromium is not installed (apt-get install chromium)")
def test_the_page_keeps_the_token_from_its_address():
    stub = StubServer()
    with sk.chromium() as browser:
        page = browser.new_page()
        page.route(BASE + "/**", stub.handle)
        page.goto(BASE + "/?token=tok")                      # the URL `serve` prints
        page.wait_for_selector("body[data-ready='1']")
        assert page.url == BASE + "/"                        # taken out of the address bar (and history)
        assert page.evaluate("localStorage.getItem('musetalk-token')") == "tok"
        page.goto(BASE + "/")                                # the next visit needs no token in the URL
        page.wait_for_selector("body[data-ready='1']")
