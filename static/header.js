// The room header: the room's name (a lock for a private room, the people of a DM),
// its kind, its topic (edited in place by admins and up), and the room menu (add
// people, lift a ban, archive, leave for good). Built on render.js's building blocks and menu.js's
// Menus, which app.js passes in (no imports: see app.js).

const RANK = { member: 0, moderator: 1, admin: 2, owner: 3 };
const KIND_TEXT = { public: 'Public channel', private: 'Private channel', dm: 'Direct message' };

const $ = (id) => document.getElementById(id);

export class RoomHeader {
  constructor({ h, lockIcon, fieldError }, menus) {
    Object.assign(this, { h, lockIcon, fieldError, menus });
    this.handlers = null;
    this.me = null;
    this.serverAdmin = false;
    this.room = null;
    this.editing = false;
    this.el = {
      title: $('room-title'), kind: $('room-kind'), topicLine: $('topic-line'),
      topic: $('room-topic'), edit: $('edit-topic'), form: $('topic-form'),
      input: $('topic-input'), cancel: $('topic-cancel'), error: $('topic-error'),
      menu: $('room-menu'), unban: $('unban-dialog'), unbanForm: $('unban-form'),
      unbanName: $('unban-name'), unbanError: $('unban-error'), unbanCancel: $('unban-cancel'),
    };
  }

  bind({ handlers, me, signal }) {
    Object.assign(this, { handlers, me });
    const e = this.el;
    const opts = { signal };
    e.edit.addEventListener('click', () => this._startEdit(), opts);
    e.cancel.addEventListener('click', () => this._stopEdit(true), opts);
    e.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._saveTopic();
    }, opts);
    e.input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') {
        ev.preventDefault();
        ev.stopPropagation();
        this._stopEdit(true);
      }
    }, opts);
    this.menus.attach(e.menu, () => this._menuItems(), opts);
    e.unbanCancel.addEventListener('click', () => e.unban.close(), opts);
    e.unbanForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._unban();
    }, opts);
    e.unbanName.addEventListener('input', () => this.fieldError(e.unbanName, e.unbanError, ''), opts);
  }

  destroy() {
    this.room = null;
    this.editing = false;
    if (this.el.unban.open) this.el.unban.close();
  }

  setServerAdmin(yes) {
    this.serverAdmin = Boolean(yes);
    this.render(this.room);
  }

  _rank(room) {
    let rank = RANK[room.info.role] ?? -1;
    if (room.kind === 'public' && this.serverAdmin) rank = Math.max(rank, RANK.admin);
    return rank;
  }

  /** Draw the header for `room` (null: no room on screen). */
  render(room) {
    const e = this.el;
    if (room !== this.room) {
      this.editing = false;
      e.form.hidden = true;
    }
    this.room = room;
    if (!room) {
      e.title.replaceChildren('No room');
      e.kind.hidden = true;
      e.topicLine.hidden = true;
      e.menu.hidden = true;
      return;
    }
    const info = room.info;
    if (room.kind === 'private') {
      e.title.replaceChildren(this.lockIcon(), ` ${info.title || room.name}`);
    } else {
      e.title.replaceChildren(room.label);
    }
    e.title.title = room.kind === 'dm' ? room.label : `${room.label}`;
    e.kind.textContent = KIND_TEXT[room.kind] ?? '';
    if (info.archived) e.kind.textContent += ' · archived';
    e.kind.hidden = !e.kind.textContent;
    const canEdit = room.kind !== 'dm' && this._rank(room) >= RANK.admin && !info.archived;
    const topic = info.topic || '';
    e.topic.textContent = topic || (canEdit ? 'No topic yet' : '');
    e.topic.classList.toggle('placeholder', !topic);
    e.edit.hidden = !canEdit;
    e.edit.textContent = topic ? 'Edit topic' : 'Set a topic';
    e.topicLine.hidden = this.editing || (!topic && !canEdit);
    if (this.editing && !canEdit) this._stopEdit(false);
    e.menu.hidden = this._menuItems().length === 0;
  }

  _menuItems() {
    const room = this.room;
    if (!room) return [];
    const rank = this._rank(room);
    const items = [];
    if (room.kind !== 'dm' && rank >= RANK.admin) {
      items.push({ label: 'Add people…', action: () => this.handlers.addPeople(room.name), testid: 'add-people' });
      items.push({ label: 'Lift a ban…', action: () => this._openUnban(), testid: 'unban-open' });
    }
    const mayArchive = room.kind !== 'dm'
      && (rank >= RANK.owner || (room.kind === 'public' && this.serverAdmin));
    if (mayArchive) {
      items.push(room.info.archived
        ? { label: 'Unarchive the room', action: () => this.handlers.setArchived(room.name, false), testid: 'unarchive' }
        : { label: 'Archive the room (read-only)', action: () => this.handlers.setArchived(room.name, true), testid: 'archive' });
    }
    const quiet = this.handlers.isQuiet?.(room.name);
    if (items.length) items.push('separator');
    items.push(quiet
      ? { label: 'Turn notifications on', action: () => this.handlers.setQuiet(room.name, false), testid: 'notify-room-on' }
      : { label: 'Mute notifications', action: () => this.handlers.setQuiet(room.name, true), testid: 'notify-room-off' });
    if (room.kind !== 'dm' && room.info.member !== false) {
      items.push('separator');
      items.push({
        label: room.info.role === 'owner' ? 'Leave (hand ownership over first)' : `Leave ${room.label}`,
        action: () => this.handlers.leaveRoom(room.name), testid: 'leave-room', danger: true,
      });
    }
    return items;
  }

  _startEdit() {
    const e = this.el;
    if (!this.room) return;
    this.editing = true;
    e.input.value = this.room.info.topic || '';
    this.fieldError(e.input, e.error, '');
    e.topicLine.hidden = true;
    e.form.hidden = false;
    e.input.focus();
    e.input.select();
  }

  _stopEdit(refocus) {
    const e = this.el;
    const was = this.editing;
    this.editing = false;
    e.form.hidden = true;
    if (this.room) this.render(this.room);
    if (refocus && was && !e.edit.hidden) e.edit.focus();
  }

  async _saveTopic() {
    const e = this.el;
    const room = this.room;
    if (!room) return;
    const topic = e.input.value.trim();
    if (topic === (room.info.topic || '')) {
      this._stopEdit(true);
      return;
    }
    const error = await this.handlers.setTopic(room.name, topic);
    if (room !== this.room) return;
    if (error) {
      this.fieldError(e.input, e.error, error);
      e.input.focus();
      return;
    }
    room.setInfo({ topic });
    this._stopEdit(true);
  }

  _openUnban() {
    const e = this.el;
    e.unbanName.value = '';
    this.fieldError(e.unbanName, e.unbanError, '');
    e.unban.showModal();
    e.unbanName.focus();
  }

  async _unban() {
    const e = this.el;
    const room = this.room;
    const name = e.unbanName.value.trim();
    if (!room || !name) {
      this.fieldError(e.unbanName, e.unbanError, 'Enter the name of the person to let back in.');
      return;
    }
    const error = await this.handlers.unban(room.name, name);
    if (error) {
      this.fieldError(e.unbanName, e.unbanError, error);
      return;
    }
    e.unban.close();
  }
}
