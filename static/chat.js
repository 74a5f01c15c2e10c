// Rooms, messages and the /ws protocol, without any DOM: what the client knows and
// how it stays gap-free and duplicate-free across reconnects. The view is told about
// every change through the `view` object it is given. No imports (see app.js).
//
// Invariants:
// - room.messages holds confirmed messages once each, ascending by seq (dedupe by seq).
// - room.contiguous: every seq from the oldest loaded message up to it is present, so
//   rejoining with since = contiguous can never leave a hole.
// - an outbox entry keeps its client_id for life; every resend reuses it, and the server
//   answers a repeated client_id with the original ack, so a message never doubles.

const PAGE = 50;
const AFTER_PAGE = 100;
const TYPING_EVERY_MS = 3000;
const TYPING_SHOWN_MS = 6000;
const ACK_TIMEOUT_MS = 15000;
const GAP_GRACE_MS = 700; // messages from two nodes may arrive slightly out of order
const RETRY_SOON_MS = 2000;
const MAX_IN_FLIGHT = 16; // the server refuses more than 32 unacked sends per connection

/** A client_id for idempotent sends; randomUUID needs a secure context, so fall back. */
export function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

class Room {
  constructor(name) {
    this.name = name;
    this.messages = [];
    this.bySeq = new Map();
    this.contiguous = 0;
    this.hasOlder = false;
    this.loaded = false; // a `joined` arrived at least once
    this.state = 'idle'; // idle | joining | live (joined on the current connection)
    this.loadingOlder = false;
    this.filling = false; // paging `history after` to close a gap
    this.gapTimer = null;
    this.outbox = new Map(); // client_id -> {clientId, body, ts, status, error, timer}
    this.members = new Map(); // user id -> user
    this.typing = new Map(); // user id -> {user, until}
    this.typingTimer = null;
    this.lastTypingSent = 0;
    this.unread = 0;
    this.lastRead = 0;
  }

  get newestSeq() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  get oldestSeq() {
    return this.messages.length ? this.messages[0].seq : 0;
  }

  /** Insert in seq order; returns false for a duplicate. */
  add(msg) {
    if (this.bySeq.has(msg.seq)) return false;
    this.bySeq.set(msg.seq, msg);
    const list = this.messages;
    let i = list.length;
    while (i > 0 && list[i - 1].seq > msg.seq) i -= 1; // almost always appends or prepends
    if (i === 0 && list.length && msg.seq < list[0].seq) list.unshift(msg);
    else list.splice(i, 0, msg);
    return true;
  }

  advance() {
    while (this.bySeq.has(this.contiguous + 1)) this.contiguous += 1;
  }
}

function validMessage(m) {
  return m && typeof m === 'object' && Number.isInteger(m.seq) && typeof m.body === 'string'
    && m.user && typeof m.user === 'object';
}

export class Chat {
  /**
   * @param {object} o
   * @param {{id:string,name:string,bot:boolean}} o.me
   * @param {(frame: object) => boolean} o.send  false when offline
   * @param {object} o.storage  see makeStorage in app.js
   * @param {object} o.view     receives change notifications (see view.js)
   */
  constructor({ me, send, storage, view }) {
    this.me = me;
    this._send = send;
    this.storage = storage;
    this.view = view;
    this.rooms = new Map(); // rooms the user is in, in the order they were joined
    this.online = false;
    this.refs = new Map(); // ref -> what the request was for
    this.nextRef = 1;
    this.inFlight = 0; // sends awaiting their ack on this connection
    this.pausedUntil = 0; // after rate_limited: hold sends until then
    this.pauseTimer = null;
    this.slow = false; // rate-limited lately: one send at a time until the outbox drains
  }

  // ----- user actions -------------------------------------------------------------

  /** Restore rooms and unsent messages saved by an earlier visit of this tab. */
  restore() {
    for (const name of this.storage.joinedRooms()) this._addRoom(name);
    for (const saved of this.storage.outbox()) {
      const room = this.rooms.get(saved.room);
      if (!room || room.outbox.has(saved.clientId)) continue;
      const item = { clientId: saved.clientId, body: saved.body, ts: saved.ts, status: 'queued' };
      room.outbox.set(item.clientId, item);
      this.view.pendingChanged(room, item);
    }
  }

