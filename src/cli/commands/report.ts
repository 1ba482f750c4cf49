import type { Command } from 'commander';
import { ValidationError } from '../../errors.js';
import { type CliIo, UsageError, exampleStartAt, jsonLine } from '../io.js';
import { loadReports, loadThresholds } from '../roles.js';
import { writeOutput } from './simulate.js';

interface MergeFlags {
  json?: boolean;
  html?: string;
  output?: string;
  partial?: boolean;
  failOn?: string[];
}

/** Register `report merge`: the reports of a run's shards as the fleet's report. */
export function addReportCommand(program: Command, io: CliIo): void {
  const startAt = exampleStartAt();
  const report = program.command('report').description('Work with simulation reports (simulate --report files).');
  report
    .command('merge')
    .description('Merge the reports of a run\'s shards into the fleet\'s report: counts and per-second series added, latency histograms added, so the percentiles are exact. Reports of different runs are refused (ReportMismatch names what differs).')
    .argument('<files...>', 'report files written by simulate --report (or by report merge --output)')
    .option('--json', 'print the merged JSON report on stdout')
    .option('--output <file>', 'write the merged JSON report to this file (it can be merged again)')
    .option('--html <file>', 'write the merged report as one self-contained HTML page with charts')
    .option('--partial', 'merge even when some shards of the run are missing')
    .option('--fail-on <threshold>', 'exit 1 when a threshold holds on the merged report, as simulate --fail-on does (e.g. lost>0, heal.p99>30s)', (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .addHelpText(
      'after',
      `
Merging one report renders it as it is (e.g. report merge run.json --html run.html). The summary (or, with --json, the merged report) goes to stdout.
Exit code 2 with InvalidReport (a file that is not a report of this version, or a field out of its bounds, named by its path),
1 with ReportMismatch (different runs, a shard twice, a shard missing, series further apart than a run lasts), and 1 with
ThresholdExceeded when a --fail-on threshold holds on the merged report (after it is written and printed).

Example:
  $ apsaramq-device simulate --devices 100000 --shard 1/2 --start-at ${startAt} --report s1.json   # machine 1
  $ apsaramq-device simulate --devices 100000 --shard 2/2 --start-at ${startAt} --report s2.json   # machine 2
  $ apsaramq-device report merge s1.json s2.json --html fleet.html --output fleet.json`,
    )
    .action(async (files: string[], flags: MergeFlags) => {
      const { readReportFile, mergeReports, formatReport, renderReportHtml, writeFileWhole } = await loadReports('report merge');
      const { parseThresholds, checkThresholds } = await loadThresholds('report merge');
      let thresholds: ReturnType<typeof parseThresholds> = [];
      try {
        if (flags.failOn !== undefined) thresholds = parseThresholds(flags.failOn);
      } catch (error) {
        if (error instanceof ValidationError) throw new UsageError(error.message);
        throw error;
      }
      const reports = [];
      for (const file of files) reports.push(await readReportFile(file));
      const merged = mergeReports(reports, { sources: files, partial: Boolean(flags.partial) });
      if (flags.output !== undefined) await writeOutput(writeFileWhole, '--output', flags.output, `${JSON.stringify(merged, null, 2)}\n`);
      if (flags.html !== undefined) await writeOutput(writeFileWhole, '--html', flags.html, renderReportHtml(merged));
      // The summary is the command's result, on stdout like every other command's; --json replaces it.
      io.stdout(flags.json ? jsonLine(merged) : formatReport(merged));
      const crossed = checkThresholds(merged, thresholds);
      if (crossed) throw crossed;
    });
}
