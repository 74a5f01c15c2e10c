// The rows of the room list (sidebar) and of the members panel, and the padlock a
// private room shows. Built by defineListItems() on render.js's helpers (no imports:
// see app.js); app.js adds them to the render module's functions.

/** lockIcon, roomLabel, roomItem and memberItem, built on render.js's h, avatar and whenText. */
export function defineListItems({ h, avatar, whenText }) {
  const SVG_NS = 'http://www.w3.org/2000/svg';

  /** A small padlock, for private rooms. */
  function lockIcon() {
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
  function roomLabel(info, me) {
    if (info.kind === 'dm') {
      const others = (info.members ?? []).filter((u) => u.id !== me?.id).map((u) => u.name);
      return others.length ? others.join(', ') : 'Just you';
    }
    return info.title || info.name;
  }

  /** A room in the sidebar: a button, with its unread count for rooms not on screen.
   *  `info` is the server's Room object; `online` (DMs) whether someone else is here. */
  function roomItem(info, { joined, current, unread, mentions = 0, me = null, online = false }) {
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
  function memberItem({ user, role, online, muted_until: mutedUntil }, me, actions = null) {
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

  return { lockIcon, roomLabel, roomItem, memberItem };
}
