// What the user does to a message: its menu (the "⋯" button on each message: Reply,
// React, Edit, Delete, Copy link), the emoji picker, editing in place (Enter saves,
// Escape cancels, Shift+Enter starts a new line), the confirmation before a delete,
// the reaction chips (a click toggles the user's own) and the quote of a reply (a
// click shows the original). Changes go out through the handlers (chat.js's outbox).
// Built on render.js's h(), menu.js's Menus and markdown.js's EMOJI, which app.js
// passes in (no imports: see app.js).

// The picker's grid: common reactions first.
const PICKS = ['👍', '❤️', '😂', '🎉', '😄', '🙏', '👀', '🔥', '🚀', '👏', '✅', '❌',
  '🤔', '😢', '😮', '💯', '👎', '🙌', '✨', '⭐', '☕', '🐛', '💡', '👋'];
const SHORTCODE_RE = /^:[a-z0-9_+-]{1,30}:$/;

const $ = (id) => document.getElementById(id);

export class MessageActions {
  constructor({ h, fieldError }, menus, { EMOJI }, { gist }) {
    Object.assign(this, { h, fieldError, menus, EMOJI, gist });
    this.picking = null; // {room, seq, opener}
    this.confirming = null; // {room, seq, opener}
    this.el = {
      host: $('list-host'), picker: $('emoji-dialog'), grid: $('emoji-grid'),
      code: $('emoji-code'), codeForm: $('emoji-form'), codeError: $('emoji-error'),
      pickerCancel: $('emoji-cancel'), confirm: $('confirm-dialog'), confirmText: $('confirm-text'),
      confirmForm: $('confirm-form'), confirmCancel: $('confirm-cancel'),
    };
  }

