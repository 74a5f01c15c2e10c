// The message box under the log: Enter sends, Shift+Enter starts a new line, it grows
// with its text, refuses an over-long message before it is sent, tells the room that
// the user is typing, and is usable only while a room is on screen where the user may
// post (not while muted, not in an archived room: it then says why). A reply shows
// what it answers above the box until it is sent or cancelled (Escape). Built on render.js's
// fieldError, which app.js passes in (no imports: see app.js).

const MAX_BODY = 4000;

const $ = (id) => document.getElementById(id);

export class Composer {
  constructor({ fieldError }) {
    this.fieldError = fieldError;
    this.handlers = null;
    this.narrow = null;
    this.room = null; // the room a message goes to
    this.label = '';
    this.blocked = null; // why the user cannot post in the room on screen
    this.reply = null; // {room, seq, author, text}: the message being answered
    this.el = {
      form: $('composer'), input: $('composer-input'), send: $('composer-send'),
      label: $('composer-label'), error: $('composer-error'), blockedNote: $('composer-blocked'),
      replyBar: $('reply-bar'), replyAuthor: $('reply-author'), replyText: $('reply-text'),
      replyCancel: $('reply-cancel'), help: $('formatting-help'), helpDialog: $('format-dialog'),
      helpClose: $('format-close'),
    };
    this.input = this.el.input;
  }

  /** Listen to the form until `signal` aborts; `narrow` matches phone-sized screens. */
  bind({ handlers, narrow, signal }) {
    this.handlers = handlers;
    this.narrow = narrow;
    const e = this.el;
    e.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this._submit();
    }, { signal });
    e.replyCancel.addEventListener('click', () => {
      this.setReply(null);
      e.input.focus();
    }, { signal });
    e.help.addEventListener('click', () => e.helpDialog.showModal(), { signal });
    e.helpClose.addEventListener('click', () => e.helpDialog.close(), { signal });
    e.input.addEventListener('keydown', (ev) => {
      if (ev.defaultPrevented) return; // taken by the mention list
      if (ev.key === 'Escape' && this.reply) {
        ev.preventDefault();
        ev.stopPropagation();
        this.setReply(null);
        return;
      }
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        this._submit();
      }
    }, { signal });
    e.input.addEventListener('input', () => {
      this._autosize();
      this._checkLength();
      if (this.room && e.input.value.trim()) handlers.typing(this.room);
    }, { signal });
  }

  destroy() {
    this.el.input.value = '';
    this.setReply(null);
  }

  /** Answer a message ({room, seq, author, text}), or stop answering (null). */
  setReply(reply) {
    const e = this.el;
    this.reply = reply;
    e.replyBar.hidden = !reply;
    e.replyAuthor.textContent = reply?.author ?? '';
    e.replyText.textContent = reply?.text ?? '';
    if (reply && !e.input.disabled) e.input.focus({ preventScroll: true });
  }

  /** Address messages to `name` (shown as `label`), or disable the composer (null). */
  setRoom(name, label = name ? `#${name}` : '') {
    if (this.reply && this.reply.room !== name) this.setReply(null);
    this.room = name;
    this.label = label;
    this.blocked = null;
    this._draw();
  }

  /** Disable the composer with a reason ("You are muted until 14:05"), or enable it
   *  again (null). */
  setBlocked(text) {
    if (text === this.blocked) return;
    const hadFocus = document.activeElement === this.el.input;
    this.blocked = text || null;
    this._draw();
    if (hadFocus && !this.blocked) this.el.input.focus({ preventScroll: true });
  }

  _draw() {
    const e = this.el;
    const name = this.room;
    const usable = Boolean(name) && !this.blocked;
    e.input.disabled = !usable;
    e.send.disabled = !usable;
    e.blockedNote.textContent = this.blocked ?? '';
    e.blockedNote.hidden = !this.blocked;
    if (!name) e.input.placeholder = 'Choose a room first';
    else e.input.placeholder = this.blocked ?? `Message ${this.label}`;
    e.label.textContent = name ? `Message ${this.label}` : 'Message';
  }

  /** Put the caret in the box, except on phones, where that would open the keyboard. */
  focus() {
    if (!this.narrow.matches && !this.el.input.disabled) this.el.input.focus({ preventScroll: true });
  }

  _autosize() {
    const input = this.el.input;
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight + 2, Math.round(window.innerHeight * 0.4))}px`;
  }

  _checkLength() {
    const n = this.el.input.value.length;
    const msg = n > MAX_BODY ? `Too long: ${n} of ${MAX_BODY} characters.` : '';
    this.fieldError(this.el.input, this.el.error, msg);
    return !msg;
  }

  _submit() {
    const input = this.el.input;
    if (!this.room || input.disabled) return;
    const body = input.value.replace(/\s+$/, '');
    if (!body.trim()) return;
    if (!this._checkLength()) return;
    const replyTo = this.reply?.room === this.room ? this.reply.seq : null;
    this.handlers.send(this.room, body, replyTo);
    this.setReply(null);
    input.value = '';
    this._autosize();
  }
}