  /** Join (if needed) and return the room. */
  join(name) {
    let room = this.rooms.get(name);
    if (!room) {
      room = this._addRoom(name);
      this._saveRooms();
      if (this.online) this._join(room);
    }
    return room;
  }

  leave(name) {
    const room = this.rooms.get(name);
    if (!room) return;
    if (this.online) this._send({ type: 'leave', room: name });
    this._dropRoom(room);
  }

  /** Queue a message; it goes out now if the room is live, else after the reconnect. */
  post(name, body) {
    const room = this.rooms.get(name);
    if (!room) return;
    const item = { clientId: newClientId(), body, ts: Date.now(), status: 'queued' };
    room.outbox.set(item.clientId, item);
    room.lastTypingSent = 0; // the message clears our "typing" for others: next key says it again
    this.view.pendingChanged(room, item, { own: true });
    this._trySend(room, item);
    this._saveOutbox();
  }

  /** Resend a failed message with its original client_id: it can never duplicate. */
  retry(name, clientId) {
    const room = this.rooms.get(name);
    const item = room?.outbox.get(clientId);
    if (!item || item.status === 'sending') return;
    item.status = 'queued';
    item.error = null;
    this.view.pendingChanged(room, item);
    this._trySend(room, item);
  }

  /** Drop a failed message the user gave up on. */
  discard(name, clientId) {
    const room = this.rooms.get(name);
    const item = room?.outbox.get(clientId);
    if (!item) return;
    clearTimeout(item.timer);
    room.outbox.delete(clientId);
    this.view.pendingRemoved(room, clientId);
    this._saveOutbox();
  }

  /** The user is typing in `name`: tell the room, at most every few seconds. */
  typing(name) {
    const room = this.rooms.get(name);
    if (!room || room.state !== 'live') return;
    const now = Date.now();
    if (now - room.lastTypingSent < TYPING_EVERY_MS) return;
    room.lastTypingSent = now;
    this._send({ type: 'typing', room: name });
  }

  loadOlder(name) {
    const room = this.rooms.get(name);
    if (!room || !room.hasOlder || room.loadingOlder || room.state !== 'live') return;
    room.loadingOlder = true;
    this.view.roomChanged(room);
    const before = room.oldestSeq || room.contiguous + 1;
    if (!this._request(room, { type: 'history', room: name, before, limit: PAGE },
      { kind: 'older' })) {
      room.loadingOlder = false;
    }
  }

  /** Everything in `name` up to now has been seen. */
  markRead(name) {
    const room = this.rooms.get(name);
    if (!room) return;
    const seq = Math.max(room.lastRead, room.newestSeq);
    if (room.unread === 0 && seq === room.lastRead) return;
    room.unread = 0;
    room.lastRead = seq;
    this.storage.setLastRead(name, seq);
    this.view.unreadChanged(room);
  }

  // ----- connection events ---------------------------------------------------------

  connected() {
    this.online = true;
    for (const room of this.rooms.values()) this._join(room);
  }

  disconnected() {
    this.online = false;
    this.refs.clear();
    this.inFlight = 0;
    for (const room of this.rooms.values()) {
      room.state = 'idle';
      room.loadingOlder = false;
      room.filling = false;
      clearTimeout(room.gapTimer);
      room.typing.clear();
      for (const item of room.outbox.values()) {
        if (item.status === 'failed') continue;
        clearTimeout(item.timer);
        item.status = 'queued'; // resent with the same client_id after the rejoin
        this.view.pendingChanged(room, item);
      }
      this.view.typingChanged(room);
      this.view.roomChanged(room);
    }
  }

  /** Route one server frame. */
  handle(f) {
    switch (f.type) {
      case 'hello':
        if (f.user) this.me = f.user;
        this.connected();
        break;
      case 'joined': this._onJoined(f); break;
      case 'message': this._onMessage(f); break;
      case 'ack': this._onAck(f); break;
      case 'history': this._onHistory(f); break;
      case 'typing': this._onTyping(f); break;
      case 'presence': this._onPresence(f); break;
      case 'error': this._onError(f); break;
      default: break; // pong, left, and frame types added later
    }
  }

  // ----- internals -----------------------------------------------------------------

