// One room's confirmed messages: each once, in seq order, and how far they are known to
// be gap-free. Pure bookkeeping, no timers, DOM or I/O. No imports (see app.js).
//
// Invariants:
// - messages holds confirmed records once each (messages and events: they share the
//   room's seqs, so gap detection and resuming count both), ascending by seq (dedupe by seq).
// - contiguous: every seq from the oldest loaded message up to it is present, so
//   rejoining with since = contiguous can never leave a hole.

/** Whether a message from the server has what the client needs to show it. */
export function validMessage(m) {
  return m && typeof m === 'object' && Number.isInteger(m.seq) && typeof m.body === 'string'
    && m.user && typeof m.user === 'object';
}

/** Whether a record of the room's stream is an event (a membership or moderation
 *  change, or a change to a message) rather than a message: never counted as unread. */
export function isEvent(m) {
  return m.type === 'event';
}

// Events that change a message (§19 of docs/protocol.md): folded into it, never shown
// as lines of their own.
const LIFECYCLE = new Set(['edited', 'deleted', 'reacted']);

/** Whether a record is an event about a message (edited, deleted, reacted). */
export function isLifecycle(m) {
  return m.type === 'event' && LIFECYCLE.has(m.event);
}

const EVENT_FIELDS = ['event', 'actor', 'target', 'role', 'until', 'topic', 'message_seq',
  'new_body', 'edited_at', 'emoji', 'on'];
const MESSAGE_FIELDS = ['edited_at', 'deleted', 'reactions', 'reply_to', 'replies', 'state_seq',
  'mentions', 'attachments'];

/** The part of a live `message` or `event` frame the log keeps. */
export function toRecord(f) {
  const rec = {
    room: f.room, id: f.id, seq: f.seq, user: f.user, body: f.body, ts: f.ts,
    client_id: f.client_id ?? null,
  };
  if (f.type === 'event') {
    rec.type = 'event';
    for (const k of EVENT_FIELDS) if (k in f) rec[k] = f[k];
  } else {
    for (const k of MESSAGE_FIELDS) if (k in f) rec[k] = f[k];
  }
  return rec;
}

/**
 * Apply one record just added to the log to the message it concerns, by the folding
 * rule of §19: a reply adds to its original's `replies`, an edited / deleted / reacted
 * event changes its message; each only when its seq is above the message's state_seq,
 * so a message from a page (already current up to its state_seq) never gets a change
 * twice. `find(seq)` returns a held message or undefined. Returns the changed message,
 * or null.
 */
export function fold(rec, find) {
  if (rec.type !== 'event') {
    const orig = Number.isInteger(rec.reply_to) ? find(rec.reply_to) : undefined;
    if (!orig || orig.type === 'event' || rec.seq <= (orig.state_seq ?? 0)) return null;
    orig.replies = (orig.replies ?? 0) + 1;
    orig.state_seq = rec.seq;
    return orig;
  }
  if (!LIFECYCLE.has(rec.event) || !Number.isInteger(rec.message_seq)) return null;
  const msg = find(rec.message_seq);
  if (!msg || msg.type === 'event' || rec.seq <= (msg.state_seq ?? 0)) return null;
  msg.state_seq = rec.seq;
  if (rec.event === 'deleted') {
    msg.deleted = true;
    msg.body = '';
    delete msg.reactions;
    delete msg.edited_at;
    delete msg.mentions;
    delete msg.attachments; // the files are deleted with the message
  } else if (msg.deleted) {
    // on a tombstone nothing else changes anything
  } else if (rec.event === 'edited') {
    if (typeof rec.new_body === 'string') msg.body = rec.new_body;
    if (Number.isInteger(rec.edited_at)) msg.edited_at = rec.edited_at;
  } else if (rec.event === 'reacted' && typeof rec.emoji === 'string') {
    const who = rec.actor?.id ?? rec.user?.id;
    const list = Array.isArray(msg.reactions) ? msg.reactions.map((r) => ({ ...r, users: [...(r.users ?? [])] })) : [];
    let entry = list.find((r) => r.emoji === rec.emoji);
    if (rec.on !== false) {
      if (!entry) {
        entry = { emoji: rec.emoji, count: 0, users: [] };
        list.push(entry);
      }
      if (who && !entry.users.includes(who)) entry.users.push(who);
    } else if (entry) {
      entry.users = entry.users.filter((u) => u !== who);
    }
    for (const r of list) r.count = r.users.length;
    msg.reactions = list.filter((r) => r.count > 0);
    if (!msg.reactions.length) delete msg.reactions;
  }
  return msg;
}

/** The highest seq in a page of messages (0 for an empty page). */
function topSeq(messages) {
  return Math.max(0, ...messages.map((m) => m.seq));
}

export class RoomLog {
  constructor() {
    this.messages = [];
    this.bySeq = new Map();
    this.contiguous = 0;
    this.hasOlder = false; // the server has messages before the oldest one loaded
    this.loaded = false; // a `joined` arrived at least once
  }

  get newestSeq() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  get oldestSeq() {
    return this.messages.length ? this.messages[0].seq : 0;
  }

  /** The `since` of a rejoin; undefined before the first page, which asks for the latest. */
  get resumePoint() {
    return this.loaded && this.contiguous > 0 ? this.contiguous : undefined;
  }

  /** A message beyond contiguous + 1 is here: something before it is missing. */
  get hasGap() {
    return this.newestSeq > this.contiguous;
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

  /** Move contiguous over the seqs that are present right after it. */
  advance() {
    while (this.bySeq.has(this.contiguous + 1)) this.contiguous += 1;
  }

  /** A `joined` page was added. The page holds every message in its range, and the
   *  latest page (no `since`) or the last page after `since` reaches `lastSeq`.
   *  Returns true when more messages after `since` remain to be fetched. */
  joined(messages, { lastSeq, hasMore, resumed }) {
    this.loaded = true;
    this.contiguous = Math.max(this.contiguous, topSeq(messages));
    if (!hasMore || !resumed) this.contiguous = Math.max(this.contiguous, lastSeq);
    this.advance();
    return resumed && hasMore;
  }

  /** A `history after` page was added while closing a gap; returns its highest seq. */
  filled(messages, { hasMore }) {
    const last = topSeq(messages);
    this.contiguous = Math.max(this.contiguous, last);
    if (!hasMore && !messages.length) this.contiguous = Math.max(this.contiguous, this.newestSeq);
    this.advance();
    return last;
  }
}
