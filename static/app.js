// Entry point: loads the other modules, shows sign-in or the chat, and wires the
// pieces together (the only module that knows all the others).
//
// Why modules are imported by URL instead of `import ... from './chat.js'`: index.html
// is a Tornado template and gives each file a versioned URL (static_url, `?v=<hash>`,
// cached for a long time). A plain relative import would ask for `/static/chat.js`
// with no version, which browsers may cache heuristically, so a deploy could mix a new
// app.js with an old chat.js. The <link rel="modulepreload" data-module> tags carry the
// versioned URLs (and start the downloads early); the other modules import nothing and
// get their collaborators from here.

const MODULES = ['api', 'storage', 'connection', 'signin', 'roomlog', 'presence', 'outbox',
  'room', 'chat', 'render', 'messagelist', 'sidebar', 'composer', 'notices', 'view', 'menu',
  'members', 'header', 'dmpicker', 'markdown', 'msgparts', 'msgactions', 'badge', 'search', 'mentions', 'notify',
  'attachments', 'attach', 'userstatus', 'listitems', 'chaterrors', 'reading',
  'roomactions', 'roomlist', 'newdivider'];

function moduleUrl(name) {
  const link = document.querySelector(`link[rel="modulepreload"][data-module="${name}"]`);
  return link ? link.href : new URL(`./${name}.js`, import.meta.url).href;
}

const lib = Object.fromEntries(await Promise.all(
  MODULES.map(async (name) => [name, await import(moduleUrl(name))])));
const { createApi, ApiError } = lib.api;
const render = { ...lib.render, ...lib.listitems.defineListItems(lib.render) };
const Room = lib.room.defineRoom({ ...lib.roomlog, ...lib.presence, ...lib.reading });
const Chat = lib.chat.defineChat({
  Room, Outbox: lib.outbox.Outbox, errors: lib.chaterrors, withRoomList: lib.roomlist.withRoomList,
});

const $ = (id) => document.getElementById(id);
const api = createApi();
const ROOMS_REFRESH_MS = 60000;

// ----- screens ---------------------------------------------------------------------

let session = null; // the running chat session, if signed in

function show(which) {
  $('boot').hidden = true;
  $('auth').hidden = which !== 'auth';
  $('chat').hidden = which !== 'chat';
}

const auth = lib.signin.createSignIn({
  api, ApiError, fieldError: render.fieldError, onSignedIn: startChat, showScreen: show,
});

// ----- the chat session -------------------------------------------------------------

