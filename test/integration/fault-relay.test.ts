/**
 * The fault relay against a real TCP server: bytes pass through in order; a partition resets the group's connections
 * and refuses new ones, and only that group's; latency and bandwidth slow a direction down (checked as lower bounds:
 * a loaded machine only makes them later).
 */
import { once } from 'node:events';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultRelay } from '../../src/simulator/fault-relay.js';

/** An echo server: what a client sends comes back. */
async function echoServer(): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, sockets };
}

/** Connect through the relay; resolves once connected. */
async function client(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  return socket;
}

/** Resolves with the first `length` bytes the socket receives. */
function receive(socket: Socket, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= length) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks).subarray(0, length));
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed after ${got} of ${length} bytes`)));
  });
}

/** How a socket ended: the error code of its reset, or 'closed'. */
function ended(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let code = 'closed';
    socket.on('error', (error: NodeJS.ErrnoException) => {
      code = error.code ?? 'ERROR';
    });
    socket.once('close', () => resolve(code));
  });
}

describe('FaultRelay', () => {
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let relay: FaultRelay;

  beforeAll(async () => {
    echo = await echoServer();
    relay = await FaultRelay.start({ host: '127.0.0.1', port: echo.port }, 2);
  });

  afterAll(async () => {
    await relay.close();
    for (const socket of echo.sockets) socket.destroy();
    await new Promise((resolve) => echo.server.close(resolve));
  });

  it('relays bytes both ways, in order, on each group\'s own port', async () => {
    expect(relay.address(0).port).not.toBe(relay.address(1).port);
    const socket = await client(relay.address(0).port);
    const data = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251));
    const back = receive(socket, data.length);
    socket.write(data);
    expect((await back).equals(data)).toBe(true);
    socket.destroy();
  });

  it('a partition resets its group\'s connections and refuses new ones until it is lifted; the other group goes on', async () => {
    const cut = await client(relay.address(0).port);
    const spared = await client(relay.address(1).port);
    const cutEnds = ended(cut);
    // Both are relayed before the partition begins.
    const hello = receive(cut, 5);
    cut.write('hello');
    await hello;
    relay.apply('p', [0], { kind: 'partition' });
    expect(await cutEnds).toBe('ECONNRESET');
    const refused = connect({ host: '127.0.0.1', port: relay.address(0).port });
    expect(await ended(refused)).toBe('ECONNRESET');
    const still = receive(spared, 5);
    spared.write('alive');
    expect((await still).toString()).toBe('alive');
    expect(relay.stats).toMatchObject({ dropped: 1, refused: 1 });
    relay.lift('p', [0]);
    const again = await client(relay.address(0).port);
    const back = receive(again, 4);
    again.write('back');
    expect((await back).toString()).toBe('back');
    for (const s of [again, spared]) s.destroy();
  });

  it('latency delays each direction; lifted, the next bytes go at once', async () => {
    const socket = await client(relay.address(1).port);
    relay.apply('l', [1], { kind: 'latency', ms: 150 });
    const started = performance.now();
    const back = receive(socket, 4);
    socket.write('ping');
    await back;
    // 150 ms up and 150 ms down.
    expect(performance.now() - started).toBeGreaterThanOrEqual(300);
    relay.lift('l', [1]);
    const quick = receive(socket, 4);
    socket.write('pong');
    expect((await quick).toString()).toBe('pong');
    socket.destroy();
  });

  it('bandwidth paces each direction to its bytes per second', async () => {
    const socket = await client(relay.address(1).port);
    relay.apply('b', [1], { kind: 'bandwidth', bytesPerSec: 4_000 });
    const data = Buffer.alloc(8_000, 7);
    const started = performance.now();
    const back = receive(socket, data.length);
    socket.write(data);
    expect((await back).equals(data)).toBe(true);
    // 8,000 bytes at 4,000 B/s each way: about 2 s up (less the first second's bucket), the way down overlapping.
    expect(performance.now() - started).toBeGreaterThanOrEqual(1_000);
    relay.lift('b', [1]);
    socket.destroy();
  });
});
