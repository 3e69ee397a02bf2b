// Preload for Node servers that have no --host option (supergateway 4.0.0
// binds every interface): `node --require benches/compare/loopback.cjs ...`
// makes every TCP net.Server#listen bind 127.0.0.1, whatever host it asked
// for, or none. Unix-socket and handle listens are left alone.
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
    args.unshift(0, LOOPBACK);
  } else if (isPort(first) || first === null || first === undefined) {
    if (typeof args[1] === "string") {
      args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  } else if (typeof first === "object" && !first._handle && !("fd" in first) && !first.path) {
    args[0] = { ...first, host: LOOPBACK };
  }
  return originalListen.apply(this, args);
};
