// JSON over fetch with Django's session auth and CSRF header.

export class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

async function parse(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return { error: `HTTP ${response.status}: ${text.slice(0, 200)}` };
  }
}

export async function getJSON(url, accept = 'application/json') {
  const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: accept } });
  const body = await parse(response);
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

// Resolves with {status, body} for every HTTP answer; rejects only when the network fails.
export async function postJSON(url, payload) {
  const response = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRFToken': csrfToken() },
    body: JSON.stringify(payload),
  });
  return { status: response.status, body: await parse(response) };
}
