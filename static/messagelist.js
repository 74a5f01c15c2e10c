// The message log on screen: one list per room (kept while another room is shown),
// confirmed messages and event lines (who joined, was removed, muted...) in seq order
// with pending and failed ones after them, each message drawn again whenever it
// changes (edited, deleted, reacted to, replied to: msgparts.js draws that), the scroll
// position (pinned to the bottom while the reader is there), the "New messages" marker
// and divider (newdivider.js), the top of the log (load older, or the beginning of the room), and when
// the room on screen counts as read. Built on render.js's building blocks, which app.js
// passes in (no imports: see app.js).

const BOTTOM_SLACK_PX = 48; // "at the bottom" tolerance
const LOAD_OLDER_PX = 400; // start loading older messages this close to the top
const FLASH_MS = 2500;
const RANK = { member: 0, moderator: 1, admin: 2, owner: 3 };
const LIFECYCLE = new Set(['edited', 'deleted', 'reacted']);
// Events that change a message are folded into it (room.js), never drawn as lines.
const shown = (m) => m.type !== 'event' || !LIFECYCLE.has(m.event);

const $ = (id) => document.getElementById(id);

export class MessageList {
  constructor({ h, messageItem, eventItem, nextMessage, decorate, insertionPoint }, parts, divider) {
    Object.assign(this, { h, messageItem, eventItem, nextMessage, decorate, insertionPoint, parts,
      divider });
    this.serverAdmin = false;
    this.editing = null; // {room, seq} of the message being edited in place
    this.chat = null; // set by bind(); read-only use
    this.handlers = null;
    this.me = null;
    this.composer = null;
    this.active = null; // the room on screen
    this.lists = new Map(); // room name -> {ol, atBottom, scrollTop}
    this.scrollQueued = false;
    this.quietTimer = null;
    this.el = {
      log: $('log'), host: $('list-host'), empty: $('empty-state'), loadOlder: $('load-older'),
      logStart: $('log-start'), jump: $('jump-new'),
    };
  }

  /** Listen to scrolling and the log's buttons until `signal` aborts. */
  bind({ chat, handlers, me, composer, signal }) {
    Object.assign(this, { chat, handlers, me, composer });
    const e = this.el;
    e.log.addEventListener('scroll', () => this._onScroll(), { signal, passive: true });
    e.loadOlder.addEventListener('click', () => this.active && handlers.loadOlder(this.active), { signal });
    e.jump.addEventListener('click', () => {
      this._scrollToBottom();
      composer.focus();
    }, { signal });
    document.addEventListener('visibilitychange', () => this.maybeRead(), { signal });
    window.addEventListener('focus', () => this.maybeRead(), { signal });
  }

  destroy() {
    this.active = null; // late timers of the old session then draw nothing
    this.lists.clear();
    clearTimeout(this.quietTimer);
    this.quietTimer = null;
    this.el.host.replaceChildren();
  }

  setServerAdmin(yes) {
    this.serverAdmin = Boolean(yes);
  }

  /** The item of the message `seq` of `room`, if drawn. */
  itemFor(room, seq) {
    return this.lists.get(room)?.ol.querySelector(`:scope > li[data-seq="${Number(seq)}"]`) ?? null;
  }

  /** Whether the user may delete `m` in `room`: theirs, or moderator and up. */
  mayDelete(room, m) {
    if (m.user.id === this.me.id) return true;
    let rank = RANK[room.info.role] ?? -1;
    if (room.kind === 'public' && this.serverAdmin) rank = Math.max(rank, RANK.admin);
    return rank >= RANK.moderator;
  }

  /** A confirmed message's item, dressed with its current state. */
  _item(room, m) {
    if (m.type === 'event') return this.eventItem({ key: `s${m.seq}`, seq: m.seq, ts: m.ts, event: m });
    const li = this.messageItem({ key: `s${m.seq}`, seq: m.seq, user: m.user, ts: m.ts, body: m.body, me: this.me });
    const quote = (seq) => {
      const orig = room.find(seq);
      if (!orig) this.handlers.peek(room.name, seq);
      return orig;
    };
    const name = (id) => room.names.get(id) ?? null;
    return this.parts.dress(li, m, { me: this.me, name, quote, canAct: room.info.member !== false,
      mentioned: m.user.id !== this.me.id && room.mentionsMe(m) });
  }

