// The HTTP API as the page uses it: every call with the bearer token the
// user gave, errors as the service's problem documents, and the live
// stream of stored records (`GET /v1/stream`) read from a fetch, since an
// EventSource cannot send the token.

const TOKEN = 'telemark.token';

/** The token of this tab, or null until the user gives one. */
export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN);
}

/** A refusal of the API: its status and its problem document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { detail: text };
    }
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** `GET path`, its JSON. */
export async function get(path, signal) {
  return answer(await fetch(path, { headers: headers(), signal }));
}

/** `METHOD path` with a JSON body, its JSON. */
export async function send(method, path, body) {
  return answer(
    await fetch(path, {
      method,
      headers: headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify(body),
    }),
  );
}

/** Runs `task` on each of `items`, at most `width` at once; the results in order. */
export async function each(items, width, task) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return results;
}

/**
 * Follows the server-sent events of `path` until `signal` aborts: calls
 * `onEvent(name, data)` for each, and `onState(true|false)` as the
 * connection comes and goes. A dropped connection is opened again after a
 * pause that doubles up to 30 s; the caller reads its resources again on
 * each reconnection, since what was stored meanwhile was not streamed.
 */
export async function follow(path, signal, onEvent, onState) {
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const response = await fetch(path, {
        headers: headers({ Accept: 'text/event-stream' }),
        signal,
      });
      if (response.status === 401 || response.status === 403) {
        throw new ApiError(response.status, await response.json().catch(() => null));
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      onState(true);
      pause = 1000;
      await read(response.body, onEvent);
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError) {
        onState(false, e);
        return;
      }
    }
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 30000);
  }
}

// The event-stream format: `field: value` lines, an event at each blank line.
async function read(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  let name = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end;
    while ((end = buffered.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + (buffered.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        if (data.length) onEvent(name, data.join('\n'));
        name = 'message';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const v = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') name = v;
        else if (field === 'data') data.push(v);
      }
    }
  }
}
