"""The web page and REST API (FastAPI): live view, events, unknown visitors, people, access log, status.

Every route but the login page and the style sheet needs a login session (cookie: HttpOnly, SameSite=Strict,
Secure under TLS) or, under `/api/v1`, an API token (`Authorization: Bearer ...`). Every state-changing request
made with a session carries its CSRF token (form field `csrf` or header `X-CSRF-Token`). Bad input gets one
clear line (HTTP 4xx, `{"error": ...}` for the API) and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, UploadFile

from edged import __version__
from edged.config import Config
from edged.embed.base import Embedder
from edged.errors import EdgedError, GalleryError
from edged.fileio import shown
from edged.gallery import audit as audit_log
from edged.gallery import events as event_store
from edged.gallery import unknowns as unknown_store
from edged.gallery.store import Gallery, validate_name
from edged.web.auth import AuthFile, LoginLimiter, Session, Sessions, csrf_ok
from edged.web.live import WebSink

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "edged_session"
#: Photos one upload may carry.
MAX_UPLOAD_FILES = 8
#: Longest text field accepted in a form.
FIELD_MAX = 200
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class WebError(EdgedError):
    """A request the page refuses: `status` and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoginRequired(Exception):
    """A page asked for without a session: redirect to the login page."""


@dataclass
class Principal:
    """Who is asking: a session (with its CSRF token) or an API token."""

    session: Session | None
    token: str | None = None


@dataclass
class WebContext:
    """What the page reads and changes."""

    cfg: Config
    gallery_path: Path
    auth: AuthFile
    #: The running daemon's view (events, live frames); None for `edged web` without a daemon.
    live: WebSink | None = None
    #: Makes the embedder for uploads (the gallery's own embedder name); built once, on first use.
    make_embedder: Callable[[str], Embedder] | None = None
    clock: Callable[[], float] = time.time
    tls: bool = False
    sessions: Sessions = field(init=False)
    limiter: LoginLimiter = field(init=False)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.cfg.web.session_hours * 3600.0)
        self.limiter = LoginLimiter(self.cfg.web.login_attempts, self.cfg.web.login_backoff_s)
        self.started = self.clock()
        self._embedder: Embedder | None = None
        self._embed_lock = threading.Lock()

    @contextlib.contextmanager
    def gallery(self, create: bool = False) -> Iterator[Gallery]:
        if not create and not self.gallery_path.exists():
            raise WebError(404, f"no gallery at {shown(self.gallery_path)} yet: enroll someone first")
        g = Gallery(self.gallery_path, create=create)
        try:
            yield g
        finally:
            g.close()

    def embedder(self, gallery: Gallery | None) -> Embedder:
        """The embedder for uploads (one at a time: `embed_lock`); the gallery's own, else the config's."""
        if self.make_embedder is None:
            raise WebError(503, "enrolling from the page needs the embedder, which this server was started without")
        wanted = (gallery.embedder_name() if gallery is not None else None) or self.cfg.embedder.name
        if self._embedder is None or self._embedder.name != wanted:
            self._embedder = self.make_embedder(wanted)
        stored = gallery.embedder_version() if gallery is not None else None
        if stored and self._embedder.version != stored:
            raise WebError(409, f"the gallery holds {stored} embeddings, not {self._embedder.version}")
        return self._embedder


def _when(wall: float | str | None) -> str:
    if wall is None:
        return "-"
    if isinstance(wall, str):
        return wall.replace("T", " ").replace("Z", " UTC")
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ids(text: str) -> list[int]:
    """Visit ids from a form field "1,2,3"."""
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise WebError(400, "visits: comma-separated visit ids expected") from None
    if not ids or len(ids) > 10_000:
        raise WebError(400, "visits: give 1 to 10000 visit ids")
    return ids


def _field(form: Any, key: str, required: bool = True) -> str:
    value = form.get(key)
    if value is None or isinstance(value, UploadFile):
        if required:
            raise WebError(400, f"{key}: missing")
        return ""
    text = str(value)
    if len(text) > FIELD_MAX:
        raise WebError(400, f"{key}: longer than {FIELD_MAX} characters")
    return text.strip()


