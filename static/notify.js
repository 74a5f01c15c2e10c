// Desktop notifications (the Notification API): asked for only when the user clicks
// the bell's "Turn on desktop notifications", never on page load. While the tab is
// hidden, a message that mentions the user, or any message in a DM, shows one, unless
// the user turned notifications off for that room (a per-browser list in storage.js).
// Clicking one brings the tab forward at that message. No DOM of its own besides the
// bell's menu (menu.js's Menus, passed in by app.js: no imports, see app.js).

const $ = (id) => document.getElementById(id);

export class Notifier {
  constructor(menus) {
    this.menus = menus;
    this.handlers = null;
    this.storage = null;
    this.quiet = new Set();
    this.el = { bell: $('notify-menu') };
  }

  bind({ handlers, storage, signal }) {
    Object.assign(this, { handlers, storage });
    this.quiet = storage.quietRooms?.() ?? new Set();
    this.el.bell.hidden = !('Notification' in window);
    this.menus.attach(this.el.bell, () => this._items(), { signal });
  }

  destroy() {
    this.quiet = new Set();
  }

  /** Whether the user turned notifications off for `room`. */
  isQuiet(room) {
    return this.quiet.has(room);
  }

  setQuiet(room, quiet) {
    if (quiet) this.quiet.add(room);
    else this.quiet.delete(room);
    this.storage.setQuietRooms?.(this.quiet);
  }

  _permission() {
    return 'Notification' in window ? Notification.permission : 'denied';
  }

  _items() {
    const perm = this._permission();
    if (perm === 'granted') {
      return [{ label: 'Desktop notifications are on (mentions and DMs)', testid: 'notify-on',
        action: () => this.handlers.notice('Turn them off for one room from its menu, or for the site in the browser.') }];
    }
    if (perm === 'denied') {
      return [{ label: 'Notifications are blocked by the browser', testid: 'notify-blocked',
        action: () => this.handlers.notice('Allow notifications for this site in the browser settings.') }];
    }
    return [{ label: 'Turn on desktop notifications', testid: 'notify-enable', action: () => this._ask() }];
  }

  async _ask() {
    let answer = 'default';
    try {
      answer = await Notification.requestPermission();
    } catch {
      answer = this._permission();
    }
    this.handlers.notice(answer === 'granted'
      ? 'Desktop notifications are on: mentions of you and direct messages, while this tab is hidden.'
      : 'Desktop notifications stay off.');
  }

  /** A message of someone else arrived live in `room`. */
  incoming(room, m) {
    if (this._permission() !== 'granted' || document.visibilityState !== 'hidden') return;
    if (this.quiet.has(room.name) || !(room.kind === 'dm' || room.mentionsMe(m))) return;
    const where = room.kind === 'dm' ? '' : ` in ${room.label}`;
    let note;
    try {
      note = new Notification(`${m.user.name}${where}`, {
        body: (String(m.body) || fileNames(m)).slice(0, 200), tag: `${room.name}:${m.seq}`,
      });
    } catch {
      return; // some browsers allow notifications only from a service worker
    }
    note.onclick = () => {
      window.focus();
      note.close();
      this.handlers.openAt(room.name, m.seq);
    };
  }
}

/** A message of files alone is told by their names. */
function fileNames(m) {
  const names = Array.isArray(m.attachments) ? m.attachments.map((f) => String(f?.name ?? '')) : [];
  return names.length ? `📎 ${names.join(', ')}` : '';
}
