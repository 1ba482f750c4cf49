/**
 * Report files for the CLI: read and check a saved report, and write a file whole or not at all (a report is
 * written to a temporary file beside it, then renamed over it, so an interrupted write never leaves half a report).
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { SimulatorError } from './errors.js';
import { parseReport } from './report.js';
import type { SimulationReport } from './report-format.js';

export { formatReport } from './metrics.js';
export { renderReportHtml } from './html.js';
export { mergeReports } from './report.js';

/** Read a report written by `simulate --report` (or `report merge --output`). @throws SimulatorError `InvalidReport` */
export async function readReportFile(file: string): Promise<SimulationReport> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new SimulatorError('InvalidReport', `Cannot read the report ${file} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SimulatorError('InvalidReport', `${file} is not JSON (${error instanceof Error ? error.message : String(error)})`);
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
