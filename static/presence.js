// Who is in one room right now and who is typing there, as `joined`, `presence`,
// `typing` and `message` frames tell; and how often we tell the room we type.
// No DOM. No imports (see app.js).

const TYPING_EVERY_MS = 3000; // tell the room we are typing at most this often
const TYPING_SHOWN_MS = 6000; // someone shows as typing this long after their last notice

function stateOf(o) {
  return { away: Boolean(o.away), status_text: o.status_text ?? null, status_until: o.status_until ?? null };
}

export class RoomPeople {
  /** @param {() => void} onTypingChanged  called whenever the typing list changes */
  constructor(onTypingChanged) {
    this.members = new Map(); // user id -> user
    this.states = new Map(); // user id -> {away, status_text, status_until}
    this.typing = new Map(); // user id -> {user, until}
    this.typingTimer = null;
    this.lastTypingSent = 0;
    this.onTypingChanged = onTypingChanged;
  }

  /** The members list of a `joined` frame: everyone online in the room now, with
   *  their away state and status text (absent from older servers' frames). */
  setMembers(users) {
    this.members = new Map(users.map((u) => [u.id, u]));
    this.states = new Map(users.map((u) => [u.id, stateOf(u)]));
  }

  /** Away and status text of a member online now (undefined for others). */
  stateOf(id) {
    return this.states.get(id);
  }

  /** A `presence` frame; someone who goes offline stops typing too. */
  presence(user, status, frame = {}) {
    if (status === 'online') {
      this.members.set(user.id, user);
      this.states.set(user.id, stateOf(frame));
    } else if (status === 'offline') {
      this.members.delete(user.id);
      this.states.delete(user.id);
      this.typing.delete(user.id);
      this.onTypingChanged();
    }
  }

  /** Someone else is typing: shown until a while after their last notice. */
  typingFrom(user) {
    this.typing.set(user.id, { user, until: Date.now() + TYPING_SHOWN_MS });
    this._expire();
  }

  /** Their message ends their typing. */
  messageFrom(user) {
    if (this.typing.delete(user.id)) this.onTypingChanged();
  }

  /** The connection went: typing notices stopped reaching us. */
  clearTyping() {
    this.typing.clear();
    this.onTypingChanged();
  }

  /** Whether to tell the room now that we are typing (at most every few seconds). */
  shouldAnnounceTyping() {
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_EVERY_MS) return false;
    this.lastTypingSent = now;
    return true;
  }

  /** Our message clears our "typing" for others: the next key says it again. */
  sentMessage() {
    this.lastTypingSent = 0;
  }

  stop() {
    clearTimeout(this.typingTimer);
  }

  _expire() {
    clearTimeout(this.typingTimer);
    const now = Date.now();
    let next = Infinity;
    for (const [id, t] of this.typing) {
      if (t.until <= now) this.typing.delete(id);
      else next = Math.min(next, t.until);
    }
    this.onTypingChanged();
    if (next !== Infinity) this.typingTimer = setTimeout(() => this._expire(), next - now);
  }
}
