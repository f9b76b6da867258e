"""The one HTTP error boundary of k2node's servers (the node's API and a task's own routes),
and their JSON in and out.

A handler refuses a request by raising `HttpError`; aiohttp's own HTTP exceptions (404, 405,
413, ...) pass through the same door. The client gets a status and a JSON body with a
message; an unexpected exception becomes a 500 whose traceback goes to the log only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from k2node import codec
from k2node.logs import get_logger

log = get_logger("k2node.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra  # more fields of the JSON body (kubo's clients read `Message`)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """`data` as a JSON answer, through k2node's fast codec."""
    return web.Response(
        body=codec.dumps(data), status=status, headers=headers, content_type="application/json"
    )


# A refusal may quote what the client sent; the client needs the reason, not its input back.
MAX_MESSAGE = 300


def short(text: str) -> str:
    """`text` cut to MAX_MESSAGE characters, marked where it was cut."""
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    cut = {k: short(v) if isinstance(v, str) else v for k, v in extra.items()}
    return json_response({"message": short(message), **cut}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as exc:
        return error_response(exc.status, exc.message, **exc.extra)
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # a body that cannot be read as sent (its content encoding, chunking or length)
        response = error_response(400, f"the request body cannot be read: {str(exc)[:120]}")
        response.force_close()  # the rest of that body is not worth reading
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason)
        if "Allow" in exc.headers:  # what a 405 must say
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("http_error", path=request.path, method=request.method)
        return error_response(500, "internal error")


class ProtocolLog:
    """What aiohttp's HTTP layer says about a request it refused before any route, or could
    not finish (its `logger`): a client's malformed request (a header too long, a body in an
    encoding the node cannot decode) is one short info event, not a traceback on stderr per
    request; anything else stays an error with its traceback."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass  # aiohttp's own notes (a client that left early): not the node's events

    def exception(self, message: str, *args: Any, exc_info: Any = None, **_: Any) -> None:
        if isinstance(exc_info, HttpProcessingError | web.RequestPayloadError | ConnectionError):
            reason = " ".join(str(exc_info).split())  # aiohttp's reasons span lines
            log.info("http_refused", reason=short(reason))
        else:
            log.error("http_layer_error", message=message % args, exc_info=exc_info)


async def json_body(request: web.Request) -> Any:
    """The request's JSON body, or a 422 saying it is not JSON."""
    try:
        return await request.json(loads=codec.loads)
    except (ValueError, RecursionError, LookupError):  # LookupError: an unknown charset
        raise HttpError(422, "body must be a JSON object") from None
