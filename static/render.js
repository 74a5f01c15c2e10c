// Building blocks of the chat screen as plain DOM: elements, safe links, message items,
// grouping and day dividers. User text only ever reaches the page through textContent
// and text nodes; links are made only for http(s) URLs. No imports (see app.js).

const GROUP_MS = 5 * 60 * 1000; // consecutive messages by one author within this group

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const dayFmt = new Intl.DateTimeFormat(undefined, {
  weekday: 'long', month: 'long', day: 'numeric', year: 'numeric',
});

// ----- small DOM helpers -------------------------------------------------------------

/** Create an element; attrs go through setAttribute, children are nodes or plain text. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

/** Show `text` as the error of a form field (empty: no error), for screen readers too. */
export function fieldError(input, out, text) {
  out.textContent = text;
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

const URL_RE = /\b(?:https?:\/\/|mailto:)[^\s<>"'`]+/gi;
const MAX_LINK = 2048; // a longer URL stays plain text

/** Strip punctuation that ends a sentence rather than the URL, in one pass from the end:
 *  a `)` only while the URL holds more `)` than `(` (so `/wiki/Foo_(bar)` keeps its own),
 *  a `]` only when it holds no `[`. Linear: a body is up to 4000 characters of `)`. */
function trimUrl(url) {
  let opens = 0;
  let closes = 0;
  for (let i = 0; i < url.length; i += 1) {
    if (url[i] === '(') opens += 1;
    else if (url[i] === ')') closes += 1;
  }
  const bracket = url.includes('[');
  let end = url.length;
  for (;;) {
    const last = url[end - 1];
    if ('.,;:!?\'"*_'.includes(last)) end -= 1;
    else if (last === ')' && opens < closes) {
      end -= 1;
      closes -= 1;
    } else if (last === ']' && !bracket) end -= 1;
    else return url.slice(0, end);
  }
}

/** The URL as a link target if it is http, https or mailto (never javascript:, data:...). */
export function safeHref(text) {
  try {
    const url = new URL(text);
    return ['http:', 'https:', 'mailto:'].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/** The links in `text`: [{start, end, href}] for http(s) and mailto URLs (up to
 *  MAX_LINK characters), in order; linear in the length of `text`. */
export function linkRanges(text) {
  const out = [];
  for (const m of text.matchAll(URL_RE)) {
    const url = trimUrl(m[0]);
    const href = url.length <= MAX_LINK && safeHref(url);
    if (href && url.length > 'mailto:'.length) out.push({ start: m.index, end: m.index + url.length, href });
  }
  return out;
}

/** A safe link element: opens elsewhere, tells the target nothing. */
export function linkElement(doc, href, text) {
  const a = doc.createElement('a');
  a.href = href;
  a.rel = 'noopener noreferrer';
  a.target = '_blank';
  a.textContent = text;
  return a;
}

/** Append `text` to `parent` as text nodes, with URLs as safe links. */
export function appendLinkified(parent, text) {
  let pos = 0;
  for (const { start, end, href } of linkRanges(text)) {
    if (start > pos) parent.append(document.createTextNode(text.slice(pos, start)));
    parent.append(linkElement(document, href, text.slice(start, end)));
    pos = end;
  }
  if (pos < text.length) parent.append(document.createTextNode(text.slice(pos)));
}

function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

function dayLabel(ts) {
  const now = new Date();
  const key = dayKey(ts);
  if (key === dayKey(now.getTime())) return 'Today';
  const y = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (key === dayKey(y.getTime())) return 'Yesterday';
  return dayFmt.format(new Date(ts));
}

/** A stable hue per user, for the avatar. */
function hue(text) {
  let x = 0;
  for (const ch of text) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return x % 360;
}

export function avatar(user) {
  const el = h('span', { class: 'avatar', 'aria-hidden': 'true' },
    (Array.from(user.name || '?')[0] || '?').toUpperCase());
  el.style.setProperty('--hue', String(hue(user.name || '')));
  return el;
}

// ----- messages --------------------------------------------------------------------

export function messageItem({ key, seq, user, ts, body, me }) {
  const time = new Date(ts);
  const timeEl = h('time', { class: 'time', datetime: time.toISOString(), title: fullFmt.format(time) },
    timeFmt.format(time));
  const bodyEl = h('div', { class: 'body', 'data-testid': 'message-body' });
  appendLinkified(bodyEl, body);
  const li = h('li', {
    class: 'msg', 'data-testid': 'message', 'data-key': key, 'data-user': user.id, 'data-ts': ts,
  },
  h('div', { class: 'gutter' }, avatar(user),
    h('span', { class: 'gutter-time', 'aria-hidden': 'true' }, timeFmt.format(time))),
  h('div', { class: 'msg-main' },
    h('p', { class: 'msg-head' },
      h('span', { class: 'author', 'data-testid': 'message-author' }, user.name),
      user.bot ? h('span', { class: 'tag' }, 'bot') : null,
      user.id === me?.id ? h('span', { class: 'visually-hidden' }, ' (you)') : null,
      ' ', timeEl),
    bodyEl));
  if (seq !== null) {
    li.dataset.seq = String(seq);
    li.dataset.state = 'sent';
  }
  return li;
}

/** A record of the log: a message or an event line (not a divider). */
function isMessage(el) {
  return el && (el.classList.contains('msg') || el.classList.contains('sys'));
}

function prevMessage(li) {
  let el = li.previousElementSibling;
  while (el && !isMessage(el)) el = el.previousElementSibling;
  return el;
}

export function nextMessage(li) {
  let el = li.nextElementSibling;
  while (el && !isMessage(el)) el = el.nextElementSibling;
  return el;
}

/** Group with the previous message and add a day divider where the date changes. */
export function decorate(li) {
  if (!li) return;
  const prev = prevMessage(li);
  const ts = Number(li.dataset.ts);
  const newDay = !prev || dayKey(Number(prev.dataset.ts)) !== dayKey(ts);
  // Only messages group; an event line between two messages ends the group.
  const cont = !newDay && li.classList.contains('msg') && prev.classList.contains('msg')
    && prev.dataset.user === li.dataset.user
    && ts - Number(prev.dataset.ts) < GROUP_MS;
  li.classList.toggle('cont', cont);
  let day = li.querySelector(':scope > .day');
  if (newDay) {
    if (!day) {
      day = h('div', { class: 'day' }, h('span'));
      li.prepend(day);
    }
    day.firstChild.textContent = dayLabel(ts);
  } else if (day) {
    day.remove();
  }
}

/** Position of a confirmed message with `seq`: before the first later one or any pending. */
export function insertionPoint(ol, seq, fromStart) {
  if (fromStart) {
    for (let el = ol.firstElementChild; el; el = el.nextElementSibling) {
      if (el.dataset.seq === undefined || Number(el.dataset.seq) > seq) return el;
    }
    return null;
  }
  let after = null;
  for (let el = ol.lastElementChild; el; el = el.previousElementSibling) {
    if (el.dataset.seq !== undefined && Number(el.dataset.seq) < seq) break;
    after = el;
  }
  return after;
}

// ----- events: membership and moderation, as lines of text ----------------------------

const soonFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: 'numeric', minute: '2-digit' });
const laterFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** A moment to come, as short as is clear: "14:05", "Tue 14:05" or a full date. */
export function whenText(ms) {
  const d = new Date(ms);
  const ahead = ms - Date.now();
  if (dayKey(ms) === dayKey(Date.now())) return timeFmt.format(d);
  if (ahead < 6 * 86400000) return soonFmt.format(d);
  return laterFmt.format(d);
}

const ROLE_NOUN = { owner: 'the owner', admin: 'an admin', moderator: 'a moderator', member: 'a member' };

/** What an event record says, as one sentence of plain text. */
export function eventText(ev) {
  const who = ev.actor?.name ?? ev.user?.name ?? 'Someone';
  const whom = ev.target?.name ?? 'someone';
  switch (ev.event) {
    case 'joined': return `${who} joined`;
    case 'left': return `${who} left`;
    case 'added': return `${who} added ${whom}`;
    case 'removed': return `${who} removed ${whom}`;
    case 'banned': return Number.isInteger(ev.until)
      ? `${who} banned ${whom} until ${whenText(ev.until)}` : `${who} banned ${whom}`;
    case 'unbanned': return `${who} lifted the ban on ${whom}`;
    case 'muted': return Number.isInteger(ev.until)
      ? `${who} muted ${whom} until ${whenText(ev.until)}` : `${who} muted ${whom}`;
    case 'unmuted': return `${who} unmuted ${whom}`;
    case 'role_changed': return `${who} made ${whom} ${ROLE_NOUN[ev.role] ?? String(ev.role)}`;
    case 'topic_changed': return ev.topic
      ? `${who} changed the topic to “${ev.topic}”` : `${who} cleared the topic`;
    case 'archived': return `${who} archived the room: it is read-only now`;
    case 'unarchived': return `${who} unarchived the room`;
    default: return `${who} changed something in the room`;
  }
}

/** An event in the log: a line of text between the messages, with its time. */
export function eventItem({ key, seq, ts, event }) {
  const time = new Date(ts);
  return h('li', {
    class: 'sys', 'data-testid': 'event', 'data-key': key, 'data-seq': String(seq), 'data-ts': ts,
    'data-event': String(event.event ?? ''), 'data-state': 'sent',
  },
  h('div', { class: 'gutter', 'aria-hidden': 'true' }, h('span', { class: 'sys-mark' }, '•')),
  h('p', { class: 'sys-main' },
    h('span', { class: 'sys-text', 'data-testid': 'event-text' }, eventText(event)), ' ',
    h('time', { class: 'time', datetime: time.toISOString(), title: fullFmt.format(time) },
      timeFmt.format(time))));
}

// ----- sidebar items -------------------------------------------------------------------

const SVG_NS = 'http://www.w3.org/2000/svg';

/** A small padlock, for private rooms. */
export function lockIcon() {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '13');
  svg.setAttribute('height', '13');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', 'lock');
  svg.setAttribute('data-testid', 'lock');
  const path = document.createElementNS(SVG_NS, 'path');
  path.setAttribute('fill', 'currentColor');
  path.setAttribute('d', 'M4 7V5a4 4 0 0 1 8 0v2h.5A1.5 1.5 0 0 1 14 8.5v5a1.5 1.5 0 0 1-1.5 1.5h-9A1.5 1.5 0 0 1 2 13.5v-5A1.5 1.5 0 0 1 3.5 7H4Zm2 0h4V5a2 2 0 0 0-4 0v2Z');
  svg.append(path);
  return svg;
}

/** How a room is named on screen: its title, or for a DM the other people. */
export function roomLabel(info, me) {
  if (info.kind === 'dm') {
    const others = (info.members ?? []).filter((u) => u.id !== me?.id).map((u) => u.name);
    return others.length ? others.join(', ') : 'Just you';
  }
  return info.title || info.name;
}

/** A room in the sidebar: a button, with its unread count for rooms not on screen.
 *  `info` is the server's Room object; `online` (DMs) whether someone else is here. */
export function roomItem(info, { joined, current, unread, mentions = 0, me = null, online = false }) {
  const name = info.name;
  const label = roomLabel(info, me);
  let mark;
  if (info.kind === 'dm') {
    mark = h('span', { class: `presence-dot${online ? ' on' : ''}`, 'data-testid': 'dm-presence',
      'data-online': online ? 'true' : 'false' });
  } else if (info.kind === 'private') {
    mark = h('span', { class: 'hash' }, lockIcon());
  } else {
    mark = h('span', { class: 'hash', 'aria-hidden': 'true' }, '#');
  }
  return h('li', {},
    h('button', {
      class: 'room-btn', type: 'button', 'data-room': name, 'data-testid': 'room-item',
      'data-kind': info.kind, 'aria-current': current ? 'page' : false, 'data-unread': unread || false,
    },
    mark,
    h('span', { class: 'room-name' }, label),
    info.kind === 'private' ? h('span', { class: 'visually-hidden' }, ' (private)') : null,
    info.kind === 'dm' ? h('span', { class: 'visually-hidden' }, online ? ' (online)' : ' (offline)') : null,
    mentions ? h('span', { class: 'badge badge-mention', 'aria-hidden': 'true', 'data-testid': 'mentions',
      title: `${mentions > 99 ? '99+' : mentions} mentioning you` }, `@${mentions > 99 ? '99+' : mentions}`) : null,
    unread ? h('span', { class: 'badge', 'aria-hidden': 'true', 'data-testid': 'unread' },
      unread > 99 ? '99+' : String(unread)) : null,
    unread ? h('span', { class: 'visually-hidden' }, ` (${unread > 99 ? 'more than 99' : unread} unread${
      mentions ? `, ${mentions > 99 ? 'more than 99' : mentions} mentioning you` : ''})`) : null,
    joined ? null : h('span', { class: 'join-hint' }, 'Join')));
}

const ROLE_BADGE = { owner: 'Owner', admin: 'Admin', moderator: 'Mod' };

/** A member of the room: presence, name, role; `actions` (a menu button) if any. */
export function memberItem({ user, role, online, muted_until: mutedUntil }, me, actions = null) {
  const av = avatar(user);
  av.classList.add(online ? 'online' : 'offline');
  const muted = Number.isInteger(mutedUntil) && mutedUntil > Date.now();
  return h('li', {
    'data-testid': 'member', 'data-user': user.id, 'data-name': user.name,
    'data-role': role, 'data-online': online ? 'true' : 'false', class: online ? '' : 'away',
  },
  av,
  h('span', { class: 'member-name' }, user.name),
  h('span', { class: 'visually-hidden' }, online ? ' (online)' : ' (offline)'),
  user.bot ? h('span', { class: 'tag' }, 'bot') : null,
  ROLE_BADGE[role] ? h('span', { class: `role role-${role}`, 'data-testid': 'role', title: role }, ROLE_BADGE[role]) : null,
  muted ? h('span', { class: 'muted-mark', 'data-testid': 'muted', title: `Muted until ${whenText(mutedUntil)}` },
    h('span', { 'aria-hidden': 'true' }, '🔇'), h('span', { class: 'visually-hidden' }, ` muted until ${whenText(mutedUntil)}`)) : null,
  user.id === me.id ? h('span', { class: 'you' }, '(you)') : null,
  actions);
}
