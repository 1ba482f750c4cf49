/**
 * Report files for the CLI: read and check a saved report, and write a file whole or not at all (a report is
 * written to a temporary file beside it, then renamed over it, so an interrupted write never leaves half a report).
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { InvalidReportError } from './errors.js';
import { parseReport } from './report-check.js';
import type { SimulationReport } from './report-format.js';

export { formatReport } from './metrics.js';
export { renderReportHtml } from './html.js';
export { mergeReports } from './report.js';

/**
 * Read a report written by `simulate --report` (or `report merge --output`) and check it ({@link parseReport}).
 * @throws InvalidReportError `InvalidReport`
 */
export async function readReportFile(file: string): Promise<SimulationReport> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new InvalidReportError(`Cannot read the report ${file} (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { source: file });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new InvalidReportError(`${file} is not JSON (${error instanceof Error ? error.message : String(error)})`, { source: file });
  }
  return parseReport(value, file);
}

/** Write `text` to `file` whole: into a temporary file beside it, then renamed over it. Throws the fs error. */
export async function writeFileWhole(file: string, text: string): Promise<void> {
  const temporary = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, text);
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}
