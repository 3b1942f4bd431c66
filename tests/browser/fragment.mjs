// The sale page against links made by someone else, in a real Chromium:
//
// - a link carrying a token (`URL#token=...`) signs no one in, so a crafted
//   link cannot log a visitor into the link maker's account (login CSRF);
// - a token this origin's own login leaves in sessionStorage does sign the
//   page in;
// - another page cannot frame the sale page (clickjacking the Buy button).
//
// Usage: node fragment.mjs URL TOKEN SUBJECT
//
// On success, prints one JSON line:
// {"link":"<#user text>","stored":"<#user text>","framed_buy_buttons":0}.
// On any failure or timeout, prints the reason on stderr and exits 1.

import { fail, main } from './chromium.mjs';

/** How long one answer may take to show on the page. */
const ANSWER_TIMEOUT_MS = 10_000;
/** Hard bound on the whole run. */
const RUN_TIMEOUT_MS = 60_000;
const TOKEN_KEY = 'flashsale.token';

const [url, token, subject] = process.argv.slice(2);
if (!url || !token || !subject) {
  fail('fragment.mjs', 'usage: node fragment.mjs URL TOKEN SUBJECT');
}

/** Waits until the page has decided who is signed in; returns #user's text. */
async function signedInAs(page) {
  await page.waitForFunction(() => {
    const name = document.querySelector('#sale-name')?.textContent ?? '';
    const user = document.querySelector('#user')?.textContent ?? '';
    return name !== '' && !name.startsWith('Loading') && user !== '' && !user.startsWith('Signing');
  }, null, { timeout: ANSWER_TIMEOUT_MS });
  return page.locator('#user').textContent();
}

async function run(launch) {
  const context = await launch({ width: 1280, height: 900 });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));

  await page.goto(`${url}#token=${token}`, { waitUntil: 'load', timeout: ANSWER_TIMEOUT_MS });
  const link = await signedInAs(page);
  if (/Signed in/.test(link) || link.includes(subject)) {
    throw new Error(`a link's token signed the page in: ${JSON.stringify(link)}`);
  }
  if (await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY)) {
    throw new Error("a link's token was stored");
  }
  if (!(await page.locator('#buy').isDisabled())) {
    throw new Error('Buy is enabled without a sign-in');
  }

  // The sign-in the page does accept: what this origin stored itself.
  await page.evaluate(([key, value]) => sessionStorage.setItem(key, value), [TOKEN_KEY, token]);
  await page.goto(url, { waitUntil: 'load', timeout: ANSWER_TIMEOUT_MS });
  const stored = await signedInAs(page);
  if (!stored.includes(`Signed in as ${subject}`)) {
    throw new Error(`a stored token did not sign the page in: ${JSON.stringify(stored)}`);
  }

  // Another page frames the sale page: the frame must stay empty.
  const framer = await context.newPage();
  await framer.setContent(`<iframe src="${url}" width="800" height="600"></iframe>`, {
    waitUntil: 'load',
    timeout: ANSWER_TIMEOUT_MS,
  });
  const child = framer.frames().find((f) => f !== framer.mainFrame());
  const framed = child ? await child.locator('#buy').count().catch(() => 0) : 0;
  if (framed !== 0) {
    throw new Error('the sale page rendered inside another page');
  }

  if (pageErrors.length > 0) {
    throw new Error(`the page threw:\n${pageErrors.map((l) => `  ${l}`).join('\n')}`);
  }
  return { link, stored, framed_buy_buttons: framed };
}

await main('fragment.mjs', RUN_TIMEOUT_MS, run);
