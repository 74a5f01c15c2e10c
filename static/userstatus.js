// Presence beyond online/offline: telling the server when the user is idle at this
// tab (an `activity` frame, on changes only: no input, no focus gained and no return
// to the tab for IDLE_AFTER_MS), showing others' away state and status
// text next to their names, and the menu where the user sets their own status
// (PUT /api/me/status). Status texts are text, never HTML. No imports (see app.js).

export const IDLE_AFTER_MS = 5 * 60 * 1000; // no focus and no input this long: idle
const INPUT_EVENTS = ['keydown', 'pointerdown', 'pointermove', 'wheel', 'touchstart'];
const MINUTE = 60 * 1000;

/** The idle time: `?idle=<seconds>` in the page's address overrides the default
 *  (a test or a demo wants seconds, not minutes). */
export function idleAfterMs(search = location.search) {
  const seconds = Number(new URLSearchParams(search).get('idle'));
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : IDLE_AFTER_MS;
}

/** Away and status text of a presence state ({away, status_text, status_until}),
 *  without a text that has expired. */
export function shownState(state, now = Date.now()) {
  const until = Number.isInteger(state?.status_until) ? state.status_until : null;
  const text = typeof state?.status_text === 'string' && state.status_text
    && (until === null || until > now) ? state.status_text : null;
  return { away: Boolean(state?.away), text, until: text ? until : null };
}

function untilText(until) {
  const d = new Date(until);
  const sameDay = d.toDateString() === new Date().toDateString();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return sameDay ? time : `${d.toLocaleDateString()} ${time}`;
}

/** The marks that go after a name: an "away" label and the status text. */
export function presenceMarks(h, state) {
  const { away, text, until } = shownState(state);
  const marks = [];
  if (away) {
    marks.push(h('span', { class: 'away-mark', 'data-testid': 'away', title: 'Away' }, 'away'));
  }
  if (text) {
    const title = until ? `${text} (until ${untilText(until)})` : text;
    marks.push(h('span', { class: 'status-text', 'data-testid': 'status-text', title }, text));
  }
  return marks;
}

/** Whether the user is at this tab: idle once it has had no input and gained no focus
 *  for `idleMs`; active again on the next input, focus or return to the tab. */
export class ActivityWatch {
  constructor({ idleMs = IDLE_AFTER_MS, send }) {
    Object.assign(this, { idleMs, send });
    this.idle = false;
    this.timer = null;
    this.lastMove = 0;
    this._onInput = (ev) => {
      // Pointer moves come by the hundred: one a second is enough to count.
      if (ev.type === 'pointermove') {
        const now = Date.now();
        if (now - this.lastMove < 1000 && !this.idle) return;
        this.lastMove = now;
      }
      this.active();
    };
    this._onVisible = () => {
      if (document.visibilityState === 'visible') this.active();
    };
  }

  start() {
    for (const name of INPUT_EVENTS) window.addEventListener(name, this._onInput, { passive: true, capture: true });
    window.addEventListener('focus', this._onInput);
    document.addEventListener('visibilitychange', this._onVisible);
    this._arm();
  }

  stop() {
    clearTimeout(this.timer);
    for (const name of INPUT_EVENTS) window.removeEventListener(name, this._onInput, { capture: true });
    window.removeEventListener('focus', this._onInput);
    document.removeEventListener('visibilitychange', this._onVisible);
  }

  /** A new connection starts active on the server: say so if we are idle. */
  connected() {
    if (this.idle) this.send({ type: 'activity', state: 'idle' });
  }

  active() {
    if (this.idle) {
      this.idle = false;
      this.send({ type: 'activity', state: 'active' });
    }
    this._arm();
  }

  _arm() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._maybeIdle(), this.idleMs);
  }

  _maybeIdle() {
    // Focus alone does not keep a tab active: a window left open on a desk would
    // never go away. Gaining focus counts as input.
    if (!this.idle) {
      this.idle = true;
      this.send({ type: 'activity', state: 'idle' });
    }
  }
}

const EXPIRY_CHOICES = [
  ['never', "Don't clear"],
  ['30m', '30 minutes'],
  ['1h', '1 hour'],
  ['4h', '4 hours'],
  ['today', 'Today'],
];

