// Node's built-in http2 module as the HTTP/2 protocol's ground truth (h2c,
// prior knowledge). Both modes print a JSON report of what they counted:
//   node node_h2.js server PORT       (on SIGTERM) {"GET 200 /ok": n, ...}
//   node node_h2.js client PORT N     {"GET 200": n, ...}: N requests to each
//                                     of /ok /missing /fail and N POSTs to /ok, one at a time on one session
'use strict';
const http2 = require('http2');
const [mode, port, nArg] = process.argv.slice(2);
const statuses = { '/ok': 200, '/missing': 404, '/fail': 500 };

if (mode === 'server') {
  const counts = {};
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const path = headers[':path'].split('?')[0];
    const status = statuses[path] || 400;
    let n = 0;
    stream.on('data', (d) => { n += d.length; });
    stream.on('end', () => {
      stream.respond({ ':status': status, 'content-type': 'text/plain' });
      stream.end(`read ${n}\n`);
      const k = `${headers[':method']} ${status} ${path}`;
      counts[k] = (counts[k] || 0) + 1;
    });
  });
  server.listen(Number(port), '127.0.0.1');
  process.on('SIGTERM', () => {
    process.stdout.write(JSON.stringify(counts) + '\n');
    process.exit(0);
  });
} else {
  const n = Number(nArg);
  const counts = {};
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const one = (method, path, body) => new Promise((resolve, reject) => {
    const req = session.request({ ':method': method, ':path': path + '?token=secret' });
    req.on('response', (h) => {
      const k = `${method} ${h[':status']}`;
      counts[k] = (counts[k] || 0) + 1;
    });
    req.on('data', () => {});
    req.on('end', resolve);
    req.on('error', reject);
    req.end(body);
  });
  // One request at a time: each read and write stays within what the
  // kernel captures of a call (see docs/http2.md).
  (async () => {
    for (let i = 0; i < n; i++) {
      for (const p of Object.keys(statuses)) await one('GET', p);
      await one('POST', '/ok', 'x'.repeat(1000));
    }
    session.close();
    process.stdout.write(JSON.stringify(counts) + '\n');
  })().catch((e) => { console.error(e); process.exit(1); });
}
