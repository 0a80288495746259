// Node fetch client for the HTTP e2e tests: fetches each URL of argv[2..]
// (one keep-alive agent), reads every body to its end, prints one JSON line:
// per URL path, requests, body bytes read and seconds from the fetch call to
// the body's end.
const out = {};
(async () => {
  for (const u of process.argv.slice(2)) {
    const t0 = process.hrtime.bigint();
    const res = await fetch(u);
    const b = await res.arrayBuffer();
    const p = new URL(u).pathname;
    const s = out[p] || (out[p] = { n: 0, bytes: 0, seconds: 0 });
    s.n++;
    s.bytes += b.byteLength;
    s.seconds += Number(process.hrtime.bigint() - t0) / 1e9;
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
