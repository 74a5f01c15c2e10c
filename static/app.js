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
  'room', 'chat', 'render', 'messagelist', 'sidebar', 'composer', 'notices', 'view'];

function moduleUrl(name) {
  const link = document.querySelector(`link[rel="modulepreload"][data-module="${name}"]`);
  return link ? link.href : new URL(`./${name}.js`, import.meta.url).href;
}

const lib = Object.fromEntries(await Promise.all(
  MODULES.map(async (name) => [name, await import(moduleUrl(name))])));
const { createApi, ApiError } = lib.api;
const { render } = lib;
const Room = lib.room.defineRoom({ ...lib.roomlog, ...lib.presence });
const Chat = lib.chat.defineChat({ Room, Outbox: lib.outbox.Outbox });

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
  const view = new lib.view.ChatView(render, {
    list: new lib.messagelist.MessageList(render),
    sidebar: new lib.sidebar.Sidebar(render),
    composer: new lib.composer.Composer(render),
    notices: new lib.notices.Notices(),
  });
  let conn = null;
  let refreshTimer = null;
  const chat = new Chat({ me, send: (frame) => conn.send(frame), storage, view });

  async function refreshRooms() {
    try {
      view.setKnownRooms(await api.rooms());
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) endSession('Your session has ended. Please sign in again.');
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
    leaveRoom: (name) => chat.leave(name),
    send: (room, body) => chat.post(room, body),
    retry: (room, clientId) => chat.retry(room, clientId),
    discard: (room, clientId) => chat.discard(room, clientId),
    typing: (room) => chat.typing(room),
    loadOlder: (room) => chat.loadOlder(room),
    markRead: (room) => chat.markRead(room),
    reconnectNow: () => conn.reconnectNow(),
    async createRoom(name) {
      let existed = false;
      const wasIn = chat.rooms.has(name);
      try {
        await api.createRoom(name);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 409) {
          view.showRoomError(err.message || 'Could not create the room.');
          return false;
        }
        existed = true;
      }
      await refreshRooms();
      handlers.selectRoom(name);
      if (existed) view.notice(wasIn ? `You are already in #${name}.` : `#${name} already existed: you joined it.`);
      return true;
    },
    async logout() {
      try {
        await api.logout();
      } catch {
        // the server may be unreachable; forget the session here anyway
      }
      endSession('You have logged out.');
    },
  };

  function stop() {
    clearInterval(refreshTimer);
    conn.stop();
    view.destroy();
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
    onFrame: (frame) => chat.handle(frame),
    onClose: () => chat.disconnected(),
    onState: (s) => {
      view.setConnection(s);
      if (s.state === 'open') refreshRooms();
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
  showAdminLink(me, chat);
  view.bind(chat, handlers, me);
  chat.restore();
  show('chat');

  let rooms = [];
  try {
    rooms = await api.rooms();
  } catch {
    rooms = []; // the list arrives with the next refresh
  }
  view.setKnownRooms(rooms);
  if (!chat.rooms.size && rooms.length) {
    chat.join((rooms.find((r) => r.name === 'general') ?? rooms[0]).name);
  }
  const saved = storage.activeRoom();
  select(chat.rooms.has(saved) ? saved : chat.rooms.keys().next().value ?? null);
  view.focusComposer();
  conn.start();
  refreshTimer = setInterval(() => {
    if (document.visibilityState === 'visible') refreshRooms();
  }, ROOMS_REFRESH_MS);
}

/** The link to the admin page, for server admins only (register and login answers do
 *  not say; GET /api/me does). */
async function showAdminLink(me, chat) {
  const link = $('admin-link');
  link.hidden = !me.admin;
  if (me.admin !== undefined) return;
  try {
    const full = await api.me();
    if (session?.chat === chat) link.hidden = !full?.admin;
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
