#!/usr/bin/env python3
"""A Streamable HTTP MCP server on the Python SDK 1.x ``FastMCP`` (run with .peers/py1/bin/python).

An independent upstream for mcphop's HTTP upstream mode. Usage:

    py_http_server.py PORT [--json | --sse]

binds 127.0.0.1:PORT, endpoint /mcp. With --json it answers requests with
application/json instead of SSE streams. With --sse it serves the legacy
HTTP+SSE transport instead: GET /sse, POST /messages/?session_id=... Prints "ready on PORT" on stdout
once it listens. Tools (same semantics as examples/example_server.rs):

  echo(message)              the message, as text
  pid()                      the server process id
  progress(steps, delay_ms)  `steps` progress notifications, then "done after N steps"
  sample(prompt)             asks the client for a sampling completion: "sampled: <text>"
"""

import asyncio
import os
import sys

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.types import SamplingMessage, TextContent

port = int(sys.argv[1])
json_response = "--json" in sys.argv[2:]
legacy_sse = "--sse" in sys.argv[2:]

mcp = FastMCP(
    "mcphop-py-http",
    host="127.0.0.1",
    port=port,
    log_level="WARNING",
    json_response=json_response,
)


@mcp.tool()
def echo(message: str) -> str:
    """Return the given message unchanged."""
    return message


@mcp.tool()
def pid() -> str:
    """Return the process id of this server process."""
    return str(os.getpid())


@mcp.tool()
async def progress(ctx: Context, steps: int = 3, delay_ms: int = 50) -> str:
    """Send `steps` progress notifications `delay_ms` apart."""
    for step in range(1, steps + 1):
        if step > 1:
            await asyncio.sleep(delay_ms / 1000)
        await ctx.report_progress(step, steps, f"step {step} of {steps}")
    return f"done after {steps} steps"


@mcp.tool()
async def sample(ctx: Context, prompt: str) -> str:
    """Ask the client for an LLM completion and return its text."""
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=100,
    )
    content = result.content
    text = content.text if isinstance(content, TextContent) else str(content)
    return f"sampled: {text}"


async def main() -> None:
    app = mcp.sse_app() if legacy_sse else mcp.streamable_http_app()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    print(f"ready on {port}", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
