// Search (§22 of docs/protocol.md): the box in the top bar (Ctrl/Cmd+K, or "/" when not
// typing) and the panel of results under it, grouped by room: the room's name, then
// each hit with its author, time and the snippet around the match, the matched words
// marked (segments are text, only ever in text nodes). "Load more" follows `next`; a
// switch keeps to the room on screen; a hit opens its room at the message. Built on
// render.js's building blocks, which app.js passes in (no imports: see app.js).

const $ = (id) => document.getElementById(id);
const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export class SearchPanel {
  constructor({ h, roomLabel }) {
    Object.assign(this, { h, roomLabel });
    this.chat = null;
    this.handlers = null;
    this.me = null;
    this.query = null; // {q, room}
    this.results = [];
    this.next = null;
    this.asked = 0; // answers to an older question are dropped
    this.el = {
      form: $('search-form'), input: $('search-input'), panel: $('search-panel'),
      list: $('search-results'), more: $('search-more'), status: $('search-status'),
      here: $('search-here'), hereLabel: $('search-here-label'), close: $('search-close'),
    };
  }

  bind({ chat, handlers, me, signal }) {
    Object.assign(this, { chat, handlers, me });
    const e = this.el;
    const opts = { signal };
    e.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._run();
    }, opts);
    e.here.addEventListener('change', () => {
      if (this.query) this._run();
    }, opts);
    e.more.addEventListener('click', () => this._more(), opts);
    e.close.addEventListener('click', () => this.close(true), opts);
    e.list.addEventListener('click', (ev) => {
      const hit = ev.target.closest('button[data-seq]');
      if (!hit) return;
      this.close(false);
      handlers.openAt(hit.dataset.room, Number(hit.dataset.seq));
    }, opts);
    const escape = (ev) => {
      if (ev.key === 'Escape' && !e.panel.hidden) {
        ev.preventDefault();
        ev.stopPropagation();
        this.close(true);
      }
    };
    e.panel.addEventListener('keydown', escape, opts);
    e.input.addEventListener('keydown', escape, opts);
    document.addEventListener('keydown', (ev) => {
      const typing = ev.target.closest?.('input, textarea, select, [contenteditable]');
      const shortcut = (ev.key === 'k' || ev.key === 'K') && (ev.ctrlKey || ev.metaKey) && !ev.altKey;
      if (shortcut || (ev.key === '/' && !typing && !ev.ctrlKey && !ev.metaKey && !document.querySelector('dialog[open]'))) {
        ev.preventDefault();
        e.input.focus();
        e.input.select();
      }
    }, opts);
  }

  destroy() {
    this.close(false);
    this.el.input.value = '';
  }

  /** The room on screen changed: the "only this room" switch names it. */
  setRoom(room) {
    const e = this.el;
    this.room = room;
    e.here.disabled = !room;
    if (!room) e.here.checked = false;
    e.hereLabel.textContent = room ? `Only ${room.label}` : 'Only this room';
  }

  close(refocus) {
    const e = this.el;
    const had = e.panel.contains(document.activeElement);
    e.panel.hidden = true;
    e.input.setAttribute('aria-expanded', 'false');
    if (refocus || had) e.input.focus();
  }

  async _run() {
    const e = this.el;
    const q = e.input.value.trim();
    if (!q) {
      this.close(false);
      return;
    }
    this.query = { q, room: e.here.checked && this.room ? this.room.name : null };
    this.results = [];
    this.next = null;
    e.panel.hidden = false;
    e.input.setAttribute('aria-expanded', 'true');
    e.list.replaceChildren();
    await this._fetch();
  }

  async _more() {
    if (this.next) await this._fetch(this.next);
  }

  async _fetch(cursor = null) {
    const e = this.el;
    const asked = ++this.asked;
    e.status.textContent = 'Searching…';
    e.more.hidden = true;
    let page;
    try {
      page = await this.handlers.search(this.query.q, { room: this.query.room, cursor });
    } catch (err) {
      if (asked === this.asked) e.status.textContent = err?.message || 'Search failed. Try again.';
      return;
    }
    if (asked !== this.asked) return;
    const fresh = Array.isArray(page?.results) ? page.results.filter((r) => r && typeof r.room === 'string'
      && Number.isInteger(r.seq)) : [];
    this.results.push(...fresh);
    this.next = page?.next ?? null;
    this._render();
    const n = this.results.length;
    e.status.textContent = n ? `${n}${this.next ? '+' : ''} message${n === 1 ? '' : 's'} found`
      : (this.next ? 'Nothing yet: look further with “Load more”.' : 'No messages found.');
    e.more.hidden = !this.next;
  }

  _render() {
    const h = this.h;
    const groups = new Map();
    for (const r of this.results) {
      if (!groups.has(r.room)) groups.set(r.room, []);
      groups.get(r.room).push(r);
    }
    this.el.list.replaceChildren(...[...groups].map(([name, hits]) => {
      const info = this.chat.rooms.get(name)?.info ?? this.chat.known.get(name) ?? { name, kind: 'public', title: name };
      const label = info.kind === 'dm' ? this.roomLabel(info, this.me) : `#${this.roomLabel(info, this.me)}`;
      return h('section', { class: 'search-group', 'data-testid': 'search-group', 'data-room': name },
        h('h3', { class: 'search-room' }, label),
        h('ul', { class: 'search-hits' }, ...hits.map((r) => h('li', {}, this._hit(r)))));
    }));
  }

  _hit(r) {
    const h = this.h;
    const m = r.message ?? {};
    const segments = Array.isArray(r.snippet) && r.snippet.length ? r.snippet : [{ text: m.body ?? '', match: false }];
    const time = Number.isInteger(m.ts) ? new Date(m.ts) : null;
    return h('button', { type: 'button', class: 'search-hit', 'data-testid': 'search-hit', 'data-room': r.room, 'data-seq': String(r.seq) },
      h('span', { class: 'search-meta' },
        h('span', { class: 'author' }, m.user?.name ?? ''), ' ',
        time ? h('time', { class: 'time', datetime: time.toISOString() }, timeFmt.format(time)) : null),
      h('span', { class: 'search-snippet', 'data-testid': 'search-snippet' }, ...segments.map((s) => (s?.match
        ? h('mark', {}, String(s.text ?? '')) : String(s?.text ?? '')))));
  }
}
