"""A minimal OAuth issuer for benches/auth_overhead.sh (loopback only).

Makes a P-256 key, serves its RFC 8414 metadata and JWK Set on a free port,
prints ``PORT TOKEN`` (a JWT for ``--audience``, valid one hour) on one line,
then serves until killed. Needs PyJWT and cryptography (the test peers'
Python venv, .peers/py1, has both).
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--audience", required=True)
args = parser.parse_args()

key = ec.generate_private_key(ec.SECP256R1())
jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "bench", "use": "sig", "alg": "ES256"})


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        issuer = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/.well-known/oauth-authorization-server":
            body = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"}
        elif self.path == "/jwks":
            body = {"keys": [jwk]}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
port = server.server_port
now = int(time.time())
claims = {"iss": f"http://127.0.0.1:{port}", "aud": args.audience, "sub": "bench", "iat": now, "exp": now + 3600}
token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench"})
print(port, token, flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
