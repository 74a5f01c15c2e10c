// One room the user is in, kept complete on the current connection: joined (resuming
// after its last gap-free seq), fed live messages, events and acks, its gaps closed with
// `history after`, older pages fetched on demand, its unread messages counted.
// No DOM. Built by defineRoom() on the classes app.js passes in (no imports: see app.js).

const PAGE = 50;
const AFTER_PAGE = 100;
const GAP_GRACE_MS = 700; // messages from two nodes may arrive slightly out of order
const REACH_PAGE = 100;
const REACH_MAX_PAGES = 30; // a message further back than this is not paged to

/** The Room class: a RoomLog (roomlog.js) with its read state (reading.js), its people
 *  (presence.js) and session state. */
export function defineRoom({
  RoomLog, validMessage, toRecord, isEvent, fold, RoomPeople, withReading,
}) {
  return class Room extends withReading(RoomLog, { isEvent }) {
    /**
     * @param {string} name
     * @param {object} session  what the room needs from the chat (see chat.js):
     *        request(room, frame, info) -> false when offline, me() -> the user,
     *        view, storage, outbox
     */
    constructor(name, session) {
      super();
      this.name = name;
      this.session = session;
      this.state = 'idle'; // idle | joining | live (joined on the current connection)
      this.loadingOlder = false;
      this.filling = false; // paging `history after` to close a gap
      this.gapTimer = null;
      this.outbox = new Map(); // client_id -> entry (see outbox.js)
      this.people = new RoomPeople(() => session.view.typingChanged(this));
      this.extra = new Map(); // seq -> a message fetched alone (a reply's original)
      this.peeking = new Set();
      this.waiters = []; // [{test, resolve}]: see until()
      this.names = new Map(); // user id -> name, of everyone seen here (reaction tooltips)
      // The server's Room object (kind, title, topic, role, archived, muted_until,
      // members of a DM); see chat.js.
      this.info = { name, kind: 'public', title: name, topic: '', role: null, archived: false };
    }

    get kind() {
      return this.info.kind;
    }

    /** How the room is named on screen: "#title", or the other people of a DM. */
    get label() {
      if (this.info.kind !== 'dm') return `#${this.info.title || this.name}`;
      const me = this.session.me();
      const others = (this.info.members ?? []).filter((u) => u.id !== me.id).map((u) => u.name);
      return others.length ? others.join(', ') : 'Direct message';
    }

    /** The Room object of the server changed (fields missing from `info` are kept);
     *  the read state of GET /api/rooms is taken unless this client knows better. */
    setInfo(info) {
      const { last_read: lastRead, unread, mentions, ...rest } = info;
      this.info = { ...this.info, ...rest };
      if (!('muted_until' in info) && 'member' in info) delete this.info.muted_until;
      if (Number.isInteger(lastRead)) this._readState(lastRead, unread, mentions);
    }

    /** Remember the names of these users (authors, members, actors of events). */
    remember(users) {
      for (const u of users) if (u && typeof u.id === 'string' && u.name) this.names.set(u.id, u.name);
    }

    /** A message of the room held by this client (in the log, or fetched alone). */
    find(seq) {
      return this.bySeq.get(seq) ?? this.extra.get(seq);
    }

    /** Resolve once `test()` holds, checked after every change to the room. */
    until(test) {
      if (test()) return Promise.resolve();
      return new Promise((resolve) => this.waiters.push({ test, resolve }));
    }

    _wake() {
      this.waiters = this.waiters.filter((w) => {
        if (!w.test()) return true;
        w.resolve();
        return false;
      });
    }

    /** Whether `m` mentions the user (by name or the whole room). */
    /** Fetch one message that is not in the log (the original of a reply), once. */
    peek(seq) {
      if (this.find(seq) || this.peeking.has(seq) || this.state !== 'live') return;
      this.peeking.add(seq);
      if (!this.session.request(this, { type: 'history', room: this.name, before: seq + 1, limit: 1 },
        { kind: 'peek', seq })) this.peeking.delete(seq);
    }

    /** Page back until the log holds `seq` (or the room's start); resolves to whether
     *  it is held. */
    async reach(seq) {
      for (let page = 0; page < REACH_MAX_PAGES; page += 1) {
        if (this.bySeq.has(seq) || !this.hasOlder || this.oldestSeq <= seq) break;
        await this.until(() => this.state === 'live' && !this.loadingOlder);
        this.loadOlder(REACH_PAGE);
        await this.until(() => !this.loadingOlder);
      }
      return this.bySeq.has(seq);
    }

    /** Join on this connection, resuming after the last gap-free seq if there is one. */
    join() {
      this.state = 'joining';
      const since = this.resumePoint;
      const frame = { type: 'join', room: this.name };
      if (since !== undefined) frame.since = since;
      this.session.request(this, frame, { kind: 'join', since });
      this.session.view.roomChanged(this);
    }

    /** Ask for the page before the oldest message loaded. */
    loadOlder(limit = PAGE) {
      if (!this.hasOlder || this.loadingOlder || this.state !== 'live') return;
      this.loadingOlder = true;
      this.session.view.roomChanged(this);
      const before = this.oldestSeq || this.contiguous + 1;
      if (!this.session.request(this, { type: 'history', room: this.name, before, limit },
        { kind: 'older' })) {
        this.loadingOlder = false;
      }
    }

    /** The connection went: nothing is pending on it any more. */
    disconnected() {
      this.state = 'idle';
      this.loadingOlder = false;
      this.filling = false;
      this.peeking.clear();
      clearTimeout(this.gapTimer);
      clearTimeout(this.readTimer);
      this.readTimer = null;
      this.readSent = 0; // said again after the rejoin, if still ahead of the server
      this.people.clearTyping();
      this._wake();
    }

    /** The room is being left: stop its timers. */
    close() {
      clearTimeout(this.gapTimer);
      clearTimeout(this.readTimer);
      this.people.stop();
    }

    // ----- replies and live frames (routed here by chat.js) ------------------------

    /** The `joined` reply to a join with `since` (undefined: the latest page). */
    onJoined(f, since) {
      const { view } = this.session;
      const messages = Array.isArray(f.messages) ? f.messages.filter(validMessage) : [];
      const lastSeq = Number.isInteger(f.last_seq) ? f.last_seq : 0;
      this.people.setMembers(f.members ?? []);
      this.remember(f.members ?? []);
      view.membersChanged(this);
      const firstLoad = !this.loaded;
      if (since === undefined) {
        // The latest page; has_more says whether older messages exist.
        this.hasOlder = Boolean(f.has_more);
      }
      this._accept(messages, { live: !firstLoad });
      this.state = 'live';
      const resumed = since !== undefined;
      if (this.joined(messages, { lastSeq, hasMore: Boolean(f.has_more), resumed })) {
        this._fill(this.contiguous);
      }
      if (Number.isInteger(f.last_read)) {
        // The server counted at the moment it read the page: its word replaces ours.
        this.lastRead = Math.min(this.lastRead, f.last_read);
        this._readState(f.last_read, f.unread, f.mentions);
      }
      if (this.lastRead > this.readSent) this._sendRead();
      if (view.isReading(this.name)) this.markRead();
      view.roomChanged(this);
      this._wake();
    }

    /** A `history` reply: an older page, or a page `after` closing a gap. */
    onHistory(f, info) {
      const view = this.session.view;
      const messages = Array.isArray(f.messages) ? f.messages.filter(validMessage) : [];
      if (info.kind === 'peek') {
        this.peeking.delete(info.seq);
        const m = messages.find((x) => x.seq === info.seq);
        if (m && !this.find(m.seq)) {
          this.extra.set(m.seq, m);
          view.messagesChanged(this, [m]);
        }
        return;
      }
      if (info.kind === 'older') {
        this.loadingOlder = false;
        this.hasOlder = Boolean(f.has_more);
        const added = messages.filter((m) => this.add(m));
        for (const m of added) this.remember([m.user, m.actor, m.target]);
        const changed = this._fold(added);
        if (added.length) view.messagesAdded(this, added, { older: true });
        if (changed.length) view.messagesChanged(this, changed);
        view.roomChanged(this);
        this._wake();
        return;
      }
      // kind 'after': closing a gap after a reconnect or a missed live message.
      this._accept(messages, { live: true });
      const last = this.filled(messages, { hasMore: Boolean(f.has_more) });
      if (f.has_more && last > info.after) {
        this._fill(this.contiguous);
        return;
      }
      this.filling = false;
      this._checkGap();
      view.roomChanged(this);
      this._wake();
    }

    /** A `history` request was refused: try again after `retryMs`. */
    historyRefused(kind, retryMs) {
      if (kind === 'older') {
        setTimeout(() => {
          this.loadingOlder = false;
          this.session.view.roomChanged(this);
          this._wake();
        }, retryMs);
      } else {
        this.filling = false;
        setTimeout(() => this._checkGap(), retryMs);
      }
    }

    /** A live `message` or `event` frame. */
    onMessage(f) {
      if (!validMessage(f)) return;
      const msg = toRecord(f);
      if (!isEvent(msg)) this.people.messageFrom(f.user);
      this._accept([msg], { live: true });
      this.advance();
      this._checkGap();
      this._wake();
    }

    /** The `ack` of one of our sends. */
    onAck(f) {
      const { outbox, view } = this.session;
      const item = this.outbox.get(f.client_id);
      if (!item || !Number.isInteger(f.seq)) return;
      outbox.settle(this, f.client_id);
      // An edit, delete or reaction takes effect through its event, which every socket
      // of the room receives (and a rejoin replays).
      if (item.kind && item.kind !== 'send') return;
      // A resend of something stored long ago (a restored outbox entry) is answered with
      // its original, older seq: below the loaded range it would stand alone, and paging
      // back from it would skip what lies between. It arrives with its page instead.
      if (f.seq < this.oldestSeq && this.hasOlder) return;
      // The `message` frame may come before or after the ack; whichever is second is a
      // duplicate by seq and is dropped.
      const msg = {
        room: this.name, id: f.id, seq: f.seq, user: this.session.me(), body: item.body,
        ts: Number.isInteger(f.ts) ? f.ts : Date.now(), client_id: f.client_id,
      };
      if (Number.isInteger(item.replyTo)) msg.reply_to = item.replyTo;
      // The file objects the upload answered: what the `message` frame carries too.
      if (item.attachments?.length) msg.attachments = item.attachments;
      if (this.add(msg)) {
        view.messagesAdded(this, [msg], { live: true, own: true });
        const changed = this._fold([msg]);
        if (changed.length) view.messagesChanged(this, changed);
      }
      this.advance();
      this._checkGap();
    }

    // ----- internals ---------------------------------------------------------------

    /** Add server messages (deduped), settle matching outbox entries, tell the view. */
    _accept(messages, { live }) {
      const me = this.session.me();
      const added = [];
      for (const m of messages) {
        if (m.user.id === me.id) this.session.outbox.settle(this, m.client_id);
        if (this.add(m)) added.push(m);
        this.remember([m.user, m.actor, m.target]);
      }
      if (!added.length) return;
      const changed = this._fold(added);
      this.session.view.messagesAdded(this, added, { live });
      if (changed.length) this.session.view.messagesChanged(this, changed);
      if (live && this.loaded) this._countUnread(added);
    }

    /** Fold records just added into the messages they change (§19); the changed ones. */
    _fold(added) {
      const changed = new Set();
      const find = (seq) => this.find(seq);
      for (const m of added) {
        const hit = fold(m, find);
        if (hit) changed.add(hit);
      }
      return [...changed];
    }

    /** A seq beyond contiguous + 1 means something was missed: fetch it (after a grace). */
    _checkGap() {
      if (this.state !== 'live' || this.filling || !this.hasGap) return;
      clearTimeout(this.gapTimer);
      this.gapTimer = setTimeout(() => {
        this.advance();
        if (this.state === 'live' && !this.filling && this.hasGap) this._fill(this.contiguous);
      }, GAP_GRACE_MS);
    }

    /** Page `history after` until the server says there is nothing newer. */
    _fill(after) {
      if (this.state !== 'live') return;
      clearTimeout(this.gapTimer);
      this.filling = true;
      const frame = { type: 'history', room: this.name, after, limit: AFTER_PAGE };
      if (!this.session.request(this, frame, { kind: 'after', after })) this.filling = false;
    }
  };
}
