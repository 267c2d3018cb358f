// The console's only way to data: the JSON API under /api/v1, with the session cookie and
// the session's CSRF token on every request that changes something.

const BASE = '/api/v1';
let csrfToken = null;
const unauthorizedHandlers = [];

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || 'http_' + status;
    this.field = error.field || null;
  }
}

export function setCsrf(token) {
  csrfToken = token;
}

/** Called when a request answers 401: the session ended (signed out elsewhere, expired). */
export function onUnauthorized(handler) {
  unauthorizedHandlers.push(handler);
}

export function url(path, query) {
  const qs = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === '') continue;
    qs.append(key, value);
  }
  const s = qs.toString();
  return BASE + path + (s ? '?' + s : '');
}

async function request(method, path, { query, json, body, contentType, quiet } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let payload = body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(json);
  } else if (contentType) {
    headers['Content-Type'] = contentType;
  }
  const response = await fetch(url(path, query), {
    method,
    headers,
    body: payload,
    credentials: 'same-origin',
  });
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const err = new ApiError(response.status, data);
    if (response.status === 401 && !quiet) unauthorizedHandlers.forEach((fn) => fn(err));
    if (response.status === 429) err.retryAfter = Number(response.headers.get('Retry-After')) || null;
    throw err;
  }
  return data;
}

export const api = {
  get: (path, query, opts) => request('GET', path, { ...opts, query }),
  post: (path, json, opts) => request('POST', path, { ...opts, json }),
  patch: (path, json, opts) => request('PATCH', path, { ...opts, json }),
  put: (path, json, opts) => request('PUT', path, { ...opts, json }),
  del: (path, opts) => request('DELETE', path, opts),
  /** Sends a file as the request body (a greeting WAV, a vCard). */
  upload: (path, file, contentType, method = 'PUT') =>
    request(method, path, { body: file, contentType: contentType || file.type }),
};
