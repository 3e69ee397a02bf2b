//! The `--help` text: every option, its meaning and its default.

/// The `--help` text.
pub const USAGE: &str = "\
mcphop: a lightweight proxy for the Model Context Protocol

USAGE:
    mcphop [OPTIONS] -- COMMAND [ARGS...]
    mcphop [OPTIONS] --upstream http[s]://HOST:PORT/PATH
    mcphop [OPTIONS] --upstream-sse http[s]://HOST:PORT/sse
    mcphop [OPTIONS] --config FILE
    mcphop --check-config FILE
    mcphop stdio [OPTIONS] (--upstream URL | --upstream-sse URL | -- COMMAND)
    mcphop stdio [OPTIONS] --config FILE [--server NAME]

Serves MCP Streamable HTTP. Each client session gets its own stdio child
running COMMAND, or its own session on a Streamable HTTP upstream, reached
over a keep-alive connection pool, or its own SSE stream on a legacy
HTTP+SSE upstream (its POSTs over the pool).

OPTIONS:
    --listen ADDR                 address to bind [default: 127.0.0.1:8080]
    --upstream URL                a Streamable HTTP upstream instead of COMMAND
    --upstream-sse URL            a legacy HTTP+SSE upstream (its SSE endpoint)
    --upstream-ca FILE            also trust these PEM CA certificates for https
                                  upstreams [default: the system's roots only]
    --config FILE                 named servers from an mcpServers JSON file,
                                  each at /servers/NAME/mcp (see README)
    --check-config FILE           check FILE, print every error, exit 0 or 1
    --server NAME                 with `mcphop stdio`: the config's server to
                                  carry stdin and stdout to [default: the default]
    --auth-token-file FILE        require `Authorization: Bearer TOKEN` on every
                                  request: one token (or name:token) a line;
                                  re-read on SIGHUP [default: no authentication]
    --max-sessions-per-client N   sessions one client (token or IP) may hold
                                  [default: off on loopback, else 64]
    --initialize-rate R           sessions one client may open per second, in
                                  bursts of 2R [default: off on loopback, else 10]
    --auth-issuer URL             accept OAuth access tokens (JWT) of this issuer;
                                  its keys are found from its metadata
    --auth-audience URL           this resource's URL: what the tokens' aud must
                                  hold (needed with --auth-issuer)
    --auth-jwks-url URL           the issuer's key set [default: from its metadata]
    --auth-jwks-refresh DUR       least time between key set fetches an unknown
                                  key asks for [default: 60s]
    --allow-unauthenticated       serve a non-loopback --listen address with no
                                  authentication (refused without this flag)
    --forward-header NAME         pass this client header to the HTTP upstream
                                  (repeatable; none are passed by default)
    --upstream-header 'N: V'      add this header to every upstream request
                                  (repeatable)
    --pool-idle-timeout DUR       close pooled connections idle this long [default: 4s]
    --pool-max-idle-per-host N    idle connections kept per host [default: 32]
    --pool-max-per-host N         connections per host, streams apart [default: 256]
    --pool-max-lifetime DUR       close pooled connections this old [default: 1h]
    --pool-max-requests N         requests per pooled connection [default: 1000]
    --pool-connect-timeout DUR    time a connect may take [default: 3s]
    --pool-queue-timeout DUR      time a request may wait for a connection [default: 5s]
    --path PATH                   endpoint path [default: /mcp]
    --sse-path PATH               legacy HTTP+SSE stream path [default: /sse]
    --message-path PATH           legacy HTTP+SSE message path [default: /message]
    --max-sessions N              concurrent sessions; more get 503 [default: 1024]
    --session-idle-timeout DUR    end sessions idle this long [default: 30m]
    --shutdown-grace DUR          time in-flight requests get on SIGTERM [default: 10s]
    --head-timeout DUR            time to send a request head [default: 10s]
    --body-timeout DUR            longest pause inside a request body [default: 60s]
    --child-grace DUR             wait after closing stdin before SIGTERM, and
                                  after SIGTERM before SIGKILL [default: 2s]
    --request-timeout DUR         a request with no answer and no progress this
                                  long gets an error and is cancelled [default: 300s]
    --request-timeout-max DUR     cap on a request's life, progress or not [default: 1h]
    --spawn-timeout DUR           time a child has to answer initialize [default: 60s]
    --sse-keepalive DUR           comment on a silent SSE stream this often [default: 15s]
    --sse-retry DUR               reconnection delay advertised to clients [default: 1s]
    --resume-window DUR           how long a dropped stream waits for a resume
                                  before its requests are cancelled [default: 5s]
    --replay-events N             events each stream keeps for replay [default: 1000]
    --replay-bytes SIZE           bytes each stream keeps for replay [default: 1MiB]
    --max-body SIZE               largest request body; more gets 413 [default: 4MiB]
    --max-line SIZE               longest line from a child's stdout [default: 16MiB]
    --allowed-host HOST           also accept this Host header (repeatable)
    --allowed-origin ORIGIN       also accept this Origin header (repeatable)
    --admin-listen ADDR           serve /livez, /readyz, /status and /metrics on
                                  this loopback address [default: off]
    --health-interval DUR         probe an HTTP upstream this often; 0 is off
                                  [default: 10s]
    --health-timeout DUR          time a probe may take [default: 2s]
    --health-workers N            threads that run probes [default: 2]
    --health-path PATH            what a probe GETs [default: the upstream's
                                  path; / for --upstream-sse]
    --instance-id ID              tag every session id as ID.<32 hex> so a load
                                  balancer can route it back to this instance
                                  (1-16 of a-z, 0-9, '-') [default: none]
    --log-level LEVEL             off, error, warn, info, debug, trace [default: info]
    -h, --help                    print this help
    -V, --version                 print the version

DUR is a number with a unit: 500ms, 10s, 30m, 1h (a bare number means seconds).
SIZE is a number of bytes with an optional K, KiB, M, MiB, G or GiB suffix.
";
