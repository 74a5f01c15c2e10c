// The message box under the log: Enter sends, Shift+Enter starts a new line, it grows
// with its text, refuses an over-long message before it is sent, tells the room that
// the user is typing, and is usable only while a room is on screen where the user may
// post (not while muted, not in an archived room: it then says why). Built on render.js's
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
    this.el = {
      form: $('composer'), input: $('composer-input'), send: $('composer-send'),
      label: $('composer-label'), error: $('composer-error'), blockedNote: $('composer-blocked'),
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
    e.input.addEventListener('keydown', (ev) => {
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
  }

  /** Address messages to `name` (shown as `label`), or disable the composer (null). */
  setRoom(name, label = name ? `#${name}` : '') {
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
    this.handlers.send(this.room, body);
    input.value = '';
    this._autosize();
  }
}