def create_app(ctx: WebContext) -> FastAPI:
    """The page and API over `ctx`."""
    # FastAPI's Swagger page loads its scripts from a CDN (refused by the CSP, unreachable offline): /api/docs
    # is a server-rendered list of the OpenAPI document instead; both need a login like everything else.
    app = FastAPI(title="edged", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    web = ctx.cfg.web
    upload_max = int(web.upload_max_mib * 1024 * 1024)

    # ---- plumbing: headers, body limit, auth, errors ----

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        length = request.headers.get("content-length")
        limit = upload_max * MAX_UPLOAD_FILES + 256 * 1024
        if length is not None and (not length.isdigit() or int(length) > limit):
            response: Response = _error(request, 413, f"request body larger than {limit // (1024 * 1024)} MiB")
        else:
            response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if ctx.tls:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    def _error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        principal = _principal(request)
        return templates.TemplateResponse(request, "error.html", {"message": message, "status": status,
                                          "csrf": principal.session.csrf if principal and principal.session else ""},
                                          status_code=status)

    @app.exception_handler(WebError)
    async def web_error(request: Request, exc: WebError) -> Response:
        return _error(request, exc.status, str(exc))

    @app.exception_handler(EdgedError)
    async def edged_error(request: Request, exc: EdgedError) -> Response:
        return _error(request, 400, str(exc))

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "authentication required (a session or an API token)"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return RedirectResponse("/login", status_code=303)

    def _principal(request: Request) -> Principal | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and request.url.path.startswith("/api/"):
            name = ctx.auth.token_name(auth[7:].strip())
            return Principal(None, name) if name else None
        session = ctx.sessions.get(request.cookies.get(COOKIE), ctx.clock())
        return Principal(session) if session else None

    def who(request: Request) -> Principal:
        principal = _principal(request)
        if principal is None:
            raise LoginRequired()
        return principal

    async def changing(request: Request) -> tuple[Principal, Any]:
        """A state-changing request: authenticated, with the session's CSRF token; returns the parsed form."""
        principal = who(request)
        content_type = request.headers.get("content-type", "")
        form: Any = FormData()  # not a form: no fields, so a missing field is reported as missing
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            try:
                form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=50)
            except Exception as exc:  # starlette's MultiPartException and friends
                raise WebError(400, f"unreadable form: {exc}") from None
        if principal.session is not None:
            sent = request.headers.get("x-csrf-token") or form.get("csrf")
            if not isinstance(sent, str) or not csrf_ok(principal.session, sent):
                raise WebError(403, "missing or wrong CSRF token: reload the page and try again")
        return principal, form

    def page(request: Request, name: str, principal: Principal, **values: Any) -> Response:
        live = ctx.live
        return templates.TemplateResponse(request, name, {
            "csrf": principal.session.csrf if principal.session else "", "device": ctx.cfg.device_id,
            "health": live.health if live else None, "daemon": live is not None, **values})

    # ---- login ----

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "login.html", {"has_password": ctx.auth.has_password,
                                                                  "message": "", "device": ctx.cfg.device_id})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        now = ctx.clock()
        wait = ctx.limiter.wait_s(client, now)
        if wait > 0:
            return templates.TemplateResponse(request, "login.html", {
                "has_password": True, "device": ctx.cfg.device_id,
                "message": f"too many failed logins: try again in {math.ceil(wait)} s"}, status_code=429)
        form = await request.form(max_files=0, max_fields=5)
        password = form.get("password")
        if isinstance(password, str) and ctx.auth.verify_password(password):
            ctx.limiter.succeeded(client)
            sid, _ = ctx.sessions.create(now)
            response = RedirectResponse("/live", status_code=303)
            response.set_cookie(COOKIE, sid, max_age=int(web.session_hours * 3600), httponly=True, samesite="strict",
                                secure=ctx.tls, path="/")
            log.info("web: login from %s", client)
            return response
        wait = ctx.limiter.failed(client, now)
        log.warning("web: failed login from %s%s", client, f" (must wait {wait:.0f} s)" if wait else "")
        message = "wrong password" if ctx.auth.has_password else "no password set: run `edged web set-password`"
        return templates.TemplateResponse(request, "login.html", {
            "has_password": ctx.auth.has_password, "message": message, "device": ctx.cfg.device_id}, status_code=401)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await changing(request)
        ctx.sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        who(request)
        return RedirectResponse("/live", status_code=303)

    # ---- live ----

    cameras = [c.name for c in ctx.cfg.cameras]

    def _camera(camera: str | None) -> str:
        """The camera a live view asks for (`?camera=NAME`; default the first)."""
        if camera is None or camera == "":
            return cameras[0]
        if camera not in cameras:
            raise WebError(404, f"no camera named {camera[:64]!r} (cameras: {', '.join(cameras)})")
        return camera

    @app.get("/live", response_class=HTMLResponse, include_in_schema=False)
    def live_page(request: Request, camera: str | None = None) -> Response:
        principal = who(request)
        chosen = _camera(camera)
        return page(request, "live.html", principal, tracks=ctx.live.tracks(chosen) if ctx.live else [],
                    fps=web.live_fps, camera=chosen, cameras=cameras)

    @app.get("/live.jpg", include_in_schema=False)
    def live_jpeg(request: Request, camera: str | None = None) -> Response:
        who(request)
        chosen = _camera(camera)
        shot = ctx.live.live_jpeg(chosen) if ctx.live else None
        if shot is None:
            raise WebError(404, "no live frame (the daemon is not running this page, or no frame yet)")
        return Response(shot[1], media_type="image/jpeg", headers={"X-Frame-Index": str(shot[0])})

    @app.get("/live.mjpg", include_in_schema=False)
    def live_mjpeg(request: Request, camera: str | None = None) -> Response:
        who(request)
        live = ctx.live
        if live is None:
            raise WebError(404, "no live view: the page runs without the daemon (edged web)")
        chosen = _camera(camera)
        period = 1.0 / web.live_fps

        def frames() -> Iterator[bytes]:
            live.watchers += 1
            try:
                last = -1
                due = time.monotonic()
                while live.server is None or not live.server.stopping:
                    shot = live.live_jpeg(chosen)
                    if shot is not None and shot[0] != last:
                        last = shot[0]
                        yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                               + str(len(shot[1])).encode() + b"\r\n\r\n" + shot[1] + b"\r\n")
                        # a fixed schedule (not "period after this one"): web.live_fps on average
                        due = max(due + period, time.monotonic() - period)
                        time.sleep(max(0.0, due - time.monotonic()))
                    else:
                        time.sleep(min(period, 0.02))  # no new frame yet
            finally:
                live.watchers -= 1

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame")

    # ---- events ----

    def _events(person: str | None, kind: str | None, hours: float | None, limit: int = 200) -> list[Any]:
        if not ctx.gallery_path.exists():
            return []
        since = ctx.clock() - hours * 3600 if hours else None
        with ctx.gallery() as g:
            return event_store.recent(g, person or None, kind or None, since, limit)

    @app.get("/events", response_class=HTMLResponse, include_in_schema=False)
    def events_page(request: Request, person: str = "", kind: str = "", hours: float = 0.0) -> Response:
        principal = who(request)
        if not 0 <= hours <= 24 * 365:
            raise WebError(400, "hours: 0 to 8760")
        people: list[str] = []
        if ctx.gallery_path.exists():
            with ctx.gallery() as g:
                people = event_store.people(g)
        return page(request, "events.html", principal, events=_events(person, kind, hours), people=people,
                    person=person, kind=kind, hours=hours)

    def _event(event_id: int) -> Any:
        with ctx.gallery() as g:
            found = event_store.one(g, event_id)
        if found is None:
            raise WebError(404, f"no event {event_id} (deleted by retention, or never stored)")
        return found

    @app.get("/events/{event_id}", response_class=HTMLResponse, include_in_schema=False)
    def event_page(request: Request, event_id: int) -> Response:
        principal = who(request)
        return page(request, "event.html", principal, event=_event(event_id))

    @app.get("/events/{event_id}/face.jpg", include_in_schema=False)
    def event_face(request: Request, event_id: int) -> Response:
        who(request)
        event = _event(event_id)
        if event.thumb is None:
            raise WebError(404, f"event {event_id} has no face image")
        return Response(event.thumb, media_type="image/jpeg")

    # ---- unknown visitors ----

    @app.get("/unknowns", response_class=HTMLResponse, include_in_schema=False)
    def unknowns_page(request: Request) -> Response:
        principal = who(request)
        clusters = _clusters()
        blockers: dict[int, str] = {}
        if clusters:
            with ctx.gallery() as g:
                for c in clusters:
                    why = unknown_store.enroll_blocker(g, [v.id for v in c.visits], ctx.cfg.enroll)
                    if why is not None:
                        blockers[c.id] = why
        return page(request, "unknowns.html", principal, clusters=clusters, blockers=blockers)

    def _clusters() -> list[Any]:
        if not ctx.gallery_path.exists():
            return []
        with ctx.gallery() as g:
            if any(v.cluster is None for v in unknown_store.visits(g)):
                version = unknown_store.default_version(g)
                if version is not None:
                    unknown_store.cluster(g, version, ctx.cfg.unknowns.cluster_eps)
            return unknown_store.clusters(g)

    @app.get("/unknowns/crops/{sample_id}.png", include_in_schema=False)
    def unknown_crop(request: Request, sample_id: int) -> Response:
        who(request)
        with ctx.gallery() as g:
            crop = unknown_store.sample_crop(g, sample_id)
        if crop is None:
            raise WebError(404, f"unknown sample {sample_id}: no face image kept")
        return Response(crop[0], media_type="image/png")

    @app.post("/unknowns/name", include_in_schema=False)
    async def unknowns_name(request: Request) -> Response:
        _, form = await changing(request)
        ids, name = _ids(_field(form, "visits")), validate_name(_field(form, "name"))
        with ctx.gallery() as g, ctx._embed_lock:
            embedder = ctx.embedder(g) if ctx.make_embedder is not None else None  # mirror-averaged as enroll does
            report = unknown_store.name_cluster(g, ids, name, ctx.cfg.enroll, embedder=embedder)
        log.info("web: named %d unknown visit(s) %s (%d samples)", len(ids), name, report.added)
        return RedirectResponse(f"/people/{name}", status_code=303)

    @app.post("/unknowns/ignore", include_in_schema=False)
    async def unknowns_ignore(request: Request) -> Response:
        _, form = await changing(request)
        ids, label = _ids(_field(form, "visits")), validate_name(_field(form, "label"))
        with ctx.gallery() as g:
            unknown_store.ignore_cluster(g, ids, label)
        return RedirectResponse("/unknowns", status_code=303)

    @app.post("/unknowns/delete", include_in_schema=False)
    async def unknowns_delete(request: Request) -> Response:
        _, form = await changing(request)
        ids = _ids(_field(form, "visits"))
        if _field(form, "confirm", required=False) != "yes":
            raise WebError(400, "tick 'confirm' to delete these visits")
        with ctx.gallery() as g:
            unknown_store.delete(g, ids)
        return RedirectResponse("/unknowns", status_code=303)

    # ---- people ----

    @app.get("/people", response_class=HTMLResponse, include_in_schema=False)
    def people_page(request: Request) -> Response:
        principal = who(request)
        people = []
        if ctx.gallery_path.exists():
            with ctx.gallery() as g:
                people = g.people()
        return page(request, "people.html", principal, people=people, max_files=MAX_UPLOAD_FILES,
                    upload_max_mib=web.upload_max_mib)

    @app.get("/people/{name}", response_class=HTMLResponse, include_in_schema=False)
    def person_page(request: Request, name: str) -> Response:
        principal = who(request)
        with ctx.gallery() as g:
            person = _person(g, name)
            samples = g.samples(name)
        return page(request, "person.html", principal, person=person, samples=samples, report=None)

    def _person(g: Gallery, name: str) -> Any:
        try:
            return g.person(name)
        except GalleryError as exc:
            raise WebError(404, str(exc)) from None

    @app.get("/people/crops/{sample_id}.png", include_in_schema=False)
    def person_crop(request: Request, sample_id: int) -> Response:
        who(request)
        with ctx.gallery() as g:
            crop = g.sample_crop(sample_id)
        if crop is None:
            raise WebError(404, f"sample {sample_id}: no face image kept")
        return Response(crop[0], media_type="image/png")

    @app.post("/people/enroll", include_in_schema=False)
    async def people_enroll(request: Request) -> Response:
        principal, form = await changing(request)
        name = validate_name(_field(form, "name"))
        report = _enroll(name, [f for f in form.getlist("photos") if isinstance(f, UploadFile)])
        with ctx.gallery() as g:
            person = _person(g, name) if report.samples else None
            samples = g.samples(name) if person else []
        if person is None:
            raise WebError(422, "nothing enrolled: " + "; ".join(f"{s}: {r}" for s, r in report.rejected)[:600])
        return page(request, "person.html", principal, person=person, samples=samples, report=report)

    def _read_upload(upload: UploadFile, fallback: str) -> tuple[str, bytes]:
        """The upload's shown name and bytes; 413 beyond web.upload_max_mib (never more is read)."""
        label = shown(upload.filename or fallback, 80)
        data = upload.file.read(upload_max + 1)
        if len(data) > upload_max:
            raise WebError(413, f"{label}: larger than web.upload_max_mib ({web.upload_max_mib:g} MiB)")
        return label, data

    def _enroll(name: str, uploads: list[UploadFile]) -> Any:
        from edged.gallery.enroll import SourceItem, enroll_person
        from edged.gallery.match import MatchRule
        from edged.vision.imageio import check_header

        if not uploads:
            raise WebError(400, "photos: choose at least one photo")
        if len(uploads) > MAX_UPLOAD_FILES:
            raise WebError(400, f"photos: at most {MAX_UPLOAD_FILES} per upload")
        workdir = Path(tempfile.mkdtemp(prefix="edged-upload-"))  # 0700, removed below
        try:
            items, names = [], {}
            for i, up in enumerate(uploads):
                label, data = _read_upload(up, f"photo {i + 1}")
                header = check_header(data, label)  # ImageError: not an image (or too large), with the reason
                suffix = {"JPEG": "jpg", "PNM": "ppm", "TIFF": "tif"}.get(header.format, header.format.lower())
                path = workdir / f"upload-{i}.{suffix}"
                path.write_bytes(data)
                items.append(SourceItem(path, "image", True))
                names[str(path)] = label
            with ctx._embed_lock:
                report = enroll_person(ctx.gallery_path, name, items, ctx.cfg.enroll, ctx.embedder,
                                       rule_of=lambda e: MatchRule.of(e, ctx.cfg.embedder, ctx.cfg.match))
            report.rejected = [(names.get(s, s), r) for s, r in report.rejected]
            log.info("web: enrolled %s: %d sample(s) added, %d rejected", name, len(report.samples),
                     len(report.rejected))
            return report
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @app.post("/people/{name}/samples/{sample_id}/delete", include_in_schema=False)
    async def sample_delete(request: Request, name: str, sample_id: int) -> Response:
        await changing(request)
        with ctx.gallery() as g:
            g.remove_sample(name, sample_id)
        return RedirectResponse(f"/people/{name}", status_code=303)

    @app.post("/people/{name}/rename", include_in_schema=False)
    async def person_rename(request: Request, name: str) -> Response:
        _, form = await changing(request)
        new = validate_name(_field(form, "new_name"))
        with ctx.gallery() as g:
            g.rename_person(name, new)
        return RedirectResponse(f"/people/{new}", status_code=303)

    @app.post("/people/{name}/delete", include_in_schema=False)
    async def person_delete(request: Request, name: str) -> Response:
        _, form = await changing(request)
        if _field(form, "confirm", required=False) != "yes":
            raise WebError(400, f"tick 'confirm' to remove {name} and every sample")
        with ctx.gallery() as g:
            g.remove_person(name)
        return RedirectResponse("/people", status_code=303)

    # ---- access log, status ----

    @app.get("/access", response_class=HTMLResponse, include_in_schema=False)
    def access_page(request: Request) -> Response:
        principal = who(request)
        records: list[Any] = []
        if ctx.gallery_path.exists():
            with ctx.gallery() as g:
                records = audit_log.records(g, limit=200)
        return page(request, "access.html", principal, records=records)

    def _status() -> dict[str, Any]:
        live = ctx.live
        health = live.health if live else None
        people = 0
        if ctx.gallery_path.exists():
            with ctx.gallery() as g:
                people = len(g.people())
        return {"version": __version__, "device": ctx.cfg.device_id, "camera": ctx.cfg.camera.name,
                "embedder": ctx.cfg.embedder.name, "threshold": ctx.cfg.embedder.threshold,
                "daemon": live is not None, "uptime_s": round(ctx.clock() - ctx.started, 1), "people": people,
                "status": health.status if health else None, "fps": health.fps if health else None,
                "camera_state": str(health.camera) if health else None,
                "frames_dropped": health.frames_dropped if health else None,
                "live_watchers": live.watchers if live else 0,
                "access": ctx.cfg.access.enabled, "liveness": ctx.cfg.liveness.enabled}

    @app.get("/status", response_class=HTMLResponse, include_in_schema=False)
    def status_page(request: Request) -> Response:
        principal = who(request)
        return page(request, "status.html", principal, status=_status())

    # ---- REST API ----

    @app.get("/api/openapi.json", include_in_schema=False)
    def api_openapi(request: Request) -> dict[str, Any]:
        who(request)
        return app.openapi()

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs(request: Request) -> Response:
        principal = who(request)
        routes = [(method.upper(), path, op.get("summary", ""), op.get("description", ""))
                  for path, ops in app.openapi()["paths"].items() for method, op in ops.items()]
        return page(request, "api.html", principal, routes=routes)

    @app.get("/api/v1/health", tags=["status"])
    def api_health(request: Request) -> dict[str, Any]:
        """The daemon's state: version, camera, fps, people enrolled."""
        who(request)
        return _status()

    @app.get("/api/v1/people", tags=["people"])
    def api_people(request: Request) -> list[dict[str, Any]]:
        """Enrolled people and their sample counts."""
        who(request)
        if not ctx.gallery_path.exists():
            return []
        with ctx.gallery() as g:
            return [{"name": p.name, "display_name": p.display_name, "samples": p.samples} for p in g.people()]

    @app.post("/api/v1/people/{name}/photos", tags=["people"])
    async def api_enroll(request: Request, name: str) -> dict[str, Any]:
        """Enroll `name` from uploaded photos (multipart field `photos`, with `edged enroll`'s quality gates)."""
        _, form = await changing(request)
        validate_name(name)
        report = _enroll(name, [f for f in form.getlist("photos") if isinstance(f, UploadFile)])
        return {"name": name, "added": len(report.samples), "warnings": report.warnings,
                "rejected": [{"source": s, "reason": r} for s, r in report.rejected]}

    @app.post("/api/v1/identify", tags=["people"])
    async def api_identify(request: Request) -> dict[str, Any]:
        """Who is in an uploaded photo (multipart field `photo`): every face with the door's rule and quality gates."""
        from edged.embed.faces import FacePipeline
        from edged.gallery.identify import identify_faces
        from edged.gallery.match import MatchRule
        from edged.vision.imageio import decode_image

        _, form = await changing(request)
        upload = form.get("photo")
        if not isinstance(upload, UploadFile):
            raise WebError(400, "photo: attach one photo (multipart field 'photo')")
        label, data = _read_upload(upload, "photo")
        image = decode_image(data, label)
        with ctx.gallery() as g, ctx._embed_lock:
            embedder = ctx.embedder(g)
            rule = MatchRule.of(embedder, ctx.cfg.embedder, ctx.cfg.match)
            matcher = unknown_store.site_matcher(g, rule, g.snapshot(embedder.version), embedder.version)
            faces = identify_faces(image, FacePipeline(embedder), matcher, ctx.cfg.quality)
        return {"rule": rule.describe(), "faces": faces}

    @app.delete("/api/v1/people/{name}", tags=["people"])
    async def api_remove(request: Request, name: str) -> dict[str, Any]:
        """Remove a person and every sample."""
        await changing(request)
        with ctx.gallery() as g:
            _person(g, name)
            removed = g.remove_person(name)
        return {"name": name, "samples_removed": removed}

    @app.get("/api/v1/events", tags=["events"])
    def api_events(request: Request, person: str = "", kind: str = "", hours: float = 0.0,
                   limit: int = 100) -> list[dict[str, Any]]:
        """Recent events (the MQTT payloads), newest first."""
        who(request)
        if not 1 <= limit <= 10_000 or not 0 <= hours <= 24 * 365:
            raise WebError(400, "limit: 1 to 10000; hours: 0 to 8760")
        return [{"id": e.id, "kind": e.kind, **e.payload, "face": f"/events/{e.id}/face.jpg" if e.has_thumb else None}
                for e in _events(person, kind, hours, limit)]

    @app.get("/api/v1/unknowns", tags=["unknowns"])
    def api_unknowns(request: Request) -> list[dict[str, Any]]:
        """Clusters of unknown visitors."""
        who(request)
        return [{"cluster": c.id, "visits": [v.id for v in c.visits], "samples": c.samples,
                 "first_seen": c.first_seen, "last_seen": c.last_seen,
                 "face": f"/unknowns/crops/{c.best.id}.png" if c.best and c.best.crop_png else None}
                for c in _clusters()]

    return app
