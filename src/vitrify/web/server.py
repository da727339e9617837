"""The dashboard's web server: a Starlette app over one project directory, served by uvicorn.

Every request needs the access token (query ``?token=``, header ``X-Vitrify-Token`` or
``Authorization: Bearer``): none gives 401, a wrong one 403. The app reads the project and never
writes to it, except the two scheme actions (abort, continue), which are POST requests and take
the token only from a header. The page (``static/``, no build step, nothing from a CDN) follows the
project through server-sent events: ``/api/events`` sends the project's signature whenever it
changes and the page then fetches the JSON it shows again.

Data endpoints (JSON): ``/api/state`` (schemes, jobs, failures), ``/api/job?name=``,
``/api/micrographs``, ``/api/classes``, ``/api/maps``; pictures (PNG): ``/api/micrograph.png?name=``,
``/api/class.png?stack=&number=``, ``/api/map.png?path=``.
"""

from __future__ import annotations

import asyncio
import html
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from vitrify.io.errors import InputError
from vitrify.web import _actions, _classes, _jobs, _maps, _micrographs, _pictures

if TYPE_CHECKING:
    import uvicorn

TOKEN_HEADER = "x-vitrify-token"
_STATIC = {"app.js": "text/javascript", "plot.js": "text/javascript", "style.css": "text/css"}


@dataclass(frozen=True)
class DashboardSettings:
    """What one dashboard serves and how.

    Attributes
    ----------
    project
        The project directory (absolute).
    token
        The access token every request must carry.
    poll_s
        Seconds between two checks of the project for changes (server-sent events).
    """

    project: Path
    token: str
    poll_s: float = 1.0


def new_token() -> str:
    """A random access token (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def request_token(scope: Scope, query: bool = True) -> str | None:
    """The token a request carries (header first, then ``?token=`` when ``query``)."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    if TOKEN_HEADER in headers:
        return headers[TOKEN_HEADER]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if query:
        from urllib.parse import parse_qs

        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return values[0] if values else None
    return None


