// Messages the user wrote that the server has not confirmed yet, and their edits,
// deletes and reactions (§19): sent in order within an in-flight window, held while
// rate-limited, failed after a silent timeout, kept across reloads of this tab. No DOM.
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

const ACK_TIMEOUT_MS = 15000;
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
   */
  constructor({ rooms, request, isOnline, storage, view }) {
    Object.assign(this, { rooms, request, isOnline, storage, view });
    this.inFlight = 0; // sends awaiting their ack on this connection
    this.pausedUntil = 0; // after rate_limited: hold sends until then
    this.pauseTimer = null;
    this.slow = false; // rate-limited lately: one send at a time until the outbox drains
  }

  /** Put back the unsent messages this tab saved, in the rooms they belong to. */
  restore() {
    for (const saved of this.storage.outbox()) {
      const room = this.rooms.get(saved.room);
      if (!room || room.outbox.has(saved.clientId)) continue;
      const item = { ...saved, status: 'queued' };
      delete item.room;
      room.outbox.set(item.clientId, item);
      this._changed(room, item);
    }
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
    const item = room.outbox.get(clientId);
    if (!item) return;
    clearTimeout(item.timer);
    this._release(item);
    item.status = 'queued';
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + retryMs);
    this.slow = true;
    clearTimeout(this.pauseTimer);
    this.pauseTimer = setTimeout(() => this.pump(), this.pausedUntil - Date.now() + 10);
    this._changed(room, item);
  }

  /** The server refused the message: the user may retry or discard it. */
  refused(room, clientId, error) {
    const item = room.outbox.get(clientId);
    if (item) this._fail(room, item, error);
  }

  /** The connection went: nothing is in flight any more. */
  disconnected() {
    this.inFlight = 0;
  }

  /** Everything not failed in `room` waits for the rejoin, to go out with its client_id. */
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

  /** Keep every room's unsent messages for a reload of this tab. */
  save() {
    const items = [];
    for (const room of this.rooms.values()) {
      for (const { status, error, timer, ...item } of room.outbox.values()) {
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
    item.timer = setTimeout(() => {
      if (item.status !== 'sending') return;
      this._fail(room, item, 'No answer from the server.');
    }, ACK_TIMEOUT_MS);
    this._changed(room, item);
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
