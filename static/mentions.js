// Autocomplete of @mentions in the message box: typing "@" and the start of a name
// lists the room's members (and @room); arrows move, Enter or Tab picks, Escape
// closes. The WAI-ARIA combobox pattern on the textarea. Built on render.js's h(),
// which app.js passes in (no imports: see app.js).

const TOKEN_RE = /(^|[^A-Za-z0-9._%+-])@([A-Za-z0-9_.-]{0,32})$/;
const MAX_SHOWN = 8;
const ROSTER_MS = 30000; // a room's roster is asked for again after this long
const ROOM_ENTRY = { name: 'room', note: 'everyone in the room' };

const $ = (id) => document.getElementById(id);

export class MentionPicker {
  constructor({ h }) {
    this.h = h;
    this.handlers = null;
    this.room = () => null;
    this.rosters = new Map(); // room -> {at, names}
    this.options = [];
    this.active = 0;
    this.token = null; // {start, end} of "@prefix" in the box
    this.el = { input: $('composer-input'), list: $('mention-list') };
  }

  /** Listen to the message box; bind before the composer, whose Enter this may take. */
  bind({ handlers, room, signal }) {
    Object.assign(this, { handlers, room });
    const { input, list } = this.el;
    input.setAttribute('aria-autocomplete', 'list');
    input.setAttribute('aria-controls', 'mention-list');
    input.addEventListener('input', () => this._update(), { signal });
    input.addEventListener('click', () => this._update(), { signal });
    input.addEventListener('blur', () => setTimeout(() => this.close(), 150), { signal });
    input.addEventListener('keydown', (ev) => this._key(ev), { signal });
    list.addEventListener('mousedown', (ev) => ev.preventDefault(), { signal }); // keep focus
    list.addEventListener('click', (ev) => {
      const li = ev.target.closest('li[data-name]');
      if (li) this._pick(li.dataset.name);
    }, { signal });
  }

  destroy() {
    this.close();
    this.rosters.clear();
  }

  close() {
    this.options = [];
    this.token = null;
    this.el.list.hidden = true;
    this.el.list.replaceChildren();
    this.el.input.setAttribute('aria-expanded', 'false');
    this.el.input.removeAttribute('aria-activedescendant');
  }

  async _names(room) {
    const cached = this.rosters.get(room);
    if (cached && Date.now() - cached.at < ROSTER_MS) return cached.names;
    let names = cached?.names ?? [];
    try {
      const roster = await this.handlers.members(room);
      names = roster.map((m) => m?.user?.name).filter(Boolean);
      this.rosters.set(room, { at: Date.now(), names });
    } catch {
      // keep what we had; the next "@" asks again
    }
    return names;
  }

  async _update() {
    const { input } = this.el;
    const room = this.room();
    const caret = input.selectionStart;
    const m = room && caret === input.selectionEnd ? TOKEN_RE.exec(input.value.slice(0, caret)) : null;
    if (!m) {
      this.close();
      return;
    }
    const prefix = m[2].toLowerCase();
    const token = { start: caret - m[2].length - 1, end: caret };
    const names = await this._names(room);
    if (input.selectionStart !== caret || input.value.slice(token.start, token.end) !== `@${m[2]}`) return;
    const me = this.handlers.myName?.() ?? '';
    const people = names.filter((n) => n.toLowerCase().startsWith(prefix) && n !== me)
      .sort((a, b) => a.localeCompare(b)).map((name) => ({ name, note: '' }));
    if (ROOM_ENTRY.name.startsWith(prefix)) people.push(ROOM_ENTRY);
    // A name typed in full leaves nothing to pick: Enter then sends.
    const done = people.length === 1 && people[0].name.toLowerCase() === prefix;
    this.options = done ? [] : people.slice(0, MAX_SHOWN);
    this.token = token;
    this.active = 0;
    this._render();
  }

  _render() {
    const h = this.h;
    const { input, list } = this.el;
    if (!this.options.length) {
      this.close();
      return;
    }
    list.replaceChildren(...this.options.map((o, i) => h('li', {
      id: `mention-opt-${i}`, role: 'option', class: 'picker-option', 'data-name': o.name,
      'data-testid': 'mention-option', 'aria-selected': i === this.active ? 'true' : 'false',
    }, h('span', { class: 'mention-name' }, `@${o.name}`),
    o.note ? h('span', { class: 'hint-inline' }, ` ${o.note}`) : null)));
    list.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    input.setAttribute('aria-activedescendant', `mention-opt-${this.active}`);
  }

  _key(ev) {
    if (!this.options.length || ev.isComposing) return;
    const n = this.options.length;
    switch (ev.key) {
      case 'ArrowDown':
      case 'ArrowUp':
        ev.preventDefault();
        this.active = (this.active + (ev.key === 'ArrowDown' ? 1 : -1) + n) % n;
        this._render();
        break;
      case 'Enter':
      case 'Tab':
        if (ev.shiftKey) return;
        ev.preventDefault();
        this._pick(this.options[this.active].name);
        break;
      case 'Escape':
        ev.preventDefault();
        ev.stopPropagation();
        this.close();
        break;
      default:
        break;
    }
  }

  _pick(name) {
    const { input } = this.el;
    const t = this.token;
    if (!t) return;
    const text = `@${name} `;
    input.setRangeText(text, t.start, t.end, 'end');
    this.close();
    input.focus();
    input.dispatchEvent(new Event('input', { bubbles: true }));
  }
}
