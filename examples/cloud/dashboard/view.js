// What the views share: building elements, and writing times, ids,
// failures, heartbeats and alerts as people read them.

import { ApiError } from './api.js';

/** Elements, briefly: `el('td', {class: 'x'}, 'text', child)`. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) e.append(c);
  }
  return e;
}

/** `s` seconds as people say them: 45 s, 12 min, 5 h, 3 d. */
export function lasting(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** A Unix ms time as people read it: relative, with the exact time as a title. */
export function when(ms) {
  if (ms === null || ms === undefined) return el('span', { class: 'muted' }, 'never');
  const s = Math.round((Date.now() - ms) / 1000);
  const ago = lasting(Math.abs(s));
  return el('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString() }, s >= 0 ? `${ago} ago` : `in ${ago}`);
}

/** The device id as the API writes it: decimal, with its hex as a title. */
export function deviceId(id) {
  return el('code', { title: `0x${BigInt(id).toString(16)}` }, String(id));
}

/** A message in place of a view, for what went wrong. */
export function failure(e) {
  return el('p', { class: 'error', role: 'alert' }, e instanceof ApiError ? `${e.status}: ${e.message}` : String(e.message || e));
}

/** A heartbeat's counters in a line. */
export function healthLine(h) {
  const parts = [
    `up ${lasting(h.uptime_s)} (${h.reset_reason})`,
    `${h.sent_readings}/${h.sampled} sent`,
    `${h.retries} retries`,
  ];
  if (h.evicted) parts.push(`${h.evicted} evicted`);
  if (h.decimated) parts.push(`${h.decimated} decimated`);
  if (h.sensor_faults) parts.push(`${h.sensor_faults} sensor faults`);
  return el('span', { title: `heartbeat ${h.unix_ms ? new Date(h.unix_ms).toLocaleString() : ''}` }, parts.join(' · '));
}

/** Alerts that no later alert clears stay open this long. */
const MOMENTARY_MS = 3600e3;

const CLEARS = { HighCleared: 'High', LowCleared: 'Low', SensorRecovered: 'SensorFault' };
const MOMENTARY = new Set(['RateOfChange', 'Stuck']);

/** The alerts still open among `alerts`: raised and not cleared since. */
export function openAlerts(alerts, now = Date.now()) {
  const open = new Map();
  for (const a of [...alerts].sort((x, y) => x.unix_ms - y.unix_ms)) {
    const cleared = CLEARS[a.kind];
    if (cleared) open.delete(`${a.channel}:${cleared}`);
    else if (!MOMENTARY.has(a.kind) || now - a.unix_ms < MOMENTARY_MS) open.set(`${a.channel}:${a.kind}`, a);
  }
  return [...open.values()];
}
