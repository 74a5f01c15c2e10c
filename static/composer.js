// The message box under the log: Enter sends, Shift+Enter starts a new line, it grows
// with its text, refuses an over-long message before it is sent, tells the room that
// the user is typing, and is usable only while a room is on screen where the user may
// post (not while muted, not in an archived room: it then says why). A reply shows
// what it answers above the box until it is sent or cancelled (Escape). Files attached
// (attach.js) go with the next message, which may then have no text; Send waits while
// one is still uploading. Built on render.js's fieldError and an Attacher, which app.js
// passes in (no imports: see app.js).

const MAX_BODY = 4000;

const $ = (id) => document.getElementById(id);

export class Composer {
  constructor({ fieldError }, attacher) {
    this.fieldError = fieldError;
    this.attacher = attacher;
    this.handlers = null;
    this.narrow = null;
    this.room = null; // the room a message goes to
    this.label = '';
    this.blocked = null; // why the user cannot post in the room on screen
    this.reply = null; // {room, seq, author, text}: the message being answered
    this.waiting = false; // Send was refused until the uploads finish
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
    this.attacher.bind({
      composerInput: e.input,
      signal,
      onChange: () => {
        this._drawSend();
        if (this.waiting && !this.attacher.busy()) {
          this.waiting = false; // the "wait for the files" error goes with its reason
          this._checkLength();
        }
      },
      onRefused: (text) => this.fieldError(e.input, e.error, text),
    });
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
    this.attacher.destroy();
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
    this.attacher.setRoom(name, usable);
    this._drawSend();
    e.blockedNote.textContent = this.blocked ?? '';
    e.blockedNote.hidden = !this.blocked;
    if (!name) e.input.placeholder = 'Choose a room first';
    else e.input.placeholder = this.blocked ?? `Message ${this.label}`;
    e.label.textContent = name ? `Message ${this.label}` : 'Message';
  }

  /** Send waits while a file is still uploading to the room on screen. */
  _drawSend() {
    const e = this.el;
    const usable = Boolean(this.room) && !this.blocked;
    const busy = usable && this.attacher.busy();
    e.send.disabled = !usable || busy;
    e.send.title = busy ? 'Send once the files are uploaded' : '';
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
    if (this.attacher.busy()) {
      this.waiting = true;
      this.fieldError(input, this.el.error, 'Wait for the files to upload, or cancel them.');
      return;
    }
    const files = this.attacher.ready();
    let body = input.value.replace(/\s+$/, '');
    if (!body.trim()) {
      if (!files.length) return;
      body = ''; // files alone make a message
    }
    if (!this._checkLength()) return;
    const replyTo = this.reply?.room === this.room ? this.reply.seq : null;
    this.handlers.send(this.room, body, replyTo, files);
    this.attacher.clear();
    this.setReply(null);
    input.value = '';
    this._autosize();
  }
}