  bind({ chat, handlers, me, list, composer, signal }) {
    Object.assign(this, { chat, handlers, me, list, composer });
    const e = this.el;
    const opts = { signal };
    e.host.addEventListener('click', (ev) => this._click(ev), opts);
    e.host.addEventListener('keydown', (ev) => {
      const btn = ev.target.closest?.('.msg-actions');
      if (btn && (ev.key === 'ArrowDown' || ev.key === 'ArrowUp')) {
        ev.preventDefault();
        this._openMenu(btn, ev.key === 'ArrowUp' ? 'last' : 'first');
      }
    }, opts);
    this._fillPicker();
    e.grid.addEventListener('click', (ev) => {
      const btn = ev.target.closest('button[data-emoji]');
      if (btn) this._picked(btn.dataset.emoji);
    }, opts);
    e.grid.addEventListener('keydown', (ev) => this._gridKey(ev), opts);
    e.codeForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const code = e.code.value.trim().toLowerCase();
      const full = code.startsWith(':') ? code : `:${code}:`;
      if (!SHORTCODE_RE.test(full)) {
        this.fieldError(e.code, e.codeError, 'A shortcode is letters, digits, “_”, “+” or “-”, like :tada:.');
        return;
      }
      this._picked(full);
    }, opts);
    e.code.addEventListener('input', () => this.fieldError(e.code, e.codeError, ''), opts);
    e.pickerCancel.addEventListener('click', () => e.picker.close(), opts);
    e.picker.addEventListener('close', () => {
      const opener = this.picking?.opener;
      this.picking = null;
      if (opener?.isConnected) opener.focus();
    }, opts);
    e.confirmCancel.addEventListener('click', () => e.confirm.close(), opts);
    e.confirmForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const c = this.confirming;
      e.confirm.close();
      if (c) this.handlers.deleteMessage(c.room, c.seq);
    }, opts);
    e.confirm.addEventListener('close', () => {
      const opener = this.confirming?.opener;
      this.confirming = null;
      if (opener?.isConnected) opener.focus();
    }, opts);
  }

  destroy() {
    if (this.el.picker.open) this.el.picker.close();
    if (this.el.confirm.open) this.el.confirm.close();
  }

  /** The room and message an element of the log belongs to. */
  _target(el) {
    const li = el.closest('li[data-seq]');
    const name = el.closest('ol[data-room]')?.dataset.room;
    const room = name && this.chat.rooms.get(name);
    const m = room && room.find(Number(li?.dataset.seq));
    return m ? { room, m, li } : null;
  }

  _click(ev) {
    const btn = ev.target.closest?.('button');
    if (!btn) return;
    if (btn.classList.contains('msg-actions')) {
      if (this.menus.open?.button === btn) this.menus.close();
      else this._openMenu(btn, 'first');
      return;
    }
    const t = this._target(btn);
    if (!t) return;
    if (btn.classList.contains('reaction')) {
      const on = btn.getAttribute('aria-pressed') !== 'true';
      this.handlers.react(t.room.name, t.m.seq, btn.dataset.emoji, on);
    } else if (btn.classList.contains('reply-quote')) {
      this.handlers.openAt(t.room.name, Number(btn.dataset.target));
    }
  }

  _openMenu(btn, focus) {
    const t = this._target(btn);
    if (!t) return;
    const { room, m } = t;
    const items = [];
    const live = !room.info.archived;
    if (live) {
      items.push({ label: 'Reply', testid: 'msg-reply', action: () => this._reply(room, m) });
      items.push({ label: 'React…', testid: 'msg-react', action: () => this._openPicker(room, m, btn) });
    }
    if (live && m.user.id === this.me.id) {
      items.push({ label: 'Edit', testid: 'msg-edit', action: () => this.startEdit(room, m) });
    }
    items.push({ label: 'Copy link', testid: 'msg-link', action: () => this._copyLink(room, m) });
    if (this.list.mayDelete(room, m)) {
      items.push('separator');
      items.push({ label: 'Delete…', testid: 'msg-delete', danger: true, action: () => this._confirmDelete(room, m, btn) });
    }
    this.menus.show(btn, items, focus);
  }

  _reply(room, m) {
    this.composer.setReply({ room: room.name, seq: m.seq, author: m.user.name, text: this.gist(m) });
  }

  /** Edit the message in place: a text box instead of its text. */
  startEdit(room, m) {
    const li = this.list.itemFor(room.name, m.seq);
    if (!li) return;
    if (this.list.editing) this._endEdit();
    const h = this.h;
    const input = h('textarea', {
      class: 'edit-input', rows: String(Math.min(8, m.body.split('\n').length + 1)),
      'aria-label': 'Edit the message', 'data-testid': 'edit-input', maxlength: '4000',
    });
    input.value = m.body;
    const save = h('button', { class: 'btn btn-small btn-primary', type: 'submit', 'data-testid': 'edit-save' }, 'Save');
    const cancel = h('button', { class: 'btn btn-small btn-ghost', type: 'button', 'data-testid': 'edit-cancel' }, 'Cancel');
    const form = h('form', { class: 'edit-form', 'data-testid': 'edit-form' }, input,
      h('p', { class: 'hint' }, 'Enter to save · Escape to cancel · Shift+Enter for a new line'),
      h('span', { class: 'edit-buttons' }, save, cancel));
    const body = li.querySelector('.body');
    body.hidden = true;
    body.after(form);
    this.list.editing = { room: room.name, seq: m.seq, form };
    const done = (text) => {
      this._endEdit();
      if (text !== null && text.trim() && text !== m.body) this.handlers.edit(room.name, m.seq, text);
      this.list.itemFor(room.name, m.seq)?.querySelector('.msg-actions')?.focus({ preventScroll: true });
    };
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      done(input.value.replace(/\s+$/, ''));
    });
    cancel.addEventListener('click', () => done(null));
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') {
        ev.preventDefault();
        ev.stopPropagation();
        done(null);
      } else if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        done(input.value.replace(/\s+$/, ''));
      }
    });
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  /** Leave the edit box; the message is drawn again as it is now. */
  _endEdit() {
    const editing = this.list.editing;
    if (!editing) return;
    this.list.editing = null;
    const room = this.chat.rooms.get(editing.room);
    const m = room?.find(editing.seq);
    editing.form.remove();
    if (m) this.list.messagesChanged(room, [m]);
  }

  _confirmDelete(room, m, opener) {
    const e = this.el;
    this.confirming = { room: room.name, seq: m.seq, opener };
    const whose = m.user.id === this.me.id ? 'your message' : `the message of ${m.user.name}`;
    const preview = this.gist(m, 80);
    e.confirmText.textContent = `Delete ${whose}${preview ? ` “${preview}”` : ''}? Everyone will see that a message was deleted; its text is gone for good.`;
    e.confirm.showModal();
    e.confirmCancel.focus();
  }

  async _copyLink(room, m) {
    const url = `${location.origin}${location.pathname}#room=${encodeURIComponent(room.name)}&seq=${m.seq}`;
    try {
      await navigator.clipboard.writeText(url);
      this.handlers.notice('Link copied.');
    } catch {
      this.handlers.notice(`Link to the message: ${url}`);
    }
  }

  _fillPicker() {
    const h = this.h;
    const codes = new Map();
    for (const [code, emoji] of Object.entries(this.EMOJI)) if (!codes.has(emoji)) codes.set(emoji, code);
    this.el.grid.replaceChildren(...PICKS.map((emoji) => h('button', {
      type: 'button', class: 'emoji-option', 'data-emoji': emoji, 'data-testid': 'emoji-option',
      title: codes.has(emoji) ? `:${codes.get(emoji)}:` : emoji, 'aria-label': codes.get(emoji) ?? emoji,
    }, emoji)));
    const list = $('emoji-codes');
    if (list) list.replaceChildren(...[...codes.values()].map((c) => h('option', { value: `:${c}:` })));
  }

  _openPicker(room, m, opener) {
    const e = this.el;
    this.picking = { room: room.name, seq: m.seq, opener };
    e.code.value = '';
    this.fieldError(e.code, e.codeError, '');
    e.picker.showModal();
    e.grid.querySelector('button')?.focus();
  }

  _picked(emoji) {
    const p = this.picking;
    if (!p) return;
    const room = this.chat.rooms.get(p.room);
    const m = room?.find(p.seq);
    const mine = m?.reactions?.find((r) => r.emoji === emoji)?.users?.includes(this.me.id);
    this.el.picker.close();
    if (m && !mine) this.handlers.react(p.room, p.seq, emoji, true);
  }

  /** Arrow keys move in the grid of emoji (6 a row). */
  _gridKey(ev) {
    const buttons = [...this.el.grid.querySelectorAll('button')];
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: 6, ArrowUp: -6 }[ev.key];
    if (!step) return;
    ev.preventDefault();
    buttons[Math.max(0, Math.min(buttons.length - 1, i + step))].focus();
  }
}
