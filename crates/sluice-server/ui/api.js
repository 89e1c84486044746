// Calls to the admin API. The master key lives in sessionStorage (this tab only, gone when it
// closes), never in a URL or a cookie; every call sends it as `Authorization: Bearer`.

const KEY = 'sluice.master_key';

export const session = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An answer other than 2xx, with the message of sluice's error shape. */
export class ApiError extends Error {
  constructor(status, message, type) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

/** Fired when the key is refused (the app goes back to the sign-in form). */
export const UNAUTHORIZED = 'sluice:unauthorized';

/**
 * `method path` with the key; resolves to the JSON answer (or the text, with `text: true`).
 * `key` defaults to the session's.
 */
export async function call(path, { method = 'GET', body, key = session.get(), text = false } = {}) {
  const headers = { Authorization: `Bearer ${key ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let type;
    try {
      const error = (await response.json()).error;
      message = error?.message ?? message;
      type = error?.type;
    } catch {
      // Not sluice's error shape: keep the status line.
    }
    if (response.status === 401 && key === session.get()) {
      window.dispatchEvent(new CustomEvent(UNAUTHORIZED, { detail: message }));
    }
    throw new ApiError(response.status, message, type);
  }
  return text ? response.text() : response.json();
}
