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

/** The README with both errors tables rendered from the catalogs. */
export function renderErrorTables(readme, apiCatalog, localCatalog) {
  const api = [
    '| Code | HTTP | Retry class | Retry helps | What to do |',
    '|---|---|---|---|---|',
    ...Object.entries(apiCatalog).map(
      ([code, e]) => `| \`${code}\` | ${e.httpStatus} | ${e.retryClass} | ${e.retryable ? 'yes' : 'no'} | ${cell(e.remedy)} |`,
    ),
  ].join('\n');
  const local = [
    '| Code | Retry helps | What to do |',
    '|---|---|---|',
    ...Object.entries(localCatalog).map(([code, e]) => `| \`${code}\` | ${e.retryable ? 'yes' : 'no'} | ${cell(e.remedy)} |`),
  ].join('\n');
  return replaceBetween(replaceBetween(readme, 'errors:api', `${api}\n`), 'errors:local', `${local}\n`);
}
