// The rooms a user may see and the ones they are in, as the server lists them: GET
// /api/rooms, then room_added / room_updated / room_removed frames. No DOM, no imports
// (see app.js): chat.js builds its Chat on withRoomList(), which gives it `known` (name
// -> the server's Room object of every room the user may see) and the handlers of
// those frames; the Chat keeps the rooms themselves (`rooms`, `_enter`, `dropRoom`).

/** A base class with the room list; `errors` from chaterrors.js (the removal notice). */
export function withRoomList(Base, { errors }) {
  return class extends Base {
    constructor(...args) {
      super(...args);
      this.known = new Map();
    }

    /**
     * The rooms the server lists (GET /api/rooms, asked for at `askedAt`, a
     * performance.now()): the user's rooms are those with `member: true`. Rooms this
     * client entered after asking, or has not joined yet, are kept: the list may
     * predate their join.
     */
    setRooms(list, askedAt = Infinity) {
      const valid = list.filter((r) => r && typeof r.name === 'string');
      this.known = new Map(valid.map((r) => [r.name, r]));
      const mine = new Set();
      for (const info of valid) {
        if (!info.member) continue;
        mine.add(info.name);
        const room = this.rooms.get(info.name);
        if (room) {
          room.setInfo(info);
          this.view.roomInfoChanged(room);
        } else {
          this._enter(info.name, info);
        }
      }
      for (const room of [...this.rooms.values()]) {
        // Only a room the server had let in (loaded) can have been lost: a room not
        // joined yet becomes the user's with its join.
        if (!mine.has(room.name) && room.loaded && room.addedAt < askedAt) {
          this.view.notice(`You are no longer in ${room.label}.`);
          this.dropRoom(room);
        }
      }
      this.view.roomsChanged();
    }

    /** A Room object the server answered with (a room made, a DM started): the user
     *  is in it, whether or not its room_added frame has come yet. */
    adopt(info) {
      this._onRoomAdded({ room: info });
    }

    /** Keep the list of known rooms in step with a Room object the server sent. */
    _know(info) {
      const old = this.known.get(info.name) ?? {};
      const merged = { ...old, ...info };
      if (!('muted_until' in info) && 'member' in info) delete merged.muted_until;
      this.known.set(info.name, merged);
    }

    /** A room the user is now in: created, joined, added to, or a DM started. */
    _onRoomAdded(f) {
      const info = f.room;
      if (!info || typeof info.name !== 'string') return;
      if (!this._updateInfo(info)) this._enter(info.name, info);
      this.view.roomsChanged();
    }

    /** The user's role or mute changed, or the room's topic or archived state. */
    _onRoomUpdated(f) {
      const info = f.room;
      if (!info || typeof info.name !== 'string') return;
      const room = this._updateInfo(info);
      if (room && 'role' in info) this.view.rosterChanged(room);
      this.view.roomsChanged();
    }

    /** Take in a Room object from the server; returns the room if the user is in it. */
    _updateInfo(info) {
      this._know(info);
      const room = this.rooms.get(info.name);
      if (room) {
        room.setInfo(info);
        this.view.roomInfoChanged(room);
      }
      return room;
    }

    /** The user left the room for good, or was kicked or banned: it goes, with a word. */
    _onRoomRemoved(f) {
      const name = f.room;
      if (typeof name !== 'string') return;
      const room = this.rooms.get(name);
      const info = this.known.get(name);
      const label = room?.label ?? `#${info?.title ?? name}`;
      if (info?.kind === 'public') this._know({ name, member: false, role: null });
      else this.known.delete(name);
      if (room) {
        const notice = errors.removedNotice(room, label, f, this.me);
        if (notice) this.view.notice(notice);
        this.dropRoom(room);
      }
      this.view.roomsChanged();
    }
  };
}
