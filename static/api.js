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
function xsrfToken() {
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
    rooms: async () => (await request('GET', '/api/rooms'))?.rooms ?? [],
    createRoom: (name) => request('POST', '/api/rooms', { name }),
  };
}
