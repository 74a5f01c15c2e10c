// "New message": a dialog that finds people by the start of their name (GET
// /api/users?prefix=, asked for once the typing pauses), collects 1 to 7 of them, and
// starts (or reopens) their direct message. The same dialog adds people to a room
// ("Add people…" in the room menu). Keyboard: type, ArrowDown/ArrowUp through
// the people found, Enter picks one, Backspace in an empty box drops the last chosen,
// Escape closes. Built on render.js's building blocks, which app.js passes in (no
// imports: see app.js).

const SEARCH_DELAY_MS = 200;
const MAX_PEOPLE = 7; // a DM holds 2 to 8 people, the user included
const DM_MODE = {
  title: 'New message', hint: 'Pick 1 to 7 people. The same people always share one conversation.',
  button: 'Start conversation', max: MAX_PEOPLE, exclude: [],
};

const $ = (id) => document.getElementById(id);

export class DmPicker {
  constructor({ h, avatar, fieldError }) {
    Object.assign(this, { h, avatar, fieldError });
    this.handlers = null;
    this.me = null;
    this.chosen = []; // users
    this.found = []; // users of the latest search
    this.active = -1; // index in found of the highlighted one
    this.timer = null;
    this.searches = 0;
    this.returnFocus = true;
    this.mode = DM_MODE;
    this.opener = null;
    this.el = {
      title: $('dm-title'), hint: $('dm-hint'),
      dialog: $('dm-dialog'), form: $('dm-form'), chosen: $('dm-chosen'), search: $('dm-search'),
      results: $('dm-results'), error: $('dm-error'), cancel: $('dm-cancel'), start: $('dm-start'),
      open: $('new-dm'),
    };
  }