  _addRoom(name) {
    const room = new Room(name);
    room.lastRead = this.storage.lastRead(name);
    this.rooms.set(name, room);
    this.view.roomAdded(room);
    return room;
  }

  _dropRoom(room) {
    for (const item of room.outbox.values()) {
      clearTimeout(item.timer);
      this._release(item);
    }
    clearTimeout(room.gapTimer);
    clearTimeout(room.typingTimer);
    this.rooms.delete(room.name);
    this._saveRooms();
    this._saveOutbox();
    this.view.roomRemoved(room);
  }

  _saveRooms() {
    this.storage.setJoinedRooms([...this.rooms.keys()]);
  }

  _saveOutbox() {
    const items = [];
    for (const room of this.rooms.values()) {
      for (const { clientId, body, ts } of room.outbox.values()) {
        items.push({ room: room.name, clientId, body, ts });
      }
    }
    this.storage.setOutbox(items);
  }

  _request(room, frame, info) {
    const ref = this.nextRef++;
    this.refs.set(ref, { room: room.name, ...info });
    if (this._send({ ...frame, ref })) return true;
    this.refs.delete(ref);
    return false;
  }

  _join(room) {
    room.state = 'joining';
    const since = room.loaded && room.contiguous > 0 ? room.contiguous : undefined;
    const frame = { type: 'join', room: room.name };
    if (since !== undefined) frame.since = since;
    this._request(room, frame, { kind: 'join', since });
    this.view.roomChanged(room);
  }

  _onJoined(f) {
    const room = this.rooms.get(f.room);
    if (!room) return;
    const info = this.refs.get(f.ref);
    this.refs.delete(f.ref);
    const since = info?.since;
    const messages = Array.isArray(f.messages) ? f.messages.filter(validMessage) : [];
    const lastSeq = Number.isInteger(f.last_seq) ? f.last_seq : 0;
    room.members = new Map((f.members ?? []).map((u) => [u.id, u]));
    this.view.membersChanged(room);
    const firstLoad = !room.loaded;
    if (since === undefined) {
      // The latest page; has_more says whether older messages exist.
      room.hasOlder = Boolean(f.has_more);
      if (firstLoad && room.lastRead === 0) {
        room.lastRead = lastSeq; // a room joined for the first time starts read
        this.storage.setLastRead(room.name, lastSeq);
      }
    }
    this._accept(room, messages, { live: !firstLoad });
    room.loaded = true;
    room.state = 'live';
    // A page holds every message in its range, so contiguous may jump to its end.
    room.contiguous = Math.max(room.contiguous, ...messages.map((m) => m.seq));
    if (!f.has_more || since === undefined) room.contiguous = Math.max(room.contiguous, lastSeq);
    room.advance();
    if (since !== undefined && f.has_more) this._fill(room, room.contiguous);
    if (firstLoad) this._countUnread(room);
    this.view.roomChanged(room);
    this._pump();
  }

  /** Page `history after` until the server says there is nothing newer. */
  _fill(room, after) {
    if (room.state !== 'live') return;
    clearTimeout(room.gapTimer);
    room.filling = true;
    const frame = { type: 'history', room: room.name, after, limit: AFTER_PAGE };
    if (!this._request(room, frame, { kind: 'after', after })) room.filling = false;
  }

  _onHistory(f) {
    const room = this.rooms.get(f.room);
    const info = this.refs.get(f.ref);
    this.refs.delete(f.ref);
    if (!room || !info) return;
    const messages = Array.isArray(f.messages) ? f.messages.filter(validMessage) : [];
    if (info.kind === 'older') {
      room.loadingOlder = false;
      room.hasOlder = Boolean(f.has_more);
      const added = messages.filter((m) => room.add(m));
      if (added.length) this.view.messagesAdded(room, added, { older: true });
      this.view.roomChanged(room);
      return;
    }
    // kind 'after': closing a gap after a reconnect or a missed live message.
    this._accept(room, messages, { live: true });
    const last = Math.max(0, ...messages.map((m) => m.seq));
    room.contiguous = Math.max(room.contiguous, last);
    if (!f.has_more && !messages.length) room.contiguous = Math.max(room.contiguous, room.newestSeq);
    room.advance();
    if (f.has_more && last > info.after) {
      this._fill(room, room.contiguous);
      return;
    }
    room.filling = false;
    this._checkGap(room);
    this.view.roomChanged(room);
  }

