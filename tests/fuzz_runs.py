"""The fuzz suite's runs: every described operation (schemathesis' cases, some broken on the
way out), every namespace method with arguments of every shape, every WebSocket route with
frames of every kind. Each run records what is wrong with an answer instead of raising,
so one run reports every problem it met (and nothing is shrunk: the run stays bounded)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from k2node.contract.methods import NAMESPACE_PATH
from tests.fuzz_requests import HOSTILE_VALUES, Hostile, aim, break_on_the_way
from tests.fuzz_support import LiveNode

TIMEOUT = (5.0, 20.0)  # connect, read: a request answered later than this is a hang
MESSAGE_MAX = 300  # http_errors.MAX_MESSAGE


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    # what each operation (or method, or WebSocket URL) answered: proof the run got there
    answers: defaultdict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def report(self) -> str:
        return f"{len(self.problems)} problems:\n" + "\n".join(self.problems[:40])


def bounded(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis as a seeded, bounded generator: the same examples each run, no database,
    no shrinking (problems are recorded, not raised)."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def problem_with(sent: Hostile, answer: requests.Response | None, error: str, doc: Any) -> str:
    """What is wrong with `answer` to `sent` ('' when nothing is)."""
    if answer is None:
        return error
    status = answer.status_code
    if status >= 500:
        return f"answered {status}: {answer.text[:300]}"
    if not sent.framed:
        return ""
    method, template = sent.operation.split(" ", 1)
    listed = doc["paths"][template][method.lower()]["responses"]
    if str(status) not in listed and "default" not in listed:
        return f"answered {status}, which the description does not list: {answer.text[:200]}"
    if method == "HEAD":  # nothing more to see: a HEAD's answer has no body
        return ""
    if status == 400 and answer.headers.get("Content-Type", "").startswith("text/plain"):
        # refused by aiohttp's HTTP layer before any route (a content encoding it cannot
        # decode, an invalid header): a short text, not the node's JSON
        return "" if 0 < len(answer.text) <= MESSAGE_MAX else f"400 text: {answer.text[:200]!r}"
    if status >= 400 and "default" not in listed:  # the node's own refusal, not a task's
        try:
            message = answer.json()["message"]
        except (ValueError, KeyError, TypeError):
            return f"a {status} without a JSON message: {answer.text[:200]!r}"
        if not isinstance(message, str) or not 0 < len(message) <= MESSAGE_MAX:
            return f"a {status} whose message is not short text: {str(message)[:200]!r}"
    return ""


def send(sent: Hostile) -> tuple[requests.Response | None, str]:
    started = time.monotonic()
    try:
        with requests.Session() as session:
            answer = session.send(sent.prepared, timeout=TIMEOUT, allow_redirects=False)
    except requests.Timeout:
        return None, f"no answer within {time.monotonic() - started:.1f} s (a hang)"
    except requests.ConnectionError as exc:
        return None, f"the connection ended with no answer: {str(exc)[:200]}"
    return answer, ""


def _record(found: Findings, sent: Hostile, doc: Any) -> requests.Response | None:
    answer, error = send(sent)
    problem = problem_with(sent, answer, error, doc)
    if problem:
        found.problems.append(f"{problem}\n    request: {sent.describe()}")
    return answer


def fuzz_operations(live: LiveNode, doc: Any, examples: int, found: Findings) -> None:
    """Every described operation, its positive and negative cases, some broken on the way."""
    schema = schemathesis.openapi.from_dict(doc)
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(live, doc, examples, found, result.ok(), mode)
            except Unsatisfiable:
                # nothing to break: an operation with no parameters and no body has no
                # negative case (its positive ones were broken on the way out instead)
                assert mode is GenerationMode.NEGATIVE


def _fuzz_operation(
    live: LiveNode, doc: Any, examples: int, found: Findings, operation: Any, mode: Any
) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @bounded(examples)
    def one(case: Any, data: st.DataObject) -> None:
        aim(case, live, data)
        prepared = requests.Request(**case.as_transport_kwargs(base_url=live.url)).prepare()
        sent = Hostile(prepared, label, "")
        sent.hostility = break_on_the_way(prepared, case, data)
        answer = _record(found, sent, doc)
        if answer is not None:
            found.answers[label].add(answer.status_code)

    one()


def _argument(live: LiveNode) -> st.SearchStrategy[str]:
    """One argument of a namespace call, as JSON text: a value the node knows (its keys,
    rounds, content, paths in and out of the task's folder), a hostile one, or any JSON."""
    keys = [live.staking_key, live.task_id, *live.held.values(), "aGVsbG8=", "KOII", "KPL"]
    paths = ["readFile", "writeFile", "readdir", "rm", "mkdir", "fsync", "a/b.txt", "..", "."]
    known = st.sampled_from([*keys, *paths])
    plain = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=10,
    )
    return st.one_of(
        known.map(json.dumps),
        st.integers(-2, 5).map(json.dumps),
        st.sampled_from(HOSTILE_VALUES),
        plain.map(json.dumps),
    )


