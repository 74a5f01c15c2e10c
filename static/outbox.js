// Messages the user wrote that the server has not confirmed yet, and their edits,
// deletes and reactions (§19): sent in order within an in-flight window, held while
// rate-limited or while the server cannot store (`unavailable`), resent after a
// reconnect (forced when an ack does not come), kept across reloads of this tab. No DOM.
// No imports (see app.js).
//
// Invariant: an entry keeps its client_id for life; every resend reuses it, and the
// server answers a repeated client_id with the original ack, so a message never doubles
// and a change is never applied twice.
//
// An entry is {clientId, kind, body, ts, status, ...}: kind 'send' (with replyTo), or
// 'edit' (seq, body), 'delete' (seq), 'react' (seq, emoji, on). A send may carry
// `attachments`: the file objects of uploads (§21), sent as their ids; kept whole so
// that the pending message shows them, and resent with the same client_id like the
// rest (the server attaches a file to one message only). Only sends are shown
// as pending messages; a change that fails is dropped with a notice.
//
// What a resend can fix is resent, with no end (§12): no answer (the connection is
// presumed dead and replaced), `unavailable` (after a growing, capped backoff),
// `rate_limited`. Only a refusal a resend cannot change (bad_request, too_large,
// not_found, forbidden...) makes a send `failed`, for the user to retry or discard.

// The server answers every frame it reads within 5 s (`unavailable` if its store is
// slow), so 15 s of silence means the connection is dead though it looks open.
const ACK_TIMEOUT_MS = 15000;
const UNAVAILABLE_BASE_MS = 1000; // backoff after `unavailable`: 1 s, 2 s, 4 s... (jittered)
const UNAVAILABLE_MAX_MS = 30000;
const MAX_IN_FLIGHT = 16; // the server refuses more than 32 unacked sends per connection
const CHANGE_WORDS = { edit: 'Edit', delete: 'Delete', react: 'Reaction' };

