"""The web page and REST API over real HTTP: `edged web` and `edged run` as a user starts them (subprocesses on
free loopback ports), a real gallery, a real broker for the daemon run, real photos and the Hamilton clip.
The browser walk-through is tests/test_web_browser.py."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from edged.config import WebConfig
from edged.gallery.store import Gallery
from edged.vision.imageio import load_image
from edged.web.auth import AuthError, AuthFile, LoginLimiter, Sessions
from edged.web.server import warn_if_exposed
from tests.conftest import LIN, ROOT, enroll_cli, run_cli, wait_until
from tests.mosquitto import Broker, Subscriber, free_port, make_tls_files

PASSWORD = "correct horse battery staple"
PAGES = ["/", "/live", "/events", "/unknowns", "/people", f"/people/{LIN}", "/access", "/status",
         "/live.jpg", "/live.mjpg", "/events/1", "/events/1/face.jpg", "/people/crops/1.png", "/unknowns/crops/1.png"]
API = ["/api/docs", "/api/openapi.json", "/api/v1/health", "/api/v1/people", "/api/v1/events", "/api/v1/unknowns"]
POSTS = ["/people/enroll", f"/people/{LIN}/delete", f"/people/{LIN}/rename", f"/people/{LIN}/samples/1/delete",
         "/unknowns/name", "/unknowns/ignore", "/unknowns/delete", "/logout"]


# ---- the rules, pure ----

@pytest.mark.pure
def test_login_backoff_doubles_after_the_allowed_failures_and_a_success_forgets() -> None:
    limiter = LoginLimiter(attempts=3, backoff_s=10.0)
    assert [limiter.failed("a", 100.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.wait_s("a", 100.0) == 0.0
    assert limiter.failed("a", 100.0) == 10.0 and limiter.wait_s("a", 105.0) == 5.0
    assert limiter.failed("a", 111.0) == 20.0  # the 4th failure: twice as long
    assert limiter.wait_s("b", 111.0) == 0.0  # another address is not blocked
    limiter.succeeded("a")
    assert limiter.wait_s("a", 112.0) == 0.0 and limiter.failed("a", 112.0) == 0.0


@pytest.mark.pure
def test_sessions_expire_and_end() -> None:
    sessions = Sessions(max_age_s=60.0)
    sid, session = sessions.create(1000.0)
    assert sessions.get(sid, 1059.0) is session and session.csrf and session.csrf != sid
    assert sessions.get(sid, 1060.0) is None  # expired, and forgotten
    sid, _ = sessions.create(2000.0)
    sessions.end(sid)
    assert sessions.get(sid, 2001.0) is None and sessions.get("forged", 2001.0) is None


@pytest.mark.pure
def test_auth_file_keeps_hashes_only_in_a_private_file(tmp_path: Path) -> None:
    auth = AuthFile(tmp_path / "site.web-auth")
    assert not auth.has_password and not auth.verify_password(PASSWORD)
    with pytest.raises(AuthError, match="too short"):
        auth.set_password("short")
    auth.set_password(PASSWORD)
    text = auth.path.read_text()
    assert auth.path.stat().st_mode & 0o777 == 0o600 and PASSWORD not in text and "$argon2id$" in text
    assert auth.verify_password(PASSWORD) and not auth.verify_password(PASSWORD + "!")
    token = auth.add_token("ha", 1.7e9)
    assert token not in auth.path.read_text() and auth.token_name(token) == "ha" and auth.token_name("x") is None
    with pytest.raises(AuthError, match="exists"):
        auth.add_token("ha", 1.7e9)
    with pytest.raises(AuthError, match="token name"):
        auth.add_token("bad name", 1.7e9)
    assert auth.remove_token("ha") and auth.token_name(token) is None and not auth.remove_token("ha")
    auth.path.write_text("{not json")
    with pytest.raises(AuthError, match=r"site.web-auth: not an edged auth file"):
        auth.verify_password(PASSWORD)


@pytest.mark.pure
def test_event_history_keeps_payloads_and_thumbnails_within_retention(tmp_path: Path) -> None:
    """Real SQLite: events read back newest first and filtered; retention deletes by age and by count;
    removing a person deletes their history."""
    from edged.gallery import events
    from edged.gallery.store import NewSample

    with Gallery(tmp_path / "g.db") as g:
        g.add_samples("ann", [NewSample(np.eye(128, dtype=np.float32)[0], "dlib", "v", "a.jpg", 100, 50.0)])
        day = 86400.0
        ids = [events.add(g, kind, person, "door", 1000 * day + i, {"type": kind, "person": person, "i": i},
                          b"\xff\xd8jpeg" if kind != "left" else None)
               for i, (kind, person) in enumerate([("recognized", "ann"), ("left", "ann"), ("unknown", None)])]
        assert [e.id for e in events.recent(g)] == ids[::-1]
        assert [e.kind for e in events.recent(g, person="ann")] == ["left", "recognized"]
        assert [e.payload["i"] for e in events.recent(g, kind="unknown")] == [2]
        assert events.one(g, ids[0]).thumb == b"\xff\xd8jpeg" and events.one(g, ids[1]).thumb is None
        assert events.recent(g)[0].thumb is None and events.recent(g)[0].has_thumb  # lists carry no bytes
        assert events.people(g) == ["ann"]
        old = events.add(g, "unknown", None, "door", 900 * day, {}, None)
        assert events.purge(g, older_than_days=30, keep_max=10, now=1000 * day + 10) == 1  # too old
        assert events.one(g, old) is None and len(events.recent(g)) == 3
        assert events.purge(g, older_than_days=30, keep_max=2, now=1000 * day + 10) == 1  # beyond the count
        assert [e.id for e in events.recent(g)] == ids[:0:-1]
        g.remove_person("ann")
        assert [e.person for e in events.recent(g)] == [None]


@pytest.mark.pure
def test_a_non_loopback_bind_without_tls_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "edged.web.server"):
        warn_if_exposed(WebConfig(bind="127.0.0.1"))
        warn_if_exposed(WebConfig(bind="::1"))
        assert caplog.records == []
        warn_if_exposed(WebConfig(bind="192.0.2.10"))
    assert len(caplog.records) == 1 and "without TLS" in caplog.records[0].getMessage()


# ---- `edged web` over HTTP ----

@pytest.fixture(scope="module")
def lin_gallery(tmp_path_factory: pytest.TempPathFactory, fr_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("web-gallery") / "gallery.db"
    enroll_cli(path, LIN, fr_dir / "lin-manuel-miranda.png")
    return path


class Site:
    """`edged web serve` in a child process on a free port, with a password set through the CLI."""

    def __init__(self, workdir: Path, gallery: Path, web: dict[str, object] | None = None,
                 extra: dict[str, object] | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gallery = gallery
        self.port = free_port()
        self.tls = bool(web and web.get("tls"))
        cfg = {"device_id": "door", "camera": {"source": "0"}, "gallery": {"path": str(gallery)},
               "mqtt": {"enabled": False},
               "web": {"enabled": True, "port": self.port, "login_attempts": 3, "login_backoff_s": 2.0, **(web or {})},
               **(extra or {})}
        if "cameras" in cfg:  # several cameras instead of the one
            del cfg["camera"]
        self.config = workdir / "edged.yaml"
        self.config.write_text(json.dumps(cfg))
        done = subprocess.run([sys.executable, "-m", "edged", "--config", str(self.config), "web", "set-password"],
                              input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        self.log = workdir / "web.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Site:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "edged", "--config", str(self.config), "web"],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        assert wait_until(lambda: "web: serving" in self.log.read_text() or self.proc.poll() is not None, 60), \
            self.log.read_text()
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.base, follow_redirects=False, timeout=120, **kw)  # type: ignore[arg-type]

    def login(self, **kw: object) -> tuple[httpx.Client, str]:
        c = self.client(**kw)
        r = c.post("/login", data={"password": PASSWORD})
        assert r.status_code == 303, r.text
        return c, csrf_of(c.get("/people").text)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`edged --config CONFIG run` as a user starts it, its output in `log`; returns once it is ready."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edged", "--config", str(config), "run"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    assert wait_until(lambda: "edged ready" in log.read_text() or proc.poll() is not None, 120), log.read_text()
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as systemd stops it; its exit status (killed after 30 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def error_of(r: httpx.Response) -> str:
    if r.headers.get("content-type", "").startswith("application/json"):
        return str(r.json()["error"])
    found = re.search(r'id="(?:error|message)">([^<]*)<', r.text)
    assert found, r.text[:800]
    return html.unescape(found.group(1))


@pytest.fixture
def site(tmp_path: Path, lin_gallery: Path) -> Iterator[Site]:
    gallery = tmp_path / "gallery.db"
    gallery.write_bytes(lin_gallery.read_bytes())
    os.chmod(gallery, 0o600)
    s = Site(tmp_path, gallery).start()
    yield s
    s.stop()


def test_every_page_and_api_call_is_refused_without_a_session(site: Site) -> None:
    """Nothing, not even a thumbnail, without a login: pages redirect to the login page, the API answers 401,
    a forged cookie or token is the same as none; the login page itself and the style sheet are public."""
    for client in (site.client(), site.client(cookies={"edged_session": "forged"}),
                   site.client(headers={"Authorization": "Bearer edged_forged"})):
        for path in PAGES:
            r = client.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/login", (path, r.status_code)
        for path in API:
            r = client.get(path)
            assert r.status_code == 401 and "authentication required" in r.json()["error"], path
        for path in POSTS:
            r = client.post(path, data={"name": "x", "visits": "1", "confirm": "yes", "new_name": "y"})
            assert r.status_code == 303 and r.headers["location"] == "/login", path
        assert client.delete(f"/api/v1/people/{LIN}").status_code == 401
    r = site.client().get("/login")
    assert r.status_code == 200 and 'type="password"' in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert site.client().get("/static/app.css").status_code == 200
    with Gallery(site.gallery) as g:
        assert [p.name for p in g.people()] == [LIN]  # nothing changed


def test_wrong_password_is_refused_and_repeated_failures_must_wait(site: Site) -> None:
    c = site.client()
    for _ in range(2):
        r = c.post("/login", data={"password": "wrong password!"})
        assert r.status_code == 401 and error_of(r) == "wrong password" and "set-cookie" not in r.headers
    r = c.post("/login", data={"password": "wrong password!"})  # the 3rd (web.login_attempts): must wait 2 s
    assert r.status_code == 401
    r = c.post("/login", data={"password": PASSWORD})  # even the right password, while blocked
    assert r.status_code == 429 and re.fullmatch(r"too many failed logins: try again in \d s", error_of(r))
    time.sleep(2.1)
    r = c.post("/login", data={"password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/live"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # no TLS here
    assert c.get("/people").status_code == 200
    r = c.post("/logout", data={"csrf": csrf_of(c.get("/people").text)})
    assert r.status_code == 303 and c.get("/people").status_code == 303  # the session ended
    assert "failed login from 127.0.0.1" in site.log.read_text() and PASSWORD not in site.log.read_text()


def test_state_changes_need_the_sessions_csrf_token_or_an_api_token(site: Site, fr_dir: Path) -> None:
    c, csrf = site.login()
    photo = (fr_dir / "obama.jpg").read_bytes()
    for sent in ({}, {"csrf": "wrong"}):
        r = c.post("/people/enroll", data={"name": "obama", **sent}, files=[("photos", ("o.jpg", photo, "image/jpeg"))])
        assert r.status_code == 403 and "CSRF" in error_of(r)
        r = c.post(f"/people/{LIN}/delete", data={"confirm": "yes", **sent})
        assert r.status_code == 403
    assert c.delete(f"/api/v1/people/{LIN}").status_code == 403  # a session without X-CSRF-Token
    with Gallery(site.gallery) as g:
        assert [p.name for p in g.people()] == [LIN]
    # an API token (no cookie, so no CSRF) enrolls remotely and is refused once revoked
    token = run_cli("--config", str(site.config), "web", "add-token", "ha").stdout.strip()
    api = site.client(headers={"Authorization": f"Bearer {token}"})
    r = api.post("/api/v1/people/obama/photos", files=[("photos", ("o.jpg", photo, "image/jpeg"))])
    assert r.status_code == 200 and r.json()["added"] == 1, r.text
    assert {p["name"]: p["samples"] for p in api.get("/api/v1/people").json()} == {LIN: 1, "obama": 1}
    assert api.delete("/api/v1/people/obama").json() == {"name": "obama", "samples_removed": 1}
    # identify an uploaded photo with the door's rule: Lin-Manuel by name, the stranger unknown and why
    for photo_name, expected in (("lin-manuel-miranda.png", LIN), ("biden.jpg", None)):
        r = api.post("/api/v1/identify", files=[("photo", (photo_name, (fr_dir / photo_name).read_bytes()))])
        assert r.status_code == 200, r.text
        [face] = r.json()["faces"]
        assert face["name"] == expected and (expected or face["reason"] in ("too far", "nobody enrolled")), face
    r = api.post("/api/v1/identify", files=[("photo", ("x.png", b"\x89PNG not really"))])
    assert r.status_code == 400 and r.json()["error"].startswith("x.png: "), r.text
    assert run_cli("--config", str(site.config), "web", "remove-token", "ha").returncode == 0
    assert api.get("/api/v1/people").status_code == 401
    assert csrf and c.delete(f"/api/v1/people/{LIN}", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_bad_uploads_get_one_clear_error_and_change_nothing(site: Site, fr_dir: Path, tmp_path: Path) -> None:
    c, csrf = site.login()
    with Gallery(site.gallery) as g:
        before = g.change_counter()
    photo = (fr_dir / "obama.jpg").read_bytes()

    def enroll(name: str, filename: str, data: bytes) -> httpx.Response:
        return c.post("/people/enroll", data={"name": name, "csrf": csrf},
                      files=[("photos", (filename, data, "image/jpeg"))])

    r = enroll("bob", "notes.jpg", b"this is not an image at all")
    assert r.status_code == 400 and error_of(r).startswith("notes.jpg: not a readable image"), error_of(r)
    r = enroll("bob", "big.jpg", b"\xff\xd8\xff" + b"\0" * (50 * 1024 * 1024))  # 50 MB
    assert r.status_code == 413 and error_of(r) == "big.jpg: larger than web.upload_max_mib (10 MiB)"
    r = enroll("bob", "../../../../tmp/evil\n.jpg", b"GIF89a not really")
    assert r.status_code == 400 and error_of(r).startswith("../../../../tmp/evil%0A.jpg: unsupported format (GIF")
    assert not Path("/tmp/evil\n.jpg").exists()
    r = enroll("bob<script>", "o.jpg", photo)
    assert r.status_code == 400 and error_of(r).startswith("invalid name 'bob<script>'"), error_of(r)
    assert "<script>" not in r.text  # escaped
    r = enroll("../x", "o.jpg", photo)
    assert r.status_code == 400 and "path separator" in error_of(r)
    r = enroll("bob", "empty.jpg", (fr_dir / "obama.jpg").read_bytes()[:1000])  # a truncated JPEG
    assert r.status_code in (400, 422) and "empty.jpg" in error_of(r), error_of(r)
    r = c.post("/people/enroll", data={"name": "bob", "csrf": csrf})
    assert r.status_code == 400 and error_of(r) == "photos: choose at least one photo"
    with Gallery(site.gallery) as g:
        assert [p.name for p in g.people()] == [LIN] and g.change_counter() == before
    assert not list(Path("/tmp").glob("edged-upload-*"))  # upload scratch directories are removed


def test_people_pages_enroll_show_crops_remove_a_sample_rename_and_remove(site: Site, fr_dir: Path) -> None:
    c, csrf = site.login()
    photos = [("photos", (n, (fr_dir / n).read_bytes(), "image/jpeg")) for n in ("obama.jpg", "obama2.jpg")]
    r = c.post("/people/enroll", data={"name": "obama", "csrf": csrf}, files=photos)
    assert r.status_code == 200 and "Added 2 sample(s)" in r.text
    ids = [int(i) for i in re.findall(r'/people/crops/(\d+)\.png', r.text)]
    assert len(ids) == 2
    crop = c.get(f"/people/crops/{ids[0]}.png")
    assert crop.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and min(image.shape[:2]) >= 96
    # the same photo again is a near-duplicate: rejected, with the reason on the page
    r = c.post("/people/enroll", data={"name": "obama", "csrf": csrf}, files=photos[:1])
    assert r.status_code == 422 and "obama.jpg: " in error_of(r) and "duplicate" in error_of(r)
    r = c.post(f"/people/obama/samples/{ids[0]}/delete", data={"csrf": csrf})
    assert r.status_code == 303
    r = c.post(f"/people/obama/samples/{ids[1]}/delete", data={"csrf": csrf})
    assert r.status_code == 400 and "last of 'obama'" in error_of(r)
    r = c.post("/people/obama/rename", data={"csrf": csrf, "new_name": "barack-obama"})
    assert r.status_code == 303 and r.headers["location"] == "/people/barack-obama"
    r = c.post("/people/barack-obama/delete", data={"csrf": csrf})
    assert r.status_code == 400 and "confirm" in error_of(r)
    with Gallery(site.gallery) as g:
        assert {p.name: p.samples for p in g.people()} == {LIN: 1, "barack-obama": 1}
    assert c.post("/people/barack-obama/delete", data={"csrf": csrf, "confirm": "yes"}).status_code == 303
    assert c.get("/people/barack-obama").status_code == 404
    with Gallery(site.gallery) as g:
        assert [p.name for p in g.people()] == [LIN]


def test_a_group_without_an_enrollable_face_says_why_instead_of_offering_a_name(site: Site, fr_dir: Path,
                                                                                  dlib_pipeline) -> None:
    """A visitor seen only small (a face under enroll.min_face_px) cannot be named: the page says so up front and
    offers no name form; a direct POST is still refused with the same reason and changes nothing."""
    from edged.gallery import unknowns as uk

    version = dlib_pipeline.embedder.version
    with Gallery(site.gallery) as g:
        now = "2026-12-04T08:00:00Z"
        far = uk.add_visit(g, uk.UnknownVisit("door", now, now, track_id=1), [uk.UnknownSample(
            dlib_pipeline.process(load_image(fr_dir / "obama.jpg"))[0].embedding, "dlib", version, 60, 300.0)])
        near = uk.add_visit(g, uk.UnknownVisit("door", now, now, track_id=2), [uk.UnknownSample(
            dlib_pipeline.process(load_image(fr_dir / "biden.jpg"))[0].embedding, "dlib", version, 120, 300.0)])
    c, csrf = site.login()
    page = c.get("/unknowns").text
    groups = re.findall(r'<section class="cluster".*?</section>', page, re.S)
    by_visit = {int(v): sec for sec in groups for v in re.findall(r'name="visits" value="([\d,]+)"', sec)[0].split(",")}
    assert set(by_visit) == {far, near}, page
    assert "Not enrollable yet: face too small (60 px &lt; min_face_px 80)" in by_visit[far]
    assert 'class="name-form"' not in by_visit[far]
    assert 'class="name-form"' in by_visit[near] and "not-enrollable" not in by_visit[near]
    r = c.post("/unknowns/name", data={"csrf": csrf, "visits": str(far), "name": "obama"})
    assert r.status_code == 400
    assert error_of(r) == f"visits {far}: no sample passes the enroll gates (face too small 1); nothing changed"
    with Gallery(site.gallery) as g:
        assert [p.name for p in g.people()] == [LIN] and {v.id for v in uk.visits(g)} == {far, near}


def test_concurrent_renames_one_wins_the_other_is_told(site: Site) -> None:
    c, csrf = site.login()
    results: list[httpx.Response] = []
    go = threading.Barrier(2)

    def rename(new: str) -> None:
        with site.client(cookies=dict(c.cookies)) as mine:
            go.wait()
            results.append(mine.post(f"/people/{LIN}/rename", data={"csrf": csrf, "new_name": new}))

    threads = [threading.Thread(target=rename, args=(n,)) for n in ("lin-a", "lin-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results)
    assert codes == [303, 400], [(r.status_code, r.text[:200]) for r in results]
    loser = next(r for r in results if r.status_code == 400)
    assert f"no person named '{LIN}'" in error_of(loser)
    with Gallery(site.gallery) as g:
        assert [p.name for p in g.people()] in (["lin-a"], ["lin-b"]) and g.integrity_check() == "ok"


def test_tls_page_sets_a_secure_cookie(tmp_path: Path, lin_gallery: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    s = Site(tmp_path, lin_gallery, web={"tls": {"cert_file": str(files["cert"]), "key_file": str(files["key"])}})
    s.start()
    try:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            s.client().get("/login")
        c = s.client(verify=ssl.create_default_context(cafile=str(files["ca"])))
        r = c.post("/login", data={"password": PASSWORD})
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
        assert c.get("/status").headers["strict-transport-security"].startswith("max-age=")
        with httpx.Client(base_url=f"http://127.0.0.1:{s.port}", timeout=10) as plain, \
                pytest.raises(httpx.HTTPError):
            plain.get("/login")  # no clear-text HTTP on the TLS port
    finally:
        s.stop()


# ---- the page inside the daemon ----

@pytest.mark.slow
def test_daemon_serves_a_live_view_per_camera(tmp_path: Path, lin_gallery: Path, clip: Path) -> None:
    """`edged run` with two cameras and web.enabled: each camera has its own live view (`?camera=NAME`, default
    the first), the page links the others, an unknown camera is a 404 naming the cameras."""
    porch = tmp_path / "porch.avi"
    writer = cv2.VideoWriter(str(porch), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for _ in range(20):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    gallery = tmp_path / "gallery.db"
    gallery.write_bytes(lin_gallery.read_bytes())
    site = Site(tmp_path, gallery, extra={"cameras": [{"source": str(clip), "name": "stage", "loop": True},
                                                      {"source": str(porch), "name": "porch", "loop": True}]})
    log = tmp_path / "run.log"
    proc = start_daemon(site.config, log)
    try:
        c, _ = site.login()

        def width(params: dict[str, str]) -> int:
            r = c.get("/live.jpg", params=params)
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text
            return cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).shape[1]

        assert wait_until(lambda: c.get("/live.jpg", params={"camera": "porch"}).status_code == 200, 30)
        assert width({"camera": "stage"}) == 640 and width({"camera": "porch"}) == 160 and width({}) == 640
        missing = c.get("/live.jpg", params={"camera": "garage"})
        assert missing.status_code == 404
        assert "no camera named 'garage' (cameras: stage, porch)" in html.unescape(missing.text)
        page = c.get("/live", params={"camera": "porch"}).text
        assert "<strong>porch</strong>" in page and 'href="/live?camera=stage"' in page
        assert 'src="/live.mjpg?camera=porch"' in page
        with c.stream("GET", "/live.mjpg", params={"camera": "porch"}) as stream:
            head = next(stream.iter_bytes())
        assert head.startswith(b"--frame") and b"image/jpeg" in head
    finally:
        rc = stop_daemon(proc)
    assert rc == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_daemon_serves_the_live_view_and_the_events_it_publishes(tmp_path: Path, lin_gallery: Path,
                                                                 clip: Path) -> None:
    """`edged run` with web.enabled on the Hamilton clip and a real broker: the live view shows new frames,
    the page lists the recognized event MQTT published (same track, same timestamp) with a face thumbnail,
    and the health line is the daemon's."""
    broker = Broker(tmp_path / "broker").start()
    gallery = tmp_path / "gallery.db"
    gallery.write_bytes(lin_gallery.read_bytes())
    sub = Subscriber(broker.port, ["edged/door/event"])
    site = Site(tmp_path, gallery, extra={"camera": {"source": str(clip), "name": "stage", "loop": True},
                                          "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port}})
    log = tmp_path / "run.log"
    proc = start_daemon(site.config, log)
    try:
        c, _ = site.login()
        first = c.get("/live.jpg")
        time.sleep(0.6)
        second = c.get("/live.jpg")
        assert first.status_code == second.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        assert int(second.headers["x-frame-index"]) > int(first.headers["x-frame-index"])
        assert first.content != second.content
        frame = cv2.imdecode(np.frombuffer(second.content, np.uint8), cv2.IMREAD_COLOR)
        assert frame is not None and frame.shape[1] == 640

        def recognized() -> list[dict[str, object]]:
            return [e for e in c.get("/api/v1/events").json() if e["kind"] == "recognized"]

        assert wait_until(lambda: recognized(), 60), c.get("/api/v1/events").json()
        event = recognized()[-1]
        assert event["person"] == LIN and event["camera"] == "stage" and event["face"]
        assert wait_until(lambda: any(json.loads(m.payload).get("type") == "recognized" for m in sub.messages), 10)
        mqtt = [json.loads(m.payload) for m in sub.messages if json.loads(m.payload).get("type") == "recognized"]
        assert any(m["track_id"] == event["track_id"] and m["timestamp"] == event["timestamp"] for m in mqtt)
        thumb = c.get(str(event["face"]))
        face = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
        assert thumb.headers["content-type"] == "image/jpeg" and face is not None and max(face.shape[:2]) <= 112
        page = c.get("/events", params={"person": LIN, "kind": "recognized"}).text
        assert f'/events/{event["id"]}/face.jpg' in page
        status = c.get("/api/v1/health").json()
        assert status["daemon"] and status["camera_state"] == "streaming" and status["people"] == 1
        assert "fps" in c.get("/live").text or status["fps"] is not None
    finally:
        rc = stop_daemon(proc)
        sub.close()
        broker.stop()
    assert rc == 0, log.read_text()[-3000:]
    assert "web: serving http://127.0.0.1:" in log.read_text()
    # the history is in the gallery file: `edged web` alone (no daemon) lists the same event with its face
    alone = Site(tmp_path / "alone", gallery).start()
    try:
        c, _ = alone.login()
        stored = {e["id"]: e for e in c.get("/api/v1/events", params={"limit": 1000}).json()}
        assert stored[event["id"]]["timestamp"] == event["timestamp"] and stored[event["id"]]["person"] == LIN
        assert c.get(str(event["face"])).content == thumb.content
        assert c.get("/live.jpg").status_code == 404  # no live view without the daemon
    finally:
        alone.stop()
