// The chat screen: what chat.js reports goes to the part of the screen it concerns, and
// the handlers app.js binds receive the user's clicks and keys. It draws who is typing,
// whether the user may post in the room on screen, and the page title itself; the room
// header, the message list, the sidebar, the members panel, the composer, the notices
// and the "New message" dialog are its parts, which app.js builds and passes in with
// render.js (no imports: see app.js).

const NARROW = window.matchMedia('(max-width: 760px)');

const $ = (id) => document.getElementById(id);

export class ChatView {
  /**
   * @param {object} render  render.js
   * @param {object} parts   {list, sidebar, composer, notices}: see messagelist.js,
   *        sidebar.js, composer.js, notices.js
   */
  constructor({ whenText }, parts) {
    const { list, actions, favicon, search, mentions, notifier, sidebar, composer, notices, members,
      header, dmPicker } = parts;
    Object.assign(this, { whenText, list, actions, favicon, search, mentions, notifier, sidebar,
      composer, notices, members, header, dmPicker });
    this.handlers = null;
    this.me = null;
    this.chat = null; // set by bind(); read-only use
    this.active = null;
    this.muteTimer = null;
    this.el = { typing: $('typing'), meName: $('me-name'), logout: $('logout') };
    this.listeners = new AbortController();
  }

  /** Connect DOM events to app handlers; `chat` is read for state when rendering. */
  bind(chat, handlers, me, storage) {
    this.chat = chat;
    this.handlers = handlers;
    this.me = me;
    this.el.meName.textContent = me.name;
    const signal = this.listeners.signal;
    const e = this.el;
    this.list.bind({ chat, handlers, me, composer: this.composer, signal });
    this.actions.bind({ chat, handlers, me, list: this.list, composer: this.composer, signal });
    this.search.bind({ chat, handlers, me, signal });
    this.notifier.bind({ handlers, storage, signal });
    // Before the composer: the open list of names takes Enter from it.
    this.mentions.bind({ handlers, room: () => this.composer.room, signal });
    this.composer.bind({ handlers, narrow: NARROW, signal });
    this.sidebar.bind({ chat, handlers, me, narrow: NARROW, signal });
    this.notices.bind({ handlers, signal });
    this.members.bind({ handlers, me, signal });
    this.header.bind({ handlers, me, signal });
    this.dmPicker.bind({ handlers, me, signal });
    e.logout.addEventListener('click', () => handlers.logout(), { signal });
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
    this.actions.destroy();
    this.search.destroy();
    this.mentions.destroy();
    this.notifier.destroy();
    this.sidebar.destroy();
    this.notices.destroy();
    this.composer.destroy();
    this.members.destroy();
    this.header.destroy();
    this.dmPicker.destroy();
    clearTimeout(this.muteTimer);
    this.el.typing.textContent = '';
  }

  // ----- called by app.js ------------------------------------------------------------

  /** Whether the user is a server admin (a moderator of every public room). */
  setServerAdmin(yes) {
    this.list.setServerAdmin(yes);
    this.members.setServerAdmin(yes);
    this.header.setServerAdmin(yes);
  }

  /** Show a room (or the empty state when name is null). */
  showRoom(name) {
    const e = this.el;
    const shown = this.list.show(name);
    this.active = shown ? name : null;
    const room = shown ? this.chat.rooms.get(name) : null;
    this.composer.setRoom(room ? name : null, room?.label);
    this.header.render(room ?? null);
    this.search.setRoom(room ?? null);
    this.members.show(room ?? null);
    this._renderTitle();
    this._renderStanding();
    if (room) this._renderTyping(room);
    else e.typing.textContent = '';
    this.list.place(room || null);
    this.sidebar.show(name);
    this.list.maybeRead();
  }

  /** Pick people in the "New message" dialog for something else (see dmpicker.js). */
  pickPeople(mode) {
    this.dmPicker.open(mode);
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

  /** The list of rooms the user may see changed (Browse rooms). */
  roomsChanged() {
    this.sidebar.render();
  }

  /** A room's Room object changed: topic, archived, the user's role or mute. */
  roomInfoChanged(room) {
    this.sidebar.render();
    if (room.name !== this.active) return;
    this.header.render(room);
    this.members.render();
    this._renderStanding();
    this._renderTitle();
  }

  /** Who is in the room, or their roles, changed. */
  rosterChanged(room) {
    if (room.name === this.active) this.members.reload();
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

  /** Messages changed in place (edited, deleted, reactions, replies). */
  messagesChanged(room, msgs) {
    this.list.messagesChanged(room, msgs);
  }

  /** A message of someone else arrived live: maybe a desktop notification. */
  incoming(room, m) {
    this.notifier.incoming(room, m);
  }

  /** Scroll to the message `seq` of the room on screen and highlight it. */
  flash(seq) {
    return this.list.flash(seq);
  }

  pendingChanged(room, item, opts) {
    this.list.pendingChanged(room, item, opts);
  }

  pendingRemoved(room, clientId) {
    this.list.pendingRemoved(room, clientId);
  }

  /** Someone came online in the room or went offline. */
  membersChanged(room) {
    if (room.kind === 'dm') this.sidebar.render();
    if (room.name === this.active) this.members.presenceChanged(room);
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

  /** The page title says how many messages are unread, "(3) #ops · Chat"; the
   *  favicon shows a dot for unread messages and a count of mentions. */
  _renderTitle() {
    const rooms = [...this.chat.rooms.values()];
    const total = rooms.reduce((n, r) => n + r.unread, 0);
    const mentions = rooms.reduce((n, r) => n + r.mentions, 0);
    const room = this.active && this.chat.rooms.get(this.active);
    const base = room ? `${room.label} · Chat` : 'Chat';
    const count = total > 99 ? '99+' : String(total);
    document.title = total ? `(${count}) ${base}` : base;
    this.favicon.set(total, mentions);
  }

  /** Whether the user may post in the room on screen; a mute lifts itself at its end. */
  _renderStanding() {
    clearTimeout(this.muteTimer);
    const room = this.active && this.chat.rooms.get(this.active);
    if (!room) return;
    const why = this.chat.silenced(room);
    if (why === 'archived') {
      this.composer.setBlocked('This room is archived: it is read-only.');
    } else if (why === 'muted') {
      const until = room.info.muted_until;
      this.composer.setBlocked(`You are muted until ${this.whenText(until)}.`);
      // setTimeout's delay is a 32-bit number of ms: a long mute is checked again later.
      const wait = Math.min(until - Date.now() + 100, 2 ** 31 - 1);
      this.muteTimer = setTimeout(() => this._renderStanding(), wait);
    } else {
      this.composer.setBlocked(null);
    }
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
