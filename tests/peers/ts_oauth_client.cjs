// The TypeScript SDK's OAuth support, run against mcphop: a client with an
// OAuthClientProvider and no token connects to --url; mcphop's 401 names
// its protected resource metadata, from which the SDK finds the
// authorization server, registers a client and "redirects the user" to
// the authorization endpoint (here: followed at once, the code taken from
// the redirect). The client then finishes the flow (code for a token,
// PKCE), connects again with the token, lists the tools and calls `echo`.
//
// Prints one JSON line: the tools, the echo text, whether a token was
// obtained, and every HTTP request the SDK made with its status, in order.
//
//   node ts_oauth_client.cjs --url http://127.0.0.1:PORT/mcp

const path = require("node:path");
const sdk = path.join(__dirname, "../../.peers/node/node_modules/@modelcontextprotocol/sdk/dist/cjs");
const { Client } = require(path.join(sdk, "client/index.js"));
const { StreamableHTTPClientTransport } = require(path.join(sdk, "client/streamableHttp.js"));
const { UnauthorizedError } = require(path.join(sdk, "client/auth.js"));

const url = new URL(process.argv[process.argv.indexOf("--url") + 1]);
const requests = [];
const recordingFetch = async (input, init) => {
    const response = await fetch(input, init);
    const method = (init && init.method) || "GET";
    requests.push(`${method} ${input instanceof URL ? input.href : String(input)} ${response.status}`);
    return response;
};

let code;
const store = {};
const provider = {
    get redirectUrl() { return "http://127.0.0.1:9/callback"; },
    get clientMetadata() {
        return {
            redirect_uris: ["http://127.0.0.1:9/callback"],
            client_name: "mcphop-ts-oauth-test",
            token_endpoint_auth_method: "none",
            grant_types: ["authorization_code", "refresh_token"],
            response_types: ["code"],
        };
    },
    clientInformation() { return store.client; },
    saveClientInformation(info) { store.client = info; },
    tokens() { return store.tokens; },
    saveTokens(tokens) { store.tokens = tokens; },
    saveCodeVerifier(verifier) { store.verifier = verifier; },
    codeVerifier() { return store.verifier; },
    async redirectToAuthorization(authorizationUrl) {
        // The user's browser: the test authorization server approves at
        // once and redirects with the code.
        const response = await fetch(authorizationUrl, { redirect: "manual" });
        code = new URL(response.headers.get("location")).searchParams.get("code");
    },
};

async function connect() {
    const transport = new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: recordingFetch });
    const client = new Client({ name: "mcphop-ts-oauth-test", version: "0.1.0" });
    await client.connect(transport);
    return { client, transport };
}

async function main() {
    let connected;
    try {
        connected = await connect();
    } catch (error) {
        if (!(error instanceof UnauthorizedError) || !code) throw error;
        const transport = new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: recordingFetch });
        await transport.finishAuth(code);
        connected = await connect();
    }
    const { client } = connected;
    const tools = await client.listTools();
    const echo = await client.callTool({ name: "echo", arguments: { message: "through oauth" } });
    await connected.transport.terminateSession();
    await client.close();
    console.log(JSON.stringify({
        tools: tools.tools.map((tool) => tool.name).sort(),
        echo: echo.content.map((block) => block.text || "").join(""),
        token: Boolean(store.tokens),
        requests,
    }));
}

main().catch((error) => {
    console.error(error && error.stack ? error.stack : String(error));
    console.log(JSON.stringify({ error: String(error), requests }));
    process.exit(1);
});
