// A device config as people write it, and as the device reads it: named
// settings checked here before they are sent, then written as the CBOR
// map of small integer keys that telemark-core's `config` module reads
// (docs/protocol.md). The service checks the CBOR again with the
// device's own validator, and its refusal carries the device's reason.

const U32 = 0xffffffff;

/** The settings, by key: name, and the largest value. */
export const SETTINGS = [
  [0, 'version', U32],
  [1, 'report_interval_s', U32],
  [2, 'heartbeat_s', U32],
  [3, 'mtu', 0xffff],
  [4, 'sends', 0xff],
  [5, 'ack_timeout_s', U32],
  [6, 'max_backoff_s', U32],
  [7, 'block_readings', 0xffff],
  [8, 'block_bytes', 0xffff],
  [9, 'block_age_s', U32],
  [10, 'when_full', null],
  [11, 'high_water_percent', 100],
  [12, 'channels', null],
  [13, 'keep_link_up', null],
];

/** A channel's settings, by key. */
export const CHANNEL = [
  [0, 'channel'],
  [1, 'period_s'],
  [2, 'decimals'],
  [3, 'range'],
  [4, 'high'],
  [5, 'low'],
  [6, 'rate'],
  [7, 'stuck'],
  [8, 'fault'],
];

const SEVERITY = ['info', 'warning', 'critical'];
const FULL = ['refuse', 'evict_oldest'];

/** What a refusal's code means (`ConfigError::code` in telemark-core). */
export const REFUSALS = {
  1: 'not the CBOR map a device reads',
  2: 'a key the device does not know',
  3: 'the version is not above the one in force',
  4: 'a channel the device does not have',
  5: 'a setting out of range',
  6: "a channel's settings are invalid",
  7: 'the settings do not work together',
  8: 'the device could not save it',
  9: 'the MTU is below what a stored record needs',
};

/** The words for a refusal's `code` and `detail`, as the device gave them. */
export function refusal(code, detail) {
  const what = REFUSALS[code] || `refusal ${code}`;
  if (code === 2 || code === 5) {
    const name = SETTINGS.find(([k]) => k === detail);
    return `${what}: ${name ? name[1] : `key ${detail}`}`;
  }
  if (code === 4 || code === 6) return `${what}: channel ${detail}`;
  return what;
}

// ---- CBOR, the part of RFC 8949 a config uses

function head(out, major, n) {
  if (n < 24) out.push((major << 5) | n);
  else if (n < 0x100) out.push((major << 5) | 24, n);
  else if (n < 0x10000) out.push((major << 5) | 25, n >> 8, n & 0xff);
  else if (n <= U32) out.push((major << 5) | 26, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  else throw new Error(`${n} is too large`);
}

function item(out, v) {
  if (v === null) out.push(0xf6);
  else if (Array.isArray(v)) {
    head(out, 4, v.length);
    v.forEach((x) => item(out, x));
  } else if (v instanceof Map) {
    head(out, 5, v.size);
    for (const [k, x] of v) {
      item(out, k);
      item(out, x);
    }
  } else if (Number.isInteger(v) && Math.abs(v) <= U32) {
    if (v >= 0) head(out, 0, v);
    else head(out, 1, -1 - v);
  } else if (typeof v === 'number' && Number.isFinite(v)) {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, v);
    out.push(0xfb, ...bytes);
  } else throw new Error(`${v} cannot be written`);
}

/** The CBOR of `value` (null, numbers, arrays, Maps), as hex. */
export function encode(value) {
  const out = [];
  item(out, value);
  return out.map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** The value of CBOR `hex`; throws on anything a config does not hold. */
export function decode(hex) {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error('not hex');
  const bytes = new Uint8Array(hex.match(/../g)?.map((b) => parseInt(b, 16)) || []);
  const view = new DataView(bytes.buffer);
  let at = 0;
  function take(n) {
    if (at + n > bytes.length) throw new Error('truncated CBOR');
    const start = at;
    at += n;
    return start;
  }
  function arg(info) {
    if (info < 24) return info;
    if (info === 24) return view.getUint8(take(1));
    if (info === 25) return view.getUint16(take(2));
    if (info === 26) return view.getUint32(take(4));
    if (info === 27) return Number(view.getBigUint64(take(8)));
    throw new Error('indefinite lengths are not in a config');
  }
  function next() {
    const initial = view.getUint8(take(1));
    const major = initial >> 5;
    const info = initial & 31;
    switch (major) {
      case 0:
        return arg(info);
      case 1:
        return -1 - arg(info);
      case 4:
        return Array.from({ length: arg(info) }, next);
      case 5: {
        const map = new Map();
        for (let n = arg(info); n > 0; n--) {
          const k = next();
          map.set(k, next());
        }
        return map;
      }
      case 7:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        if (info === 25) return half(view.getUint16(take(2)));
        if (info === 26) return view.getFloat32(take(4));
        if (info === 27) return view.getFloat64(take(8));
        break;
      default:
        break;
    }
    throw new Error(`CBOR type ${major} is not in a config`);
  }
  const value = next();
  if (at !== bytes.length) throw new Error('bytes after the config');
  return value;
}

function half(h) {
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

// ---- names <-> keys

function rule(name, v, arity) {
  if (v === null) return null;
  if (!Array.isArray(v) || v.length !== arity) {
    throw new Error(`${name}: ${arity === 3 ? '[limit, hysteresis, severity]' : '[amount, severity]'} or null`);
  }
  const severity = SEVERITY.indexOf(v[arity - 1]);
  if (severity < 0) throw new Error(`${name}: severity is one of ${SEVERITY.join(', ')}`);
  const numbers = v.slice(0, arity - 1);
  numbers.forEach((x) => {
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`${name}: numbers expected`);
  });
  if (name === 'stuck' || name === 'fault') whole(`${name} count`, numbers[0], 0xffff);
  return [...numbers, severity];
}

function whole(name, v, max) {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new Error(`${name}: a whole number from 0 to ${max}`);
  }
  return v;
}

