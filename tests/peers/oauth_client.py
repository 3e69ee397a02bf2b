"""The Python SDK's OAuth support (1.x or 2.x, whichever runs this), run
against mcphop.

Connects to ``--url`` with ``OAuthClientProvider`` and no token: mcphop's
401 names its protected resource metadata, from which the SDK finds the
authorization server, registers a client, sends the user to the
authorization endpoint (``redirect_handler`` follows it the way a browser
would, without a user, and takes the code from the redirect), exchanges the
code for a token (PKCE) and retries with it. Then it lists the tools and
calls ``echo``.

Prints one JSON line: the tools, the echo text, whether a token was
obtained, and every HTTP request the client made with its status, in order.
"""

import argparse
import asyncio
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import mcp
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# 2.x speaks httpx2, its callback returns an AuthorizationCodeResult and
# its client is `mcp.Client`; 1.x speaks httpx, returns (code, state) and
# uses ClientSession.
V2 = hasattr(mcp, "Client")
if V2:
    import httpx2 as httpx
    from mcp.shared.auth import AuthorizationCodeResult
else:
    import httpx


class MemoryStorage(TokenStorage):
    """Tokens and the registered client, kept for this run only."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def main(args: argparse.Namespace) -> dict[str, Any]:
    callback: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        # The user's browser: the test authorization server approves at once
        # and redirects to the client's redirect URI with the code.
        async with httpx.AsyncClient() as browser:
            response = await browser.get(url, follow_redirects=False)
        query = parse_qs(urlparse(response.headers["location"]).query)
        callback["code"] = query["code"][0]
        callback["state"] = query["state"][0]

    async def callback_handler() -> Any:
        if V2:
            return AuthorizationCodeResult(code=callback["code"], state=callback.get("state"))
        return callback["code"], callback.get("state")

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=args.url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=["http://127.0.0.1:9/callback"],
            client_name="mcphop-oauth-test",
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
        **({} if V2 else {"timeout": args.timeout}),
    )
    requests: list[str] = []

    async def on_response(response: httpx.Response) -> None:
        requests.append(f"{response.request.method} {response.request.url} {response.status_code}")

    client = create_mcp_http_client(auth=provider)
    client.event_hooks["response"].append(on_response)
    async with client:
        if V2:
            transport = streamable_http_client(args.url, http_client=client)
            async with mcp.Client(transport, read_timeout_seconds=args.timeout) as session:
                tools = await session.list_tools()
                echo = await session.call_tool("echo", {"message": "through oauth"})
        else:
            async with streamable_http_client(args.url, http_client=client) as streams:
                async with mcp.ClientSession(
                    streams[0], streams[1], read_timeout_seconds=timedelta(seconds=args.timeout)
                ) as session:
                    await session.initialize()
                    tools = await session.list_tools()
                    echo = await session.call_tool("echo", {"message": "through oauth"})
    text = "".join(getattr(block, "text", "") for block in echo.content)
    return {
        "tools": sorted(tool.name for tool in tools.tools),
        "echo": text,
        "token": storage.tokens is not None,
        "requests": requests,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, default=20)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