  bind({ handlers, me, signal }) {
    Object.assign(this, { handlers, me });
    const e = this.el;
    const opts = { signal };
    e.open.addEventListener('click', () => this.open(), opts);
    e.cancel.addEventListener('click', () => e.dialog.close(), opts);
    e.dialog.addEventListener('close', () => {
      clearTimeout(this.timer);
      if (this.returnFocus) (this.opener?.isConnected ? this.opener : e.open).focus();
    }, opts);
    e.search.addEventListener('input', () => {
      this.fieldError(e.search, e.error, '');
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this._search(), SEARCH_DELAY_MS);
    }, opts);
    e.search.addEventListener('keydown', (ev) => this._key(ev), opts);
    e.results.addEventListener('click', (ev) => {
      const li = ev.target.closest('li[data-index]');
      if (li) this._pick(this.found[Number(li.dataset.index)]);
    }, opts);
    e.chosen.addEventListener('click', (ev) => {
      const btn = ev.target.closest('button[data-user]');
      if (btn) this._unpick(btn.dataset.user);
    }, opts);
    e.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._start();
    }, opts);
  }

  destroy() {
    clearTimeout(this.timer);
    if (this.el.dialog.open) this.el.dialog.close();
  }

  /**
   * Open the dialog: without `mode`, to start a DM; with one, to pick people for
   * `mode.submit(names, close)` (which answers an error text or null), e.g.
   * {title, hint, button, max, exclude: [user ids], submit}.
   */
  open(mode = null) {
    const e = this.el;
    this.mode = mode ? { ...DM_MODE, ...mode } : DM_MODE;
    this.opener = this.mode.opener ?? document.activeElement;
    e.title.textContent = this.mode.title;
    e.hint.textContent = this.mode.hint;
    e.start.textContent = this.mode.button;
    this.chosen = [];
    this.found = [];
    this.active = -1;
    e.search.value = '';
    this.fieldError(e.search, e.error, '');
    this.returnFocus = true;
    this._render();
    e.dialog.showModal();
    e.search.focus();
    this._search();
  }

  async _search() {
    const e = this.el;
    const prefix = e.search.value.trim();
    const n = ++this.searches;
    let users;
    try {
      users = await this.handlers.searchUsers(prefix);
    } catch (err) {
      if (n === this.searches) this.fieldError(e.search, e.error, err.message || 'Search failed.');
      return;
    }
    if (n !== this.searches) return; // a later search is on its way
    const taken = new Set([this.me.id, ...this.mode.exclude, ...this.chosen.map((u) => u.id)]);
    this.found = users.filter((u) => u && u.id && !taken.has(u.id));
    this.active = this.found.length && prefix ? 0 : -1;
    this._renderResults();
  }

  _key(ev) {
    const e = this.el;
    const n = this.found.length;
    if (ev.key === 'ArrowDown' && n) {
      ev.preventDefault();
      this.active = (this.active + 1) % n;
      this._renderResults();
    } else if (ev.key === 'ArrowUp' && n) {
      ev.preventDefault();
      this.active = (this.active - 1 + n) % n;
      this._renderResults();
    } else if (ev.key === 'Enter') {
      ev.preventDefault();
      if (this.active >= 0 && this.found[this.active]) this._pick(this.found[this.active]);
      else if (!e.search.value.trim() && this.chosen.length) this._start();
    } else if (ev.key === 'Backspace' && !e.search.value && this.chosen.length) {
      this._unpick(this.chosen[this.chosen.length - 1].id);
    }
  }

  _pick(user) {
    const e = this.el;
    if (!user) return;
    if (this.chosen.length >= this.mode.max) {
      this.fieldError(e.search, e.error, this.mode === DM_MODE
        ? `A conversation holds up to ${MAX_PEOPLE} other people.`
        : `Pick at most ${this.mode.max} people at a time.`);
      return;
    }
    this.chosen.push(user);
    e.search.value = '';
    this._render();
    e.search.focus();
    this._search();
  }

  _unpick(id) {
    this.chosen = this.chosen.filter((u) => u.id !== id);
    this.fieldError(this.el.search, this.el.error, '');
    this._render();
    this.el.search.focus();
    this._search();
  }

  _render() {
    const h = this.h;
    const e = this.el;
    e.chosen.replaceChildren(...this.chosen.map((u) => h('li', { class: 'chip', 'data-testid': 'dm-chip' },
      h('span', {}, u.name),
      h('button', { type: 'button', class: 'chip-x', 'data-user': u.id, 'aria-label': `Remove ${u.name}` },
        h('span', { 'aria-hidden': 'true' }, '×')))));
    e.chosen.hidden = !this.chosen.length;
    e.start.disabled = !this.chosen.length;
    this._renderResults();
  }

  _renderResults() {
    const h = this.h;
    const e = this.el;
    const items = this.found.map((u, i) => {
      const li = h('li', {
        id: `dm-opt-${i}`, role: 'option', class: 'picker-option', 'data-index': String(i),
        'data-testid': 'dm-result', 'data-name': u.name, 'aria-selected': i === this.active ? 'true' : 'false',
      }, this.avatar(u), h('span', {}, u.name), u.bot ? h('span', { class: 'tag' }, 'bot') : null);
      return li;
    });
    e.results.replaceChildren(...items);
    if (!items.length && e.search.value.trim()) {
      e.results.append(h('li', { class: 'picker-empty', role: 'presentation' }, 'Nobody by that name.'));
    }
    e.search.setAttribute('aria-expanded', String(items.length > 0));
    if (this.active >= 0 && items[this.active]) {
      e.search.setAttribute('aria-activedescendant', items[this.active].id);
      items[this.active].scrollIntoView({ block: 'nearest' });
    } else {
      e.search.removeAttribute('aria-activedescendant');
    }
  }

  async _start() {
    const e = this.el;
    if (!this.chosen.length) return;
    e.start.disabled = true;
    this.returnFocus = Boolean(this.mode.submit); // a new DM takes the focus itself
    const names = this.chosen.map((u) => u.name);
    const close = () => e.dialog.close();
    const error = this.mode.submit ? await this.mode.submit(names, close)
      : await this.handlers.startDm(names, close);
    e.start.disabled = !this.chosen.length;
    if (error) {
      this.returnFocus = true;
      this.fieldError(e.search, e.error, error);
    }
  }
}
