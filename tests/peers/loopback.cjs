// Preload (`node --require tests/peers/loopback.cjs ...`) that keeps a Node
// server on the loopback interface: every TCP `net.Server#listen` (and so
// http/express `listen`) binds 127.0.0.1, whatever host it asked for, or none.
// Unix-socket and handle listens are left alone.
//
// Once bound, it prints `loopback.cjs: listening on 127.0.0.1:PORT` to stderr,
// so a server started with PORT=0 tells its real port.
"use strict";

const net = require("net");

const LOOPBACK = "127.0.0.1";
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  if (typeof value === "number") return true;
  return typeof value === "string" && value.trim() !== "" && Number.isInteger(Number(value));
}

net.Server.prototype.listen = function listen(...args) {
  const first = args[0];
  if (args.length === 0 || typeof first === "function") {
    // listen([cb]): a random port on every interface.
    args.unshift(0, LOOPBACK);
  } else if (isPort(first) || first === null || first === undefined) {
    // listen(port[, host][, backlog][, cb])
    if (typeof args[1] === "string") {
      args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  } else if (typeof first === "object" && !first._handle && !("fd" in first) && !first.path) {
    // listen(options[, cb]) with a TCP port
    args[0] = { ...first, host: LOOPBACK };
  }
  this.once("listening", () => {
    const address = this.address();
    if (address && typeof address === "object") {
      process.stderr.write(`loopback.cjs: listening on ${address.address}:${address.port}\n`);
    }
  });
  return originalListen.apply(this, args);
};
