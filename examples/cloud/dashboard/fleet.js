// The fleet at a glance: every device the token sees, online or offline
// as the silent-device rule judged it, with its last contact, the config
// it runs, its store depth and health counters, and its open alerts. A
// row is read again when the stream says its device stored something.

import { each, follow, get } from './api.js';
import { deviceId, el, failure, healthLine, openAlerts, when } from './view.js';

/** How often the list is read again, for devices that fell silent. */
const REFRESH_MS = 30000;

/** The fleet view: an element that fills itself until `signal` aborts. */
export function fleet(caller, signal) {
  const body = el('tbody');
  const status = el('span', { class: 'live', 'aria-live': 'polite' }, 'connecting…');
  const summary = el('p', { class: 'summary' });
  const view = el(
    'section',
    { class: 'fleet' },
    el('div', { class: 'heading' }, el('h1', {}, 'Devices'), status),
    summary,
    el(
      'table',
      { class: 'devices' },
      el(
        'thead',
        {},
        el('tr', {}, ['Device', 'State', 'Last seen', 'Config', 'Store depth', 'Health', 'Open alerts'].map((h) => el('th', { scope: 'col' }, h))),
      ),
      body,
    ),
  );
  const rows = new Map();
  const pending = new Map();

  async function load() {
    let list;
    try {
      list = (await get('/v1/devices', signal)).devices;
    } catch (e) {
      if (!signal.aborted) view.replaceChildren(failure(e));
      return;
    }
    const live = list.filter((d) => d.revoked_ms === null);
    const online = live.filter((d) => d.state === 'online').length;
    summary.textContent = `${live.length} device${live.length === 1 ? '' : 's'}, ${online} online, ${live.length - online} offline${
      list.length > live.length ? `; ${list.length - live.length} revoked` : ''
    }`;
    const seen = new Set();
    await each(live, 6, async (d) => {
      seen.add(d.id);
      await refresh(d.id, d);
    });
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.remove();
        rows.delete(id);
      }
    }
    // In the order the API lists them.
    for (const d of live) if (rows.has(d.id)) body.append(rows.get(d.id));
  }

  async function refresh(id, known) {
    let d, detail, health, alerts;
    try {
      [detail, health, alerts] = await Promise.all([
        get(`/v1/devices/${id}`, signal),
        get(`/v1/devices/${id}/health`, signal),
        get(`/v1/devices/${id}/alerts?limit=200`, signal),
      ]);
      d = detail.device || known;
    } catch (e) {
      if (signal.aborted) return;
      d = known;
    }
    if (!d) return;
    const row = el('tr', { dataset: { device: String(d.id), state: d.state } }, ...cells(d, detail, health, alerts));
    if (rows.has(d.id)) rows.get(d.id).replaceWith(row);
    else body.append(row);
    rows.set(d.id, row);
  }

  // Reads a device's row again, once for a burst of events.
  function touched(id) {
    if (!rows.has(id)) return load();
    if (pending.has(id)) return;
    pending.set(
      id,
      setTimeout(() => {
        pending.delete(id);
        refresh(id);
      }, 300),
    );
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener('abort', () => {
    clearInterval(timer);
    pending.forEach(clearTimeout);
  });
  follow(
    '/v1/stream',
    signal,
    (name, data) => {
      if (name !== 'message') return load();
      try {
        touched(JSON.parse(data).device);
      } catch {
        // Not an event of this service: nothing to show.
      }
    },
    (up) => {
      status.textContent = up ? 'live' : 'reconnecting…';
      status.dataset.up = up;
      if (up) load();
    },
  );
  return view;
}

function cells(d, detail, health, alerts) {
  const name = el('a', { href: `#/devices/${d.id}`, class: 'name' }, d.name);
  const state = el('span', { class: `state ${d.state}` }, d.state);
  const h = health && health.health;
  const reported = detail && detail.reported_config;
  const desired = detail && detail.config;
  const config = reported
    ? el('span', { title: desired ? `desired version ${desired.version}, ${desired.state}` : '' }, `v${reported.version}`, desired && desired.version > reported.version ? el('span', { class: 'muted' }, ` → v${desired.version} ${desired.state}`) : null)
    : el('span', { class: 'muted' }, desired && desired.version ? `v${desired.version} ${desired.state}` : 'defaults');
  const open = alerts ? openAlerts(alerts.alerts) : [];
  return [
    el('td', {}, name, el('br'), deviceId(d.id)),
    el('td', { class: 'state-cell' }, state),
    el('td', { class: 'last-seen' }, when(d.last_seen_ms)),
    el('td', { class: 'config' }, config),
    el('td', { class: 'depth num' }, h ? String(h.queue_depth) : '–'),
    el('td', { class: 'health' }, h ? healthLine(h) : el('span', { class: 'muted' }, 'no heartbeat yet')),
    el(
      'td',
      { class: 'alerts' },
      open.length ? open.map((a) => el('span', { class: `alert ${a.severity.toLowerCase()}` }, `ch${a.channel} ${a.kind}`)) : el('span', { class: 'muted' }, 'none'),
    ),
  ];
}
