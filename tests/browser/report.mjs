// The load generator's report page, opened from disk in Chromium with the
// network off: every request the page makes is recorded (and refused), and
// what the page shows is read back (charts, their lines and labels, the
// tables, the embedded run data) for the Rust test to compare with the
// run's JSON report.
//
// Usage: node report.mjs PAGE.html SCREENSHOT.png
// Prints one JSON line: { requests, blocked, title, ok, charts, outcomes,
// summary, invariants, data }.

import { pathToFileURL } from 'node:url';
import { fail, main } from './chromium.mjs';

const NAME = 'report.mjs';
const [file, shot] = process.argv.slice(2);
if (!file || !shot) fail(NAME, 'usage: node report.mjs PAGE.html SCREENSHOT.png');
const url = pathToFileURL(file).href;

await main(NAME, 60_000, async (launch) => {
  const context = await launch({ width: 1200, height: 900 });
  await context.setOffline(true);
  const requests = [];
  const blocked = [];
  context.on('request', (r) => requests.push(r.url()));
  await context.route('**/*', (route) => {
    const asked = route.request().url();
    if (asked === url) return route.continue();
    blocked.push(asked);
    return route.abort();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(url, { waitUntil: 'load', timeout: 20_000 });

  const seen = await page.evaluate(() => {
    const text = (el) => (el ? el.textContent.trim() : null);
    const charts = [...document.querySelectorAll('figure.chart')].map((figure) => {
      const svg = figure.querySelector('svg');
      const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
      const lines = [...figure.querySelectorAll('svg polyline')].map((line) => {
        const b = line.getBBox();
        return {
          stroke: (line.getAttribute('stroke') || '').toLowerCase(),
          points: line.points.numberOfItems,
          width: b.width,
          height: b.height,
        };
      });
      return {
        id: figure.id,
        series: (figure.dataset.series || '').split(' ').filter((s) => s),
        buckets: Number(figure.dataset.buckets),
        width: box.width,
        height: box.height,
        lines,
        texts: [...figure.querySelectorAll('svg text')].map((t) => t.textContent.trim()),
      };
    });
    const outcomes = [...document.querySelectorAll('#outcomes tr[data-kind]')].map((tr) => ({
      kind: tr.dataset.kind,
      shown: Number(text(tr.cells[1])),
    }));
    const summary = Object.fromEntries(
      [...document.querySelectorAll('#summary td[id]')].map((td) => [td.id, text(td)]),
    );
    const invariants = [...document.querySelectorAll('#invariants tr[data-invariant]')].map((tr) => ({
      invariant: tr.dataset.invariant,
      held: tr.dataset.held === 'true',
      shown: text(tr.cells[1]),
    }));
    return {
      title: document.title,
      ok: document.getElementById('verdict')?.dataset.ok === 'true',
      charts,
      outcomes,
      summary,
      invariants,
      data: JSON.parse(document.getElementById('run-data').textContent),
    };
  });
  await page.screenshot({ path: shot, fullPage: true });
  return { requests, blocked, ...seen };
});
