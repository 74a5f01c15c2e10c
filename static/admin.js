// The server admin page: mint, list and revoke invites; find accounts and deactivate
// or reactivate them. Every value from the server is written with textContent, never
// as HTML. api.js comes from its versioned URL in admin.html (see app.js).

const { request, ApiError } = await import(
  document.querySelector('link[rel="modulepreload"][data-module="api"]').href);

const $ = (id) => document.getElementById(id);
const SEARCH_DELAY_MS = 200;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function button(text, testid, onClick, className = 'btn btn-small') {
  const b = el('button', text, className);
  b.type = 'button';
  b.dataset.testid = testid;
  b.addEventListener('click', onClick);
  return b;
}

function say(text) {
  $('status').textContent = text;
}

function problem(text) {
  $('problem').textContent = text;
  $('problem').hidden = !text;
}

function messageOf(err) {
  return err instanceof ApiError ? err.message : 'Something went wrong. Try again.';
}

const when = (ms) => new Date(ms).toLocaleString();

// ----- invites --------------------------------------------------------------------

async function loadInvites() {
  const { invites } = await request('GET', '/api/invites');
  const rows = $('invite-rows');
  rows.replaceChildren(...invites.map((inv) => {
    const tr = el('tr');
    tr.dataset.testid = 'invite-row';
    tr.dataset.prefix = inv.prefix;
    const code = el('td');
    code.append(el('code', `${inv.prefix}…`));
    tr.append(code, el('td', `${inv.uses_left} of ${inv.uses}`), el('td', when(inv.expires_at)),
      el('td', inv.created_by?.name ?? ''));
    const cell = el('td');
    cell.append(button('Revoke', 'invite-revoke', () => revokeInvite(inv.prefix, tr)));
    tr.append(cell);
    return tr;
  }));
  $('invites-empty').hidden = invites.length > 0;
}

async function revokeInvite(prefix, row) {
  try {
    await request('DELETE', `/api/invites/${encodeURIComponent(prefix)}`);
    row.remove();
    say(`Invite ${prefix}… revoked: it admits nobody now.`);
  } catch (err) {
    say(`Could not revoke the invite: ${messageOf(err)}`);
  }
  await loadInvites().catch(() => {});
}

$('invite-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const uses = Number($('invite-uses').value);
  $('invite-error').textContent = '';
  if (!Number.isInteger(uses) || uses < 1 || uses > 1000) {
    $('invite-error').textContent = 'Uses must be a whole number from 1 to 1000.';
    $('invite-uses').focus();
    return;
  }
  try {
    const inv = await request('POST', '/api/invites',
      { uses, expires_in: Number($('invite-expiry').value) });
    $('invite-code').value = inv.code;
    $('invite-copied').textContent = '';
    $('new-invite').hidden = false;
    $('invite-code').focus();
    $('invite-code').select();
    say(`Invite created: ${inv.uses_left} use(s), until ${when(inv.expires_at)}.`);
  } catch (err) {
    $('invite-error').textContent = messageOf(err);
  }
  await loadInvites().catch(() => {});
});

$('invite-copy').addEventListener('click', async () => {
  const box = $('invite-code');
  let copied = false;
  try {
    await navigator.clipboard.writeText(box.value);
    copied = true;
  } catch {
    box.select();
    copied = document.execCommand?.('copy') ?? false;
  }
  $('invite-copied').textContent = copied
    ? 'Copied.' : 'Select the code and copy it (Ctrl+C / ⌘C).';
});

// ----- accounts ---------------------------------------------------------------------

let searchTimer = null;
let searchSeq = 0;

async function search() {
  const prefix = $('user-search').value.trim();
  const seq = ++searchSeq;
  try {
    const { users } = await request('GET',
      `/api/users?all=true&prefix=${encodeURIComponent(prefix)}`);
    if (seq === searchSeq) drawUsers(users);
  } catch (err) {
    if (seq === searchSeq) say(`Search failed: ${messageOf(err)}`);
  }
}

let drawn = '';

function drawUsers(users) {
  // The same answer again leaves the list alone: a confirmation open in it stays open.
  const key = JSON.stringify(users);
  if (key === drawn) return;
  drawn = key;
  const list = $('user-results');
  list.replaceChildren(...users.map(userItem));
  if (!users.length) list.append(el('li', 'No account starts with that.', 'hint'));
}

function userItem(u) {
  const li = el('li');
  li.dataset.testid = 'user-result';
  li.dataset.name = u.name;
  li.append(el('span', u.name, 'who'));
  if (u.bot) li.append(el('span', 'bot', 'tag'));
  if (u.deactivated) li.append(el('span', 'deactivated', 'tag off'));
  const action = u.deactivated ? 'reactivate' : 'deactivate';
  const label = u.deactivated ? 'Reactivate' : 'Deactivate';
  const start = button(label, 'user-action', () => ask(li, u, action, label, start));
  li.append(start);
  return li;
}

/** Ask before acting, in the page (no dialog box), then act. */
function ask(li, u, action, label, start) {
  li.querySelector('.ask')?.remove();
  const box = el('div', undefined, 'ask admin-row');
  const text = action === 'deactivate'
    ? `Deactivate ${u.name}? Their sessions end, their open connections close and the tokens of their bots are revoked.`
    : `Reactivate ${u.name}? They can log in again; revoked bot tokens stay revoked.`;
  box.append(el('span', text),
    button(`Yes, ${label.toLowerCase()}`, 'confirm-yes', () => act(u, action, box),
      'btn btn-small btn-primary'),
    button('Cancel', 'confirm-no', () => { box.remove(); start.focus(); }));
  li.append(box);
  box.querySelector('[data-testid="confirm-yes"]').focus();
}

async function act(u, action, box) {
  box.querySelectorAll('button').forEach((b) => { b.disabled = true; });
  try {
    await request('POST', `/api/admin/users/${encodeURIComponent(u.name)}/${action}`);
    say(action === 'deactivate' ? `${u.name} is deactivated.` : `${u.name} is active again.`);
  } catch (err) {
    say(`Could not ${action} ${u.name}: ${messageOf(err)}`);
  }
  box.remove();
  await search();
}

$('user-search').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, SEARCH_DELAY_MS);
});

// ----- boot -------------------------------------------------------------------------

async function boot() {
  let me = null;
  try {
    me = await request('GET', '/api/me');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      problem('Sign in first: this page is for server admins.');
    } else {
      problem(messageOf(err));
    }
    return;
  }
  if (!me.admin) {
    problem('Only server admins can use this page.');
    return;
  }
  $('invites').hidden = false;
  $('accounts').hidden = false;
  try {
    const { registration } = await request('GET', '/api/server');
    $('registration-mode').textContent = {
      open: 'Registration is open: anyone can create an account, invites are not needed.',
      invite: 'Registration is by invite: a new account needs one of these codes.',
      closed: 'Registration is closed: nobody can create an account, invites included.',
    }[registration] ?? '';
  } catch {
    // the mode is a hint; the page works without it
  }
  await Promise.all([loadInvites(), search()]).catch((err) => say(messageOf(err)));
}

await boot();