function expiryOf(choice, now = new Date()) {
  switch (choice) {
    case '30m': return now.getTime() + 30 * MINUTE;
    case '1h': return now.getTime() + 60 * MINUTE;
    case '4h': return now.getTime() + 240 * MINUTE;
    case 'today': {
      const end = new Date(now);
      end.setHours(23, 59, 0, 0);
      return end.getTime() > now.getTime() + MINUTE ? end.getTime() : now.getTime() + 60 * MINUTE;
    }
    default: return null;
  }
}

/** The user's own status: shown next to their name in the header; a click on it
 *  opens a small form (text, when it clears, Save, Clear). */
export class StatusMenu {
  constructor({ h }, { request, notice }) {
    Object.assign(this, { h, request, notice });
    this.status = { text: null, until: null };
    this.timer = null;
    this.build();
  }

  build() {
    const h = this.h;
    const name = document.getElementById('me-name');
    const anchor = name?.closest('.me-label') ?? name;
    this.shown = h('span', { class: 'status-text me-status', 'data-testid': 'my-status' });
    this.button = h('button', {
      class: 'btn btn-ghost btn-small', type: 'button', 'data-testid': 'status-button',
      'aria-haspopup': 'dialog', 'aria-expanded': 'false', title: 'Set a status',
    }, 'Set status');
    this.input = h('input', {
      id: 'status-input', type: 'text', maxlength: '100', autocomplete: 'off',
      placeholder: 'What are you up to?', 'data-testid': 'status-input',
    });
    this.select = h('select', { id: 'status-expiry', 'data-testid': 'status-expiry' },
      ...EXPIRY_CHOICES.map(([value, label]) => h('option', { value }, label)));
    this.error = h('p', { class: 'field-error', 'data-testid': 'status-error', role: 'alert' });
    this.form = h('form', { class: 'status-form', 'data-testid': 'status-form', hidden: true, novalidate: true },
      h('label', { for: 'status-input' }, 'Status'), this.input,
      h('label', { for: 'status-expiry' }, 'Clear after'), this.select, this.error,
      h('div', { class: 'status-actions' },
        h('button', { class: 'btn btn-small', type: 'submit', 'data-testid': 'status-save' }, 'Save'),
        h('button', { class: 'btn btn-ghost btn-small', type: 'button', 'data-testid': 'status-clear' }, 'Clear')));
    this.root = h('span', { class: 'status-menu' }, this.shown, this.button, this.form);
    anchor?.after(this.root);
    this.button.addEventListener('click', () => this.toggle());
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.save();
    });
    this.form.querySelector('[data-testid="status-clear"]').addEventListener('click', () => this.clear());
    this.form.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') this.toggle(false);
    });
  }

  destroy() {
    clearTimeout(this.timer);
    this.root.remove();
  }

  async load() {
    try {
      this.show(await this.request('GET', '/api/me/status'));
    } catch {
      // shown when next set; the rooms show it meanwhile
    }
  }

  toggle(open = this.form.hidden) {
    this.form.hidden = !open;
    this.button.setAttribute('aria-expanded', String(open));
    if (open) {
      this.input.value = this.status.text ?? '';
      this.error.textContent = '';
      this.input.focus();
    } else {
      this.button.focus();
    }
  }

  async save() {
    const text = this.input.value.trim();
    if (!text) {
      this.error.textContent = 'Write a status, or clear it.';
      return;
    }
    try {
      this.show(await this.request('PUT', '/api/me/status', { text, until: expiryOf(this.select.value) }));
      this.toggle(false);
    } catch (err) {
      this.error.textContent = err?.message || 'Could not set the status.';
    }
  }

  async clear() {
    try {
      await this.request('DELETE', '/api/me/status');
      this.show({ text: null, until: null });
      this.toggle(false);
    } catch (err) {
      this.error.textContent = err?.message || 'Could not clear the status.';
    }
  }

  show(status) {
    const { text, until } = shownState({ status_text: status?.text, status_until: status?.until });
    this.status = { text, until };
    this.shown.textContent = text ?? '';
    this.shown.title = text && until ? `until ${untilText(until)}` : '';
    this.button.textContent = text ? 'Edit status' : 'Set status';
    clearTimeout(this.timer);
    if (until) this.timer = setTimeout(() => this.show(null), Math.min(until - Date.now(), 2 ** 31 - 1));
  }
}
