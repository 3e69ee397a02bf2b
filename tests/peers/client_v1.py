#!/usr/bin/env python3
"""Scenario client for the MCP Python SDK 1.x (run with .peers/py1/bin/python).

Connects over Streamable HTTP (``--url``), over the legacy HTTP+SSE transport
(``--sse-url``, the SDK's ``sse_client``) or, as an alternative, spawns a stdio
server (``--stdio "CMD ARGS..."``), runs one scenario and prints exactly one
JSON object as the last line on stdout. Exit 0 on success; on failure a
message goes to stderr and the exit code is non-zero.

Scenarios and the JSON each prints (the contract with the test harness):

  basic      --echo-tool NAME            {"protocol", "server", "tools", "echo"}
  pid        --pid-tool NAME             {"pid"}; waits for a stdin line/EOF;
                                         closes the session; {"pid", "closed": true}
  progress   --tool NAME --args JSON     {"events", "progress_count"}
  sampling   --tool NAME --args JSON     {"result_text", "sampling_requests"}
  concurrent --pid-tool NAME --sessions N {"pids"}
  sticky     --pid-tool NAME --sessions N --calls K
                                         {"sessions": [{"id", "pids"}]}: N sessions at
                                         once, each calling the pid tool K times
  failover   --pid-tool NAME --sessions N
                                         {"sessions": [{"id", "pid"}]} once every session
                                         made its first call; waits for a stdin line;
                                         each calls again, and on 404 ("Session
                                         terminated") opens a new session and calls there;
                                         {"sessions": [{"id", "pid", "after_id",
                                         "after_pid", "reinitialized"}]}

``--header 'Name: value'`` (repeatable) adds a header to every HTTP request
(Streamable HTTP and legacy SSE), e.g. ``Authorization: Bearer TOKEN``.

Every phase runs under ``--timeout`` seconds (default 30) so a broken proxy
fails the run instead of hanging it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import sys
import traceback
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, AsyncIterator

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import McpError

CLIENT_TAG = "v1"
SAMPLE_REPLY = "canned-sample-reply"


class ScenarioError(Exception):
    """A scenario's expectation was not met (reported on stderr, exit 1)."""


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON object as a single line on stdout and flush it."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def num(x: float | None) -> float | int | None:
    """Render integral floats as ints (progress 1.0 -> 1) for stable JSON."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def result_text(result: types.CallToolResult) -> str:
    """Concatenate the text blocks of a tool result."""
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def check_ok(name: str, result: types.CallToolResult) -> types.CallToolResult:
    if result.isError:
        raise ScenarioError(f"tool {name!r} returned an error result: {result_text(result)!r}")
    return result


def headers_of(args: argparse.Namespace) -> dict[str, str]:
    """The ``--header 'Name: value'`` options as a dict."""
    headers = {}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    return headers


@asynccontextmanager
async def http_transport(args: argparse.Namespace) -> AsyncIterator[Any]:
    """``streamable_http_client`` on ``--url``, with the ``--header`` options."""
    async with create_mcp_http_client(headers=headers_of(args)) as client:
        async with streamable_http_client(args.url, http_client=client) as streams:
            yield streams


@asynccontextmanager
async def connect(
    args: argparse.Namespace, sampling_callback: Any = None
) -> AsyncIterator[tuple[ClientSession, types.InitializeResult]]:
    """Open a transport, run the initialize handshake, yield (session, init result).

    Leaving the context closes the session; over HTTP the SDK then sends
    ``DELETE`` with the ``Mcp-Session-Id`` header.
    """
    if args.url:
        transport = http_transport(args)
    elif args.sse_url:
        transport = sse_client(args.sse_url, headers=headers_of(args), sse_read_timeout=args.timeout)
    else:
        argv = shlex.split(args.stdio)
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
        transport = stdio_client(params)
    async with transport as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(
            read,
            write,
            read_timeout_seconds=timedelta(seconds=args.timeout),
            sampling_callback=sampling_callback,
            client_info=types.Implementation(name=f"mcphop-test-{CLIENT_TAG}", version="0.1.0"),
        ) as session:
            init = await session.initialize()
            yield session, init


@asynccontextmanager
async def connect_with_id(args: argparse.Namespace) -> AsyncIterator[tuple[ClientSession, str]]:
    """As ``connect``, over Streamable HTTP only; yields (session, Mcp-Session-Id)."""
    async with http_transport(args) as (read, write, get_session_id):
        async with ClientSession(
            read,
            write,
            read_timeout_seconds=timedelta(seconds=args.timeout),
            client_info=types.Implementation(name=f"mcphop-test-{CLIENT_TAG}", version="0.1.0"),
        ) as session:
            await session.initialize()
            session_id = get_session_id()
            if not session_id:
                raise ScenarioError("initialize returned no Mcp-Session-Id")
            yield session, session_id


async def call_pid(args: argparse.Namespace, session: ClientSession) -> int:
    result = check_ok(args.pid_tool, await session.call_tool(args.pid_tool, {}))
    text = result_text(result).strip()
    try:
        return int(text)
    except ValueError:
        raise ScenarioError(f"pid tool returned non-integer text {text!r}") from None


async def scenario_basic(args: argparse.Namespace) -> dict[str, Any]:
    with anyio.fail_after(args.timeout):
        async with connect(args) as (session, init):
            tools = await session.list_tools()
            message = f"hello from {CLIENT_TAG}"
            result = check_ok(args.echo_tool, await session.call_tool(args.echo_tool, {"message": message}))
            first = result.content[0] if result.content else None
            return {
                "protocol": init.protocolVersion,
                "server": init.serverInfo.name,
                "tools": [t.name for t in tools.tools],
                "echo": first.text if isinstance(first, types.TextContent) else None,
            }


async def scenario_pid(args: argparse.Namespace) -> dict[str, Any]:
    with anyio.fail_after(args.timeout) as scope:
        async with connect(args) as (session, _init):
            pid = await call_pid(args, session)
            emit({"pid": pid})
            # Hold the session open (no deadline) until the harness writes a
            # line or closes our stdin.
            scope.deadline = math.inf
            await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            scope.deadline = anyio.current_time() + args.timeout
        # The context exit above closed the session (HTTP DELETE).
    return {"pid": pid, "closed": True}


async def scenario_progress(args: argparse.Namespace) -> dict[str, Any]:
    events: list[dict[str, Any]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append({"type": "progress", "progress": num(progress), "total": num(total)})

    with anyio.fail_after(args.timeout):
        async with connect(args) as (session, _init):
            result = check_ok(
                args.tool, await session.call_tool(args.tool, args.tool_args, progress_callback=on_progress)
            )
            events.append({"type": "result", "text": result_text(result)})
    return {"events": events, "progress_count": sum(1 for e in events if e["type"] == "progress")}


async def scenario_sampling(args: argparse.Namespace) -> dict[str, Any]:
    requests = 0

    async def on_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        nonlocal requests
        requests += 1
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLE_REPLY),
            model="test-model",
            stopReason="endTurn",
        )

    with anyio.fail_after(args.timeout):
        async with connect(args, sampling_callback=on_sampling) as (session, _init):
            result = check_ok(args.tool, await session.call_tool(args.tool, args.tool_args))
    return {"result_text": result_text(result), "sampling_requests": requests}


async def scenario_concurrent(args: argparse.Namespace) -> dict[str, Any]:
    async def one() -> int:
        async with connect(args) as (session, _init):
            return await call_pid(args, session)

    with anyio.fail_after(args.timeout):
        pids = await asyncio.gather(*(one() for _ in range(args.sessions)))
    return {"pids": list(pids)}


async def scenario_sticky(args: argparse.Namespace) -> dict[str, Any]:
    async def one() -> dict[str, Any]:
        async with connect_with_id(args) as (session, session_id):
            pids = []
            for _ in range(args.calls):
                pids.append(await call_pid(args, session))
                await asyncio.sleep(0.01)  # let the other sessions' calls interleave
            return {"id": session_id, "pids": pids}

    with anyio.fail_after(args.timeout):
        sessions = await asyncio.gather(*(one() for _ in range(args.sessions)))
    return {"sessions": list(sessions)}


def session_terminated(exc: BaseException) -> bool:
    """The SDK's answer to a 404 on a request: an error "Session terminated"."""
    return isinstance(exc, McpError) and "Session terminated" in str(exc)


