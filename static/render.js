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
