// Pure rendering of the README errors tables (shared by scripts/errors-table.mjs and test/unit/docs.test.ts).
const cell = (text) => String(text).replaceAll('|', '\\|');

function replaceBetween(text, name, body) {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) throw new Error(`README.md lacks the markers ${start} … ${end}`);
  return `${text.slice(0, i + start.length)}\n${body}${text.slice(j)}`;
}

/** A remedy, and the CLI's words for it when they differ (src/cli/remedies.ts). */
const remedy = (code, e, cliRemedies) => (cliRemedies[code] === undefined ? cell(e.remedy) : `${cell(e.remedy)}<br>CLI: ${cell(cliRemedies[code])}`);

/** The README with both errors tables rendered from the catalogs (and the CLI's remedies, where it words them its own way). */
export function renderErrorTables(readme, apiCatalog, localCatalog, cliRemedies = {}) {
  const api = [
    '| Code | HTTP | Retry class | Retry helps | What to do |',
    '|---|---|---|---|---|',
    ...Object.entries(apiCatalog).map(
      ([code, e]) => `| \`${code}\` | ${e.httpStatus} | ${e.retryClass} | ${e.retryable ? 'yes' : 'no'} | ${remedy(code, e, cliRemedies)} |`,
    ),
  ].join('\n');
  const local = [
    '| Code | Retry helps | What to do |',
    '|---|---|---|',
    ...Object.entries(localCatalog).map(([code, e]) => `| \`${code}\` | ${e.retryable ? 'yes' : 'no'} | ${remedy(code, e, cliRemedies)} |`),
  ].join('\n');
  return replaceBetween(replaceBetween(readme, 'errors:api', `${api}\n`), 'errors:local', `${local}\n`);
}
