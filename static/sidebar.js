// The rooms panel: the rooms the user is in (with unread counts) and the others they may
// join, the form that creates a room, and on narrow screens the drawers that slide this
// panel and the members panel in. Built on render.js's building blocks, which app.js
// passes in (no imports: see app.js).

const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const $ = (id) => document.getElementById(id);

export class Sidebar {
  constructor({ h, roomItem, fieldError }) {
    Object.assign(this, { h, roomItem, fieldError });
    this.chat = null; // set by bind(); read-only use
    this.handlers = null;
    this.current = null; // the room on screen
    this.known = []; // rooms from GET /api/rooms
    this.el = {
      root: $('chat'), joined: $('joined-rooms'), other: $('other-rooms'),
      otherTitle: $('other-rooms-title'), dot: $('rooms-unread-dot'),
      form: $('new-room'), name: $('new-room-name'), error: $('new-room-error'),
      sidebar: $('sidebar'), members: $('members'), scrim: $('scrim'),
      toggleRooms: $('toggle-rooms'), toggleMembers: $('toggle-members'),
    };
  }

  /** Listen to the panel, its form and the drawer toggles until `signal` aborts. */
  bind({ chat, handlers, narrow, signal }) {
    this.chat = chat;
    this.handlers = handlers;
    const e = this.el;
    const opts = { signal };
    e.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._createRoom();
    }, opts);
    e.name.addEventListener('input', () => this.fieldError(e.name, e.error, ''), opts);
    for (const list of [e.joined, e.other]) {
      list.addEventListener('click', (ev) => {
        const btn = ev.target.closest('button[data-room]');
        if (btn) this._pickRoom(btn.dataset.room);
      }, opts);
    }
    e.toggleRooms.addEventListener('click', () => this._drawer('sidebar'), opts);
    e.toggleMembers.addEventListener('click', () => this._drawer('members'), opts);
    e.scrim.addEventListener('click', () => this._drawer(null), opts);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && e.root.dataset.drawer) {
        const toggle = e.root.dataset.drawer === 'sidebar' ? e.toggleRooms : e.toggleMembers;
        this._drawer(null);
        toggle.focus();
      }
    }, opts);
    narrow.addEventListener('change', () => this._drawer(null), opts);
  }

  destroy() {
    this.current = null;
    this.el.joined.replaceChildren();
    this.el.other.replaceChildren();
  }

  setKnownRooms(rooms) {
    this.known = rooms.filter((r) => r && typeof r.name === 'string');
    this.render();
  }

  /** Mark `name` (or nothing) as the room on screen. */
  show(name) {
    this.current = name;
    this.render();
  }

  showError(text) {
    this.fieldError(this.el.name, this.el.error, text);
  }

  render() {
    if (!this.chat) return;
    const e = this.el;
    const focused = document.activeElement?.closest?.('button[data-room]')?.dataset.room;
    const joined = [...this.chat.rooms.values()];
    const mine = new Set(joined.map((r) => r.name));
    const others = this.known.map((r) => r.name).filter((n) => !mine.has(n)).sort();
    const button = (name, room) => this.roomItem(name, {
      joined: Boolean(room), current: name === this.current,
      unread: room && name !== this.current ? room.unread : 0,
    });
    e.joined.replaceChildren(...joined.map((r) => button(r.name, r)));
    if (!joined.length) e.joined.append(this.h('li', { class: 'muted' }, 'None yet'));
    e.other.replaceChildren(...others.map((n) => button(n, null)));
    e.other.hidden = !others.length;
    e.otherTitle.hidden = !others.length;
    e.dot.hidden = !joined.some((r) => r.name !== this.current && r.unread);
    if (focused) e.root.querySelector(`button[data-room="${CSS.escape(focused)}"]`)?.focus();
  }

  _pickRoom(name) {
    this._drawer(null);
    this.handlers.selectRoom(name);
  }

  /** Open the rooms ('sidebar') or 'members' drawer, or close both (null). */
  _drawer(which) {
    const e = this.el;
    if (which && e.root.dataset.drawer === which) which = null;
    if (which) e.root.dataset.drawer = which;
    else delete e.root.dataset.drawer;
    e.toggleRooms.setAttribute('aria-expanded', String(which === 'sidebar'));
    e.toggleMembers.setAttribute('aria-expanded', String(which === 'members'));
    e.scrim.hidden = !which;
    if (which) {
      const panel = which === 'sidebar' ? e.sidebar : e.members;
      panel.querySelector('button, input, [tabindex]')?.focus();
    }
  }

  async _createRoom() {
    const e = this.el;
    const name = e.name.value.trim().toLowerCase().replace(/^#/, '').replace(/\s+/g, '-');
    if (!ROOM_RE.test(name)) {
      this.fieldError(e.name, e.error,
        name ? 'Use lowercase letters, digits, “-” and “_”, starting with a letter or digit.'
          : 'Enter a room name.');
      e.name.focus();
      return;
    }
    this.fieldError(e.name, e.error, '');
    if (await this.handlers.createRoom(name)) {
      e.name.value = '';
      this._drawer(null);
    }
  }
}