  /** Add server messages (deduped), settle matching outbox entries, tell the view. */
  _accept(room, messages, { live }) {
    const added = [];
    for (const m of messages) {
      this._settle(room, m.client_id, m.user);
      if (room.add(m)) added.push(m);
    }
    if (!added.length) return;
    this.view.messagesAdded(room, added, { live });
    if (live && room.loaded) this._countUnread(room, added);
  }

  _settle(room, clientId, user) {
    if (!clientId || (user && user.id !== this.me.id)) return;
    const item = room.outbox.get(clientId);
    if (!item) return;
    clearTimeout(item.timer);
    this._release(item);
    room.outbox.delete(clientId);
    this.view.pendingRemoved(room, clientId);
    this._saveOutbox();
    this._pump();
  }

  /** An item stops waiting for its ack (acked, failed, or the connection went). */
  _release(item) {
    if (item.status === 'sending') this.inFlight = Math.max(0, this.inFlight - 1);
  }

  /** Send queued messages while there is room in the in-flight window. */
  _pump() {
    if (!this.online || Date.now() < this.pausedUntil) return;
    for (const room of this.rooms.values()) {
      if (room.state !== 'live') continue;
      for (const item of room.outbox.values()) {
        if (this.inFlight >= this._window()) return;
        if (item.status === 'queued') this._trySend(room, item);
      }
    }
  }

  /** How many sends may await their ack at once. */
  _window() {
    if (this.slow && ![...this.rooms.values()].some((r) => r.outbox.size)) this.slow = false;
    return this.slow ? 1 : MAX_IN_FLIGHT;
  }

  _countUnread(room, added = room.messages) {
    if (this.view.isReading(room.name)) {
      this.markRead(room.name);
      return;
    }
    const fresh = added.filter((m) => m.seq > room.lastRead && m.user.id !== this.me.id).length;
    if (!fresh) return;
    room.unread += fresh;
    this.view.unreadChanged(room);
  }

  _onMessage(f) {
    const room = this.rooms.get(f.room);
    if (!room || !validMessage(f)) return;
    const msg = {
      room: f.room, id: f.id, seq: f.seq, user: f.user, body: f.body, ts: f.ts,
      client_id: f.client_id,
    };
    if (room.typing.delete(f.user.id)) this.view.typingChanged(room);
    this._accept(room, [msg], { live: true });
    room.advance();
    this._checkGap(room);
  }

  /** A seq beyond contiguous + 1 means something was missed: fetch it (after a grace). */
  _checkGap(room) {
    if (room.state !== 'live' || room.filling || room.newestSeq <= room.contiguous) return;
    clearTimeout(room.gapTimer);
    room.gapTimer = setTimeout(() => {
      room.advance();
      if (room.state === 'live' && !room.filling && room.newestSeq > room.contiguous) {
        this._fill(room, room.contiguous);
      }
    }, GAP_GRACE_MS);
  }

  _onAck(f) {
    const room = this.rooms.get(f.room);
    this.refs.delete(f.ref);
    const item = room?.outbox.get(f.client_id);
    if (!item || !Number.isInteger(f.seq)) return;
    this._settle(room, f.client_id, null);
    // The `message` frame may come before or after the ack; whichever is second is a
    // duplicate by seq and is dropped.
    const msg = {
      room: room.name, id: f.id, seq: f.seq, user: this.me, body: item.body,
      ts: Number.isInteger(f.ts) ? f.ts : Date.now(), client_id: f.client_id,
    };
    if (room.add(msg)) this.view.messagesAdded(room, [msg], { live: true, own: true });
    room.advance();
    this._checkGap(room);
  }

  _trySend(room, item) {
    if (!this.online || room.state !== 'live' || this.inFlight >= this._window()
        || Date.now() < this.pausedUntil) {
      if (item.status !== 'queued') {
        item.status = 'queued';
        this.view.pendingChanged(room, item);
      }
      return;
    }
    const frame = { type: 'send', room: room.name, body: item.body, client_id: item.clientId };
    if (!this._request(room, frame, { kind: 'send', clientId: item.clientId })) return;
    item.status = 'sending';
    this.inFlight += 1;
    clearTimeout(item.timer);
    item.timer = setTimeout(() => {
      if (item.status !== 'sending') return;
      this._fail(room, item, 'No answer from the server.');
    }, ACK_TIMEOUT_MS);
    this.view.pendingChanged(room, item);
  }

