// A room's read state (§20), kept on the client: where the user has read up to, what is
// unread and what mentions them. The server's state comes with GET /api/rooms and
// `joined`, and `read` frames from the user's other devices; this client's reading goes
// back as one `read` frame per burst. No DOM, no imports (see app.js): room.js builds
// its Room on withReading(RoomLog).

const READ_DEBOUNCE_MS = 400; // one `read` frame for a burst of messages seen

/** RoomLog (or a class like it) with the read state; `isEvent` from roomlog.js. */
export function withReading(Base, { isEvent }) {
  return class extends Base {
    constructor(...args) {
      super(...args);
      this.unread = 0;
      this.mentions = 0;
      this.lastRead = 0;
      this.readTimer = null;
      this.readSent = 0; // the highest seq this client told the server it read
    }

    /** Whether the message mentions the user (by name, or @room). */
    mentionsMe(m) {
      const me = this.session.me();
      return Boolean(m.mentions && (m.mentions.room
        || (Array.isArray(m.mentions.users) && m.mentions.users.includes(me.id))));
    }

    /** Everything up to now has been seen: counts drop at once, and the server is
     *  told (once for a burst), which tells the user's other devices. */
    markRead() {
      const seq = Math.max(this.lastRead, this.newestSeq);
      if (this.unread === 0 && this.mentions === 0 && seq === this.lastRead) return;
      this.unread = 0;
      this.mentions = 0;
      this.lastRead = seq;
      this.session.view.unreadChanged(this);
      this._sendRead();
    }

    _sendRead() {
      if (this.readTimer || this.lastRead <= this.readSent) return;
      this.readTimer = setTimeout(() => {
        this.readTimer = null;
        const seq = this.lastRead;
        if (seq <= this.readSent || this.state !== 'live') return;
        if (this.session.request(this, { type: 'read', room: this.name, seq }, { kind: 'read' })) {
          this.readSent = seq;
        }
      }, READ_DEBOUNCE_MS);
    }

    /** A `read` frame: the user read up to `seq` here (on this or another device). */
    onRead(seq) {
      if (!Number.isInteger(seq)) return;
      this.readSent = Math.max(this.readSent, seq);
      if (seq <= this.lastRead) return;
      this.lastRead = seq;
      this._recount();
      this.session.view.unreadChanged(this);
    }

    /** The server's read state (joined, GET /api/rooms); a position behind what this
     *  client has read already is old news. */
    _readState(lastRead, unread, mentions) {
      if (lastRead < this.lastRead) return;
      this.lastRead = lastRead;
      this.readSent = Math.max(this.readSent, lastRead);
      this.unread = Number.isInteger(unread) ? unread : this.unread;
      this.mentions = Number.isInteger(mentions) ? mentions : this.mentions;
      this.session.view.unreadChanged(this);
    }

    /** Count what is unread among the messages held (after the read position moved). */
    _recount() {
      const me = this.session.me();
      let unread = 0;
      let mentions = 0;
      for (const m of this.messages) {
        if (m.seq <= this.lastRead || isEvent(m) || m.deleted || m.user.id === me.id) continue;
        unread += 1;
        if (this.mentionsMe(m)) mentions += 1;
      }
      this.unread = Math.min(unread, 100);
      this.mentions = Math.min(mentions, 100);
    }

    /** Records just accepted: the view hears of each new message of someone else;
     *  counted unread unless the user is reading the room (then all is read). */
    _countUnread(added) {
      const me = this.session.me();
      const fresh = added.filter((m) => m.seq > this.lastRead && m.user.id !== me.id
        && !isEvent(m) && !m.deleted);
      for (const m of fresh) this.session.view.incoming(this, m);
      if (this.session.view.isReading(this.name)) {
        this.markRead();
        return;
      }
      if (!fresh.length) return;
      this.unread = Math.min(100, this.unread + fresh.length);
      this.mentions = Math.min(100, this.mentions + fresh.filter((m) => this.mentionsMe(m)).length);
      this.session.view.unreadChanged(this);
    }
  };
}