def namespace_calls(doc: Any) -> list[dict[str, Any]]:
    """The namespace RPC's calls as the description lists them, one per method."""
    body = doc["paths"][NAMESPACE_PATH]["post"]["requestBody"]["content"]
    calls: list[dict[str, Any]] = body["application/json"]["schema"]["properties"]["args"]["oneOf"]
    return calls


def call_every_method(live: LiveNode, doc: Any, examples: int, found: Findings) -> None:
    """Each described method, from loopback with the task's own secret, with arguments of
    every shape: mostly as many as it takes, sometimes any number."""
    for call in namespace_calls(doc):
        _call_method(live, doc, examples, found, call)


def _call_method(
    live: LiveNode, doc: Any, examples: int, found: Findings, call: dict[str, Any]
) -> None:
    name = call["prefixItems"][0]["const"]
    fewest, most = call["minItems"] - 1, call.get("maxItems", call["minItems"] + 3) - 1
    counts = st.integers(fewest, most) | st.integers(0, most + 2)
    arguments = counts.flatmap(lambda n: st.lists(_argument(live), min_size=n, max_size=n))

    @given(args=arguments)
    @bounded(examples)
    def one(args: list[str]) -> None:
        text = ", ".join([json.dumps(name), *args])
        raw = f'{{"args": [{text}], "taskId": "{live.task_id}", "secret": "{live.secret}"}}'
        prepared = requests.Request(
            "POST",
            live.url + NAMESPACE_PATH,
            data=raw.encode("utf-8", "surrogatepass"),
            headers={"Content-Type": "application/json", "Connection": "close"},
        ).prepare()
        sent = Hostile(prepared, f"POST {NAMESPACE_PATH}", f"method:{name}")
        answer = _record(found, sent, doc)
        if answer is None or answer.status_code not in (200, 422):
            return
        said = answer.json()
        if answer.status_code == 200 and "response" not in said:
            found.problems.append(f"a 200 without its response: {answer.text[:200]}")
        elif answer.status_code == 200 or name in said["message"]:
            found.answers[name].add(answer.status_code)  # got past the secret, to the method

    one()


def _frames() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.just("text"), st.text(max_size=200)),
        st.tuples(st.just("binary"), st.binary(max_size=200)),
        st.tuples(st.just("ping"), st.binary(max_size=125)),
        st.tuples(st.just("big"), st.just(b"x" * (5 << 20))),  # past the 4 MiB message limit
        st.tuples(st.just("close"), st.sampled_from([1000, 1002, 1005, 1011, 2999, 3000, 4999])),
    )


async def _exchange(url: str, frames: list[tuple[str, Any]]) -> tuple[int, str]:
    """Open a WebSocket at `url`, send `frames`, close: the handshake's status, and what
    went wrong ('' when nothing did)."""
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, autoclose=False, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, f"handshake answered {exc.status}" if exc.status >= 500 else ""
        async with ws:
            for kind, value in frames:
                if ws.closed:
                    break
                try:
                    if kind == "text":
                        await ws.send_str(value)
                    elif kind in ("binary", "big"):
                        await ws.send_bytes(value)
                    elif kind == "ping":
                        await ws.ping(value)
                    else:
                        await ws.close(code=value)
                except ConnectionError:
                    break  # closed by the node meanwhile: a refusal, not a failure
    return 101, ""


def fuzz_websockets(live: LiveNode, doc: Any, examples: int, found: Findings) -> None:
    """Every WebSocket route (the node's events; a task's feed through the proxy), sent
    frames of every kind and size, and closes with any code."""
    base = live.url.replace("http", "ws", 1)
    paths = doc["paths"].items()
    urls = [base + path for path, item in paths if item.get("get", {}).get("x-websocket")]
    urls = [url.replace("{task_id}/{path}", f"{live.task_id}/feed") for url in urls]

    @given(url=st.sampled_from(urls), frames=st.lists(_frames(), max_size=4))
    @bounded(examples)
    def one(url: str, frames: list[tuple[str, Any]]) -> None:
        try:
            status, problem = asyncio.run(asyncio.wait_for(_exchange(url, frames), TIMEOUT[1]))
            found.answers[url].add(status)
        except TimeoutError:
            problem = f"no end within {TIMEOUT[1]} s (a hang)"
        if problem:
            found.problems.append(f"{problem}\n    WebSocket {url} frames={[k for k, _ in frames]}")

    one()


@contextmanager
def aiohttp_warnings() -> Iterator[list[str]]:
    """What aiohttp logs itself meanwhile at WARNING or above (its HTTP layer's tracebacks
    go to its own logger, not the node's events), one line each."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            error = record.exc_info[1] if record.exc_info else ""
            found.append(f"aiohttp logged {record.getMessage()}: {error!r}"[:400])

    handler = Collect(logging.WARNING)
    logging.getLogger("aiohttp").addHandler(handler)
    try:
        yield found
    finally:
        logging.getLogger("aiohttp").removeHandler(handler)


def logged_errors(logs: list[dict[str, Any]]) -> list[str]:
    """The node's own error events meanwhile (a 500 after its first byte was sent, a job
    that died), one line each."""
    return [f"logged {e}"[:400] for e in logs if e.get("log_level") in ("error", "critical")]