class TokenGuard:
    """ASGI middleware: 401 without a token, 403 with a wrong one; POSTs need it in a header."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.dashboard: Dashboard | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an HTTP request on only when it carries the token."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = request_token(scope, query=scope.get("method", "GET") in ("GET", "HEAD"))
        if given is None:
            response = PlainTextResponse("401: this dashboard needs its access token (?token=...)", 401,
                                         headers={"WWW-Authenticate": "Bearer"})
        elif not secrets.compare_digest(given.encode(), self.token.encode()):
            response = PlainTextResponse("403: wrong access token", 403)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def _static_text(name: str) -> str:
    return resources.files("vitrify.web").joinpath("static", name).read_text(encoding="utf-8")


def _json(data: object, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


def _error(message: str, status: int) -> JSONResponse:
    return _json({"error": message}, status)


class Dashboard:
    """The endpoints, bound to one project (see :func:`create_app`)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.root = settings.project
        self.stopping = threading.Event()  # set when the server shuts down: event streams end

    # ---- page -------------------------------------------------------------------------------
    def index(self, request: Request) -> HTMLResponse:
        """The page, with the token and project name filled in."""
        text = _static_text("index.html")
        text = text.replace("{{TOKEN}}", html.escape(self.settings.token, quote=True))
        text = text.replace("{{PROJECT}}", html.escape(str(self.root)))
        return HTMLResponse(text, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    def static(self, request: Request) -> Response:
        """``app.js``, ``plot.js``, ``style.css`` shipped in the package."""
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("not found", 404)
        return Response(_static_text(name), media_type=_STATIC[name])

    # ---- data -------------------------------------------------------------------------------
    def state(self, request: Request) -> JSONResponse:
        """Schemes, jobs, failures and the project's signature."""
        jobs = _jobs.job_rows(self.root)
        return _json({"project": str(self.root), "signature": _jobs.project_signature(self.root),
                      "time_s": time.time(), "schemes": _jobs.scheme_rows(self.root), "jobs": jobs,
                      "failures": _jobs.failures(self.root, jobs)})

    def job(self, request: Request) -> JSONResponse:
        """A job's log tails, note and skipped items."""
        name = _jobs.known_job(self.root, request.query_params.get("name", ""))
        if name is None:
            return _error("no such job in the pipeline", 404)
        return _json(_jobs.job_detail(self.root, name))

    def micrographs(self, request: Request) -> JSONResponse:
        """Per-micrograph figures with the schemes' thresholds."""
        return _json(_micrographs.micrograph_figures(self.root))

    def classes(self, request: Request) -> JSONResponse:
        """The 2D class gallery (with class ranker scores and selection when there is a ranker)."""
        return _json(_classes.class_gallery(self.root))

    def maps(self, request: Request) -> JSONResponse:
        """Maps and FSC curves of the 3D jobs."""
        return _json(_maps.project_maps(self.root))

    # ---- pictures ---------------------------------------------------------------------------
    def micrograph_png(self, request: Request) -> Response:
        """A micrograph with its picks (only micrographs the project lists)."""
        picture = _pictures.micrograph(self.root, request.query_params.get("name", ""))
        return _png(picture) if picture is not None else _error("no such micrograph", 404)

    def class_png(self, request: Request) -> Response:
        """One 2D class average of a Class2D job's ``*_classes.mrcs``."""
        try:
            number = int(request.query_params.get("number", ""))
        except ValueError:
            return _error("number must be an integer", 400)
        picture = _pictures.class_average(self.root, request.query_params.get("stack", ""), number)
        return _png(picture) if picture is not None else _error("no such class average", 404)

    def map_png(self, request: Request) -> Response:
        """Central sections of one of the maps :meth:`maps` lists."""
        picture = _pictures.map_sections(self.root, request.query_params.get("path", ""))
        return _png(picture) if picture is not None else _error("no such map", 404)

    # ---- live -------------------------------------------------------------------------------
    async def events(self, request: Request) -> StreamingResponse:
        """Server-sent events: ``data: <signature>`` now and whenever the project changes."""
        async def stream():
            last, quiet_s = None, 0.0
            while not self.stopping.is_set() and not await request.is_disconnected():
                signature = await asyncio.to_thread(_jobs.project_signature, self.root)
                if signature != last:
                    last, quiet_s = signature, 0.0
                    yield f"event: change\ndata: {signature}\n\n"
                elif quiet_s >= 15.0:
                    quiet_s = 0.0
                    yield ": still here\n\n"
                await asyncio.sleep(self.settings.poll_s)
                quiet_s += self.settings.poll_s

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # ---- actions ----------------------------------------------------------------------------
    def scheme_action(self, request: Request) -> JSONResponse:
        """POST ``/api/schemes/{name}/abort`` or ``/continue``."""
        name, action = request.path_params["name"], request.path_params["action"]
        if name not in _jobs.scheme_names(self.root):
            return _error(f"no scheme {name}", 404)
        try:
            if action == "abort":
                return _json({"scheme": name, "action": action, "touched": _actions.abort(self.root, name)})
            if action == "continue":
                return _json({"scheme": name, "action": action, "pid": _actions.continue_scheme(self.root, name)})
        except _actions.SchemeBusy as err:
            return _error(str(err), 409)
        except InputError as err:
            return _error(str(err), 400)
        return _error(f"unknown action {action}", 404)


def create_app(project: str | Path, token: str, *, poll_s: float = 1.0) -> ASGIApp:
    """The dashboard of ``project`` guarded by ``token`` (an ASGI app for uvicorn or a test client)."""
    root = Path(project).resolve()
    if not (root / "default_pipeline.star").is_file() and not (root / "Schemes").is_dir():
        raise InputError("not a project directory", path=root,
                         expected="a directory with default_pipeline.star or Schemes/")
    board = Dashboard(DashboardSettings(root, token, poll_s))
    routes = [
        Route("/", board.index), Route("/static/{name}", board.static),
        Route("/api/state", board.state), Route("/api/job", board.job),
        Route("/api/micrographs", board.micrographs), Route("/api/classes", board.classes),
        Route("/api/maps", board.maps), Route("/api/micrograph.png", board.micrograph_png),
        Route("/api/class.png", board.class_png), Route("/api/map.png", board.map_png),
        Route("/api/events", board.events),
        Route("/api/schemes/{name}/{action}", board.scheme_action, methods=["POST"]),
    ]
    guard = TokenGuard(Starlette(routes=routes), token)
    guard.dashboard = board
    return guard


def dashboard_url(host: str, port: int, token: str) -> str:
    """``http://HOST:PORT/?token=TOKEN`` (an IPv6 address in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"




def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port); InputError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror}", field="--host/--port",
                         expected="a local address and a free port (0 picks one)") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def make_server(app: ASGIApp) -> uvicorn.Server:
    """A uvicorn server for ``app`` that ends the app's event streams when it shuts down (so
    Ctrl-C does not wait for open pages) and logs only warnings."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            board = getattr(app, "dashboard", None)
            if board is not None:
                board.stopping.set()
            await super().shutdown(sockets)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3, access_log=False)
    return _Server(config)


def serve(app: ASGIApp, sock: socket.socket) -> None:
    """Run the dashboard on an already bound socket until Ctrl-C."""
    make_server(app).run(sockets=[sock])


__all__ = ["DashboardSettings", "TokenGuard", "bind_socket", "create_app", "dashboard_url", "make_server",
           "new_token", "serve"]
