// One device: a chart per channel in its unit, live from the stream; its
// alerts and events; the config it should run and the one it reports,
// with an editor; and its commands, each followed to its result.

import { ApiError, follow, get, send } from './api.js';
import { read, refusal, write } from './config.js';
import { deviceId, el, failure, healthLine, openAlerts, when } from './view.js';

/** The spans a chart can show, and how many readings it draws before it asks for buckets. */
const SPANS = [
  ['1 h', 3600e3],
  ['6 h', 6 * 3600e3],
  ['24 h', 24 * 3600e3],
  ['7 d', 7 * 24 * 3600e3],
];
const MOST_READINGS = 5000;
const BUCKETS = 1500;

function unitOf(c) {
  return c.symbol || c.unit.toLowerCase();
}

function format(v, c) {
  return `${v.toFixed(c.decimals)} ${unitOf(c)}`.trim();
}

/** The device view of device `id`: an element that fills itself until `signal` aborts. */
export function device(id, caller, signal) {
  const operates = caller.role === 'operate' || caller.role === 'admin';
  const status = el('span', { class: 'live', 'aria-live': 'polite' }, 'connecting…');
  const title = el('h1', {}, `Device ${id}`);
  const facts = el('p', { class: 'facts' });
  const health = el('p', { class: 'health' });
  const span = el(
    'select',
    { id: 'span', 'aria-label': 'Span of the charts', onchange: () => charts.load() },
    SPANS.map(([label, ms]) => el('option', { value: ms, selected: ms === 24 * 3600e3 }, label)),
  );
  const chartList = el('div', { class: 'charts' });
  const feed = el('ol', { class: 'feed' });
  const configBox = el('div', { class: 'config' });
  const commandBox = el('div', { class: 'commands' });
  const view = el(
    'section',
    { class: 'device', dataset: { device: id } },
    el('p', {}, el('a', { href: '#/' }, '← All devices')),
    el('div', { class: 'heading' }, title, status),
    facts,
    health,
    el('div', { class: 'heading' }, el('h2', {}, 'Channels'), el('label', {}, 'Span ', span)),
    chartList,
    el('div', { class: 'columns' }, el('section', {}, el('h2', {}, 'Alerts and events'), feed), el('section', {}, el('h2', {}, 'Config'), configBox), el('section', {}, el('h2', {}, 'Commands'), commandBox)),
  );

  let channels = [];
  let lastSeen = null;

  async function loadDevice() {
    const [d, h] = await Promise.all([get(`/v1/devices/${id}`, signal), get(`/v1/devices/${id}/health`, signal)]);
    const dev = d.device;
    lastSeen = dev.last_seen_ms;
    title.textContent = dev.name;
    document.title = `${dev.name} · telemark`;
    facts.replaceChildren(
      deviceId(dev.id),
      ' · ',
      el('span', { class: `state ${dev.state}` }, dev.state),
      ' · last seen ',
      when(dev.last_seen_ms),
      dev.group !== null ? ` · group ${dev.group}` : '',
      ` · ${d.readings} readings stored`,
    );
    health.replaceChildren(h.health ? healthLine(h.health) : el('span', { class: 'muted' }, 'no heartbeat yet'), h.health ? ` · store depth ${h.health.queue_depth}` : '');
  }

  const charts = chartsOf(id, chartList, span, signal, () => channels, () => lastSeen);

  async function loadChannels() {
    channels = (await get(`/v1/devices/${id}/channels`, signal)).channels;
    await charts.load();
  }

  async function loadFeed() {
    const [a, e] = await Promise.all([get(`/v1/devices/${id}/alerts?limit=100`, signal), get(`/v1/devices/${id}/events?limit=100`, signal)]);
    const open = new Set(openAlerts(a.alerts));
    const items = [
      ...a.alerts.map((x) => ({ at: x.unix_ms, node: alertItem(x, open.has(x), channels) })),
      ...e.events.map((x) => ({ at: x.unix_ms, node: el('li', { class: `event ${x.kind}` }, when(x.unix_ms), ' ', el('strong', {}, x.kind), ' ', x.detail) })),
    ].sort((x, y) => y.at - x.at);
    feed.replaceChildren(...(items.length ? items.slice(0, 100).map((i) => i.node) : [el('li', { class: 'muted' }, 'nothing yet')]));
  }

  const config = configOf(id, configBox, operates, signal, () => channels);
  const commands = commandsOf(id, commandBox, operates, signal);

  // Each part shows its own failure; the others go on.
  function guarded(load, where) {
    return load().catch((e) => {
      if (!signal.aborted) where.replaceChildren(failure(e));
    });
  }
  function all() {
    return Promise.all([
      // The feed writes alert values in their channel's unit.
      guarded(loadDevice, facts)
        .then(() => guarded(loadChannels, chartList))
        .then(() => guarded(loadFeed, feed)),
      guarded(config.load, configBox),
      guarded(commands.load, commandBox),
    ]);
  }
  all();

  follow(
    `/v1/stream?device=${id}`,
    signal,
    (name, data) => {
      if (name !== 'message') return all();
      let event;
      try {
        event = JSON.parse(data);
      } catch {
        return;
      }
      if (event.type === 'readings') {
        charts.add(event.readings);
        lastSeen = Date.now();
        guarded(loadDevice, facts);
      } else if (event.report === 'alert') guarded(loadFeed, feed);
      else if (event.report === 'heartbeat') guarded(loadDevice, facts);
      else if (event.report === 'config') guarded(config.load, configBox);
      else if (event.report === 'command') guarded(commands.load, commandBox);
      else if (event.report === 'channel') guarded(loadChannels, chartList);
    },
    (up, e) => {
      status.textContent = up ? 'live' : e ? `stream refused: ${e.message}` : 'reconnecting…';
      status.dataset.up = up;
    },
  );
  return view;
}

