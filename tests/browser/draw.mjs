// A sale with a draw window through the sale page in a real Chromium: the
// page tells the rule before the opening, enters the draw during the window,
// shows the same entry after pressing again and after a reload, counts the
// other entrants live as they arrive, and shows the result the moment the
// draw is published, without a reload.
//
// Usage: node draw.mjs URL READY_FILE ENTRANTS SCREENSHOT
//
// The sale of URL (?sale=) does not exist yet when the script starts: once
// Chromium is up the script writes READY_FILE, then waits for the sale to
// appear (the test creates it, opening a couple of seconds later) and
// opens the page before the opening. ENTRANTS is how many entrants the
// draw will have in all, this page's user among them (the test enters the
// others over HTTP once this one is in).
//
// On success, prints one JSON line: {"user":N,"entries_line":"...",
// "first_others":N,"result":"won"|"lost","ticket":N|null,"draw_link":"..."}.
// On any failure or timeout, prints the reason on stderr and exits 1.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fail, main } from './chromium.mjs';

/** How long the test may take to create the sale once told the browser is up. */
const SALE_TIMEOUT_MS = 30_000;
/** How long one answer may take to show on the page. */
const ANSWER_TIMEOUT_MS = 10_000;
/** How long after the close of entries the result may take to show. */
const RESULT_TIMEOUT_MS = 20_000;
/** Hard bound on the whole run. */
const RUN_TIMEOUT_MS = 100_000;

const [url, readyFile, entrantsArg, shot] = process.argv.slice(2);
const entrants = Number(entrantsArg);
if (!url || !readyFile || !(entrants >= 2) || !shot) {
  fail('draw.mjs', 'usage: node draw.mjs URL READY_FILE ENTRANTS SCREENSHOT');
}
const sale = new URL(url).searchParams.get('sale');
const statusUrl = new URL(`/api/sales/${encodeURIComponent(sale)}`, url).href;

const ENTERED = /You are in the draw with ([\d,]+) others?; results at [^.]+\. Pressing again changes nothing\./;
const RESULT = /You were drawn! Ticket #(\d+) is yours\.|Not drawn this time\./;

const pageErrors = [];
const consoleLines = [];

/** Waits until `selector`'s text matches `pattern`; returns the text. */
async function text(page, selector, pattern, timeout = ANSWER_TIMEOUT_MS) {
  try {
    await page.waitForFunction(
      ([sel, source]) => new RegExp(source).test(document.querySelector(sel)?.textContent ?? ''),
      [selector, pattern.source],
      { timeout },
    );
  } catch (e) {
    const said = await page.locator(selector).textContent().catch(() => null);
    throw new Error(`waiting for ${selector} to match ${pattern}: it says ${JSON.stringify(said)}`);
  }
  return page.locator(selector).textContent();
}

async function demoUser(page) {
  const line = await text(page, '#user', /demo user \d+/);
  return Number(line.match(/demo user (\d+)/)[1]);
}

/** The sale's status once the test has created it. */
async function saleCreated() {
  const deadline = Date.now() + SALE_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const r = await fetch(statusUrl, { cache: 'no-store' }).catch(() => null);
    if (r?.ok) return r.json();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no sale at ${statusUrl} within ${SALE_TIMEOUT_MS} ms`);
}

/** Presses the button and waits for the server's answer to the reserve. */
async function press(page) {
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/reserve'), { timeout: ANSWER_TIMEOUT_MS }),
    page.locator('#buy').click({ timeout: ANSWER_TIMEOUT_MS }),
  ]);
  return answer.status();
}

async function run(launch) {
  const context = await launch({ width: 1280, height: 900 });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') consoleLines.push(`${m.type()}: ${m.text()}`);
  });
  writeFileSync(readyFile, 'ready\n');

  const status = await saleCreated();
  if (!status.draw || status.draw.seed !== null) {
    throw new Error(`the sale has no draw to come: ${JSON.stringify(status)}`);
  }
  await page.goto(url, { waitUntil: 'load', timeout: ANSWER_TIMEOUT_MS });
  const user = await demoUser(page);

  // Before the opening: the rule, under the countdown.
  const entriesLine = await text(page, '#draw-line',
    /^Entries open at .+; arrive any time in the first [\d.]+ seconds?, order does not matter\.$/);
  if (Date.now() >= status.opens_at) {
    throw new Error('the page was not ready before the opening: start the sale later');
  }

  // During the window the button enters the draw.
  await text(page, '#buy-label', /^Enter the draw$/, status.opens_at - Date.now() + ANSWER_TIMEOUT_MS);
  if (Date.now() < status.opens_at) {
    throw new Error('the button offered the draw before the opening');
  }
  const first = await press(page);
  if (first !== 202) throw new Error(`entering answered ${first}, not 202`);
  const firstOthers = Number((await text(page, '#outcome', ENTERED)).match(ENTERED)[1].replace(/,/g, ''));

  // Pressing again: the same answer, the same words.
  const again = await press(page);
  if (again !== 202) throw new Error(`pressing again answered ${again}, not 202`);
  await text(page, '#outcome', ENTERED);

  // A reload during the window learns the entry from /me: the same state.
  await page.reload({ waitUntil: 'load', timeout: ANSWER_TIMEOUT_MS });
  if ((await demoUser(page)) !== user) throw new Error('the reload signed in someone else');
  await text(page, '#outcome', ENTERED);
  await text(page, '#buy-label', /^In the draw$/);
  await page.evaluate(() => { window.sameLoad = true; });

  // The others enter over HTTP: the count rises on the page by itself.
  const others = entrants - 1;
  await text(page, '#outcome',
    new RegExp(`You are in the draw with ${others} others`),
    Math.max(status.draw.draws_at - Date.now(), 0) + ANSWER_TIMEOUT_MS);

  // After the close, the result: no reload, no press.
  const said = await text(page, '#outcome', RESULT, Math.max(status.draw.draws_at - Date.now(), 0) + RESULT_TIMEOUT_MS);
  if (!(await page.evaluate(() => window.sameLoad === true))) {
    throw new Error('the page reloaded before showing the result');
  }
  const won = said.match(/Ticket #(\d+)/);
  await page.locator('#draw-link').waitFor({ state: 'visible', timeout: ANSWER_TIMEOUT_MS });
  const drawLink = await page.locator('#draw-link').evaluate((a) => a.href);
  const verify = await page.locator('#draw-verify').textContent();
  if (!/verify_draw\.py draw\.json [0-9a-f]{64}/.test(verify) || !/docs\/FAIRNESS\.md/.test(verify)) {
    throw new Error(`no way to verify the draw on the page: ${JSON.stringify(verify)}`);
  }

  await page
    .waitForFunction(() => document.querySelector('#confetti')?.childElementCount === 0, null, { timeout: 6_000 })
    .catch(() => {});
  mkdirSync(dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });

  if (pageErrors.length > 0) {
    throw new Error(`the page threw:\n${pageErrors.map((l) => `  ${l}`).join('\n')}`);
  }
  const refused = consoleLines.filter((l) => /Content Security Policy/i.test(l));
  if (refused.length > 0) {
    throw new Error(`the page broke its own policy:\n${refused.map((l) => `  ${l}`).join('\n')}`);
  }
  return {
    user,
    entries_line: entriesLine,
    first_others: firstOthers,
    result: won ? 'won' : 'lost',
    ticket: won ? Number(won[1]) : null,
    draw_link: drawLink,
  };
}

await main('draw.mjs', RUN_TIMEOUT_MS, run);
