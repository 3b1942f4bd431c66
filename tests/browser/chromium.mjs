// What the browser scripts share: Debian's Chromium launched the way this
// machine allows (nothing downloaded, no background networking), and the
// run's frame: a hard deadline, one JSON line on success, the reason on
// stderr and exit code 1 on any failure, and the profile removed either way.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Prints `message` as the script's failure and exits 1. */
export function fail(name, message) {
  process.stderr.write(`${name}: ${message}\n`);
  process.exit(1);
}

/**
 * Runs `run(launch)` within `timeoutMs`: `launch(viewport)` starts Chromium
 * on a fresh profile and returns its context. Prints the result as JSON, or
 * the error, then exits.
 */
export async function main(name, timeoutMs, run) {
  const watchdog = setTimeout(() => fail(name, `no result within ${timeoutMs} ms`), timeoutMs);
  const profile = mkdtempSync(join(tmpdir(), 'flashsale-chromium-'));
  let context;
  const launch = async (viewport) => {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      viewport,
      timeout: 30_000,
      args: ARGS,
    });
    return context;
  };
  let code = 0;
  try {
    process.stdout.write(`${JSON.stringify(await run(launch))}\n`);
  } catch (e) {
    process.stderr.write(`${name}: ${e.message}\n`);
    code = 1;
  } finally {
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
  process.exit(code);
}
