// A stateful Streamable HTTP MCP server on the TypeScript SDK (1.32.2, from
// .peers/node), for the tests of server-to-client requests and SSE polling
// through `mcphop --upstream`. Written for mcphop's tests in the terms of the
// conformance suite's scenarios (tools-call-sampling, tools-call-elicitation,
// server-sse-polling); no code of the suite's reference server is used.
//
//   node ts_http_server.cjs PORT [--get-delay-ms N] [--retry-ms N] [--refuse-answers]
//
// Binds 127.0.0.1:PORT, endpoint /mcp, prints "ready on PORT" once listening.
//
// What makes it a faithful upstream for these cases is how the SDK sends a
// server request made with `server.request(...)` inside a tool (the way the
// reference server does it): with no related request, it goes on the
// session's standalone GET stream, and if no GET stream is open at that
// moment the SDK stores it in the event store and sends it nowhere. A proxy
// that tells its client "your GET stream is open" before its own upstream GET
// stream is, loses that request.
//
// --get-delay-ms N holds each GET for N ms before the transport sees it: a
// server (or a loaded one, as in the suite after 15 open sessions) that is
// slow to open standalone streams. It makes that window wide and the test
// deterministic.
//
// --refuse-answers answers 500 to every POST that carries a client's response
// to a server request, without reading it: the answer is lost upstream.
//
// Tools:
//   echo(message)          the message, as text
//   test_sampling(prompt)  sends sampling/createMessage (no related request),
//                          answers "LLM response: <text>"
//   test_elicitation(message)  sends elicitation/create (no related request),
//                          answers "User response: <action> <content json>"
//   test_reconnection()    closes its own POST SSE stream (after the priming
//                          event with `retry:`), then answers after 100 ms
"use strict";

const http = require("http");
const path = require("path");
const { randomUUID } = require("crypto");
const { createRequire } = require("module");

const peers = process.env.MCPHOP_PEERS || path.join(__dirname, "../../.peers");
const sdkRequire = createRequire(path.join(peers, "node", "node_modules") + "/");
const { McpServer } = sdkRequire("@modelcontextprotocol/sdk/server/mcp.js");
const { StreamableHTTPServerTransport } = sdkRequire(
  "@modelcontextprotocol/sdk/server/streamableHttp.js",
);
const { isInitializeRequest } = sdkRequire("@modelcontextprotocol/sdk/types.js");
const { z } = sdkRequire("zod");

const port = Number(process.argv[2] || 0);
function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}
const getDelayMs = option("--get-delay-ms", 0);
const retryMs = option("--retry-ms", 500);
const refuseAnswers = process.argv.includes("--refuse-answers");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One event store per session: ids sort by stream, then by sequence.
function eventStore() {
  const events = [];
  let seq = 0;
  return {
    async storeEvent(streamId, message) {
      seq += 1;
      const eventId = `${streamId}::${String(seq).padStart(8, "0")}`;
      events.push({ eventId, streamId, message });
      return eventId;
    },
    async replayEventsAfter(lastEventId, { send }) {
      const streamId = lastEventId.split("::")[0];
      for (const event of events) {
        if (event.streamId === streamId && event.eventId > lastEventId) {
          await send(event.eventId, event.message);
        }
      }
      return streamId;
    },
  };
}

const transports = {};

function newServer() {
  const server = new McpServer({ name: "mcphop-ts-http", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "Return the message", inputSchema: { message: z.string() } },
    async ({ message }) => ({ content: [{ type: "text", text: message }] }),
  );
  server.registerTool(
    "test_sampling",
    { description: "Ask the client for a completion", inputSchema: { prompt: z.string() } },
    async ({ prompt }) => {
      const result = await server.server.request(
        {
          method: "sampling/createMessage",
          params: {
            messages: [{ role: "user", content: { type: "text", text: prompt } }],
            maxTokens: 100,
          },
        },
        z.object({}).passthrough(),
      );
      const text = result.content?.text ?? "No response";
      return { content: [{ type: "text", text: `LLM response: ${text}` }] };
    },
  );
  server.registerTool(
    "test_elicitation",
    { description: "Ask the user for input", inputSchema: { message: z.string() } },
    async ({ message }) => {
      const result = await server.server.request(
        {
          method: "elicitation/create",
          params: {
            message,
            requestedSchema: {
              type: "object",
              properties: { name: { type: "string", default: "nobody" } },
            },
          },
        },
        z.object({}).passthrough(),
      );
      return {
        content: [
          {
            type: "text",
            text: `User response: ${result.action} ${JSON.stringify(result.content ?? {})}`,
          },
        ],
      };
    },
  );
  server.registerTool(
    "test_reconnection",
    { description: "Close the POST stream mid-call, then answer", inputSchema: {} },
    async (_args, extra) => {
      const transport = transports[extra.sessionId];
      if (transport && extra.requestId !== undefined) {
        transport.closeSSEStream(extra.requestId);
      }
      await sleep(100);
      return { content: [{ type: "text", text: "Reconnection test completed" }] };
    },
  );
  return server;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function badRequest(res, text) {
  res.writeHead(400, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message: text }, id: null }));
}

const httpServer = http.createServer(async (req, res) => {
  try {
    if (!req.url.startsWith("/mcp")) {
      res.writeHead(404).end();
      return;
    }
    const sessionId = req.headers["mcp-session-id"];
    if (req.method === "POST") {
      const text = await readBody(req);
      let body;
      try {
        body = JSON.parse(text);
      } catch {
        badRequest(res, "Parse error");
        return;
      }
      const isAnswer = (m) => m && m.method === undefined && ("result" in m || "error" in m);
      if (refuseAnswers && (Array.isArray(body) ? body.some(isAnswer) : isAnswer(body))) {
        res.writeHead(500, { "Content-Type": "text/plain" }).end("answers refused");
        return;
      }
      if (sessionId && transports[sessionId]) {
        await transports[sessionId].handleRequest(req, res, body);
        return;
      }
      if (!sessionId && isInitializeRequest(body)) {
        const server = newServer();
        const transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          eventStore: eventStore(),
          retryInterval: retryMs,
          onsessioninitialized: (id) => {
            transports[id] = transport;
          },
        });
        transport.onclose = () => {
          if (transport.sessionId) delete transports[transport.sessionId];
        };
        await server.connect(transport);
        await transport.handleRequest(req, res, body);
        return;
      }
      badRequest(res, "Invalid or missing session ID");
      return;
    }
    if (!sessionId || !transports[sessionId]) {
      badRequest(res, "Invalid or missing session ID");
      return;
    }
    if (req.method === "GET" && getDelayMs > 0) {
      await sleep(getDelayMs);
    }
    if (!transports[sessionId]) {
      badRequest(res, "Invalid or missing session ID");
      return;
    }
    await transports[sessionId].handleRequest(req, res);
  } catch (error) {
    process.stderr.write(`ts_http_server: ${error && error.stack}\n`);
    if (!res.headersSent) {
      res.writeHead(500).end();
    }
  }
});

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(`ready on ${httpServer.address().port}\n`);
});