  _fail(room, item, error) {
    clearTimeout(item.timer);
    this._release(item);
    item.status = 'failed';
    item.error = error;
    this.view.pendingChanged(room, item);
    this._pump();
  }

  _onTyping(f) {
    const room = this.rooms.get(f.room);
    if (!room || !f.user || f.user.id === this.me.id) return;
    room.typing.set(f.user.id, { user: f.user, until: Date.now() + TYPING_SHOWN_MS });
    this._expireTyping(room);
  }

  _expireTyping(room) {
    clearTimeout(room.typingTimer);
    const now = Date.now();
    let next = Infinity;
    for (const [id, t] of room.typing) {
      if (t.until <= now) room.typing.delete(id);
      else next = Math.min(next, t.until);
    }
    this.view.typingChanged(room);
    if (next !== Infinity) room.typingTimer = setTimeout(() => this._expireTyping(room), next - now);
  }

  _onPresence(f) {
    const room = this.rooms.get(f.room);
    if (!room || !f.user) return;
    if (f.status === 'online') room.members.set(f.user.id, f.user);
    else if (f.status === 'offline') {
      room.members.delete(f.user.id);
      room.typing.delete(f.user.id);
      this.view.typingChanged(room);
    }
    this.view.membersChanged(room);
  }

  _onError(f) {
    const info = f.ref !== undefined ? this.refs.get(f.ref) : undefined;
    this.refs.delete(f.ref);
    const room = info && this.rooms.get(info.room);
    const retryMs = (Number(f.retry_after) || 0) * 1000 || RETRY_SOON_MS;
    if (!info || !room) {
      // Unanswered frames without a ref are typing notices: not worth a notice.
      if (f.code !== 'rate_limited' && f.code !== 'forbidden') this.view.notice(friendlyError(f));
      return;
    }
    switch (info.kind) {
      case 'send': {
        const item = room.outbox.get(info.clientId ?? f.client_id);
        if (!item) break;
        if (f.code === 'rate_limited') {
          // Not a failure: the server said when to come back. Hold every send till
          // then (keeps their order) and resend with the same client_id.
          clearTimeout(item.timer);
          this._release(item);
          item.status = 'queued';
          this.pausedUntil = Math.max(this.pausedUntil, Date.now() + retryMs);
          this.slow = true;
          clearTimeout(this.pauseTimer);
          this.pauseTimer = setTimeout(() => this._pump(), this.pausedUntil - Date.now() + 10);
          this.view.pendingChanged(room, item);
        } else {
          this._fail(room, item, friendlyError(f));
        }
        break;
      }
      case 'join':
        if (f.code === 'not_found' || f.code === 'forbidden') {
          this.view.notice(`Cannot open #${room.name}: ${f.message || f.code}`);
          this._dropRoom(room);
        } else {
          room.state = 'idle';
          setTimeout(() => {
            if (this.online && room.state === 'idle' && this.rooms.get(room.name) === room) {
              this._join(room);
            }
          }, retryMs);
        }
        break;
      case 'older':
        setTimeout(() => {
          room.loadingOlder = false;
          this.view.roomChanged(room);
        }, retryMs);
        break;
      case 'after':
        room.filling = false;
        setTimeout(() => this._checkGap(room), retryMs);
        break;
      default:
        break;
    }
  }
}

/** An error frame as a sentence for people. */
export function friendlyError(f) {
  switch (f.code) {
    case 'rate_limited':
      return f.retry_after
        ? `Sending too fast. Wait ${Math.ceil(Number(f.retry_after))} s and retry.`
        : 'Sending too fast. Wait a moment and retry.';
    case 'too_large':
      return 'Message is too long (4000 characters at most).';
    case 'unavailable':
      return 'The server cannot store messages right now.';
    case 'forbidden':
      return 'You are not allowed to do that here.';
    default:
      return f.message ? String(f.message) : 'Something went wrong.';
  }
}
