// The sign-in screen: signing in or creating an account, with each refusal shown where
// it belongs (the field, or the form) in words for people. It follows the server's
// registration mode (GET /api/server): an invite code field when registration is by
// invite, no sign-up at all when it is closed. No imports (see app.js).

const $ = (id) => document.getElementById(id);

/**
 * Wire the sign-in form; returns {show(message)}, which puts the screen up.
 * @param {object} o
 * @param {object} o.api          see createApi in api.js
 * @param {Function} o.ApiError   api.js's error class
 * @param {Function} o.fieldError render.js's
 * @param {(me: object) => Promise<void>} o.onSignedIn  starts the chat as `me`
 * @param {(which: string) => void} o.showScreen  shows 'auth' or 'chat'
 */
export function createSignIn({ api, ApiError, fieldError, onSignedIn, showScreen }) {
  const form = $('auth-form');
  const user = $('auth-username');
  const pass = $('auth-password');
  const userErr = $('auth-username-error');
  const passErr = $('auth-password-error');
  const formErr = $('auth-error');
  const submit = $('auth-submit');
  const note = $('auth-note');
  const invite = $('auth-invite');
  const inviteErr = $('auth-invite-error');
  let mode = 'login';
  let registration = 'open'; // the server's registration mode: open, invite or closed

  function clearErrors() {
    fieldError(user, userErr, '');
    fieldError(pass, passErr, '');
    fieldError(invite, inviteErr, '');
    formErr.textContent = '';
  }

  /** Show what the server's registration mode allows. */
  function applyRegistration(next) {
    registration = next;
    $('auth-invite-field').hidden = registration !== 'invite';
    if (registration === 'closed' && mode === 'signup') setMode('login');
    else setSwitch();
  }

  async function loadRegistration() {
    try {
      const info = await api.server();
      if (info && typeof info.registration === 'string') applyRegistration(info.registration);
    } catch {
      // unknown: keep what we had; a refused registration still explains itself
    }
  }

  function setSwitch() {
    const closed = registration === 'closed' && mode === 'login';
    $('auth-switch').hidden = closed;
    $('auth-switch-text').textContent = closed
      ? 'This server is not accepting new accounts. Ask a server admin for one.'
      : mode === 'signup' ? 'Already have an account?' : 'New here?';
  }

  function setMode(next) {
    mode = next;
    const signup = mode === 'signup';
    form.dataset.mode = mode;
    $('auth-title').textContent = signup ? 'Create an account' : 'Sign in';
    submit.textContent = signup ? 'Create account' : 'Sign in';
    $('auth-switch').textContent = signup ? 'Sign in instead' : 'Create an account';
    setSwitch();
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
    } else if (err.status === 403 && err.code === 'invite_required') {
      fieldError(invite, inviteErr, invite.value.trim()
        ? 'That invite code does not work: it may be used up, expired or revoked. Ask for a new one.'
        : 'Enter the invite code a server admin gave you.');
      applyRegistration('invite');
      invite.focus();
    } else if (err.status === 403 && err.code === 'registration_closed') {
      applyRegistration('closed');
      formErr.textContent = 'This server is not accepting new accounts.';
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
      const code = registration === 'invite' ? invite.value.trim() : undefined;
      const me = mode === 'signup'
        ? await api.register(name, pass.value, code) : await api.login(name, pass.value);
      pass.value = '';
      invite.value = '';
      await onSignedIn(me);
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
  loadRegistration();

  return {
    show(message = '') {
      const already = !$('auth').hidden;
      note.textContent = message;
      note.hidden = !message;
      showScreen('auth');
      document.title = 'Sign in · Chat';
      loadRegistration();
      if (!already) user.focus(); // never yank focus from a field being typed in
    },
  };
}
