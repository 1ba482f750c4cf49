// The connect benchmark's baseline broker: a plain aedes (no emulator) in its own process, with the same
// DeviceCredential HMAC check the service does. Device secrets are derived from the ClientId (see deviceSecret),
// so the broker and the raw clients agree without an OpenAPI. Prints {"url"} when listening; SIGTERM closes it.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aedes } from 'aedes';

export const INSTANCE_ID = 'mqtt-bench-raw';

/** The secret of a bench device: anything both sides can compute. */
export function deviceSecret(clientId) {
  return createHash('sha256').update(`bench-secret:${clientId}`).digest('base64');
}

/** DeviceCredential mode, as the signer computes it: username and Base64(HMAC-SHA1(secret, ClientId)). */
export function credentialsFor(clientId) {
  return {
    clientId,
    username: `DeviceCredential|DC.${clientId}|${INSTANCE_ID}`,
    password: createHmac('sha1', deviceSecret(clientId)).update(clientId, 'utf8').digest('base64'),
  };
}

async function main() {
  const broker = await Aedes.createBroker({
    maxClientsIdLength: 64,
    authenticate(client, username, password, done) {
      const parts = String(username ?? '').split('|');
      const keyOk = parts.length === 3 && parts[0] === 'DeviceCredential' && parts[1] === `DC.${client.id}` && parts[2] === INSTANCE_ID;
      const expected = Buffer.from(createHmac('sha1', deviceSecret(client.id)).update(client.id, 'utf8').digest('base64'));
      const ok = keyOk && password !== undefined && password.length === expected.length && timingSafeEqual(password, expected);
      if (ok) return done(null, true);
      const error = new Error('bad user name or password');
      error.returnCode = 4;
      done(error, false);
    },
  });
  const server = createServer((socket) => broker.handle(socket));
  // The largest backlog the kernel allows (somaxconn), so the baseline's burst of SYNs is not dropped and retried.
  await new Promise((done) => server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, done));
  process.stdout.write(`${JSON.stringify({ url: `mqtt://127.0.0.1:${server.address().port}` })}\n`);
  const close = () => {
    broker.close(() => server.close(() => process.exit(0)));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
}

// Run as a script, not when raw-clients.mjs imports credentialsFor.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
