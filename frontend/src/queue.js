// The save queue: every change the radiologist makes is an action posted to the review API in
// order, each with the revision it was based on. The queue lives in localStorage, so a reload, a
// crash or a lost network loses nothing; it retries until the server answers. A 409 (someone else
// changed the case) stops it and is shown with a Reload button: nothing is ever overwritten silently.
import { postJSON } from './api.js';

const RETRY_MS = [1000, 2000, 4000, 8000, 15000];

export class SaveQueue {
  constructor({ url, storageKey, onSaved, onStatus, onConflict, onRejected, prepare }) {
    Object.assign(this, { url, storageKey, onSaved, onStatus, onConflict, onRejected });
    this.prepare = prepare || ((body) => body);
    const stored = JSON.parse(localStorage.getItem(storageKey) || 'null');
    this.items = stored?.items || [];
    this.revision = stored?.revision ?? null; // the server revision our state is based on
    this.idMap = stored?.idMap || {}; // local id of an added finding -> server id
    this.status = 'idle';
    this.attempt = 0;
    this.sending = false;
    this.stopped = false;
    this.timer = null;
    window.addEventListener('online', () => this.kick());
  }

  persist() {
    localStorage.setItem(this.storageKey, JSON.stringify({ items: this.items, revision: this.revision, idMap: this.idMap }));
  }

  get length() {
    return this.items.length;
  }

  // The server's revision after loading the case; queued actions from an earlier visit must match.
  start(serverRevision) {
    if (this.items.length && this.revision !== serverRevision) {
      this.stopped = true;
      this.setStatus('conflict');
      this.onConflict(
        `This case changed on the server (revision ${serverRevision}) since your ${this.items.length} unsaved change(s) ` +
        `were made at revision ${this.revision}; they were not applied.`,
      );
      return;
    }
    this.revision = serverRevision;
    this.persist();
    if (this.items.length) this.kick();
    else this.setStatus('saved');
  }

  push(body) {
    this.items.push({ body, queuedAt: Date.now() });
    this.persist();
    this.kick();
  }

  discard() {
    this.items = [];
    this.idMap = {};
    this.persist();
  }

  setStatus(status) {
    this.status = status;
    this.onStatus(status, this.items.length);
  }

  kick() {
    if (this.stopped || this.sending) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.sendNext();
  }

  resolveId(id) {
    return id != null && this.idMap[id] != null ? this.idMap[id] : id;
  }

  async sendNext() {
    if (this.stopped) return;
    if (!this.items.length) {
      this.setStatus('saved');
      return;
    }
    this.sending = true;
    this.setStatus(this.attempt ? 'retrying' : 'saving');
    const item = this.items[0];
    const prepared = this.prepare(item.body);
    if (prepared === null) {
      // e.g. an undo of a change the server refused: there is no state to go back to
      this.items.shift();
      this.persist();
      this.sending = false;
      this.sendNext();
      return;
    }
    const body = { ...prepared, base_revision: this.revision };
    if (body.finding_id != null) body.finding_id = this.resolveId(body.finding_id);
    if (typeof body.finding_id === 'string') {
      // an added finding whose add never reached the server: nothing to attach this change to
      this.items.shift();
      this.persist();
      this.sending = false;
      this.sendNext();
      return;
    }
    const localId = body.local_id;
    delete body.local_id;
    delete body.client_ref; // the page's own bookkeeping (undo history), not for the server
    let answer;
    try {
      answer = await postJSON(this.url, body);
    } catch {
      answer = null; // network down
    }
    this.sending = false;
    if (answer && answer.status === 200) {
      this.attempt = 0;
      this.items.shift();
      this.revision = answer.body.revision;
      if (localId && answer.body.finding) this.idMap[localId] = answer.body.finding.id;
      this.persist();
      this.onSaved(item.body, answer.body, localId);
      this.sendNext();
    } else if (answer && answer.status === 409) {
      this.stopped = true;
      this.setStatus('conflict');
      this.onConflict(answer.body?.error || 'This case was changed by someone else; reload to see their changes.');
    } else if (answer && answer.status >= 400 && answer.status < 500 && answer.status !== 408 && answer.status !== 429) {
      // refused for good (bad input, sign-off precondition, lost permission): drop it and say why
      this.items.shift();
      this.persist();
      this.onRejected(item.body, answer.body?.error || `HTTP ${answer.status}`, answer.status);
      this.sendNext();
    } else {
      // network error or server trouble: keep it, retry later
      this.setStatus('offline');
      const wait = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
      this.attempt += 1;
      this.timer = setTimeout(() => this.kick(), wait);
    }
  }
}