async def scenario_failover(args: argparse.Namespace) -> dict[str, Any]:
    first_calls: list[dict[str, Any]] = []
    all_called = anyio.Event()
    go = anyio.Event()

    async def one() -> dict[str, Any]:
        record: dict[str, Any] = {"reinitialized": False}
        # The old session's context is left by hand: its DELETE may get 404.
        async with connect_with_id(args) as (session, session_id):
            record["id"] = session_id
            record["pid"] = await call_pid(args, session)
            first_calls.append({"id": session_id, "pid": record["pid"]})
            if len(first_calls) == args.sessions:
                all_called.set()
            await go.wait()
            try:
                with anyio.fail_after(args.timeout):
                    record["after_pid"] = await call_pid(args, session)
                record["after_id"] = session_id
            except McpError as exc:
                if not session_terminated(exc):
                    raise
                record["reinitialized"] = True
        if record["reinitialized"]:
            with anyio.fail_after(args.timeout):
                async with connect_with_id(args) as (session, session_id):
                    record["after_id"] = session_id
                    record["after_pid"] = await call_pid(args, session)
        return record

    async def conductor() -> None:
        with anyio.fail_after(args.timeout):
            await all_called.wait()
        emit({"sessions": list(first_calls)})
        await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        go.set()

    results = await asyncio.gather(conductor(), *(one() for _ in range(args.sessions)))
    return {"sessions": list(results[1:])}


