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

const MODULES = ['api', 'connection', 'roomlog', 'presence', 'outbox', 'room', 'chat',
  'render', 'messagelist', 'sidebar', 'composer', 'notices', 'view'];

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
const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const ROOMS_REFRESH_MS = 60000;

// ----- per-user browser storage ----------------------------------------------------

/** What survives a reload: joined rooms and read positions (per browser), the room on
 *  screen and unsent messages (per tab, so two tabs do not send each other's drafts). */
function makeStorage(userId) {
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
    joinedRooms: () => {
      const list = read(localStorage, 'rooms', []);
      return Array.isArray(list) ? list.filter((n) => typeof n === 'string' && ROOM_RE.test(n)) : [];
    },
    setJoinedRooms: (names) => write(localStorage, 'rooms', names),
    lastRead: (room) => Number(read(localStorage, 'read', {})[room]) || 0,
    setLastRead: (room, seq) => {
      const all = read(localStorage, 'read', {});
      all[room] = seq;
      write(localStorage, 'read', all);
    },
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

// ----- screens ---------------------------------------------------------------------

let session = null; // the running chat session, if signed in

function show(which) {
  $('boot').hidden = true;
  $('auth').hidden = which !== 'auth';
  $('chat').hidden = which !== 'chat';
}

const auth = (() => {
  const { fieldError } = render;
  const form = $('auth-form');
  const user = $('auth-username');
  const pass = $('auth-password');
  const userErr = $('auth-username-error');
  const passErr = $('auth-password-error');
  const formErr = $('auth-error');
  const submit = $('auth-submit');
  const note = $('auth-note');
  let mode = 'login';

  function clearErrors() {
    fieldError(user, userErr, '');
    fieldError(pass, passErr, '');
    formErr.textContent = '';
  }

  function setMode(next) {
    mode = next;
    const signup = mode === 'signup';
    form.dataset.mode = mode;
    $('auth-title').textContent = signup ? 'Create an account' : 'Sign in';
    submit.textContent = signup ? 'Create account' : 'Sign in';
    $('auth-switch-text').textContent = signup ? 'Already have an account?' : 'New here?';
    $('auth-switch').textContent = signup ? 'Sign in instead' : 'Create an account';
    pass.autocomplete = signup ? 'new-password' : 'current-password';
    clearErrors();
  }

  const sentence = (text) => {
    const t = String(text).trim();
    return t ? t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.') : t;
  };

  function showError(err) {
    if (!(err instanceof ApiError)) {
      formErr.textContent = 'Something went wrong. Try again.';
      return;
    }
    if (err.status === 401) {
      formErr.textContent = 'Wrong username or password.';
      pass.focus();
      pass.select();
    } else if (err.status === 409) {
      fieldError(user, userErr, 'That username is taken. Pick another one.');
      user.focus();
    } else if (err.status === 400 && /password/i.test(err.message)) {
      fieldError(pass, passErr, sentence(err.message));
      pass.focus();
    } else if (err.status === 400 && /user|name/i.test(err.message)) {
      fieldError(user, userErr, sentence(err.message));
      user.focus();
    } else if (err.status === 429) {
      formErr.textContent = err.retryAfter
        ? `Too many attempts. Wait ${Math.ceil(err.retryAfter)} s and try again.`
        : 'Too many attempts. Wait a moment and try again.';
    } else {
      formErr.textContent = sentence(err.message);
    }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    const name = user.value.trim();
    let bad = false;
    if (!pass.value) {
      fieldError(pass, passErr, 'Enter your password.');
      pass.focus();
      bad = true;
    }
    if (!name) {
      fieldError(user, userErr, 'Enter your username.');
      user.focus();
      bad = true;
    }
    if (bad) return;
    submit.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      const me = mode === 'signup' ? await api.register(name, pass.value) : await api.login(name, pass.value);
      pass.value = '';
      await startChat(me);
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = false;
      form.removeAttribute('aria-busy');
    }
  });
  $('auth-switch').addEventListener('click', () => {
    setMode(mode === 'login' ? 'signup' : 'login');
    user.focus();
  });

  return {
    show(message = '') {
      const already = !$('auth').hidden;
      note.textContent = message;
      note.hidden = !message;
      show('auth');
      document.title = 'Sign in · Chat';
      if (!already) user.focus(); // never yank focus from a field being typed in
    },
  };
})();

// ----- the chat session -------------------------------------------------------------

async function startChat(me) {
  session?.stop();
  const storage = makeStorage(me.id);
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
    onAuthLost: () => endSession('Your session has ended. Please sign in again.'),
  });

  session = { chat, stop };
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
