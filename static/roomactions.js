// What the user does to rooms, as API calls: create, leave, add people, moderate,
// topics and archiving, direct messages, and opening a room at a message. A refusal
// becomes a notice (through `attempt`) or, where a form shows it, the text returned.
// No imports (see app.js): app.js adds these to the handlers the views call.

/** The room actions, built on the running session's chat, view and API client. */
export function roomActions({
  chat, view, api, ApiError, attempt, signedOut, select, refreshRooms, selectRoom,
}) {
  return {
    /** Leave for good (the server then sends room_removed to every tab). */
    leaveRoom(name) {
      const room = chat.rooms.get(name);
      if (room?.info.role === 'owner') {
        view.notice('You own this room: make someone else its owner before you leave.');
        return;
      }
      attempt(() => api.removeMember(name, chat.me.name));
    },
    /** Pick people to add to `name` (admins and up). */
    addPeople(name) {
      const room = chat.rooms.get(name);
      if (!room) return;
      view.pickPeople({
        title: `Add people to ${room.label}`,
        hint: 'They can read the room and take part from now on.',
        button: 'Add', max: 20, opener: document.getElementById('room-menu'),
        async submit(names, close) {
          const failed = [];
          for (const user of names) {
            const error = await attempt(() => api.addMember(name, user), { quiet: true });
            if (error) failed.push(`${user}: ${error}`);
          }
          if (failed.length) return failed.join(' ');
          close();
          return null;
        },
      });
    },
    async members(name) {
      const roster = await api.members(name);
      chat.rooms.get(name)?.remember(roster.map((m) => m?.user));
      return roster;
    },
    searchUsers: (prefix) => api.users(prefix),
    setTopic: (room, topic) => attempt(() => api.updateRoom(room, { topic }), { quiet: true }),
    setArchived: (room, archived) => attempt(() => api.updateRoom(room, { archived })),
    unban: (room, user) => attempt(() => api.unban(room, user), { quiet: true }),
    /** A moderator's action on a member: mute, unmute, kick, ban, role. */
    moderate(room, action, user, arg) {
      const calls = {
        mute: () => api.mute(room, user, arg),
        unmute: () => api.unmute(room, user),
        kick: () => api.removeMember(room, user),
        ban: () => api.ban(room, user, arg),
        role: () => api.setRole(room, user, arg),
      };
      if (calls[action]) attempt(calls[action]);
    },
    /** Open the DM of the user and `names`, made if need be; text of an error, or null. */
    async startDm(names, done) {
      let info;
      try {
        info = await api.dm(names);
      } catch (err) {
        if (signedOut(err)) return 'Signed out.';
        return err instanceof ApiError ? err.message : 'Could not start the conversation.';
      }
      chat.adopt(info);
      done();
      selectRoom(info.name);
      return null;
    },
    /** Open `name` at the message `seq`: paged back to it if need be, scrolled to and
     *  highlighted (permalinks, search hits, the quote of a reply). */
    async openAt(name, seq) {
      if (!Number.isInteger(seq) || seq < 1) return;
      if (!chat.rooms.has(name) && chat.known.get(name)?.kind !== 'public') {
        view.notice('That room does not exist, or you are not in it.');
        return;
      }
      if (view.active !== name) select(name);
      const room = chat.rooms.get(name);
      if (!room) return;
      await room.until(() => (room.loaded && room.state === 'live') || chat.rooms.get(name) !== room);
      if (chat.rooms.get(name) !== room) return;
      const held = await room.reach(seq);
      if (view.active !== name) return;
      if (!held || !view.flash(seq)) view.notice('That message is not in this room any more.');
    },
    async createRoom(name, { kind = 'public', topic = '' } = {}) {
      let existed = false;
      const wasIn = chat.rooms.has(name);
      let info = null;
      try {
        info = await api.createRoom(name, { kind, topic });
      } catch (err) {
        // A public room of that name exists: join it (private names never clash).
        if (!(err instanceof ApiError) || err.status !== 409 || kind !== 'public') {
          view.showRoomError(err.message || 'Could not create the room.');
          return false;
        }
        existed = true;
      }
      if (info) chat.adopt(info);
      else await refreshRooms();
      selectRoom(info?.name ?? name);
      if (existed) view.notice(wasIn ? `You are already in #${name}.` : `#${name} already existed: you joined it.`);
      return true;
    },
  };
}
