// The members panel: everyone in the room on screen (GET /api/rooms/<room>/members),
// online first, then by role and name, with role badges; kept current as events and
// presence frames come. For whoever may (§18 of docs/protocol.md: moderators and up,
// only on members below their own role), a menu per member: mute, unmute, kick, ban,
// change role. Built on render.js's building blocks and menu.js's Menus, which app.js
// passes in (no imports: see app.js).

const RANK = { member: 0, moderator: 1, admin: 2, owner: 3 };
const ROSTER_DEBOUNCE_MS = 150;
const MINUTE = 60;
const HOUR = 3600;
const DAY = 86400;

/** The actor's rank in `room`: their role, raised to admin in a public room for a
 *  server admin; -1 for a non-member. */
export function rankIn(room, serverAdmin) {
  let rank = RANK[room.info.role] ?? -1;
  if (room.kind === 'public' && serverAdmin) rank = Math.max(rank, RANK.admin);
  return rank;
}

export { RANK };

const $ = (id) => document.getElementById(id);

export class MembersPanel {
  /** `marks(h, state)`: what follows a name for its presence state (userstatus.js). */
  constructor({ h, memberItem }, menus, marks = () => []) {
    Object.assign(this, { h, memberItem, menus, marks });
    this.handlers = null;
    this.me = null;
    this.serverAdmin = false;
    this.room = null; // the room on screen
    this.roster = []; // [{user, role, online, muted_until}] of this.room
    this.timer = null;
    this.loads = 0; // answers to an older request are dropped
    this.el = { list: $('member-list'), count: $('members-count'), sub: $('room-sub') };
  }

  bind({ handlers, me, signal }) {
    Object.assign(this, { handlers, me });
    this.signal = signal;
  }

  destroy() {
    clearTimeout(this.timer);
    clearTimeout(this.expiryTimer);
    this.room = null;
    this.roster = [];
    this.el.list.replaceChildren();
    this.el.count.textContent = '';
  }

  setServerAdmin(yes) {
    this.serverAdmin = Boolean(yes);
    this.render();
  }

  /** Show `room`'s members (null: nobody). */
  show(room) {
    const changed = room?.name !== this.room?.name;
    this.room = room;
    if (changed) this.roster = [];
    this.render();
    if (room) this.reload(0);
  }

