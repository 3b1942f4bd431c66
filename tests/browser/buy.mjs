// Buys a ticket through the sale page in a real Chromium, the way a visitor
// would: wait for the opening, press "Buy ticket", see the win, press again
// and see the same ticket.
//
// Usage: node buy.mjs URL SCREENSHOT_PATH [SECOND_SCREENSHOT_PATH]
//
// The first screenshot (the win) is taken at a desktop size, the second (the
// same ticket, pressed again) at a phone size, 390x844; by default it goes
// next to the first with "-phone" added to the name. On success, prints one
// JSON line: {"ticket":N,"user":N,"screenshots":[...]}. On any failure or
// timeout, prints the reason on stderr and exits 1.
//
// The browser is Debian's Chromium (CHROMIUM overrides the path); nothing is
// downloaded.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fail, main } from './chromium.mjs';

/** How long the sale may take to open and the button to become enabled. */
const OPEN_TIMEOUT_MS = 20_000;
/** How long one answer may take to show on the page. */
const ANSWER_TIMEOUT_MS = 10_000;
/** Hard bound on the whole run. */
const RUN_TIMEOUT_MS = 60_000;

const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

const [url, shot, shotArg] = process.argv.slice(2);
if (!url || !shot) {
  fail('buy.mjs', 'usage: node buy.mjs URL SCREENSHOT_PATH [SECOND_SCREENSHOT_PATH]');
}
const shot2 = shotArg || shot.replace(/(\.png)?$/i, '-phone.png');

let context;
const pageErrors = [];
const consoleLines = [];

/** Runs one step; a failure names the step and shows what the page said. */
async function step(name, body) {
  try {
    return await body();
  } catch (e) {
    const outcome = await context?.pages()[0]?.locator('#outcome').textContent().catch(() => null);
    const lines = [
      `${name}: ${e.message.split('\n')[0]}`,
      `  #outcome: ${JSON.stringify(outcome)}`,
      ...pageErrors.map((l) => `  page error: ${l}`),
      ...consoleLines.slice(-10).map((l) => `  console: ${l}`),
    ];
    throw new Error(lines.join('\n'));
  }
}

async function run(launch) {
  context = await step('launching Chromium', () => launch(DESKTOP));
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') consoleLines.push(`${m.type()}: ${m.text()}`);
  });

  await step(`opening ${url}`, () => page.goto(url, { waitUntil: 'load', timeout: ANSWER_TIMEOUT_MS }));
  await step('waiting for the sale name', () =>
    page.waitForFunction(
      () => {
        const name = document.querySelector('#sale-name')?.textContent ?? '';
        return name !== '' && !name.startsWith('Loading');
      },
      null,
      { timeout: ANSWER_TIMEOUT_MS },
    ),
  );
  await step('waiting for the demo sign-in', () =>
    page.waitForFunction(() => /Signed in/.test(document.querySelector('#user')?.textContent ?? ''), null, {
      timeout: ANSWER_TIMEOUT_MS,
    }),
  );

  const buy = page.locator('#buy');
  const outcome = page.locator('#outcome');

  await step(`waiting up to ${OPEN_TIMEOUT_MS} ms for #buy to be enabled`, () =>
    page.waitForFunction(() => !document.querySelector('#buy').disabled, null, { timeout: OPEN_TIMEOUT_MS }),
  );
  await step('pressing Buy', () => buy.click({ timeout: ANSWER_TIMEOUT_MS }));
  await step('waiting for "You got ticket #"', () =>
    page.waitForFunction(() => /You got ticket #\d+/.test(document.querySelector('#outcome').textContent), null, {
      timeout: ANSWER_TIMEOUT_MS,
    }),
  );
  const won = (await outcome.textContent()).match(/You got ticket #(\d+)/);
  const ticket = Number(won[1]);

  // Let the celebration settle so the screenshot shows the page, not confetti.
  await page
    .waitForFunction(() => document.querySelector('#confetti')?.childElementCount === 0, null, { timeout: 6_000 })
    .catch(() => {});
  mkdirSync(dirname(shot), { recursive: true });
  await step(`saving ${shot}`, () => page.screenshot({ path: shot, fullPage: true }));

  await page.setViewportSize(PHONE);
  await step('waiting for #buy to be enabled again', () =>
    page.waitForFunction(() => !document.querySelector('#buy').disabled, null, { timeout: ANSWER_TIMEOUT_MS }),
  );
  await step('pressing Buy again', () => buy.click({ timeout: ANSWER_TIMEOUT_MS }));
  await step('waiting for "already yours"', () =>
    page.waitForFunction(() => /already yours: #\d+/.test(document.querySelector('#outcome').textContent), null, {
      timeout: ANSWER_TIMEOUT_MS,
    }),
  );
  const again = Number((await outcome.textContent()).match(/already yours: #(\d+)/)[1]);
  if (again !== ticket) {
    throw new Error(`won ticket #${ticket}, but pressing again said #${again}`);
  }
  await page.waitForTimeout(300); // the button's colour transition
  mkdirSync(dirname(shot2), { recursive: true });
  await step(`saving ${shot2}`, () => page.screenshot({ path: shot2, fullPage: true }));

  if (pageErrors.length > 0) {
    throw new Error(`the page threw:\n${pageErrors.map((l) => `  ${l}`).join('\n')}`);
  }
  // The page works under its own Content-Security-Policy: nothing refused.
  const refused = consoleLines.filter((l) => /Content Security Policy/i.test(l));
  if (refused.length > 0) {
    throw new Error(`the page broke its own policy:\n${refused.map((l) => `  ${l}`).join('\n')}`);
  }
  const userMatch = (await page.locator('#user').textContent()).match(/demo user (\d+)/);
  const user = userMatch ? Number(userMatch[1]) : null;
  return { ticket, user, screenshots: [shot, shot2] };
}

await main('buy.mjs', RUN_TIMEOUT_MS, run);
