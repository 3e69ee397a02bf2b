#!/usr/bin/env python3
"""A stdio MCP server built on the Python SDK 1.x ``FastMCP`` (run with .peers/py1/bin/python).

A second, independent server implementation for mcphop to spawn per session.
Tools (same semantics as examples/example_server.rs):

  echo(message: str) -> the message, unchanged, as text content
  pid()              -> this process's id as decimal text

Protocol traffic is on stdin/stdout; the SDK logs errors to stderr. Exits on stdin EOF.
(Log level ERROR: the SDK warns at length about every request it cannot
parse, e.g. the `server/discover` probe of 2.x clients, which it answers
with -32602 "Invalid request parameters".)
"""

import os

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("mcphop-py-stdio", log_level="ERROR")


@mcp.tool()
def echo(message: str) -> str:
    """Return the given message unchanged."""
    return message


@mcp.tool()
def pid() -> str:
    """Return the process id of this server process."""
    return str(os.getpid())


if __name__ == "__main__":
    mcp.run("stdio")