  /** Members joined, left, were removed or changed role: read the roster again. */
  reload(delay = ROSTER_DEBOUNCE_MS) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._load(), delay);
  }

  /** Someone came online or went offline (room.people changed). */
  presenceChanged(room) {
    if (room !== this.room) return;
    const known = new Set(this.roster.map((m) => m.user.id));
    if ([...room.people.members.keys()].some((id) => !known.has(id))) this.reload();
    this.render();
  }

  async _load() {
    const room = this.room;
    if (!room) return;
    const load = ++this.loads;
    let roster;
    try {
      roster = await this.handlers.members(room.name);
    } catch {
      return; // the panel keeps what it showed; the next event reads again
    }
    if (load !== this.loads || room !== this.room) return;
    this.roster = Array.isArray(roster) ? roster.filter((m) => m?.user?.id) : [];
    this.render();
  }

  /** Online now: what this connection knows (joined + presence), else the server's word. */
  _online(m) {
    const room = this.room;
    return room && room.state === 'live' ? room.people.members.has(m.user.id) : Boolean(m.online);
  }

  render() {
    const e = this.el;
    const room = this.room;
    if (!room) {
      e.list.replaceChildren();
      e.count.textContent = '';
      e.sub.textContent = '';
      return;
    }
    const focusedId = document.activeElement?.closest?.('#member-list li')?.dataset.user;
    // A member's menu open across a redraw is opened again with what is true now.
    const menuFor = this.menus.open && e.list.contains(this.menus.open.button)
      ? this.menus.open.button.closest('li')?.dataset.user : null;
    if (menuFor) this.menus.close(false);
    const members = this.roster.map((m) => ({ ...m, online: this._online(m) }));
    members.sort((a, b) => (b.online - a.online) || (RANK[b.role] - RANK[a.role])
      || a.user.name.localeCompare(b.user.name));
    const mine = rankIn(room, this.serverAdmin);
    this.nextExpiry = Infinity;
    e.list.replaceChildren(...members.map((m) => this._item(room, m, mine)));
    // A status text leaves the panel when it expires (the server says so too, later).
    clearTimeout(this.expiryTimer);
    if (this.nextExpiry !== Infinity) {
      this.expiryTimer = setTimeout(() => this.render(), Math.max(0, this.nextExpiry - Date.now()) + 50);
    }
    const online = members.filter((m) => m.online).length;
    e.count.textContent = members.length ? `(${members.length})` : '';
    e.sub.textContent = members.length ? `${online} of ${members.length} online`
      : (room.people.members.size ? `${room.people.members.size} online` : '');
    if (focusedId) {
      e.list.querySelector(`li[data-user="${CSS.escape(focusedId)}"] button`)?.focus();
    }
    if (menuFor) {
      const btn = e.list.querySelector(`li[data-user="${CSS.escape(menuFor)}"] button[data-testid="member-actions"]`);
      btn?.click();
    }
  }

  /** A member's line, with their away state and status text while online. */
  _item(room, m, mine) {
    const li = this.memberItem(m, this.me, this._actionsButton(room, m, mine));
    const state = m.online && room.state === 'live' ? room.people.stateOf(m.user.id) : null;
    if (state) {
      if (Number.isInteger(state.status_until) && state.status_until > Date.now()) {
        this.nextExpiry = Math.min(this.nextExpiry, state.status_until);
      }
      li.dataset.idle = String(Boolean(state.away));
      li.querySelector('.member-name')?.after(...this.marks(this.h, state));
    }
    return li;
  }

  _actionsButton(room, m, mine) {
    if (room.kind === 'dm' || m.user.id === this.me.id) return null;
    if (mine < RANK.moderator || (RANK[m.role] ?? 0) >= mine) return null;
    const btn = this.h('button', {
      class: 'btn btn-ghost btn-icon member-menu-btn', type: 'button',
      'data-testid': 'member-actions', title: `Actions for ${m.user.name}`,
    }, this.h('span', { 'aria-hidden': 'true' }, '⋯'),
    this.h('span', { class: 'visually-hidden' }, `Actions for ${m.user.name}`));
    this.menus.attach(btn, () => this._items(room, m, mine));
    return btn;
  }

  _items(room, m, mine) {
    const name = m.user.name;
    const act = (action, arg) => () => this.handlers.moderate(room.name, action, name, arg);
    const muted = Number.isInteger(m.muted_until) && m.muted_until > Date.now();
    const items = [];
    if (muted) items.push({ label: 'Unmute', action: act('unmute'), testid: 'unmute' });
    else {
      items.push({ label: 'Mute for 10 minutes', action: act('mute', 10 * MINUTE), testid: 'mute-10m' });
      items.push({ label: 'Mute for 1 hour', action: act('mute', HOUR), testid: 'mute-1h' });
      items.push({ label: 'Mute for 1 day', action: act('mute', DAY), testid: 'mute-1d' });
    }
    items.push('separator');
    items.push({ label: `Remove ${name} from the room`, action: act('kick'), testid: 'kick', danger: true });
    if (mine >= RANK.admin) {
      items.push({ label: 'Ban for 1 hour', action: act('ban', HOUR), testid: 'ban-1h', danger: true });
      items.push({ label: 'Ban for 1 day', action: act('ban', DAY), testid: 'ban-1d', danger: true });
      items.push({ label: 'Ban for 7 days', action: act('ban', 7 * DAY), testid: 'ban-7d', danger: true });
      items.push({ label: 'Ban until lifted', action: act('ban', null), testid: 'ban-forever', danger: true });
      items.push('separator');
      if (m.role === 'member') items.push({ label: 'Make moderator', action: act('role', 'moderator'), testid: 'make-moderator' });
      if (m.role === 'moderator') items.push({ label: 'Make member', action: act('role', 'member'), testid: 'make-member' });
    }
    if (mine >= RANK.owner) {
      if (m.role === 'admin') items.push({ label: 'Make moderator', action: act('role', 'moderator'), testid: 'make-moderator' });
      else items.push({ label: 'Make admin', action: act('role', 'admin'), testid: 'make-admin' });
      items.push({ label: 'Make owner (you become an admin)', action: act('role', 'owner'), testid: 'make-owner' });
    }
    return items;
  }
}