  /** Messages changed (edited, deleted, reacted to, replied to, or fetched for a quote):
   *  draw them again, and the quotes of the replies to them. */
  messagesChanged(room, msgs) {
    const entry = this.lists.get(room.name);
    if (!entry) return;
    const log = this.el.log;
    const active = room.name === this.active;
    const wasBottom = active && this._atBottom();
    for (const m of msgs) {
      const old = this.itemFor(room.name, m.seq);
      if (old && !(this.editing?.room === room.name && this.editing.seq === m.seq)) {
        this._replace(room, old, m);
      }
      for (const reply of entry.ol.querySelectorAll(`:scope > li[data-reply-to="${m.seq}"]`)) {
        const r = room.find(Number(reply.dataset.seq));
        if (r) this._replace(room, reply, r);
      }
    }
    if (wasBottom) log.scrollTop = log.scrollHeight;
  }

  _replace(room, old, m) {
    const focused = old.contains(document.activeElement) ? document.activeElement : null;
    const li = this._item(room, m);
    li.classList.toggle('flash', old.classList.contains('flash'));
    old.replaceWith(li);
    this.decorate(li);
    if (focused) {
      const testid = focused.dataset.testid;
      const emoji = focused.dataset.emoji;
      const again = emoji ? li.querySelector(`[data-emoji="${CSS.escape(emoji)}"]`) : li.querySelector(`[data-testid="${testid}"]`);
      (again ?? li.querySelector('.msg-actions'))?.focus({ preventScroll: true });
    }
  }

  /** Scroll the message `seq` of the room on screen into view and highlight it. */
  flash(seq) {
    const li = this.active && this.itemFor(this.active, seq);
    if (!li) return false;
    li.scrollIntoView({ block: 'center' });
    li.classList.remove('flash');
    void li.offsetWidth; // restart the animation
    li.classList.add('flash');
    setTimeout(() => li.classList.remove('flash'), FLASH_MS);
    const entry = this.lists.get(this.active);
    if (entry) entry.atBottom = this._atBottom();
    return true;
  }

  add(room) {
    if (!this.lists.has(room.name)) {
      const ol = this.h('ol', { class: 'messages', 'data-room': room.name, 'data-testid': 'messages' });
      this.lists.set(room.name, { ol, atBottom: true, scrollTop: 0 });
    }
  }

  remove(room) {
    this.lists.delete(room.name);
  }

  /** Put `name`'s list on screen (none for null); false when there is no such list. */
  show(name) {
    const e = this.el;
    const prev = this.active && this.lists.get(this.active);
    if (prev) {
      prev.atBottom = this._atBottom();
      prev.scrollTop = e.log.scrollTop;
      this.divider.removeDivider(prev.ol);
    }
    this.active = name;
    const entry = name && this.lists.get(name);
    this._quiet();
    e.host.replaceChildren(...(entry ? [entry.ol] : []));
    e.empty.hidden = Boolean(entry);
    const room = entry && this.chat.rooms.get(name);
    e.log.setAttribute('aria-label', room ? `Messages in ${room.label}` : 'Messages');
    e.jump.hidden = true;
    return Boolean(entry);
  }

  /** Once the screen around it is drawn: where the reader left `room`, or its first
   *  unread message (null: no room on screen). */
  place(room) {
    const e = this.el;
    if (!room) {
      e.loadOlder.hidden = true;
      e.logStart.hidden = true;
      return;
    }
    const entry = this.lists.get(room.name);
    this.divider.unreadDivider(this.h, entry.ol, room, this.me);
    this._renderTop(room);
    if (entry.atBottom === false) e.log.scrollTop = entry.scrollTop;
    else if (this.divider.scrollToUnread(e.log, entry.ol)) e.jump.hidden = false;
  }

  roomChanged(room) {
    if (room.name !== this.active) return;
    this._renderTop(room);
    // A short first page leaves nothing to scroll: fetch older ones to fill the view.
    const log = this.el.log;
    if (room.hasOlder && !room.loadingOlder && log.scrollHeight <= log.clientHeight + 8) {
      this.handlers.loadOlder(room.name);
    }
  }

  isReading(name) {
    return name === this.active && document.visibilityState === 'visible' && document.hasFocus()
      && this._atBottom();
  }

  /** The room on screen is read when the page is visible and scrolled to the bottom. */
  maybeRead() {
    if (this.active && this.isReading(this.active)) {
      this.el.jump.hidden = true;
      this.handlers?.markRead(this.active);
    }
  }

