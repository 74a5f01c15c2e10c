// One room the user is in, kept complete on the current connection: joined (resuming
// after its last gap-free seq), fed live messages, events and acks, its gaps closed with
// `history after`, older pages fetched on demand, its unread messages counted.
// No DOM. Built by defineRoom() on the classes app.js passes in (no imports: see app.js).

const PAGE = 50;
const AFTER_PAGE = 100;
const GAP_GRACE_MS = 700; // messages from two nodes may arrive slightly out of order

/** The Room class: a RoomLog (roomlog.js) with its people (presence.js) and session state. */
export function defineRoom({ RoomLog, validMessage, toRecord, isEvent, RoomPeople }) {
  return class Room extends RoomLog {
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
      this.unread = 0;
      this.lastRead = session.storage.lastRead(name);
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

    /** The Room object of the server changed (fields missing from `info` are kept). */
    setInfo(info) {
      this.info = { ...this.info, ...info };
      if (!('muted_until' in info) && 'member' in info) delete this.info.muted_until;
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
    loadOlder() {
      if (!this.hasOlder || this.loadingOlder || this.state !== 'live') return;
      this.loadingOlder = true;
      this.session.view.roomChanged(this);
      const before = this.oldestSeq || this.contiguous + 1;
      if (!this.session.request(this, { type: 'history', room: this.name, before, limit: PAGE },
        { kind: 'older' })) {
        this.loadingOlder = false;
      }
    }

    /** Everything up to now has been seen. */
    markRead() {
      const seq = Math.max(this.lastRead, this.newestSeq);
      if (this.unread === 0 && seq === this.lastRead) return;
      this.unread = 0;
      this.lastRead = seq;
      this.session.storage.setLastRead(this.name, seq);
      this.session.view.unreadChanged(this);
    }

    /** The connection went: nothing is pending on it any more. */
    disconnected() {
      this.state = 'idle';
      this.loadingOlder = false;
      this.filling = false;
      clearTimeout(this.gapTimer);
      this.people.clearTyping();
    }

    /** The room is being left: stop its timers. */
    close() {
      clearTimeout(this.gapTimer);
      this.people.stop();
    }

    // ----- replies and live frames (routed here by chat.js) ------------------------

    /** The `joined` reply to a join with `since` (undefined: the latest page). */
    onJoined(f, since) {
      const { view, storage } = this.session;
      const messages = Array.isArray(f.messages) ? f.messages.filter(validMessage) : [];
      const lastSeq = Number.isInteger(f.last_seq) ? f.last_seq : 0;
      this.people.setMembers(f.members ?? []);
      view.membersChanged(this);
      const firstLoad = !this.loaded;
      if (since === undefined) {
        // The latest page; has_more says whether older messages exist.
        this.hasOlder = Boolean(f.has_more);
        if (firstLoad && this.lastRead === 0) {
          this.lastRead = lastSeq; // a room joined for the first time starts read
          storage.setLastRead(this.name, lastSeq);
        }
      }
      this._accept(messages, { live: !firstLoad });
      this.state = 'live';
      const resumed = since !== undefined;
      if (this.joined(messages, { lastSeq, hasMore: Boolean(f.has_more), resumed })) {
        this._fill(this.contiguous);
      }
      if (firstLoad) this._countUnread();
      view.roomChanged(this);
    }

    /** A `history` reply: an older page, or a page `after` closing a gap. */
    onHistory(f, info) {
      const view = this.session.view;
      const messages = Array.isArray(f.messages) ? f.messages.filter(validMessage) : [];
      if (info.kind === 'older') {
        this.loadingOlder = false;
        this.hasOlder = Boolean(f.has_more);
        const added = messages.filter((m) => this.add(m));
        if (added.length) view.messagesAdded(this, added, { older: true });
        view.roomChanged(this);
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
    }

    /** A `history` request was refused: try again after `retryMs`. */
    historyRefused(kind, retryMs) {
      if (kind === 'older') {
        setTimeout(() => {
          this.loadingOlder = false;
          this.session.view.roomChanged(this);
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
    }

    /** The `ack` of one of our sends. */
    onAck(f) {
      const { outbox, view } = this.session;
      const item = this.outbox.get(f.client_id);
      if (!item || !Number.isInteger(f.seq)) return;
      outbox.settle(this, f.client_id);
      // The `message` frame may come before or after the ack; whichever is second is a
      // duplicate by seq and is dropped.
      const msg = {
        room: this.name, id: f.id, seq: f.seq, user: this.session.me(), body: item.body,
        ts: Number.isInteger(f.ts) ? f.ts : Date.now(), client_id: f.client_id,
      };
      if (this.add(msg)) view.messagesAdded(this, [msg], { live: true, own: true });
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
      }
      if (!added.length) return;
      this.session.view.messagesAdded(this, added, { live });
      if (live && this.loaded) this._countUnread(added);
    }

    _countUnread(added = this.messages) {
      if (this.session.view.isReading(this.name)) {
        this.markRead();
        return;
      }
      const me = this.session.me();
      const fresh = added.filter((m) => m.seq > this.lastRead && m.user.id !== me.id
        && !isEvent(m)).length;
      if (!fresh) return;
      this.unread += fresh;
      this.session.view.unreadChanged(this);
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
