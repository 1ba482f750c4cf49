// A TCP relay in front of a broker that can take the network away the way an uplink outage does: `down()` destroys
// every relayed connection (both sockets, no MQTT packet) and refuses new ones (accepted, then destroyed at once)
// until `up()`. For the store-and-forward runs (bench/lib/store-forward.mjs); test/helpers/mqtt.ts has the test
// suites' relay (cut only).
import { connect, createServer } from 'node:net';

/** Start a relay on a free loopback port to `targetUrl` (host and port of an mqtt:// URL). */
export async function startRelay(targetUrl) {
  const target = new URL(targetUrl);
  const pairs = new Set();
  let refusing = false;
  const server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname);
    const pair = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = () => {
    for (const [a, b] of [...pairs]) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return {
    url: `mqtt://127.0.0.1:${server.address().port}`,
    /** The outage begins: every connection cut, new ones refused. */
    down() {
      refusing = true;
      cut();
    },
    /** The outage ends. */
    up() {
      refusing = false;
    },
    close: async () => {
      refusing = true;
      cut();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
