// A sale with holds through the sale page in a real Chromium: a visitor wins
// a hold, sees the payment countdown and pays (demo); a second visitor's
// hold runs out while a third, watching the sold-out sale, is told live that
// tickets are back, buys one, and cancels it.
//
// Usage: node hold.mjs URL HELD_SCREENSHOT BACK_SCREENSHOT
//
// On success, prints one JSON line:
// {"paid":{"user":N,"ticket":N},"expired":{"user":N},"cancelled":{"user":N}}.
// On any failure or timeout, prints the reason on stderr and exits 1.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fail, main } from './chromium.mjs';

/** How long one answer may take to show on the page. */
const ANSWER_TIMEOUT_MS = 10_000;
/** How long a hold may take to run out and its ticket to be seen back. */
const EXPIRY_TIMEOUT_MS = 20_000;
/** Hard bound on the whole run. */
const RUN_TIMEOUT_MS = 90_000;

const [url, heldShot, backShot] = process.argv.slice(2);
if (!url || !heldShot || !backShot) {
  fail('hold.mjs', 'usage: node hold.mjs URL HELD_SCREENSHOT BACK_SCREENSHOT');
}
const pageErrors = [];
let context;

/** Waits until the page's #outcome matches `pattern`; returns the text. */
async function outcome(page, pattern, timeout = ANSWER_TIMEOUT_MS) {
  try {
    await page.waitForFunction((source) => new RegExp(source).test(document.querySelector('#outcome').textContent),
      pattern.source, { timeout });
  } catch (e) {
    const said = await page.locator('#outcome').textContent().catch(() => null);
    throw new Error(`waiting for ${pattern}: the page says ${JSON.stringify(said)}`);
  }
  return page.locator('#outcome').textContent();
}

async function demoUser(page) {
  await page.waitForFunction(() => /demo user \d+/.test(document.querySelector('#user')?.textContent ?? ''), null,
    { timeout: ANSWER_TIMEOUT_MS });
  return Number((await page.locator('#user').textContent()).match(/demo user (\d+)/)[1]);
}

/** Switches `page` to a fresh demo user, and returns it. */
async function newUser(page) {
  const before = await demoUser(page);
  await page.locator('#user button').click({ timeout: ANSWER_TIMEOUT_MS });
  await page.waitForFunction((old) => {
    const m = (document.querySelector('#user')?.textContent ?? '').match(/demo user (\d+)/);
    return m && Number(m[1]) !== old;
  }, before, { timeout: ANSWER_TIMEOUT_MS });
  return demoUser(page);
}

async function buy(page) {
  await page.waitForFunction(() => !document.querySelector('#buy').disabled, null, { timeout: ANSWER_TIMEOUT_MS });
  await page.locator('#buy').click({ timeout: ANSWER_TIMEOUT_MS });
  const text = await outcome(page, /is held for you/);
  return Number(text.match(/#(\d+)/)[1]);
}

async function open(url) {
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(url, { waitUntil: 'load', timeout: ANSWER_TIMEOUT_MS });
  await demoUser(page);
  return page;
}

async function run(launch) {
  context = await launch({ width: 1280, height: 900 });

  // The first visitor holds, sees the countdown, and pays.
  const first = await open(url);
  const payer = await newUser(first);
  const paidTicket = await buy(first);
  await first.waitForFunction(() => !document.querySelector('#hold').hidden
    && /^\d+:\d\d$/.test(document.querySelector('#hold-countdown').textContent), null, { timeout: ANSWER_TIMEOUT_MS });
  mkdirSync(dirname(heldShot), { recursive: true });
  await first.screenshot({ path: heldShot, fullPage: true });
  await first.locator('#pay').click({ timeout: ANSWER_TIMEOUT_MS });
  await outcome(first, /Paid! Ticket #\d+ is yours/);

  // The same page, as a second visitor, holds the last ticket and lets it run out.
  const abandoner = await newUser(first);
  await buy(first);

  // A third visitor watches the sold-out sale.
  const third = await open(url);
  const watcher = await newUser(third);
  await third.waitForFunction(() => /Sold out/.test(document.querySelector('#buy-label').textContent), null,
    { timeout: ANSWER_TIMEOUT_MS });

  await outcome(first, /hold expired/, EXPIRY_TIMEOUT_MS);
  await outcome(third, /back on sale/, EXPIRY_TIMEOUT_MS);
  mkdirSync(dirname(backShot), { recursive: true });
  await third.screenshot({ path: backShot, fullPage: true });
  await buy(third);
  await third.locator('#cancel').click({ timeout: ANSWER_TIMEOUT_MS });
  await outcome(third, /gave the ticket up/);

  if (pageErrors.length > 0) {
    throw new Error(`the page threw:\n${pageErrors.map((l) => `  ${l}`).join('\n')}`);
  }
  return {
    paid: { user: payer, ticket: paidTicket },
    expired: { user: abandoner },
    cancelled: { user: watcher },
  };
}

await main('hold.mjs', RUN_TIMEOUT_MS, run);