/**
 * The CBOR hex of the config `settings` names, checked first against
 * what the page knows: the names, their types and ranges, the device's
 * channels (`channels`, from `GET /v1/devices/{id}/channels`) and a
 * version above `current`. Throws an Error that says what is wrong.
 */
export function write(settings, channels, current) {
  if (typeof settings !== 'object' || settings === null || Array.isArray(settings)) {
    throw new Error('a config is an object of named settings');
  }
  const known = new Map(SETTINGS.map(([k, name, max]) => [name, [k, max]]));
  for (const name of Object.keys(settings)) {
    if (!known.has(name)) throw new Error(`unknown setting ${name}; the settings are ${[...known.keys()].join(', ')}`);
  }
  if (!('version' in settings)) throw new Error('version is needed');
  const map = new Map();
  for (const [k, name, max] of SETTINGS) {
    if (!(name in settings)) continue;
    const v = settings[name];
    if (name === 'when_full') {
      const i = FULL.indexOf(v);
      if (i < 0) throw new Error(`when_full: ${FULL.join(' or ')}`);
      map.set(k, i);
    } else if (name === 'keep_link_up') {
      if (typeof v !== 'boolean') throw new Error('keep_link_up: true or false');
      map.set(k, v ? 1 : 0);
    } else if (name === 'channels') {
      map.set(k, channelsOf(v, channels));
    } else {
      map.set(k, whole(name, v, max));
    }
  }
  if (map.get(0) <= current) throw new Error(`version must be above ${current}`);
  return encode(map);
}

function channelsOf(list, channels) {
  if (!Array.isArray(list)) throw new Error('channels: a list of channel settings');
  const names = new Map(CHANNEL.map(([k, name]) => [name, k]));
  return list.map((c) => {
    if (typeof c !== 'object' || c === null) throw new Error('channels: each an object');
    for (const name of Object.keys(c)) {
      if (!names.has(name)) throw new Error(`unknown channel setting ${name}`);
    }
    const id = whole('channel', c.channel, 0xffff);
    const spec = channels.find((s) => s.channel === id);
    if (channels.length && !spec) {
      throw new Error(`channel ${id}: the device has ${channels.map((s) => s.channel).join(', ')}`);
    }
    const map = new Map([[0, id]]);
    if ('period_s' in c) map.set(1, whole('period_s', c.period_s, U32));
    if ('decimals' in c) {
      if (spec && spec.kind !== 'scaled') throw new Error(`channel ${id} is ${spec.kind}: it takes no decimals`);
      map.set(2, whole('decimals', c.decimals, 9));
    }
    if ('range' in c) {
      const r = c.range;
      if (!Array.isArray(r) || r.length !== 2 || !r.every(Number.isFinite) || !(r[0] < r[1])) {
        throw new Error(`channel ${id}: range is [min, max] with min below max`);
      }
      map.set(3, r);
    }
    for (const [k, name] of CHANNEL.slice(4)) {
      if (name in c) map.set(k, rule(name, c[name], name === 'high' || name === 'low' ? 3 : 2));
    }
    return map;
  });
}

/** The named settings of config CBOR `hex`, as the editor shows them. */
export function read(hex) {
  const map = decode(hex);
  if (!(map instanceof Map)) throw new Error('a config is a CBOR map');
  const out = {};
  for (const [k, v] of map) {
    const setting = SETTINGS.find(([key]) => key === k);
    if (!setting) {
      out[`key_${k}`] = v;
      continue;
    }
    const name = setting[1];
    if (name === 'when_full') out[name] = FULL[v] ?? v;
    else if (name === 'keep_link_up') out[name] = v === 1;
    else if (name === 'channels' && Array.isArray(v)) out[name] = v.map(channelNames);
    else out[name] = v;
  }
  return out;
}

function channelNames(map) {
  const out = {};
  if (!(map instanceof Map)) return map;
  for (const [k, v] of map) {
    const name = (CHANNEL.find(([key]) => key === k) || [k, `key_${k}`])[1];
    if (Array.isArray(v) && k >= 4) {
      out[name] = [...v.slice(0, -1), SEVERITY[v[v.length - 1]] ?? v[v.length - 1]];
    } else out[name] = v;
  }
  return out;
}