SCENARIOS = {
    "basic": (scenario_basic, ["echo_tool"]),
    "pid": (scenario_pid, ["pid_tool"]),
    "progress": (scenario_progress, ["tool"]),
    "sampling": (scenario_sampling, ["tool"]),
    "concurrent": (scenario_concurrent, ["pid_tool"]),
    "sticky": (scenario_sticky, ["pid_tool", "url"]),
    "failover": (scenario_failover, ["pid_tool", "url"]),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="Streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp")
    target.add_argument("--sse-url", help="legacy HTTP+SSE endpoint, e.g. http://127.0.0.1:3001/sse")
    target.add_argument("--stdio", help="spawn this stdio server command line instead of --url")
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--echo-tool", default="echo")
    p.add_argument("--pid-tool", default="pid")
    p.add_argument("--tool", help="tool name for progress/sampling")
    p.add_argument("--args", dest="tool_args_json", default="{}", help="tool arguments as a JSON object")
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--calls", type=int, default=3, help="pid calls per session (sticky)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per phase (default 30)")
    p.add_argument("--header", action="append", default=[], help="'Name: value' on every HTTP request")
    args = p.parse_args()
    try:
        args.tool_args = json.loads(args.tool_args_json)
    except json.JSONDecodeError as e:
        p.error(f"--args is not valid JSON: {e}")
    if not isinstance(args.tool_args, dict):
        p.error("--args must be a JSON object")
    for required in SCENARIOS[args.scenario][1]:
        if not getattr(args, required):
            p.error(f"--scenario {args.scenario} needs --{required.replace('_', '-')}")
    return args


def describe(exc: BaseException) -> str:
    """Flatten exception groups (anyio task groups) into one readable line."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def main() -> int:
    args = parse_args()
    func = SCENARIOS[args.scenario][0]
    try:
        out = asyncio.run(func(args))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # report anything, including exception groups
        if os.environ.get("MCPHOP_TEST_DEBUG"):
            traceback.print_exception(exc)
        print(f"client_{CLIENT_TAG}: scenario {args.scenario} failed: {describe(exc)}", file=sys.stderr)
        return 1
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
