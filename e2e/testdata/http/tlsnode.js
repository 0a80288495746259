// Node HTTPS programs for the TLS e2e test (OpenSSL built into node, driven
// through memory BIOs by its TLSWrap). Every mode prints its own counts as
// {"pid": ..., "counts": {...}} (the httpload report), a server at SIGINT.
//
//   server <addr-file> <cert> <key>
//     https.createServer: /users/{id} 200, /fail 500, /hello 200, else 404;
//     counts "METHOD STATUS ROUTE".
//   proxy <addr-file> <cert> <key> <backend-url> <max-sockets>
//     https.createServer whose every request makes one HTTPS request to the
//     backend (keep-alive agent, at most max-sockets connections; 0: a new
//     connection for every request, closed after it) on a route of its own, and answers with a status of its own, so that a request
//     or response joined to the wrong connection shows in the counts:
//       /users/{id} -> backend GET /hello   -> 203
//       /fail       -> backend GET /fail    -> 502
//       other       -> backend GET /nothere -> 410
//     counts "METHOD STATUS ROUTE" (inbound) and, under "client",
//     "METHOD STATUS" (outbound, the backend's status).
//   fetch <base-url> <concurrency> <plan>
//     undici's fetch: plan is "METHOD /path*count,..."; the requests run
//     concurrency at a time (one keep-alive connection per worker at
//     most); counts "METHOD STATUS".
"use strict";
const fs = require("fs");
const https = require("https");

const mode = process.argv[2];

function route(path) {
  path = path.split("?")[0];
  if (/^\/users\/[^/]+$/.test(path)) return "/users/{id}";
  return path;
}

function inc(m, k) {
  m[k] = (m[k] || 0) + 1;
}

function listen(srv, addrFile) {
  srv.keepAliveTimeout = 30000;
  srv.listen(0, "127.0.0.1", () => {
    const a = srv.address();
    fs.writeFileSync(addrFile + ".tmp", `127.0.0.1:${a.port}`);
    fs.renameSync(addrFile + ".tmp", addrFile);
  });
}

function report(obj) {
  process.stdout.write(JSON.stringify(Object.assign({ pid: process.pid }, obj)) + "\n");
}

function onInterrupt(fn) {
  process.on("SIGINT", () => {
    fn();
    process.exit(0);
  });
}

if (mode === "server") {
  const [addrFile, cert, key] = process.argv.slice(3);
  const counts = {};
  const srv = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    req.resume();
    req.on("end", () => {
      const r = route(req.url);
      let status = 404;
      let body = "not found\n";
      if (r === "/users/{id}") [status, body] = [200, "user " + req.url.slice(7) + "\n"];
      else if (r === "/fail") [status, body] = [500, "failure\n"];
      else if (r === "/hello") [status, body] = [200, "hello world\n"];
      inc(counts, `${req.method} ${status} ${r}`);
      res.writeHead(status, { "content-type": "text/plain" });
      res.end(body);
    });
  });
  listen(srv, addrFile);
  onInterrupt(() => report({ counts }));
} else if (mode === "proxy") {
  const [addrFile, cert, key, backend, maxSockets] = process.argv.slice(3);
  const n = Number(maxSockets);
  const agent = new https.Agent(n > 0 ? { keepAlive: true, maxSockets: n, ca: fs.readFileSync(cert) } : { keepAlive: false, ca: fs.readFileSync(cert) });
  const counts = {};
  const client = {};
  let errors = 0;
  const srv = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    req.resume();
    req.on("end", () => {
      const r = route(req.url);
      let path = "/nothere";
      let status = 410;
      if (r === "/users/{id}") [path, status] = ["/hello", 203];
      else if (r === "/fail") [path, status] = ["/fail", 502];
      const out = https.request(backend + path, { agent, method: "GET" }, (bres) => {
        bres.resume();
        bres.on("end", () => {
          inc(client, `GET ${bres.statusCode}`);
          inc(counts, `${req.method} ${status} ${r}`);
          res.writeHead(status, { "content-type": "text/plain" });
          res.end(`proxied ${bres.statusCode}\n`);
        });
      });
      out.on("error", () => {
        errors++;
        res.writeHead(599);
        res.end();
      });
      out.end();
    });
  });
  listen(srv, addrFile);
  onInterrupt(() => report({ counts, client, errors }));
} else if (mode === "fetch") {
  const [base, concurrency, plan] = process.argv.slice(3);
  const steps = [];
  for (let step of plan.split(",")) {
    step = step.trim();
    if (!step) continue;
    let n = 1;
    const i = step.lastIndexOf("*");
    if (i > 0) [step, n] = [step.slice(0, i), Number(step.slice(i + 1))];
    const [method, path] = step.split(" ");
    for (let k = 0; k < n; k++) steps.push([method, path]);
  }
  const counts = {};
  let errors = 0;
  let next = 0;
  async function worker() {
    while (next < steps.length) {
      const [method, path] = steps[next++];
      const init = { method };
      if (method === "POST") init.body = "b".repeat(300);
      try {
        const res = await fetch(base + path, init);
        await res.arrayBuffer();
        inc(counts, `${method} ${res.status}`);
      } catch (e) {
        errors++;
        process.stderr.write(String(e && e.cause ? e.cause : e) + "\n");
      }
    }
  }
  Promise.all(Array.from({ length: Number(concurrency) }, worker)).then(() => {
    report({ counts, errors });
    process.exit(0);
  });
} else {
  process.stderr.write("mode: server | proxy | fetch\n");
  process.exit(2);
}
