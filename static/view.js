// The chat screen: renders what chat.js reports and turns clicks and keys into calls
// on the handlers app.js binds. The DOM building blocks come from render.js, passed
// in by app.js (no imports: see app.js).

const BOTTOM_SLACK_PX = 48; // "at the bottom" tolerance
const LOAD_OLDER_PX = 400; // start loading older messages this close to the top
const MAX_BODY = 4000;
const NARROW = window.matchMedia('(max-width: 760px)');

const $ = (id) => document.getElementById(id);

/** The ChatView class, built on the render.js module it is given. */
export function defineChatView({
  h, messageItem, nextMessage, decorate, insertionPoint, roomItem, memberItem,
}) {
  return class ChatView {
    constructor() {
      this.handlers = null;
      this.me = null;
      this.chat = null; // set by bind(); read-only use
      this.active = null;
      this.lists = new Map(); // room name -> {ol, atBottom, scrollTop}
      this.known = []; // rooms from GET /api/rooms
      this.conn = { state: 'connecting' };
      this.everOpen = false;
      this.bannerTimer = null;
      this.toastTimer = null;
      this.scrollQueued = false;
      this.quietTimer = null;
      this.el = {
        root: $('chat'), log: $('log'), host: $('list-host'), empty: $('empty-state'),
        loadOlder: $('load-older'), logStart: $('log-start'), jump: $('jump-new'),
        title: $('room-title'), sub: $('room-sub'), leave: $('leave-room'),
        typing: $('typing'), members: $('member-list'), membersCount: $('members-count'),
        joined: $('joined-rooms'), other: $('other-rooms'), otherTitle: $('other-rooms-title'),
        form: $('composer'), input: $('composer-input'), send: $('composer-send'),
        composerLabel: $('composer-label'), composerError: $('composer-error'),
        banner: $('banner'), bannerText: $('banner-text'), bannerRetry: $('banner-retry'),
        newRoom: $('new-room'), newRoomName: $('new-room-name'), newRoomError: $('new-room-error'),
        toast: $('toast'), meName: $('me-name'), logout: $('logout'), scrim: $('scrim'),
        sidebar: $('sidebar'), membersPanel: $('members'),
        toggleRooms: $('toggle-rooms'), toggleMembers: $('toggle-members'),
        roomsDot: $('rooms-unread-dot'),
      };
      this.listeners = new AbortController();
    }

    /** Connect DOM events to app handlers; `chat` is read for state when rendering. */
    bind(chat, handlers, me) {
      this.chat = chat;
      this.handlers = handlers;
      this.me = me;
      this.el.meName.textContent = me.name;
      const opts = { signal: this.listeners.signal };
      const e = this.el;

      e.log.addEventListener('scroll', () => this._onScroll(), { ...opts, passive: true });
      e.loadOlder.addEventListener('click', () => this.active && handlers.loadOlder(this.active), opts);
      e.jump.addEventListener('click', () => {
        this._scrollToBottom();
        this.focusComposer();
      }, opts);
      e.form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        this._submit();
      }, opts);
      e.input.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
          ev.preventDefault();
          this._submit();
        }
      }, opts);
      e.input.addEventListener('input', () => {
        this._autosize();
        this._checkLength();
        if (this.active && e.input.value.trim()) handlers.typing(this.active);
      }, opts);
      e.bannerRetry.addEventListener('click', () => handlers.reconnectNow(), opts);
      e.logout.addEventListener('click', () => handlers.logout(), opts);
      e.leave.addEventListener('click', () => this.active && handlers.leaveRoom(this.active), opts);
      e.newRoom.addEventListener('submit', (ev) => {
        ev.preventDefault();
        this._createRoom();
      }, opts);
      e.newRoomName.addEventListener('input', () => this._fieldError(e.newRoomName, e.newRoomError, ''), opts);
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
      document.addEventListener('visibilitychange', () => this._maybeRead(), opts);
      window.addEventListener('focus', () => this._maybeRead(), opts);
      NARROW.addEventListener('change', () => this._drawer(null), opts);
      window.addEventListener('beforeunload', (ev) => {
        // Unsent messages survive a reload of this tab (sessionStorage); closing loses them.
        if ([...this.chat.rooms.values()].some((r) => r.outbox.size)) ev.preventDefault();
      }, opts);
    }

    /** Tear down every listener (log-out). */
    destroy() {
      this.listeners.abort();
      this.active = null; // late timers of the old session then draw nothing
      this.lists.clear();
      clearTimeout(this.bannerTimer);
      clearTimeout(this.toastTimer);
      clearTimeout(this.quietTimer);
      this.quietTimer = null;
      clearInterval(this.countdown);
      this.el.host.replaceChildren();
      this.el.joined.replaceChildren();
      this.el.other.replaceChildren();
      this.el.members.replaceChildren();
      this.el.banner.hidden = true;
      this.el.toast.hidden = true;
      this.el.typing.textContent = '';
      this.el.input.value = '';
    }

    // ----- called by app.js ------------------------------------------------------------

    setKnownRooms(rooms) {
      this.known = rooms.filter((r) => r && typeof r.name === 'string');
      this._renderRooms();
    }

    /** Show a room (or the empty state when name is null). */
    showRoom(name) {
      const e = this.el;
      const prev = this.active && this.lists.get(this.active);
      if (prev) {
        prev.atBottom = this._atBottom();
        prev.scrollTop = e.log.scrollTop;
        prev.ol.querySelector(':scope > .new-divider')?.remove();
      }
      this.active = name;
      const entry = name && this.lists.get(name);
      this._quiet();
      e.host.replaceChildren(...(entry ? [entry.ol] : []));
      e.empty.hidden = Boolean(entry);
      e.title.textContent = entry ? `#${name}` : 'No room';
      e.leave.hidden = !entry;
      e.input.disabled = !entry;
      e.send.disabled = !entry;
      e.input.placeholder = entry ? `Message #${name}` : 'Choose a room first';
      e.composerLabel.textContent = entry ? `Message #${name}` : 'Message';
      e.log.setAttribute('aria-label', entry ? `Messages in #${name}` : 'Messages');
      e.jump.hidden = true;
      this._renderTitle();
      const room = name && this.chat.rooms.get(name);
      if (room) {
        this._unreadDivider(room, entry.ol);
        this._renderMembers(room);
        this._renderTyping(room);
        this._renderTop(room);
        if (entry.atBottom === false) e.log.scrollTop = entry.scrollTop;
        else this._scrollToUnread(entry.ol);
      } else {
        e.members.replaceChildren();
        e.membersCount.textContent = '';
        e.typing.textContent = '';
        e.sub.textContent = '';
        e.loadOlder.hidden = true;
        e.logStart.hidden = true;
      }
      this._renderRooms();
      this._maybeRead();
    }

    focusComposer() {
      if (!NARROW.matches && !this.el.input.disabled) this.el.input.focus({ preventScroll: true });
    }

    setConnection(s) {
      const e = this.el;
      this.conn = s;
      clearTimeout(this.bannerTimer);
      clearInterval(this.countdown);
      e.root.dataset.conn = s.state;
      if (s.state === 'open') {
        this.everOpen = true;
        e.banner.hidden = true;
        e.banner.dataset.state = 'open';
        return;
      }
      if (s.state === 'stopped') {
        e.banner.hidden = true;
        return;
      }
      e.banner.dataset.state = s.state;
      if (s.state === 'connecting') {
        e.bannerText.textContent = this.everOpen ? 'Connection lost. Reconnecting…' : 'Connecting…';
        e.bannerRetry.hidden = true;
        // The first connect usually takes a few ms: do not flash a banner for it.
        if (this.everOpen) e.banner.hidden = false;
        else this.bannerTimer = setTimeout(() => { e.banner.hidden = false; }, 1000);
        return;
      }
      const tick = () => {
        const secs = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
        e.bannerText.textContent = this.everOpen
          ? `Connection lost. Reconnecting in ${secs} s…`
          : `Cannot reach the server. Retrying in ${secs} s…`;
      };
      tick();
      this.countdown = setInterval(tick, 1000);
      e.bannerRetry.hidden = false;
      e.banner.hidden = false;
    }

    // ----- called by chat.js -----------------------------------------------------------

    roomAdded(room) {
      if (!this.lists.has(room.name)) {
        const ol = h('ol', { class: 'messages', 'data-room': room.name, 'data-testid': 'messages' });
        this.lists.set(room.name, { ol, atBottom: true, scrollTop: 0 });
      }
      this._renderRooms();
    }

    roomRemoved(room) {
      this.lists.delete(room.name);
      this._renderRooms();
      if (this.active === room.name) this.handlers.roomGone(room.name);
    }

    roomChanged(room) {
      if (room.name === this.active) {
        this._renderTop(room);
        // A short first page leaves nothing to scroll: fetch older ones to fill the view.
        if (room.hasOlder && !room.loadingOlder && this.el.log.scrollHeight <= this.el.log.clientHeight + 8) {
          this.handlers.loadOlder(room.name);
        }
      }
    }

    unreadChanged() {
      this._renderRooms();
      this._renderTitle();
    }

    isReading(name) {
      return name === this.active && document.visibilityState === 'visible' && this._atBottom();
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
      for (const m of msgs) {
        const li = messageItem({ key: `s${m.seq}`, seq: m.seq, user: m.user, ts: m.ts, body: m.body, me: this.me });
        entry.ol.insertBefore(li, insertionPoint(entry.ol, m.seq, older));
        decorate(li);
        decorate(nextMessage(li));
        if (!first || m.seq < Number(first.dataset.seq)) first = li;
      }
      if (!active) return;
      this._renderTop(room);
      if (older) {
        // Keep what the reader is looking at in place while content grows above it.
        log.scrollTop = log.scrollHeight - fromBottom;
        return;
      }
      const mine = msgs.every((m) => m.user.id === this.me.id);
      if (wasBottom || own || !live || mine) {
        this._scrollToBottom();
      } else {
        this.el.jump.hidden = false;
        if (!entry.ol.querySelector(':scope > .new-divider')) this._placeDivider(entry.ol, first);
      }
    }

    pendingChanged(room, item, { own = false } = {}) {
      const entry = this.lists.get(room.name);
      if (!entry) return;
      const key = `c${item.clientId}`;
      let li = entry.ol.querySelector(`:scope > li[data-key="${CSS.escape(key)}"]`);
      if (!li) {
        li = messageItem({ key, seq: null, user: this.me, ts: item.ts, body: item.body, me: this.me });
        li.dataset.clientId = item.clientId;
        li.querySelector('.msg-main').append(h('p', { class: 'msg-status', 'data-testid': 'message-status' }));
        entry.ol.append(li);
        decorate(li);
      }
      li.dataset.state = item.status === 'failed' ? 'failed' : 'pending';
      const status = li.querySelector('.msg-status');
      if (item.status === 'failed') {
        status.replaceChildren(
          h('span', { class: 'status-text' }, `Not sent. ${item.error || ''}`.trim()), ' ',
          h('button', { class: 'btn-link', type: 'button', 'data-testid': 'retry' }, 'Retry'), ' ',
          h('button', { class: 'btn-link', type: 'button', 'data-testid': 'discard' }, 'Discard'));
        const [retry, discard] = status.querySelectorAll('button');
        retry.addEventListener('click', () => this.handlers.retry(room.name, item.clientId));
        discard.addEventListener('click', () => this.handlers.discard(room.name, item.clientId));
      } else {
        status.replaceChildren(h('span', { class: 'status-text' },
          item.status === 'sending' || this.chat.online ? 'Sending…'
            : 'Waiting for the connection…'));
      }
      if (room.name === this.active && (own || this._atBottom())) this._scrollToBottom();
    }

    pendingRemoved(room, clientId) {
      const entry = this.lists.get(room.name);
      const li = entry?.ol.querySelector(`:scope > li[data-key="${CSS.escape(`c${clientId}`)}"]`);
      if (!li) return;
      const next = nextMessage(li);
      const hadFocus = li.contains(document.activeElement);
      li.remove();
      decorate(next);
      if (hadFocus) this.el.input.focus();
    }

    membersChanged(room) {
      if (room.name === this.active) this._renderMembers(room);
    }

    typingChanged(room) {
      if (room.name === this.active) this._renderTyping(room);
    }

    notice(text) {
      const t = this.el.toast;
      t.textContent = text;
      t.hidden = false;
      clearTimeout(this.toastTimer);
      this.toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
    }

    showRoomError(text) {
      this._fieldError(this.el.newRoomName, this.el.newRoomError, text);
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
      this._maybeRead();
    }

    _maybeRead() {
      if (this.active && this.isReading(this.active)) {
        this.el.jump.hidden = true;
        this.handlers?.markRead(this.active);
      }
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
        this._maybeRead();
      });
    }

    _placeDivider(ol, before) {
      if (!before) return;
      const seq = Number(before.dataset.seq);
      const divider = h('li', { class: 'new-divider', 'data-testid': 'new-divider' },
        h('span', {}, 'New messages'));
      if (Number.isFinite(seq)) divider.dataset.seq = String(seq - 0.5);
      ol.insertBefore(divider, before);
    }

    /** Mark where unread messages start when opening a room that has some. */
    _unreadDivider(room, ol) {
      if (!room.unread || ol.querySelector(':scope > .new-divider')) return;
      const first = room.messages.find((m) => m.seq > room.lastRead && m.user.id !== this.me.id);
      if (first) this._placeDivider(ol, ol.querySelector(`:scope > li[data-seq="${first.seq}"]`));
    }

    _scrollToUnread(ol) {
      const log = this.el.log;
      log.scrollTop = log.scrollHeight;
      const divider = ol.querySelector(':scope > .new-divider');
      if (divider && divider.offsetTop < log.scrollTop) {
        log.scrollTop = Math.max(0, divider.offsetTop - 16);
        this.el.jump.hidden = false;
      }
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
      e.logStart.textContent = room.messages.length
        ? `This is the beginning of #${room.name}.`
        : `#${room.name} has no messages yet. Say hello!`;
    }

    _renderTitle() {
      const total = [...this.chat.rooms.values()].reduce((n, r) => n + r.unread, 0);
      const base = this.active ? `#${this.active} · Chat` : 'Chat';
      document.title = total ? `(${total}) ${base}` : base;
    }

    _renderMembers(room) {
      const e = this.el;
      const members = [...room.people.members.values()].sort((a, b) => a.name.localeCompare(b.name));
      e.members.replaceChildren(...members.map((u) => memberItem(u, this.me)));
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

    _renderRooms() {
      if (!this.chat) return;
      const e = this.el;
      const focused = document.activeElement?.closest?.('button[data-room]')?.dataset.room;
      const joined = [...this.chat.rooms.values()];
      const mine = new Set(joined.map((r) => r.name));
      const others = this.known.map((r) => r.name).filter((n) => !mine.has(n)).sort();
      const button = (name, room) => roomItem(name, {
        joined: Boolean(room), current: name === this.active,
        unread: room && name !== this.active ? room.unread : 0,
      });
      e.joined.replaceChildren(...joined.map((r) => button(r.name, r)));
      if (!joined.length) e.joined.append(h('li', { class: 'muted' }, 'None yet'));
      e.other.replaceChildren(...others.map((n) => button(n, null)));
      e.other.hidden = !others.length;
      e.otherTitle.hidden = !others.length;
      e.roomsDot.hidden = !joined.some((r) => r.name !== this.active && r.unread);
      if (focused) e.root.querySelector(`button[data-room="${CSS.escape(focused)}"]`)?.focus();
    }

    _pickRoom(name) {
      this._drawer(null);
      this.handlers.selectRoom(name);
    }

    _drawer(which) {
      const e = this.el;
      if (which && e.root.dataset.drawer === which) which = null;
      if (which) e.root.dataset.drawer = which;
      else delete e.root.dataset.drawer;
      e.toggleRooms.setAttribute('aria-expanded', String(which === 'sidebar'));
      e.toggleMembers.setAttribute('aria-expanded', String(which === 'members'));
      e.scrim.hidden = !which;
      if (which) {
        const panel = which === 'sidebar' ? e.sidebar : e.membersPanel;
        panel.querySelector('button, input, [tabindex]')?.focus();
      }
    }

    _autosize() {
      const input = this.el.input;
      input.style.height = 'auto';
      input.style.height = `${Math.min(input.scrollHeight + 2, Math.round(window.innerHeight * 0.4))}px`;
    }

    _checkLength() {
      const n = this.el.input.value.length;
      const msg = n > MAX_BODY ? `Too long: ${n} of ${MAX_BODY} characters.` : '';
      this._fieldError(this.el.input, this.el.composerError, msg);
      return !msg;
    }

    _submit() {
      const input = this.el.input;
      if (!this.active || input.disabled) return;
      const body = input.value.replace(/\s+$/, '');
      if (!body.trim()) return;
      if (!this._checkLength()) return;
      this.handlers.send(this.active, body);
      input.value = '';
      this._autosize();
    }

    async _createRoom() {
      const e = this.el;
      const name = e.newRoomName.value.trim().toLowerCase().replace(/^#/, '').replace(/\s+/g, '-');
      if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) {
        this._fieldError(e.newRoomName, e.newRoomError,
          name ? 'Use lowercase letters, digits, “-” and “_”, starting with a letter or digit.'
            : 'Enter a room name.');
        e.newRoomName.focus();
        return;
      }
      this._fieldError(e.newRoomName, e.newRoomError, '');
      if (await this.handlers.createRoom(name)) {
        e.newRoomName.value = '';
        this._drawer(null);
      }
    }

    _fieldError(input, out, text) {
      out.textContent = text;
      if (text) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  };
}
