// The chat session over /ws, without any DOM: which rooms the user is in (kept across
// reloads), the user's actions on them, what a new connection does (rejoin every room)
// and what a lost one undoes, and the routing of every server frame to the room or
// the outbox it concerns. The view is told about every change through `view`.
//
// Built by defineChat() on the classes app.js passes in (no imports: see app.js): Room
// (room.js) keeps each room complete, Outbox (outbox.js) what the user sent that the
// server has not confirmed.

const RETRY_SOON_MS = 2000;

/** The Chat class, built on the Room and Outbox classes it is given. */
export function defineChat({ Room, Outbox }) {
  return class Chat {
    /**
     * @param {object} o
     * @param {{id:string,name:string,bot:boolean}} o.me
     * @param {(frame: object) => boolean} o.send  false when offline
     * @param {object} o.storage  see makeStorage in storage.js
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
      const request = (room, frame, info) => this._request(room, frame, info);
      this.outbox = new Outbox({
        rooms: this.rooms, request, isOnline: () => this.online, storage, view,
      });
      this.session = { request, me: () => this.me, view, storage, outbox: this.outbox };
    }

    // ----- user actions -----------------------------------------------------------

    /** Restore rooms and unsent messages saved by an earlier visit of this tab. */
    restore() {
      for (const name of this.storage.joinedRooms()) this._addRoom(name);
      this.outbox.restore();
    }

    /** Join (if needed) and return the room. */
    join(name) {
      let room = this.rooms.get(name);
      if (!room) {
        room = this._addRoom(name);
        this._saveRooms();
        if (this.online) room.join();
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
      room.people.sentMessage();
      this.outbox.post(room, body);
    }

    retry(name, clientId) {
      const room = this.rooms.get(name);
      if (room) this.outbox.retry(room, clientId);
    }

    discard(name, clientId) {
      const room = this.rooms.get(name);
      if (room) this.outbox.discard(room, clientId);
    }

    /** The user is typing in `name`: tell the room, at most every few seconds. */
    typing(name) {
      const room = this.rooms.get(name);
      if (!room || room.state !== 'live' || !room.people.shouldAnnounceTyping()) return;
      this._send({ type: 'typing', room: name });
    }

    loadOlder(name) {
      this.rooms.get(name)?.loadOlder();
    }

    /** Everything in `name` up to now has been seen. */
    markRead(name) {
      this.rooms.get(name)?.markRead();
    }

    // ----- connection events -------------------------------------------------------

    connected() {
      this.online = true;
      for (const room of this.rooms.values()) room.join();
    }

    disconnected() {
      this.online = false;
      this.refs.clear();
      this.outbox.disconnected();
      for (const room of this.rooms.values()) {
        room.disconnected();
        this.outbox.requeue(room);
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

    // ----- internals ---------------------------------------------------------------

    _addRoom(name) {
      const room = new Room(name, this.session);
      this.rooms.set(name, room);
      this.view.roomAdded(room);
      return room;
    }

    _dropRoom(room) {
      this.outbox.forget(room);
      room.close();
      this.rooms.delete(room.name);
      this._saveRooms();
      this.outbox.save();
      this.view.roomRemoved(room);
    }

    _saveRooms() {
      this.storage.setJoinedRooms([...this.rooms.keys()]);
    }

    _request(room, frame, info) {
      const ref = this.nextRef++;
      this.refs.set(ref, { room: room.name, ...info });
      if (this._send({ ...frame, ref })) return true;
      this.refs.delete(ref);
      return false;
    }

    /** The request a reply answers (forgotten once answered). */
    _answered(f) {
      const info = this.refs.get(f.ref);
      this.refs.delete(f.ref);
      return info;
    }

    _onJoined(f) {
      const room = this.rooms.get(f.room);
      if (!room) return;
      room.onJoined(f, this._answered(f)?.since);
      this.outbox.pump();
    }

    _onHistory(f) {
      const room = this.rooms.get(f.room);
      const info = this._answered(f);
      if (room && info) room.onHistory(f, info);
    }

    _onMessage(f) {
      this.rooms.get(f.room)?.onMessage(f);
    }

    _onAck(f) {
      const room = this.rooms.get(f.room);
      this.refs.delete(f.ref);
      room?.onAck(f);
    }

    _onTyping(f) {
      const room = this.rooms.get(f.room);
      if (!room || !f.user || f.user.id === this.me.id) return;
      room.people.typingFrom(f.user);
    }

    _onPresence(f) {
      const room = this.rooms.get(f.room);
      if (!room || !f.user) return;
      room.people.presence(f.user, f.status);
      this.view.membersChanged(room);
    }

    _onError(f) {
      const info = this._answered(f);
      const room = info && this.rooms.get(info.room);
      const retryMs = (Number(f.retry_after) || 0) * 1000 || RETRY_SOON_MS;
      if (!info || !room) {
        // Unanswered frames without a ref are typing notices: not worth a notice.
        if (f.code !== 'rate_limited' && f.code !== 'forbidden') this.view.notice(friendlyError(f));
        return;
      }
      switch (info.kind) {
        case 'send': {
          const clientId = info.clientId ?? f.client_id;
          if (f.code === 'rate_limited') this.outbox.rateLimited(room, clientId, retryMs);
          else this.outbox.refused(room, clientId, friendlyError(f));
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
                room.join();
              }
            }, retryMs);
          }
          break;
        case 'older':
        case 'after':
          room.historyRefused(info.kind, retryMs);
          break;
        default:
          break;
      }
    }
  };
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
