// The dashboard in headless Chromium, against the running service that
// tests/dashboard.rs started and fed. Each check throws with what it saw;
// the exit code is the verdict. Environment: DASHBOARD_URL, ADMIN_TOKEN,
// READ_TOKEN, LIVE_DEVICE, SCREENSHOTS (a directory).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.DASHBOARD_URL;
const admin = process.env.ADMIN_TOKEN;
const reader = process.env.READ_TOKEN;
const live = process.env.LIVE_DEVICE;
const shots = process.env.SCREENSHOTS;

function check(ok, what) {
  if (!ok) throw new Error(what);
  console.log(`ok - ${what.split(':')[0]}`);
}

async function api(path, init = {}) {
  const r = await fetch(url + path, {
    ...init,
    headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json', ...(init.headers || {}) },
  });
  return { status: r.status, body: await r.json() };
}

const profile = mkdtempSync(join(tmpdir(), 'telemark-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1360, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});
const errors = [];
function watch(page) {
  page.on('console', (m) => {
    // The refusal the config check asks for is logged as a failed load.
    const asked = m.location().url.endsWith(`/v1/devices/${live}/config`) && m.text().includes('422');
    if (m.type() === 'error' && !asked) errors.push(`${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  return page;
}

async function signIn(page, token) {
  await page.goto(url + '/');
  await page.fill('#token', token);
  await page.click('form.login button[type=submit]');
  await page.waitForSelector('#whoami:not(:empty)');
}

try {
  const page = watch(browser.pages()[0] || (await browser.newPage()));

  // ---- the fleet
  await signIn(page, admin);
  const devices = (await api('/v1/devices')).body.devices;
  check(devices.length === 4, `four devices in the API: ${devices.length}`);
  await page.waitForFunction((n) => document.querySelectorAll('tr[data-device]').length === n, devices.length, { timeout: 10000 });
  const listed = await page.$$eval('tr[data-device]', (rows) => rows.map((r) => r.dataset.device));
  check(
    devices.every((d) => listed.includes(String(d.id))),
    `every device is listed: ${JSON.stringify(listed)} of ${devices.map((d) => d.id)}`,
  );
  const simulated = devices.find((d) => d.name.startsWith('sim-'));
  const state = await page.$eval(`tr[data-device="${simulated.id}"] .state`, (e) => e.textContent);
  check(state === simulated.state, `a device's state is the API's: ${state} for ${simulated.state}`);
  await page.waitForSelector(`tr[data-device="${simulated.id}"] .health:not(:has(.muted))`);
  await page.screenshot({ path: join(shots, 'fleet.png'), fullPage: true });

  // ---- a simulated device's charts hold the API's readings for their range
  await page.click(`tr[data-device="${simulated.id}"] a.name`);
  await page.waitForSelector('figure.chart[data-channel="1"] canvas');
  const channels = (await api(`/v1/devices/${simulated.id}/channels`)).body.channels;
  for (const c of channels) {
    const shown = await page.$eval(`figure.chart[data-channel="${c.channel}"]`, (f) => ({
      from: f.dataset.from,
      to: f.dataset.to,
      x: Array.from(f.plot.data[0]),
      y: Array.from(f.plot.data[1]),
    }));
    const answer = (await api(`/v1/devices/${simulated.id}/readings?channel=${c.channel}&from=${shown.from}&to=${shown.to}`)).body;
    const x = answer.readings.map((r) => r.unix_ms / 1000);
    const y = answer.readings.map((r) => r.value * c.scale);
    check(x.length > 50, `channel ${c.channel} has a day of readings: ${x.length}`);
    check(
      JSON.stringify(shown.x) === JSON.stringify(x) && shown.y.every((v, i) => Math.abs(v - y[i]) < 1e-9),
      `channel ${c.channel}'s points equal the API's for ${shown.from}..${shown.to}: ${shown.x.length} shown, ${x.length} in the API`,
    );
  }
  const unit = await page.$eval('figure.chart[data-channel="1"] figcaption', (e) => e.textContent);
  check(unit.includes('°C'), `the temperature chart names its unit: ${unit}`);
  await page.waitForSelector('.feed .alert-item');
  await page.screenshot({ path: join(shots, 'device-day.png'), fullPage: true });

  // ---- the live device: a reading stored while the page is open appears within 2 s
  await page.goto(`${url}/#/devices/${live}`);
  await page.waitForSelector('figure.chart[data-channel="1"] canvas');
  await page.waitForSelector('.live[data-up="true"]');
  // The device reports its channels after it boots, one report each.
  let liveChannels = 0;
  for (let i = 0; i < 200 && liveChannels < 2; i++) {
    liveChannels = (await api(`/v1/devices/${live}/channels`)).body.channels.length;
    if (liveChannels < 2) await new Promise((res) => setTimeout(res, 100));
  }
  await page.waitForFunction((n) => document.querySelectorAll('figure.chart canvas').length === n, liveChannels, { timeout: 10000 });
  check(liveChannels === 2, `a chart for each of the live device's channels: ${liveChannels}`);
  const lastShown = await page.$eval('figure.chart[data-channel="1"]', (f) => Math.max(0, ...f.plot.data[0]));
  let stored = null;
  let seenAt = 0;
  for (let i = 0; i < 300 && !stored; i++) {
    const r = (await api(`/v1/devices/${live}/readings?channel=1&from=${Math.round(lastShown * 1000) + 1}`)).body.readings;
    if (r.length) {
      stored = r[r.length - 1];
      seenAt = Date.now();
    } else await new Promise((res) => setTimeout(res, 50));
  }
  check(stored !== null, 'the live device stored a reading while the page was open');
  await page.waitForFunction((t) => document.querySelector('figure.chart[data-channel="1"]').plot.data[0].includes(t), stored.unix_ms / 1000, { timeout: 2000 });
  check(Date.now() - seenAt <= 2000, `the reading at ${stored.unix_ms} is on the chart within 2 s: ${Date.now() - seenAt} ms`);

  // ---- a command from the button reaches the device, and its result shows
  await page.click('.output[data-output="1"] button[data-command="on"]');
  await page.waitForSelector('tr[data-state="answered"] .result', { timeout: 30000 });
  const result = await page.$eval('tr[data-state="answered"]', (r) => r.textContent);
  const commands = (await api(`/v1/devices/${live}/commands`)).body.commands;
  const answered = commands.find((c) => c.state === 'answered');
  check(answered && answered.output === 1 && answered.value === 1 && answered.result, `the command is answered in the API: ${JSON.stringify(commands)}`);
  check(result.includes('burner') && result.includes(`value ${answered.result.value}`), `the page shows its result: ${result}`);

  // ---- the config editor: checked before sending, and a refusal shows the device's reason
  await page.fill('#config-editor', JSON.stringify({ version: 2, heartbeat: 60 }));
  const invalid = await page.$eval('.verdict.invalid', (e) => e.textContent);
  check(invalid.includes('unknown setting heartbeat'), `a misspelt setting is caught before sending: ${invalid}`);
  // An MTU too small for any frame: only the device's own validator knows.
  const refused = { version: 2, mtu: 24 };
  await page.fill('#config-editor', JSON.stringify(refused));
  await page.click('form.editor button[type=submit]');
  await page.waitForSelector('.verdict.refused');
  const reason = await page.$eval('.verdict.refused', (e) => e.textContent);
  const direct = await api(`/v1/devices/${live}/config`, { method: 'PUT', body: JSON.stringify({ cbor: 'a2000203' + '1818' }) });
  check(direct.status === 422 && direct.body.config, `the API refuses it with the device's reason: ${JSON.stringify(direct.body)}`);
  check(reason.includes(direct.body.detail) && reason.includes(`code ${direct.body.config.code}`), `the page shows the device's reason: ${reason}`);
  await page.screenshot({ path: join(shots, 'device.png'), fullPage: true });

  // ---- a read-only token sees no command buttons
  await page.click('#sign-out');
  await signIn(page, reader);
  await page.goto(`${url}/#/devices/${live}`);
  await page.waitForSelector('.commands .muted');
  const buttons = await page.$$('.commands button');
  const editor = await page.$('#config-editor');
  check(buttons.length === 0 && editor === null, `a read-only token sees no command buttons and no editor: ${buttons.length} buttons`);
  const role = await page.$eval('#whoami', (e) => e.textContent);
  check(role === 'read', `the page names the role: ${role}`);

  check(errors.length === 0, `no console errors: ${JSON.stringify(errors)}`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
