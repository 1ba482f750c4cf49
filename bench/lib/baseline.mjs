// The code as it was at a given commit, built beside the repository, so a benchmark can measure "before" and
// "after" in the same run. The worktree is kept in the system temp directory between runs (keyed by commit).
import { execFileSync } from 'node:child_process';
import { existsSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './child.mjs';

/** The last commit before the package was split by role (issue 8): the root entry exported every role. */
export const BEFORE_SPLIT = 'f0ffb7e';

/** main before the connector took a durable outbox (issue 17): the device entry a device without one must still get. */
export const BEFORE_STORE_FORWARD = '9ea4813';

/**
 * A built checkout of `commit` (a detached git worktree in the temp directory, using this repository's
 * node_modules). Returns its directory.
 */
export function baselineCheckout(commit) {
  const dir = join(tmpdir(), `apsaramq-device-baseline-${commit}`);
  if (!existsSync(join(dir, 'dist', 'index.js'))) {
    if (!existsSync(join(dir, 'package.json'))) {
      execFileSync('git', ['worktree', 'prune'], { cwd: ROOT, stdio: 'ignore' });
      execFileSync('git', ['worktree', 'add', '--detach', '--force', dir, commit], { cwd: ROOT, stdio: 'ignore' });
    }
    if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: dir, stdio: 'inherit' });
  }
  return dir;
}