function alertItem(a, open, channels) {
  const c = channels.find((x) => x.channel === a.channel);
  const value = c ? format(a.value * c.scale, c) : String(a.value);
  return el(
    'li',
    { class: `alert-item ${a.severity.toLowerCase()}${open ? ' open' : ''}` },
    when(a.unix_ms),
    ' ',
    el('span', { class: `alert ${a.severity.toLowerCase()}` }, a.kind),
    ` channel ${a.channel} at ${value}`,
    open ? el('strong', {}, ' · open') : '',
  );
}

// ---- charts

function chartsOf(id, list, span, signal, channelsNow, lastSeenNow) {
  // By channel: its spec, its uPlot, its data and the range it was read for.
  const shown = new Map();
  const resize = new ResizeObserver(() => {
    for (const s of shown.values()) s.plot.setSize({ width: s.box.clientWidth, height: 220 });
  });
  signal.addEventListener('abort', () => resize.disconnect());

  // Each load supersedes the ones before it, which may still be reading.
  let generation = 0;

  async function load() {
    const mine = ++generation;
    const channels = channelsNow();
    const to = Math.max(Date.now(), (lastSeenNow() || 0) + 1);
    const from = to - Number(span.value);
    if (!channels.length) {
      for (const s of shown.values()) s.plot.destroy();
      shown.clear();
      list.replaceChildren(el('p', { class: 'muted' }, 'The device has not reported its channels yet.'));
      return;
    }
    const figures = await Promise.all(channels.map((c) => chart(c, from, to)));
    if (mine !== generation) return;
    for (const s of shown.values()) s.plot.destroy();
    shown.clear();
    list.replaceChildren(...figures.map((f) => f.figure));
    for (const f of figures) {
      f.plot = new uPlot(options(f.spec, f.box.clientWidth), f.data, f.box);
      f.figure.plot = f.plot;
      resize.observe(f.box);
      shown.set(f.spec.channel, f);
      latest(f);
    }
  }

  async function chart(c, from, to) {
    const base = `/v1/devices/${id}/readings?channel=${c.channel}&from=${Math.floor(from)}&to=${Math.ceil(to)}`;
    let xs = [];
    let ys = [];
    let buckets = false;
    const answer = await get(base, signal).catch((e) => {
      if (e instanceof ApiError && e.status === 422) return null;
      throw e;
    });
    if (answer && answer.readings && answer.readings.length <= MOST_READINGS) {
      for (const r of answer.readings) {
        xs.push(r.unix_ms / 1000);
        ys.push(r.value * c.scale);
      }
    } else {
      buckets = true;
      const points = (await get(`${base}&points=${BUCKETS}`, signal)).points;
      for (const p of points) {
        xs.push(p.unix_ms / 1000);
        ys.push(p.mean * c.scale);
      }
    }
    const box = el('div', { class: 'plot' });
    const now = el('span', { class: 'now' });
    const figure = el(
      'figure',
      { class: 'chart', dataset: { channel: String(c.channel), from: String(Math.floor(from)), to: String(Math.ceil(to)), buckets: String(buckets) } },
      el('figcaption', {}, `Channel ${c.channel}`, el('span', { class: 'muted' }, ` · ${c.unit} (${unitOf(c)})${buckets ? ` · means of ${BUCKETS} buckets` : ''}`), now),
      box,
    );
    return { spec: c, figure, box, now, data: [xs, ys], buckets };
  }

  function latest(f) {
    const [xs, ys] = f.data;
    f.now.textContent = xs.length ? ` · now ${format(ys[ys.length - 1], f.spec)}` : ' · no readings in this span';
  }

  // Readings from the stream, each where its time puts it.
  function add(readings) {
    const touched = new Set();
    for (const r of readings) {
      const f = shown.get(r.channel);
      if (!f || f.buckets) continue;
      const [xs, ys] = f.data;
      const x = r.unix_ms / 1000;
      let i = xs.length;
      while (i > 0 && xs[i - 1] > x) i--;
      xs.splice(i, 0, x);
      ys.splice(i, 0, r.value * f.spec.scale);
      touched.add(f);
    }
    for (const f of touched) {
      f.plot.setData(f.data);
      latest(f);
    }
  }

  return { load, add };
}

