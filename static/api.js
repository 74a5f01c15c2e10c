// The HTTP API (/api/*): JSON in, JSON out, failures as ApiError.
// No imports: app.js loads every module by its versioned URL (see app.js).

/** A failed API call: HTTP status, the server's error code and its human message. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const FALLBACK_MESSAGES = {
  0: 'Cannot reach the server. Check your connection and try again.',
  401: 'You are not signed in.',
  403: 'The request was refused. Reload the page and try again.',
  429: 'Too many attempts. Wait a moment and try again.',
  500: 'The server had a problem. Try again in a moment.',
  503: 'The service is unavailable right now. Try again in a moment.',
};

/** Tornado's XSRF token: the `_xsrf` cookie set by GET /, echoed in X-XSRFToken. */
export function xsrfToken() {
  for (const part of document.cookie.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === '_xsrf') return part.slice(eq + 1).trim();
  }
  return '';
}

export async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET') headers['X-XSRFToken'] = xsrfToken();
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', FALLBACK_MESSAGES[0]);
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null; // not JSON (a proxy's error page, say): fall back to the status
  }
  if (!res.ok) {
    const err = (data && typeof data.error === 'object' && data.error) || {};
    const retry = Number(res.headers.get('Retry-After')) || err.retry_after || null;
    const fallback = FALLBACK_MESSAGES[res.status] ?? FALLBACK_MESSAGES[res.status >= 500 ? 500 : 0];
    throw new ApiError(res.status, String(err.code ?? `http_${res.status}`),
      typeof err.message === 'string' && err.message ? err.message : fallback, retry);
  }
  return data;
}

const enc = encodeURIComponent;

/** The API surface the app uses; every call returns parsed JSON or throws ApiError. */
export function createApi() {
  return {
    /** The signed-in user, or null when there is no valid session. */
    async me() {
      try {
        return await request('GET', '/api/me');
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return null;
        throw err;
      }
    },
    register: (username, password, invite) =>
      request('POST', '/api/register', invite ? { username, password, invite } : { username, password }),
    /** What the server tells anyone: {registration: 'open'|'invite'|'closed'}. */
    server: () => request('GET', '/api/server'),
    login: (username, password) => request('POST', '/api/login', { username, password }),
    logout: () => request('POST', '/api/logout'),
    /** Every room the caller sees (public ones, and their private rooms and DMs),
     *  following the pages up to a sane bound. */
    async rooms() {
      const rooms = [];
      let after = '';
      for (let page = 0; page < 20; page += 1) {
        const q = after ? `?limit=1000&after=${encodeURIComponent(after)}` : '?limit=1000';
        const data = await request('GET', `/api/rooms${q}`);
        rooms.push(...(Array.isArray(data?.rooms) ? data.rooms : []));
        if (!data?.next) break;
        after = data.next;
      }
      return rooms;
    },
    createRoom: (name, { kind = 'public', topic = '' } = {}) =>
      request('POST', '/api/rooms', topic ? { name, kind, topic } : { name, kind }),
    room: (room) => request('GET', `/api/rooms/${enc(room)}`),
    updateRoom: (room, fields) => request('PATCH', `/api/rooms/${enc(room)}`, fields),
    members: async (room) => (await request('GET', `/api/rooms/${enc(room)}/members`))?.members ?? [],
    addMember: (room, user) => request('POST', `/api/rooms/${enc(room)}/members`, { user }),
    /** Leave for good (yourself) or kick (someone else). */
    removeMember: (room, user) => request('DELETE', `/api/rooms/${enc(room)}/members/${enc(user)}`),
    setRole: (room, user, role) => request('PUT', `/api/rooms/${enc(room)}/members/${enc(user)}/role`, { role }),
    ban: (room, user, seconds) => request('POST', `/api/rooms/${enc(room)}/bans`,
      seconds ? { user, seconds } : { user }),
    unban: (room, user) => request('DELETE', `/api/rooms/${enc(room)}/bans/${enc(user)}`),
    mute: (room, user, seconds) => request('POST', `/api/rooms/${enc(room)}/mutes`, { user, seconds }),
    unmute: (room, user) => request('DELETE', `/api/rooms/${enc(room)}/mutes/${enc(user)}`),
    /** The DM of the caller and `users` (names): a Room of kind dm, new or existing. */
    dm: (users) => request('POST', '/api/dms', { users }),
    /** A page of search results (§22): {results, next?}. */
    search: (q, { room = null, cursor = null } = {}) => {
      const params = new URLSearchParams({ q });
      if (room) params.set('room', room);
      if (cursor) params.set('cursor', cursor);
      return request('GET', `/api/search?${params}`);
    },
    /** Up to 20 accounts whose name starts with `prefix`, by name. */
    users: async (prefix) => (await request('GET', `/api/users?prefix=${encodeURIComponent(prefix)}`))?.users ?? [],
  };
}
