// The chat session over /ws, without any DOM: the rooms the user is in, the user's
// actions on them, what a new connection does (re-read the list, rejoin every room) and
// what a lost one undoes, and the routing of every server frame to the room or the
// outbox it concerns. The view is told about every change through `view`.
//
// Built by defineChat() on what app.js passes in (no imports: see app.js): Room
// (room.js) keeps each room complete, Outbox (outbox.js) what the user sent that the
// server has not confirmed, errors (chaterrors.js) what an error frame answers, and
// withRoomList (roomlist.js) the server's list of rooms and its frames.

// Events after which the room's roster (GET …/members) is out of date.
const ROSTER_EVENTS = new Set(['joined', 'left', 'added', 'removed', 'banned', 'muted',
  'unmuted', 'role_changed']);
/** The Chat class, built on the Room and Outbox classes it is given. */
export function defineChat({ Room, Outbox, errors, withRoomList }) {
  return class Chat extends withRoomList(Object, { errors }) {
    /**
     * @param {object} o
     * @param {{id:string,name:string,bot:boolean}} o.me
     * @param {(frame: object) => boolean} o.send  false when offline
     * @param {object} o.storage  see makeStorage in storage.js
     * @param {object} o.view     receives change notifications (see view.js)
     * @param {() => Promise<object[]>} [o.fetchRooms]  GET /api/rooms; when given, a new
     *        connection re-reads the list before rejoining (a room lost while offline is
     *        not joined again: for a public one, that would make the user a member again)
     * @param {() => void} [o.reconnect]  drop the connection and open a new one (a send
     *        went unanswered: the socket may be dead without having said so)
     */
    constructor({ me, send, storage, view, fetchRooms = null, reconnect = null }) {
      super();
      this.me = me;
      this._send = send;
      this.storage = storage;
      this.view = view;
      this.fetchRooms = fetchRooms;
      this.connections = 0; // counts connections, so a late room list is recognised
      this.rooms = new Map(); // rooms the user is a member of, in the order they came
      this.online = false;
      this.refs = new Map(); // ref -> what the request was for
      this.nextRef = 1;
      const request = (room, frame, info) => this._request(room, frame, info);
      this.outbox = new Outbox({
        rooms: this.rooms, request, isOnline: () => this.online, storage, view, reconnect,
      });
      this.session = { request, me: () => this.me, view, storage, outbox: this.outbox };
    }

    // ----- user actions -----------------------------------------------------------

    /** Restore unsent messages saved by an earlier visit of this tab into the rooms
     *  known so far; those of rooms not known yet wait for setRooms. */
    restore() {
      this.outbox.restore();
    }

    /** The server's list of rooms (see roomlist.js); unsent messages saved for rooms
     *  that were not known yet go back into them now. */
    setRooms(list, askedAt = Infinity) {
      super.setRooms(list, askedAt);
      this.outbox.restore({ listed: true });
    }

    /** Join (if needed) and return the room; joining a public room makes the user a
     *  member (the server then sends room_added). */
    join(name) {
      return this.rooms.get(name) ?? this._enter(name, this.known.get(name));
    }

    leave(name) {
      const room = this.rooms.get(name);
      if (!room) return;
      if (this.online) this._send({ type: 'leave', room: name });
      this.dropRoom(room);
    }

    /** Queue a message (a reply to `replyTo`, a seq, if given; carrying the uploaded
     *  file objects `attachments`); it goes out now if the room is live, else after
     *  the reconnect. */
    post(name, body, replyTo = null, attachments = []) {
      const room = this.rooms.get(name);
      if (!room) return;
      room.people.sentMessage();
      this.outbox.post(room, body, replyTo, attachments);
    }

    /** Change a message: {kind: 'edit', seq, body}, {kind: 'delete', seq} or
     *  {kind: 'react', seq, emoji, on}; through the outbox, so it survives reconnects. */
    change(name, change) {
      const room = this.rooms.get(name);
      if (room) this.outbox.change(room, change);
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
      if (!room || room.state !== 'live' || this.silenced(room)
          || !room.people.shouldAnnounceTyping()) return;
      this._send({ type: 'typing', room: name });
    }

    loadOlder(name) {
      this.rooms.get(name)?.loadOlder();
    }

    /** Everything in `name` up to now has been seen. */
    markRead(name) {
      this.rooms.get(name)?.markRead();
    }

    /** Why the user cannot post in `room` now ('archived', 'muted'), or null. */
    silenced(room) {
      if (room.info.archived) return 'archived';
      if (Number.isInteger(room.info.muted_until) && room.info.muted_until > Date.now()) return 'muted';
      return null;
    }

    // ----- connection events -------------------------------------------------------

    connected() {
      this.online = true;
      const conn = ++this.connections;
      const rejoin = () => {
        if (this.connections !== conn || !this.online) return;
        for (const room of this.rooms.values()) if (room.state === 'idle') room.join();
      };
      if (!this.fetchRooms) {
        rejoin();
        return;
      }
      const askedAt = performance.now();
      this.fetchRooms().then((list) => {
        if (this.connections === conn && this.online) this.setRooms(list, askedAt);
      }, () => {}).finally(rejoin);
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
        case 'event': this._onEvent(f); break;
        case 'room_added': this._onRoomAdded(f); break;
        case 'room_updated': this._onRoomUpdated(f); break;
        case 'room_removed': this._onRoomRemoved(f); break;
        case 'ack': this._onAck(f); break;
        case 'history': this._onHistory(f); break;
        case 'typing': this._onTyping(f); break;
        case 'presence': this._onPresence(f); break;
        case 'read':
          this.refs.delete(f.ref);
          this.rooms.get(f.room)?.onRead(f.seq);
          break;
        case 'error': errors.routeError(this, f); break;
        default: break; // pong, left, and frame types added later
      }
    }

    // ----- internals ---------------------------------------------------------------

    /** A room the user is in from now on: shown, and joined when online. */
    _enter(name, info) {
      const room = new Room(name, this.session);
      if (info) room.setInfo(info);
      room.addedAt = performance.now();
      this.rooms.set(name, room);
      this.view.roomAdded(room);
      if (this.online) room.join();
      return room;
    }

    dropRoom(room) {
      this.outbox.forget(room);
      room.close();
      this.rooms.delete(room.name);
      this.outbox.save();
      this.view.roomRemoved(room);
    }

    _request(room, frame, info) {
      const ref = this.nextRef++;
      this.refs.set(ref, { room: room.name, ...info });
      if (this._send({ ...frame, ref })) return true;
      this.refs.delete(ref);
      return false;
    }

    /** The request a reply answers (forgotten once answered). */
    answered(f) {
      const info = this.refs.get(f.ref);
      this.refs.delete(f.ref);
      return info;
    }

    _onJoined(f) {
      const room = this.rooms.get(f.room);
      if (!room) return;
      room.onJoined(f, this.answered(f)?.since);
      this.outbox.pump();
    }

    _onHistory(f) {
      const room = this.rooms.get(f.room);
      const info = this.answered(f);
      if (room && info) room.onHistory(f, info);
    }

    _onMessage(f) {
      this.rooms.get(f.room)?.onMessage(f);
    }

    /** A membership or moderation change: a line in the log, and what it changes. */
    _onEvent(f) {
      const room = this.rooms.get(f.room);
      if (!room) return;
      room.onMessage(f);
      let info = null;
      if (f.event === 'topic_changed' && typeof f.topic === 'string') info = { topic: f.topic };
      else if (f.event === 'archived') info = { archived: true };
      else if (f.event === 'unarchived') info = { archived: false };
      if (info) {
        room.setInfo(info);
        this._know({ name: room.name, ...info });
        this.view.roomInfoChanged(room);
      }
      if (ROSTER_EVENTS.has(f.event)) this.view.rosterChanged(room);
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
      room.people.presence(f.user, f.status, f);
      this.view.membersChanged(room);
    }
  };
}
