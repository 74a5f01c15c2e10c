// What the client keeps in the browser for one user: the room on screen and unsent
// messages (per tab), and the rooms whose desktop notifications are off (per browser).
// Which rooms the user is in, and how far they have read, are the server's to say
// (GET /api/rooms, `read` frames), so they follow them across devices. No imports (see
// app.js).

const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** What survives a reload: the room on screen and unsent messages (per tab, so two tabs
 *  do not send each other's drafts), rooms with notifications off (per browser). */
export function makeStorage(userId) {
  const key = (name) => `chat:${userId}:${name}`;
  const read = (store, name, fallback) => {
    try {
      const raw = store.getItem(key(name));
      return raw ? JSON.parse(raw) : fallback;
    } catch {
      return fallback; // storage disabled or corrupt: start clean
    }
  };
  const write = (store, name, value) => {
    try {
      store.setItem(key(name), JSON.stringify(value));
    } catch {
      // private mode / quota: the app still works, it just forgets on reload
    }
  };
  return {
    quietRooms: () => {
      const list = read(localStorage, 'quiet', []);
      return new Set(Array.isArray(list) ? list.filter((r) => ROOM_RE.test(r)) : []);
    },
    setQuietRooms: (set) => write(localStorage, 'quiet', [...set]),
    activeRoom: () => read(sessionStorage, 'active', null) ?? read(localStorage, 'active', null),
    setActiveRoom: (name) => {
      write(sessionStorage, 'active', name);
      write(localStorage, 'active', name);
    },
    outbox: () => {
      const items = read(sessionStorage, 'outbox', []);
      return Array.isArray(items) ? items.filter((i) => i && typeof i.body === 'string'
        && typeof i.clientId === 'string' && ROOM_RE.test(i.room)) : [];
    },
    setOutbox: (items) => write(sessionStorage, 'outbox', items),
  };
}
