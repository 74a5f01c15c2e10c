// The "New messages" divider of a message log: where the messages the reader has not
// seen start, placed when a room with unread messages is opened or when messages
// arrive while the reader is scrolled up, and gone once they leave the room. No
// imports (see app.js): messagelist.js calls these with render.js's `h`.

const SELECTOR = ':scope > .new-divider';

export function hasDivider(ol) {
  return ol.querySelector(SELECTOR) !== null;
}

export function removeDivider(ol) {
  ol.querySelector(SELECTOR)?.remove();
}

/** The divider before the list item `before` (a message), if there is none yet. */
export function placeDivider(h, ol, before) {
  if (!before || hasDivider(ol)) return;
  const seq = Number(before.dataset.seq);
  const divider = h('li', { class: 'new-divider', 'data-testid': 'new-divider' },
    h('span', {}, 'New messages'));
  if (Number.isFinite(seq)) divider.dataset.seq = String(seq - 0.5);
  ol.insertBefore(divider, before);
}

/** Opening a room that has unread messages: the divider before the first of them
 *  (someone else's message, not an event line). */
export function unreadDivider(h, ol, room, me) {
  if (!room.unread || hasDivider(ol)) return;
  const first = room.messages.find((m) => m.seq > room.lastRead && m.user.id !== me.id
    && m.type !== 'event');
  if (first) placeDivider(h, ol, ol.querySelector(`:scope > li[data-seq="${first.seq}"]`));
}

/** Scroll `log` to the bottom, or up to the divider when it is above what that shows;
 *  true when the reader was left above the bottom. */
export function scrollToUnread(log, ol) {
  log.scrollTop = log.scrollHeight;
  const divider = ol.querySelector(SELECTOR);
  if (divider && divider.offsetTop < log.scrollTop) {
    log.scrollTop = Math.max(0, divider.offsetTop - 16);
    return true;
  }
  return false;
}
