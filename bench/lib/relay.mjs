// A TCP relay in front of a broker, so a run can take the network away the way a real network drop does, without
// reaching into the client: `cut()` destroys every relayed connection (both sockets, no MQTT packet); `down()` cuts
// and refuses new connections (accepted, then destroyed at once) until `up()`, as an uplink outage does. Emits
// `connection` for each relayed connection. Used by the store-and-forward runs (bench/lib/store-forward.mjs) and, as
// `startProxy`, by the test suites (test/helpers/mqtt.ts).
import { EventEmitter } from 'node:events';
import { connect, createServer } from 'node:net';

/** Start a relay on a free loopback port to `targetUrl` (host and port of an mqtt:// URL). */
export async function startRelay(targetUrl) {
  const target = new URL(targetUrl);
  const pairs = new Set();
  const events = new EventEmitter();
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
    upstream.once('connect', () => events.emit('connection'));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = () => {
    for (const [a, b] of [...pairs]) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return Object.assign(events, {
    url: `mqtt://127.0.0.1:${server.address().port}`,
    /** Connections relayed right now. */
    get open() {
      return pairs.size;
    },
    cut,
    /** The outage begins: every connection cut, new ones refused. */
    down() {
      refusing = true;
      cut();
    },
    /** The outage ends. */
    up() {
      refusing = false;
    },
    /** Stop listening and cut everything. */
    close: async () => {
      refusing = true;
      cut();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  });
}
