/**
 * Before the durable outbox reopens its store after a failed write: does the disk take as much as LevelDB's recovery
 * will write? A scratch file the size of LevelDB's logs plus 1 MiB, fsync'd, then deleted.
 */
import { open as openFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** @throws what writing the scratch file threw (ENOSPC, EIO, …); the file is gone either way. */
export async function reserveRecoverySpace(dir: string): Promise<void> {
  let logBytes = 0;
  for (const name of await readdir(dir)) {
    if (/^\d+\.log$/.test(name)) logBytes += (await stat(join(dir, name))).size;
  }
  const scratch = join(dir, 'space-check.tmp');
  try {
    const handle = await openFile(scratch, 'w', 0o600);
    try {
      const chunk = Buffer.alloc(256 * 1024);
      for (let written = 0; written < logBytes + 2 ** 20; written += chunk.length) await handle.write(chunk);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } finally {
    await rm(scratch, { force: true });
  }
}