async function startChat(me) {
  session?.stop();
  const storage = lib.storage.makeStorage(me.id);
  const menus = new lib.menu.Menus(render);
  const files = new lib.attachments.AttachmentView(render);
  const list = new lib.messagelist.MessageList(render,
    new lib.msgparts.MessageParts(render, lib.markdown, files), lib.newdivider);
  const view = new lib.view.ChatView(render, {
    list,
    favicon: new lib.badge.FaviconBadge(),
    search: new lib.search.SearchPanel(render),
    mentions: new lib.mentions.MentionPicker(render),
    notifier: new lib.notify.Notifier(menus),
    actions: new lib.msgactions.MessageActions(render, menus, lib.markdown, lib.msgparts),
    sidebar: new lib.sidebar.Sidebar(render, lib.userstatus.presenceMarks),
    composer: new lib.composer.Composer(render, new lib.attach.Attacher(render, {
      humanSize: lib.attachments.humanSize, xsrfToken: lib.api.xsrfToken,
    })),
    notices: new lib.notices.Notices(),
    members: new lib.members.MembersPanel(render, menus, lib.userstatus.presenceMarks),
    header: new lib.header.RoomHeader(render, menus),
    dmPicker: new lib.dmpicker.DmPicker(render),
  });
  let conn = null;
  let refreshTimer = null;
  const signedOut = (err) => {
    if (err instanceof ApiError && err.status === 401) {
      endSession('Your session has ended. Please sign in again.');
      return true;
    }
    return false;
  };
  const fetchRooms = async () => {
    try {
      return await api.rooms();
    } catch (err) {
      signedOut(err);
      throw err;
    }
  };
  const chat = new Chat({
    me, send: (frame) => conn.send(frame), storage, view, fetchRooms,
    reconnect: () => conn.restart(),
  });

  async function refreshRooms() {
    const askedAt = performance.now();
    try {
      chat.setRooms(await fetchRooms(), askedAt);
    } catch {
      // kept as it was; the next refresh or reconnect reads the list again
    }
  }

  /** Run an API call for an action of the user; a refusal becomes a notice (or is
   *  returned as text when `quiet`). */
  async function attempt(call, { quiet = false } = {}) {
    try {
      await call();
      return null;
    } catch (err) {
      if (signedOut(err)) return 'Signed out.';
      const text = err instanceof ApiError ? err.message : 'Something went wrong.';
      if (!quiet) view.notice(text);
      return text;
    }
  }

  function select(name) {
    if (name) chat.join(name);
    view.showRoom(name);
    if (name) storage.setActiveRoom(name);
  }

  const handlers = {
    selectRoom(name) {
      select(name);
      view.focusComposer();
    },
    roomGone() {
      select(chat.rooms.keys().next().value ?? null);
    },
    ...lib.roomactions.roomActions({
      chat, view, api, ApiError, attempt, signedOut, select, refreshRooms,
      selectRoom: (name) => handlers.selectRoom(name),
    }),
    send: (room, body, replyTo, files) => chat.post(room, body, replyTo, files),
    edit: (room, seq, body) => chat.change(room, { kind: 'edit', seq, body }),
    deleteMessage: (room, seq) => chat.change(room, { kind: 'delete', seq }),
    react: (room, seq, emoji, on) => chat.change(room, { kind: 'react', seq, emoji, on }),
    peek: (room, seq) => chat.rooms.get(room)?.peek(seq),
    search: (q, opts) => api.search(q, opts),
    myName: () => chat.me.name,
    isQuiet: (room) => view.notifier.isQuiet(room),
    setQuiet(room, quiet) {
      view.notifier.setQuiet(room, quiet);
      view.notice(quiet ? 'No desktop notifications from this room.' : 'Desktop notifications from this room are on.');
    },
    notice: (text) => view.notice(text),
    retry: (room, clientId) => chat.retry(room, clientId),
    discard: (room, clientId) => chat.discard(room, clientId),
    typing: (room) => chat.typing(room),
    loadOlder: (room) => chat.loadOlder(room),
    markRead: (room) => chat.markRead(room),
    reconnectNow: () => conn.reconnectNow(),
    async logout() {
      try {
        await api.logout();
      } catch {
        // the server may be unreachable; forget the session here anyway
      }
      endSession('You have logged out.');
    },
  };

  // Away: this tab tells the server when the user is idle at it (and back).
  const activity = new lib.userstatus.ActivityWatch({
    idleMs: lib.userstatus.idleAfterMs(), send: (frame) => conn.send(frame),
  });
  const statusMenu = new lib.userstatus.StatusMenu(render, { request: lib.api.request });

  function stop() {
    clearInterval(refreshTimer);
    activity.stop();
    statusMenu.destroy();
    conn.stop();
    view.destroy();
    files.destroy();
    session = null;
  }

  function endSession(message) {
    if (session?.chat !== chat) return;
    stop();
    auth.show(message);
  }

  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  conn = new lib.connection.Connection({
    url: wsUrl,
    onFrame: (frame) => {
      chat.handle(frame);
      if (frame.type === 'hello') activity.connected();
    },
    onClose: () => chat.disconnected(),
    onState: (s) => {
      view.setConnection(s);
    },
    checkAuth: async () => {
      try {
        return (await api.me()) ? 'ok' : 'unauthorized';
      } catch {
        return 'unknown';
      }
    },
    onAuthLost: (reason) => endSession(reason === 'account deactivated'
      ? 'This account has been deactivated. Ask a server admin if you think this is a mistake.'
      : 'Your session has ended. Please sign in again.'),
  });

  session = { chat, stop };
  showAdminLink(me, chat, view);
  view.bind(chat, handlers, me, storage);
  files.bind({ signal: view.listeners.signal });
  show('chat');

  let rooms = null;
  const askedAt = performance.now();
  try {
    rooms = await api.rooms();
  } catch {
    rooms = null; // the list arrives once connected
  }
  if (rooms) chat.setRooms(rooms, askedAt);
  // Without the list, unsent messages wait for it (the next setRooms restores them).
  chat.restore();
  // Someone in no room at all (a new account) starts in the room everyone shares.
  if (rooms && !chat.rooms.size && rooms.length) {
    chat.join((rooms.find((r) => r.name === 'general') ?? rooms[0]).name);
  }
  const saved = storage.activeRoom();
  select(chat.rooms.has(saved) ? saved : chat.rooms.keys().next().value ?? null);
  // The room list arrives after the screen shows: a field the user went into meanwhile
  // (creating a room, searching) keeps the caret and what they type.
  if (!typingIn(document.activeElement)) view.focusComposer();
  conn.start();
  activity.start();
  statusMenu.load();
  // A permalink (#room=<name>&seq=<n>) opens its room at the message, now or when
  // one is followed in this tab.
  const followLink = () => {
    const params = new URLSearchParams(location.hash.slice(1));
    const name = params.get('room');
    const seq = Number(params.get('seq'));
    if (!name || !Number.isInteger(seq)) return;
    history.replaceState(null, '', location.pathname + location.search);
    handlers.openAt(name, seq);
  };
  window.addEventListener('hashchange', followLink, { signal: view.listeners.signal });
  followLink();
  refreshTimer = setInterval(() => {
    if (document.visibilityState === 'visible') refreshRooms();
  }, ROOMS_REFRESH_MS);
}

/** Whether `el` is a visible text field (the hidden sign-in form's fields are not). */
function typingIn(el) {
  return Boolean(el?.matches?.('input, textarea, [contenteditable="true"]') && el.offsetParent);
}

/** The link to the admin page, for server admins only (register and login answers do
 *  not say; GET /api/me does). */
async function showAdminLink(me, chat, view) {
  const link = $('admin-link');
  link.hidden = !me.admin;
  view.setServerAdmin(Boolean(me.admin));
  if (me.admin !== undefined) return;
  try {
    const full = await api.me();
    if (session?.chat === chat) {
      link.hidden = !full?.admin;
      view.setServerAdmin(Boolean(full?.admin));
    }
  } catch {
    // no link this time; it shows after the next reload
  }
}

// ----- boot --------------------------------------------------------------------------

/** Ask who we are; while the server is unreachable, keep asking in the background. */
async function boot(delay = 2000) {
  let me;
  try {
    me = await api.me();
  } catch {
    if (!session) {
      auth.show('Cannot reach the server right now. Retrying…');
      setTimeout(() => !session && boot(Math.min(delay * 2, 30000)), delay);
    }
    return;
  }
  if (session) return; // signed in through the form meanwhile
  if (me) await startChat(me);
  else auth.show();
}

await boot();
