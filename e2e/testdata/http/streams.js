// Streaming responses for the HTTP e2e tests (e2e/http_realprog_test.go).
// Listens on 127.0.0.1:<argv[2]>; on SIGTERM prints one JSON line: per
// route, the requests served, the body bytes written and the seconds from
// the request's arrival to the response's end as Node saw them.
const http = require('http');
const stats = {};
function done(route, bytes, t0) {
  const s = stats[route] || (stats[route] = { n: 0, bytes: 0, seconds: 0 });
  s.n++;
  s.bytes += bytes;
  s.seconds += Number(process.hrtime.bigint() - t0) / 1e9;
}
http.createServer((req, res) => {
  const t0 = process.hrtime.bigint();
  const route = req.url.split('?')[0];
  let bytes = 0;
  const w = (s) => { bytes += s.length; res.write(s); };
  res.on('finish', () => done(route, bytes, t0));
  switch (route) {
  case '/corked': // three writes in one tick: one writev of three chunks
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    w('a'.repeat(2000)); w('b'.repeat(2000)); w('c'.repeat(2000));
    setTimeout(() => { w('d'.repeat(100)); setTimeout(() => { bytes += 100; res.end('e'.repeat(100)); }, 200); }, 200);
    break;
  case '/sse': { // server-sent events, 50 ms apart
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    let i = 0;
    const t = setInterval(() => {
      w(`id: ${i}\nevent: tick\ndata: ${'x'.repeat(40 + i)}\n\n`);
      if (++i === 6) { clearInterval(t); res.end(); }
    }, 50);
    break;
  }
  case '/ndjson': { // newline-delimited JSON, several lines per tick
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson' });
    let i = 0;
    const t = setInterval(() => {
      for (let k = 0; k < 3; k++) w(JSON.stringify({ seq: i, k, pad: 'p'.repeat(300) }) + '\n');
      if (++i === 10) { clearInterval(t); res.end(); }
    }, 10);
    break;
  }
  case '/big': { // a large chunked download, as fast as the client reads
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    const block = 'z'.repeat(16384);
    let left = 64;
    const more = () => {
      while (left > 0) {
        left--;
        bytes += block.length;
        if (!res.write(block)) { res.once('drain', more); return; }
      }
      res.end();
    };
    more();
    break;
  }
  default:
    res.writeHead(404, { 'Content-Length': '0' });
    res.end();
  }
}).listen(Number(process.argv[2]), '127.0.0.1', () => console.error('listening'));
process.on('SIGTERM', () => { console.log(JSON.stringify(stats)); process.exit(0); });