function options(c, width) {
  const unit = unitOf(c);
  return {
    width: Math.max(width, 200),
    height: 220,
    legend: { show: false },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    series: [{}, { label: `channel ${c.channel}`, stroke: '#0b6e99', width: 1.5, fill: 'rgba(11,110,153,0.08)', points: { show: false }, value: (u, v) => (v === null ? '–' : format(v, c)) }],
    axes: [{}, { label: unit, size: 60, values: (u, ticks) => ticks.map((t) => t.toFixed(c.decimals)) }],
  };
}

// ---- config

function configOf(id, box, operates, signal, channelsNow) {
  const desired = el('div', { class: 'desired' });
  const reported = el('div', { class: 'reported' });
  const editor = el('textarea', { id: 'config-editor', rows: 10, spellcheck: 'false', 'aria-label': 'The next config, as named settings in JSON' });
  const verdict = el('p', { class: 'verdict', role: 'status' });
  const sendButton = el('button', { type: 'submit' }, 'Send config');
  let version = 0;
  let filled = false;

  function check() {
    try {
      const cbor = write(JSON.parse(editor.value), channelsNow(), version);
      verdict.className = 'verdict ok';
      verdict.textContent = `valid: ${cbor.length / 2} bytes of CBOR`;
      return cbor;
    } catch (e) {
      verdict.className = 'verdict invalid';
      verdict.textContent = e instanceof SyntaxError ? `not JSON: ${e.message}` : e.message;
      return null;
    }
  }

  async function submit(ev) {
    ev.preventDefault();
    const cbor = check();
    if (!cbor) return;
    sendButton.disabled = true;
    try {
      const queued = await send('PUT', `/v1/devices/${id}/config`, { cbor });
      verdict.className = 'verdict ok';
      verdict.textContent = `version ${queued.version} queued: the device takes it at its next contact`;
      filled = false;
      await load();
    } catch (e) {
      verdict.className = 'verdict refused';
      const c = e instanceof ApiError && e.problem.config;
      verdict.textContent = c ? `refused, as the device would: ${e.message} (${refusal(c.code, c.detail)}, code ${c.code})` : `refused: ${e.message}`;
    } finally {
      sendButton.disabled = false;
    }
  }

  const form = operates
    ? el(
        'form',
        { class: 'editor', onsubmit: submit },
        el('label', { for: 'config-editor' }, 'Next config'),
        editor,
        el('div', { class: 'row' }, sendButton, el('button', { type: 'button', onclick: check }, 'Check')),
        verdict,
      )
    : null;
  editor.addEventListener('input', check);
  box.replaceChildren(desired, reported, form || el('p', { class: 'muted' }, 'This token reads only: it cannot change the config.'));

  async function load() {
    const c = await get(`/v1/devices/${id}/config`, signal);
    let settings = null;
    if (c.cbor) {
      try {
        settings = read(c.cbor);
      } catch (e) {
        settings = { unreadable: e.message };
      }
    }
    const r = c.reported;
    version = Math.max(c.version || 0, r ? r.version : 0);
    desired.replaceChildren(
      el('h3', {}, 'Desired'),
      c.version
        ? el(
            'p',
            { class: `config-state ${c.state}`, dataset: { state: c.state } },
            `version ${c.version}: ${c.state}`,
            c.state === 'refused' ? ` by the device: ${refusal(c.code, c.detail)} (code ${c.code})` : '',
          )
        : el('p', { class: 'muted' }, 'none set: the device runs its firmware defaults'),
      ...(settings ? [el('pre', {}, JSON.stringify(settings, null, 1))] : []),
    );
    reported.replaceChildren(
      el('h3', {}, 'Reported'),
      r
        ? el('p', { dataset: { version: String(r.version) } }, `version ${r.version}`, r.code ? `, refused ${refusal(r.code, r.detail)}` : ' in force', ' · ', when(r.received_ms))
        : el('p', { class: 'muted' }, 'no config report yet'),
    );
    if (operates && !filled) {
      const next = { ...(settings || {}), version: version + 1 };
      delete next.unreadable;
      editor.value = JSON.stringify(next, null, 2);
      filled = true;
    }
  }
  return { load };
}

