import { open, type FileHandle } from 'node:fs/promises';

/** Error codes of a file system that cannot fsync a directory (the rename or new file is as durable as it gets). */
const CANNOT_SYNC_DIR = new Set(['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM', 'EBADF']);

/**
 * Make a file created, renamed or deleted in `dir` durable (fsync of the directory), so that it stays so after a
 * power cut. Tolerated where directories cannot be fsync'd (Windows, some file systems); any other failure is thrown
 * as it came, for the caller to word.
 */
export async function syncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return; // directories cannot be opened for fsync there
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    if (typeof code !== 'string' || !CANNOT_SYNC_DIR.has(code)) throw error;
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