  messagesAdded(room, msgs, { live = false, older = false, own = false } = {}) {
    const entry = this.lists.get(room.name);
    if (!entry) return;
    const active = room.name === this.active;
    const log = this.el.log;
    const fromBottom = log.scrollHeight - log.scrollTop;
    const wasBottom = active ? this._atBottom() : entry.atBottom;
    if (active && (older || !live)) this._quiet();
    let first = null;
    msgs = msgs.filter(shown);
    if (!msgs.length) return;
    for (const m of msgs) {
      const li = this._item(room, m);
      entry.ol.insertBefore(li, this.insertionPoint(entry.ol, m.seq, older));
      this.decorate(li);
      this.decorate(this.nextMessage(li));
      if (m.type !== 'event' && (!first || m.seq < Number(first.dataset.seq))) first = li;
    }
    if (!active) return;
    this._renderTop(room);
    if (older) {
      // Keep what the reader is looking at in place while content grows above it.
      log.scrollTop = log.scrollHeight - fromBottom;
      return;
    }
    const mine = msgs.every((m) => m.user.id === this.me.id);
    const quiet = msgs.every((m) => m.type === 'event'); // events are not "new messages"
    if (wasBottom || own || !live || mine) {
      this._scrollToBottom();
    } else if (!quiet) {
      this.el.jump.hidden = false;
      this.divider.placeDivider(this.h, entry.ol, first);
    }
  }

  pendingChanged(room, item, { own = false } = {}) {
    const entry = this.lists.get(room.name);
    if (!entry) return;
    const key = `c${item.clientId}`;
    let li = entry.ol.querySelector(`:scope > li[data-key="${CSS.escape(key)}"]`);
    if (!li) {
      li = this.parts.pendingItem(key, item, this.me);
      entry.ol.append(li);
      this.decorate(li);
    }
    this.parts.pendingStatus(li, item, this.chat.online, {
      retry: () => this.handlers.retry(room.name, item.clientId),
      discard: () => this.handlers.discard(room.name, item.clientId),
    });
    if (room.name === this.active && (own || this._atBottom())) this._scrollToBottom();
  }

  pendingRemoved(room, clientId) {
    const entry = this.lists.get(room.name);
    const li = entry?.ol.querySelector(`:scope > li[data-key="${CSS.escape(`c${clientId}`)}"]`);
    if (!li) return;
    const next = this.nextMessage(li);
    const hadFocus = li.contains(document.activeElement);
    li.remove();
    this.decorate(next);
    if (hadFocus) this.composer.input.focus();
  }

  // ----- internals ---------------------------------------------------------------------

  _atBottom() {
    const log = this.el.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight <= BOTTOM_SLACK_PX;
  }

  _scrollToBottom() {
    const log = this.el.log;
    log.scrollTop = log.scrollHeight;
    this.el.jump.hidden = true;
    this.maybeRead();
  }

  _onScroll() {
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      if (!this.active) return;
      const entry = this.lists.get(this.active);
      if (entry) entry.atBottom = this._atBottom();
      if (this.el.log.scrollTop < LOAD_OLDER_PX) this.handlers.loadOlder(this.active);
      this.maybeRead();
    });
  }

  /** Mark the log busy for a moment, so screen readers do not read out a whole page
   *  of history that was swapped in or loaded above, only messages that arrive live. */
  _quiet() {
    clearTimeout(this.quietTimer);
    this.el.log.setAttribute('aria-busy', 'true');
    this.quietTimer = setTimeout(() => {
      this.quietTimer = null;
      const room = this.active && this.chat.rooms.get(this.active);
      if (room) this._renderTop(room);
      else this.el.log.setAttribute('aria-busy', 'false');
    }, 200);
  }

  _renderTop(room) {
    const e = this.el;
    const showButton = room.hasOlder;
    e.loadOlder.hidden = !showButton;
    e.loadOlder.disabled = room.loadingOlder || room.state !== 'live';
    e.loadOlder.textContent = room.loadingOlder ? 'Loading older messages…' : 'Load older messages';
    const busy = room.loadingOlder || room.state === 'joining' || this.quietTimer !== null;
    e.log.setAttribute('aria-busy', String(busy));
    e.logStart.hidden = showButton || !room.loaded;
    const what = room.kind === 'dm' ? `your conversation with ${room.label}` : room.label;
    e.logStart.textContent = room.messages.some((m) => m.type !== 'event')
      ? `This is the beginning of ${what}.`
      : `${room.kind === 'dm' ? `No messages with ${room.label}` : `${room.label} has no messages`} yet. Say hello!`;
  }
}
