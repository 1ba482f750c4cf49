// `npm run build` starts from an empty dist/: a file whose source was renamed or removed must not linger there,
// where tests could still pass against it and `npm pack` would ship it.
import { rmSync } from 'node:fs';

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