/** A client_id for idempotent sends; randomUUID needs a secure context, so fall back. */
export function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export class Outbox {
  /**
   * @param {object} o
   * @param {Map<string, object>} o.rooms  the chat's rooms; each has a `state` and an
   *        `outbox` Map: client_id -> {clientId, body, ts, status, error, timer}
   * @param {(room: object, frame: object, info: object) => boolean} o.request  sends a
   *        frame with a ref, remembering `info` for the reply; false when offline
   * @param {() => boolean} o.isOnline
   * @param {object} o.storage  see makeStorage in storage.js
   * @param {object} o.view     told of every change to an entry (see view.js)
   * @param {() => void} [o.reconnect]  replace the connection (an ack did not come)
   */
  constructor({ rooms, request, isOnline, storage, view, reconnect = null }) {
    Object.assign(this, { rooms, request, isOnline, storage, view, reconnect });
    this.inFlight = 0; // sends awaiting their ack on this connection
    this.pausedUntil = 0; // after rate_limited or unavailable: hold sends until then
    this.pauseTimer = null;
    this.slow = false; // refused lately: one send at a time until the outbox drains
    this.unplaced = null; // saved entries whose room is not known yet (null: not read)
  }

  /**
   * Put back the unsent messages this tab saved, in the rooms they belong to. Entries
   * of rooms not known yet (the room list has not loaded) wait, and are kept by save(),
   * until a call with `listed` (the server's list of the user's rooms is in `rooms`):
   * then those of rooms the user is no longer in are dropped.
   */
  restore({ listed = false } = {}) {
    this.unplaced ??= this.storage.outbox();
    const before = this.unplaced.length;
    this.unplaced = this.unplaced.filter((saved) => {
      const room = this.rooms.get(saved.room);
      if (!room) return !listed;
      if (room.outbox.has(saved.clientId)) return false;
      const item = { ...saved, status: 'queued' };
      delete item.room;
      room.outbox.set(item.clientId, item);
      this._changed(room, item);
      return false;
    });
    if (this.unplaced.length !== before) this.save();
    this.pump();
  }

  /** Queue a message (with the file objects of `attachments`, if any); it goes out now
   *  if the room is live, else after the reconnect. */
  post(room, body, replyTo = null, attachments = []) {
    const item = { clientId: newClientId(), kind: 'send', body, ts: Date.now(), status: 'queued' };
    if (Number.isInteger(replyTo)) item.replyTo = replyTo;
    if (attachments.length) item.attachments = attachments;
    room.outbox.set(item.clientId, item);
    this.view.pendingChanged(room, item, { own: true });
    this._trySend(room, item);
    this.save();
  }

  /** Queue a change to a message: {kind: 'edit'|'delete'|'react', seq, body?, emoji?, on?}. */
  change(room, change) {
    const item = { clientId: newClientId(), body: '', ...change, ts: Date.now(), status: 'queued' };
    room.outbox.set(item.clientId, item);
    this._trySend(room, item);
    this.save();
  }

  /** Tell the view about a pending send (changes are not drawn as messages). */
  _changed(room, item, opts) {
    if (!item.kind || item.kind === 'send') this.view.pendingChanged(room, item, opts);
  }

  /** Resend a failed message with its original client_id: it can never duplicate. */
  retry(room, clientId) {
    const item = room.outbox.get(clientId);
    if (!item || item.status === 'sending') return;
    item.status = 'queued';
    item.error = null;
    item.note = null;
    this._changed(room, item);
    this._trySend(room, item);
  }

  /** Drop a failed message the user gave up on. */
  discard(room, clientId) {
    const item = room.outbox.get(clientId);
    if (!item) return;
    clearTimeout(item.timer);
    room.outbox.delete(clientId);
    if (!item.kind || item.kind === 'send') this.view.pendingRemoved(room, clientId);
    this.save();
  }

  /** The server has the message with this client_id (its ack or the message itself). */
  settle(room, clientId) {
    const item = clientId && room.outbox.get(clientId);
    if (!item) return;
    clearTimeout(item.timer);
    this._release(item);
    room.outbox.delete(clientId);
    this.view.pendingRemoved(room, clientId);
    this.save();
    this.pump();
  }

  /** Not a failure: the server said when to come back. Hold every send till then (keeps
   *  their order) and resend with the same client_id. */
  rateLimited(room, clientId, retryMs) {
    this._requeue(room, clientId, () => retryMs);
  }

  /** Back in the queue, unsent; every send is held for `wait(item)` ms. */
  _requeue(room, clientId, wait) {
    const item = room.outbox.get(clientId);
    if (!item) return;
    clearTimeout(item.timer);
    this._release(item);
    item.status = 'queued';
    this._pause(wait(item));
    this._changed(room, item);
  }

  /** Hold every send for `ms`, then pump one at a time. */
  _pause(ms) {
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + ms);
    this.slow = true;
    clearTimeout(this.pauseTimer);
    this.pauseTimer = setTimeout(() => this.pump(), this.pausedUntil - Date.now() + 10);
  }

  /** The server could not store it now (`unavailable`): not a failure either. Resend
   *  with the same client_id after a backoff that grows with each refusal of this
   *  entry; every send waits too (keeps their order), then they go one at a time. */
  unavailable(room, clientId, note) {
    this._requeue(room, clientId, (item) => {
      item.note = note;
      item.refusals = (item.refusals ?? 0) + 1;
      const cap = Math.min(UNAVAILABLE_MAX_MS, UNAVAILABLE_BASE_MS * 2 ** (item.refusals - 1));
      return cap / 2 + Math.random() * (cap / 2);
    });
  }

  /** The server refused the message for good: the user may retry or discard it. */
  refused(room, clientId, error) {
    const item = room.outbox.get(clientId);
    if (item) this._fail(room, item, error);
  }

  /** The connection went: nothing is in flight any more. */
  disconnected() {
    this.inFlight = 0;
  }

  /** Everything not failed in `room` (unanswered, held after `unavailable` or
   *  rate_limited, waiting) waits for the rejoin, to go out with its client_id. */
  requeue(room) {
    for (const item of room.outbox.values()) {
      if (item.status === 'failed') continue;
      clearTimeout(item.timer);
      item.status = 'queued';
      this._changed(room, item);
    }
  }

  /** The room is being left: its entries stop waiting for acks. */
  forget(room) {
    for (const item of room.outbox.values()) {
      clearTimeout(item.timer);
      this._release(item);
    }
  }

  /** Send queued messages while there is room in the in-flight window. */
  pump() {
    if (!this.isOnline() || Date.now() < this.pausedUntil) return;
    for (const room of this.rooms.values()) {
      if (room.state !== 'live') continue;
      for (const item of room.outbox.values()) {
        if (this.inFlight >= this._window()) return;
        if (item.status === 'queued') this._trySend(room, item);
      }
    }
  }

  /** Keep every room's unsent messages for a reload of this tab, with those restore()
   *  has not placed yet. */
  save() {
    const items = [...(this.unplaced ?? [])];
    for (const room of this.rooms.values()) {
      for (const { status, error, timer, note, refusals, ...item } of room.outbox.values()) {
        items.push({ room: room.name, ...item });
      }
    }
    this.storage.setOutbox(items);
  }

  /** An item stops waiting for its ack (acked, failed, or the connection went). */
  _release(item) {
    if (item.status === 'sending') this.inFlight = Math.max(0, this.inFlight - 1);
  }

  /** How many sends may await their ack at once. */
  _window() {
    if (this.slow && ![...this.rooms.values()].some((r) => r.outbox.size)) this.slow = false;
    return this.slow ? 1 : MAX_IN_FLIGHT;
  }

  _trySend(room, item) {
    if (!this.isOnline() || room.state !== 'live' || this.inFlight >= this._window()
        || Date.now() < this.pausedUntil) {
      if (item.status !== 'queued') {
        item.status = 'queued';
        this._changed(room, item);
      }
      return;
    }
    const frame = { type: item.kind ?? 'send', room: room.name, client_id: item.clientId };
    if (frame.type === 'send' || frame.type === 'edit') frame.body = item.body;
    if (frame.type !== 'send') frame.seq = item.seq;
    if (frame.type === 'send' && Number.isInteger(item.replyTo)) frame.reply_to = item.replyTo;
    if (frame.type === 'send' && item.attachments?.length) {
      frame.attachments = item.attachments.map((f) => f.id);
    }
    if (frame.type === 'react') {
      frame.emoji = item.emoji;
      frame.on = item.on !== false;
    }
    if (!this.request(room, frame, { kind: 'send', clientId: item.clientId })) return;
    item.status = 'sending';
    this.inFlight += 1;
    clearTimeout(item.timer);
    item.timer = setTimeout(() => this._unanswered(room, item), ACK_TIMEOUT_MS);
    this._changed(room, item);
  }

  /** No ack in time: the connection is presumably dead though it looks open. Keep the
   *  entry and replace the connection; the rejoin resends it with its client_id, and
   *  the server answers a resend of what it stored with the original ack. */
  _unanswered(room, item) {
    if (item.status !== 'sending') return;
    if (this.reconnect) {
      this.reconnect(); // disconnected() and requeue() follow: every entry waits
    } else {
      this._release(item);
      item.status = 'queued';
      this._changed(room, item);
      this.pump();
    }
  }

  _fail(room, item, error) {
    clearTimeout(item.timer);
    this._release(item);
    if (item.kind && item.kind !== 'send') {
      // A change that cannot be made is not worth a retry button: say so and drop it.
      room.outbox.delete(item.clientId);
      this.save();
      this.view.notice(`${CHANGE_WORDS[item.kind] ?? 'Change'} failed: ${error}`);
      this.pump();
      return;
    }
    item.status = 'failed';
    item.error = error;
    this.view.pendingChanged(room, item);
    this.pump();
  }
}