// ---- commands

function describe(c, names) {
  if (c.command === 'set_output') {
    const name = names.get(c.output);
    return `${name || `output ${c.output}`} ← ${c.value}`;
  }
  return c.command;
}

function commandsOf(id, box, operates, signal) {
  const buttons = el('div', { class: 'buttons' });
  const list = el('tbody');
  const note = el('p', { class: 'verdict', role: 'status' });
  const table = el('table', { class: 'command-list' }, el('thead', {}, el('tr', {}, ['#', 'Command', 'State', 'Queued', 'Result'].map((h) => el('th', { scope: 'col' }, h)))), list);
  box.replaceChildren(buttons, note, table);
  let names = new Map();
  let polling = null;
  signal.addEventListener('abort', () => clearTimeout(polling));

  async function issue(body) {
    note.textContent = '';
    try {
      const c = await send('POST', `/v1/devices/${id}/commands`, body);
      note.className = 'verdict ok';
      note.textContent = `command ${c.id ?? ''} queued`;
    } catch (e) {
      note.className = 'verdict refused';
      note.textContent = `refused: ${e.message}`;
    }
    await load();
  }

  async function load() {
    const [o, c] = await Promise.all([get(`/v1/devices/${id}/outputs`, signal), get(`/v1/devices/${id}/commands`, signal)]);
    names = new Map(o.outputs.map((x) => [x.output, x.name]));
    if (operates) {
      buttons.replaceChildren(
        ...o.outputs.map((x) =>
          el(
            'span',
            { class: 'output', dataset: { output: String(x.output) } },
            el('span', { class: 'name' }, x.name),
            el('button', { type: 'button', dataset: { command: 'on' }, onclick: () => issue({ command: 'set_output', output: x.output, value: 1 }) }, 'On'),
            el('button', { type: 'button', dataset: { command: 'off' }, onclick: () => issue({ command: 'set_output', output: x.output, value: 0 }) }, 'Off'),
          ),
        ),
        ...['ping', 'flush', 'reboot'].map((command) => el('button', { type: 'button', dataset: { command }, onclick: () => issue({ command }) }, command[0].toUpperCase() + command.slice(1))),
      );
    } else {
      buttons.replaceChildren(el('p', { class: 'muted' }, 'This token reads only: it sends no commands.'));
    }
    const rows = [...c.commands].sort((a, b) => b.id - a.id);
    list.replaceChildren(
      ...rows.map((x) =>
        el(
          'tr',
          { dataset: { command: String(x.id), state: x.state } },
          el('td', { class: 'num' }, String(x.id)),
          el('td', {}, describe(x, names)),
          el('td', {}, el('span', { class: `command-state ${x.state}` }, x.state)),
          el('td', {}, when(x.queued_ms)),
          el('td', { class: 'result' }, x.result ? `${x.result.status === 0 ? 'done' : `failed (status ${x.result.status})`}, value ${x.result.value}` : x.state === 'expired' ? 'never delivered' : '…'),
        ),
      ),
    );
    if (!rows.length) list.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'no commands yet')));
    // Until every command is settled, its state is read again each second.
    clearTimeout(polling);
    if (rows.some((x) => x.state === 'queued' || x.state === 'sent')) polling = setTimeout(() => load().catch(() => {}), 1000);
  }
  return { load };
}
