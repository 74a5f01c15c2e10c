// The rooms panel: the user's channels (public and private, a lock on private ones) and
// direct messages (the other people, with a presence dot), with unread counts; the
// public rooms they may join ("Browse rooms", with topics); the form that creates a
// room (public or private, with a topic); and on narrow screens the drawers that slide
// this panel and the members panel in. Built on render.js's building blocks, which
// app.js passes in (no imports: see app.js).

const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const $ = (id) => document.getElementById(id);

export class Sidebar {
  /** `marks(h, state)`: what follows a name for its presence state (userstatus.js). */
  constructor({ h, roomItem, fieldError }, marks = () => []) {
    Object.assign(this, { h, roomItem, fieldError, marks });
    this.me = null;
    this.chat = null; // set by bind(); read-only use
    this.handlers = null;
    this.current = null; // the room on screen
    this.el = {
      root: $('chat'), joined: $('joined-rooms'), dms: $('dm-rooms'), other: $('other-rooms'),
      browse: $('browse-toggle'), browseCount: $('browse-count'), dot: $('rooms-unread-dot'),
      form: $('new-room'), name: $('new-room-name'), error: $('new-room-error'),
      private: $('new-room-private'), topic: $('new-room-topic'),
      sidebar: $('sidebar'), members: $('members'), scrim: $('scrim'),
      toggleRooms: $('toggle-rooms'), toggleMembers: $('toggle-members'),
    };
  }

  /** Listen to the panel, its form and the drawer toggles until `signal` aborts. */
  bind({ chat, handlers, me, narrow, signal }) {
    this.chat = chat;
    this.handlers = handlers;
    this.me = me;
    const e = this.el;
    const opts = { signal };
    e.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._createRoom();
    }, opts);
    e.name.addEventListener('input', () => this.fieldError(e.name, e.error, ''), opts);
    e.browse.addEventListener('click', () => {
      const open = e.browse.getAttribute('aria-expanded') !== 'true';
      e.browse.setAttribute('aria-expanded', String(open));
      this.render();
    }, opts);
    for (const list of [e.joined, e.dms, e.other]) {
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
    this.el.dms.replaceChildren();
    this.el.other.replaceChildren();
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
    const mine = [...this.chat.rooms.values()];
    const byLabel = (a, b) => a.label.localeCompare(b.label);
    const channels = mine.filter((r) => r.kind !== 'dm').sort(byLabel);
    const dms = mine.filter((r) => r.kind === 'dm').sort(byLabel);
    const item = (r) => {
      const others = r.kind === 'dm' ? [...r.people.members.keys()].filter((id) => id !== this.me.id) : [];
      const li = this.roomItem(r.info, {
        joined: true, current: r.name === this.current, me: this.me,
        unread: r.name !== this.current ? r.unread : 0,
        mentions: r.name !== this.current ? r.mentions : 0,
        online: others.length > 0,
      });
      if (others.length) this._dmState(li, others.map((id) => r.people.stateOf(id)));
      return li;
    };
    e.joined.replaceChildren(...channels.map(item));
    if (!channels.length) e.joined.append(this.h('li', { class: 'muted' }, 'None yet'));
    e.dms.replaceChildren(...dms.map(item));
    if (!dms.length) e.dms.append(this.h('li', { class: 'muted' }, 'None yet'));
    const others = [...this.chat.known.values()]
      .filter((r) => r.kind === 'public' && !this.chat.rooms.has(r.name))
      .sort((a, b) => a.name.localeCompare(b.name));
    const open = e.browse.getAttribute('aria-expanded') === 'true';
    e.browseCount.textContent = others.length ? `(${others.length})` : '';
    e.other.hidden = !open;
    e.other.replaceChildren(...others.map((r) => {
      const li = this.roomItem(r, { joined: false, current: false, unread: 0 });
      if (r.topic) {
        li.firstChild.append(this.h('span', { class: 'room-topic-small', 'data-testid': 'browse-topic' }, r.topic));
      }
      return li;
    }));
    if (!others.length) e.other.append(this.h('li', { class: 'muted' }, 'You are in every public room.'));
    e.dot.hidden = !mine.some((r) => r.name !== this.current && r.unread);
    if (focused) e.root.querySelector(`button[data-room="${CSS.escape(focused)}"]`)?.focus();
  }

  /** A DM's dot turns "away" when every other person online in it is away; a DM with
   *  one other person shows their status text after the name. */
  _dmState(li, states) {
    const away = states.every((s) => s?.away);
    const dot = li.querySelector('[data-testid="dm-presence"]');
    dot?.classList.toggle('idle', away);
    dot?.setAttribute('data-away', String(away));
    if (dot) dot.title = away ? 'Away' : 'Online';
    const name = li.querySelector('.room-name');
    if (states.length === 1 && name) {
      name.after(...this.marks(this.h, { ...states[0], away: false }));
    }
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
    if (name.startsWith('dm-')) {
      this.fieldError(e.name, e.error, 'Names starting with “dm-” are kept for direct messages.');
      e.name.focus();
      return;
    }
    this.fieldError(e.name, e.error, '');
    const kind = e.private.checked ? 'private' : 'public';
    if (await this.handlers.createRoom(name, { kind, topic: e.topic.value.trim() })) {
      e.name.value = '';
      e.topic.value = '';
      e.private.checked = false;
      this._drawer(null);
    }
  }
}
