// The chat screen: what chat.js reports goes to the part of the screen it concerns, and
// the handlers app.js binds receive the user's clicks and keys. It draws the room header
// (title, people online, who is typing) and the page title itself; the message list,
// the sidebar, the composer and the notices are its parts, which app.js builds and
// passes in with render.js (no imports: see app.js).

const NARROW = window.matchMedia('(max-width: 760px)');

const $ = (id) => document.getElementById(id);

export class ChatView {
  /**
   * @param {object} render  render.js
   * @param {object} parts   {list, sidebar, composer, notices}: see messagelist.js,
   *        sidebar.js, composer.js, notices.js
   */
  constructor({ memberItem }, { list, sidebar, composer, notices }) {
    Object.assign(this, { memberItem, list, sidebar, composer, notices });
    this.handlers = null;
    this.me = null;
    this.chat = null; // set by bind(); read-only use
    this.active = null;
    this.el = {
      title: $('room-title'), sub: $('room-sub'), leave: $('leave-room'), typing: $('typing'),
      members: $('member-list'), membersCount: $('members-count'), meName: $('me-name'),
      logout: $('logout'),
    };
    this.listeners = new AbortController();
  }

  /** Connect DOM events to app handlers; `chat` is read for state when rendering. */
  bind(chat, handlers, me) {
    this.chat = chat;
    this.handlers = handlers;
    this.me = me;
    this.el.meName.textContent = me.name;
    const signal = this.listeners.signal;
    const e = this.el;
    this.list.bind({ chat, handlers, me, composer: this.composer, signal });
    this.composer.bind({ handlers, narrow: NARROW, signal });
    this.sidebar.bind({ chat, handlers, narrow: NARROW, signal });
    this.notices.bind({ handlers, signal });
    e.logout.addEventListener('click', () => handlers.logout(), { signal });
    e.leave.addEventListener('click', () => this.active && handlers.leaveRoom(this.active), { signal });
    window.addEventListener('beforeunload', (ev) => {
      // Unsent messages survive a reload of this tab (sessionStorage); closing loses them.
      if ([...this.chat.rooms.values()].some((r) => r.outbox.size)) ev.preventDefault();
    }, { signal });
  }

  /** Tear down every listener (log-out). */
  destroy() {
    this.listeners.abort();
    this.active = null; // late timers of the old session then draw nothing
    this.list.destroy();
    this.sidebar.destroy();
    this.notices.destroy();
    this.composer.destroy();
    this.el.members.replaceChildren();
    this.el.typing.textContent = '';
  }

  // ----- called by app.js ------------------------------------------------------------

  setKnownRooms(rooms) {
    this.sidebar.setKnownRooms(rooms);
  }

  /** Show a room (or the empty state when name is null). */
  showRoom(name) {
    const e = this.el;
    const shown = this.list.show(name);
    this.active = name;
    e.title.textContent = shown ? `#${name}` : 'No room';
    e.leave.hidden = !shown;
    this.composer.setRoom(shown ? name : null);
    this._renderTitle();
    const room = name && this.chat.rooms.get(name);
    if (room) {
      this._renderMembers(room);
      this._renderTyping(room);
    } else {
      e.members.replaceChildren();
      e.membersCount.textContent = '';
      e.typing.textContent = '';
      e.sub.textContent = '';
    }
    this.list.place(room || null);
    this.sidebar.show(name);
    this.list.maybeRead();
  }

  focusComposer() {
    this.composer.focus();
  }

  setConnection(s) {
    this.notices.setConnection(s);
  }

  // ----- called by chat.js -----------------------------------------------------------

  roomAdded(room) {
    this.list.add(room);
    this.sidebar.render();
  }

  roomRemoved(room) {
    this.list.remove(room);
    this.sidebar.render();
    if (this.active === room.name) this.handlers.roomGone(room.name);
  }

  roomChanged(room) {
    this.list.roomChanged(room);
  }

  unreadChanged() {
    this.sidebar.render();
    this._renderTitle();
  }

  isReading(name) {
    return this.list.isReading(name);
  }

  messagesAdded(room, msgs, opts) {
    this.list.messagesAdded(room, msgs, opts);
  }

  pendingChanged(room, item, opts) {
    this.list.pendingChanged(room, item, opts);
  }

  pendingRemoved(room, clientId) {
    this.list.pendingRemoved(room, clientId);
  }

  membersChanged(room) {
    if (room.name === this.active) this._renderMembers(room);
  }

  typingChanged(room) {
    if (room.name === this.active) this._renderTyping(room);
  }

  notice(text) {
    this.notices.notice(text);
  }

  showRoomError(text) {
    this.sidebar.showError(text);
  }

  // ----- the room header and the page title ------------------------------------------

  _renderTitle() {
    const total = [...this.chat.rooms.values()].reduce((n, r) => n + r.unread, 0);
    const base = this.active ? `#${this.active} · Chat` : 'Chat';
    document.title = total ? `(${total}) ${base}` : base;
  }

  _renderMembers(room) {
    const e = this.el;
    const members = [...room.people.members.values()].sort((a, b) => a.name.localeCompare(b.name));
    e.members.replaceChildren(...members.map((u) => this.memberItem(u, this.me)));
    e.membersCount.textContent = members.length ? `(${members.length})` : '';
    e.sub.textContent = members.length ? `${members.length} online` : '';
  }

  _renderTyping(room) {
    const names = [...room.people.typing.values()].map((t) => t.user.name);
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    this.el.typing.textContent = text;
  }
}
