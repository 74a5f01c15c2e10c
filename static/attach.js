// Files the user is about to send (§21 of docs/protocol.md): picked with the attach
// button, dropped on the room, or pasted (a screenshot, say). Each is uploaded at once
// to the room on screen, with XMLHttpRequest for its progress, and listed above the
// message box with a progress bar and a button that cancels it (or takes it back once
// uploaded). A refusal shows as the server's reason, in words. The composer sends the
// uploaded ones with the next message; while one is still on its way Send waits.
// Each room keeps its own list, so switching rooms neither loses nor mixes files.
// Built on render.js's h() and attachments.js's humanSize, which app.js passes in,
// with api.js's xsrfToken (no imports: see app.js).

const MAX_FILES = 10; // per message (the server's limit)

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

let counter = 0;

/** Why an upload was refused, in words, from the server's answer (or its absence). */
export function uploadError(status, body, name, humanSize) {
  const err = (body && typeof body === 'object' && typeof body.error === 'object' && body.error) || {};
  const code = String(err.code ?? '');
  const message = typeof err.message === 'string' ? err.message : '';
  if (status === 413 || code === 'too_large') {
    const limit = Number(err.limit);
    return Number.isFinite(limit) && limit > 0
      ? `${name} is too large: a file may be at most ${humanSize(limit)}.`
      : `${name} is too large to upload.`;
  }
  if (code === 'quota_exceeded') {
    const limit = Number(err.limit);
    return `Your files would take more than the ${Number.isFinite(limit) && limit > 0
      ? humanSize(limit) : 'space'} allowed: delete some first.`;
  }
  if (status === 429 || code === 'rate_limited') return 'Too many uploads at once: wait a moment and try again.';
  if (status === 0) return 'Cannot reach the server: the upload failed.';
  if (status === 401) return 'You are not signed in.';
  if (message) return `Upload refused: ${message}`;
  return status >= 500 ? 'The server could not store the file. Try again in a moment.'
    : `Upload refused (HTTP ${status}).`;
}

export class Attacher {
  /**
   * @param {object} render  render.js (h)
   * @param {object} o  {humanSize} from attachments.js, {xsrfToken} from api.js
   */
  constructor({ h }, { humanSize, xsrfToken }) {
    Object.assign(this, { h, humanSize, xsrfToken });
    this.trays = new Map(); // room name -> [upload]
    this.room = null; // the room on screen
    this.enabled = false;
    this.onChange = () => {};
    this.onRefused = () => {};
    this.dragDepth = 0;
    this.el = {
      button: $('attach-button'), input: $('attach-input'), tray: $('attach-tray'),
      area: $('room-main'), zone: $('drop-zone'),
    };
  }

  /**
   * Listen for files until `signal` aborts. `onChange()` runs whenever what may be sent
   * changes; `onRefused(text)` says why files were not taken (too many, say).
   */
  bind({ onChange, onRefused, composerInput, signal }) {
    Object.assign(this, { onChange, onRefused });
    const e = this.el;
    e.button.addEventListener('click', () => e.input.click(), { signal });
    e.input.addEventListener('change', () => {
      this.add([...e.input.files]);
      e.input.value = ''; // the same file can be picked again
    }, { signal });
    composerInput.addEventListener('paste', (ev) => {
      const files = [...(ev.clipboardData?.files ?? [])];
      if (!files.length || !this.enabled) return;
      ev.preventDefault(); // a picture is attached, not pasted as its file name
      this.add(files.map((f, i) => named(f, i)));
    }, { signal });
    const carriesFiles = (ev) => [...(ev.dataTransfer?.types ?? [])].includes('Files');
    e.area.addEventListener('dragenter', (ev) => {
      if (!carriesFiles(ev) || !this.enabled) return;
      ev.preventDefault();
      this.dragDepth += 1;
      e.zone.hidden = false;
    }, { signal });
    e.area.addEventListener('dragover', (ev) => {
      if (!carriesFiles(ev) || !this.enabled) return;
      ev.preventDefault(); // allows the drop
      ev.dataTransfer.dropEffect = 'copy';
    }, { signal });
    e.area.addEventListener('dragleave', (ev) => {
      if (!carriesFiles(ev)) return;
      this.dragDepth = Math.max(0, this.dragDepth - 1);
      if (!this.dragDepth) e.zone.hidden = true;
    }, { signal });
    e.area.addEventListener('drop', (ev) => {
      this.dragDepth = 0;
      e.zone.hidden = true;
      if (!carriesFiles(ev) || !this.enabled) return;
      ev.preventDefault(); // the browser would open the file instead
      this.add([...ev.dataTransfer.files]);
    }, { signal });
    // Files dropped anywhere else would make the browser leave the chat to show them.
    for (const type of ['dragover', 'drop']) {
      window.addEventListener(type, (ev) => {
        if (carriesFiles(ev) && !ev.defaultPrevented) {
          ev.preventDefault();
          ev.dataTransfer.dropEffect = 'none';
        }
      }, { signal });
    }
    window.addEventListener('beforeunload', (ev) => {
      // Leaving now would lose the uploads under way: the browser asks first.
      if ([...this.trays.keys()].some((room) => this.busy(room))) ev.preventDefault();
    }, { signal });
  }

  destroy() {
    for (const tray of this.trays.values()) for (const up of tray) this._drop(up);
    this.trays.clear();
    this.el.tray.replaceChildren();
    this.el.tray.hidden = true;
    this.el.zone.hidden = true;
  }

  /** Show the files of `room` (null: none); `enabled` whether the user may post there. */
  setRoom(room, enabled) {
    this.room = room;
    this.enabled = Boolean(room) && enabled;
    this.el.button.disabled = !this.enabled;
    if (!this.enabled) this.el.zone.hidden = true;
    this._draw();
  }

  /** Whether an upload to `room` is still on its way. */
  busy(room = this.room) {
    return (this.trays.get(room) ?? []).some((up) => up.state === 'uploading');
  }

  /** The uploaded files of `room`, as the server's file objects, in the order added. */
  ready(room = this.room) {
    return (this.trays.get(room) ?? []).filter((up) => up.state === 'done').map((up) => up.file);
  }

  /** The message is sent: the list of `room` starts empty again. */
  clear(room = this.room) {
    for (const up of this.trays.get(room) ?? []) this._drop(up);
    this.trays.delete(room);
    this._draw();
    this.onChange();
  }

  /** Upload `files` to the room on screen. */
  add(files) {
    const room = this.room;
    if (!room || !this.enabled || !files.length) return;
    const tray = this.trays.get(room) ?? [];
    const taken = tray.filter((up) => up.state === 'uploading' || up.state === 'done').length;
    const free = MAX_FILES - taken;
    if (files.length > free) {
      this.onRefused(`A message carries at most ${MAX_FILES} files: ${free > 0
        ? `only the first ${free} were added` : 'none were added'}.`);
      files = files.slice(0, Math.max(0, free));
    }
    for (const file of files) tray.push(this._start(room, file));
    if (tray.length) this.trays.set(room, tray);
    this._draw();
    this.onChange();
  }

  _start(room, file) {
    counter += 1;
    const up = {
      key: `u${counter}`, room, name: file.name || 'file', size: file.size, loaded: 0,
      state: 'uploading', error: '', file: null, xhr: new XMLHttpRequest(),
      // A local preview of a picture, from its bytes in memory (CSP: img-src blob:).
      preview: /^image\/(png|jpeg|gif|webp)$/.test(file.type) ? URL.createObjectURL(file) : null,
      li: null,
    };
    const xhr = up.xhr;
    xhr.open('POST', `/api/rooms/${enc(room)}/files?name=${enc(up.name)}`);
    xhr.setRequestHeader('X-XSRFToken', this.xsrfToken());
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (ev) => {
      up.loaded = ev.loaded;
      if (ev.lengthComputable) up.size = ev.total;
      this._drawItem(up);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status === 201 && xhr.response && typeof xhr.response.id === 'string') {
        up.state = 'done';
        up.file = xhr.response;
        up.loaded = up.size;
      } else {
        up.state = 'failed';
        up.error = uploadError(xhr.status, xhr.response, up.name, this.humanSize);
      }
      this._settled(up);
    });
    xhr.addEventListener('error', () => {
      up.state = 'failed';
      up.error = uploadError(0, null, up.name, this.humanSize);
      this._settled(up);
    });
    xhr.addEventListener('abort', () => {
      up.state = 'cancelled';
      this._settled(up);
    });
    xhr.send(file);
    return up;
  }

  _settled(up) {
    up.xhr = null;
    this._drawItem(up);
    this.onChange();
  }

  /** Cancel an upload under way, or take back a finished or failed one. */
  _remove(up) {
    if (up.state === 'uploading') {
      up.xhr.abort(); // the server forgets what it got; the item says "cancelled"
      return;
    }
    const tray = this.trays.get(up.room) ?? [];
    const i = tray.indexOf(up);
    if (i >= 0) tray.splice(i, 1);
    this._drop(up);
    if (!tray.length) this.trays.delete(up.room);
    this._draw();
    this.onChange();
    if (up.room === this.room) this.el.button.focus({ preventScroll: true });
  }

  _drop(up) {
    if (up.state === 'uploading') {
      up.state = 'cancelled';
      up.xhr?.abort();
    }
    if (up.preview) URL.revokeObjectURL(up.preview);
    up.preview = null;
  }

  _draw() {
    const tray = this.trays.get(this.room) ?? [];
    const e = this.el;
    e.tray.hidden = !tray.length;
    e.tray.replaceChildren(...tray.map((up) => {
      if (!up.li) up.li = this._item(up);
      this._drawItem(up);
      return up.li;
    }));
  }

  _item(up) {
    const h = this.h;
    const li = h('li', { class: 'attach-item', 'data-testid': 'attach-item' },
      up.preview ? h('img', { class: 'attach-preview', src: up.preview, alt: '' })
        : h('span', { class: 'attach-preview file-icon', 'aria-hidden': 'true' }, '📄'),
      h('span', { class: 'attach-info' },
        h('span', { class: 'attach-name', 'data-testid': 'attach-name', title: up.name }, up.name),
        h('progress', { class: 'attach-progress', 'data-testid': 'attach-progress', max: '1', value: '0',
          'aria-label': `Upload of ${up.name}` }),
        h('span', { class: 'attach-line' },
          h('span', { class: 'attach-status', 'data-testid': 'attach-status', role: 'status' }),
          h('span', { class: 'attach-percent', 'data-testid': 'attach-percent', 'aria-hidden': 'true' }))),
      h('button', { class: 'btn btn-ghost btn-icon attach-remove', type: 'button',
        'data-testid': 'attach-remove' }, h('span', { 'aria-hidden': 'true' }, '×'),
      h('span', { class: 'visually-hidden' })));
    li.querySelector('button').addEventListener('click', () => this._remove(up));
    return li;
  }

  _drawItem(up) {
    const li = up.li;
    if (!li) return;
    const size = this.humanSize(up.size);
    li.dataset.state = up.state;
    const bar = li.querySelector('progress');
    bar.max = Math.max(1, up.size);
    bar.value = Math.min(up.loaded, bar.max);
    bar.hidden = up.state !== 'uploading' && up.state !== 'done';
    const status = li.querySelector('.attach-status');
    const pct = up.size ? Math.floor((100 * up.loaded) / up.size) : 0;
    // The status is read out when it changes: not at every step of the progress bar.
    li.querySelector('.attach-percent').textContent = up.state === 'uploading' ? ` ${pct}%` : '';
    const text = {
      uploading: `Uploading ${size}…`,
      done: size,
      failed: up.error,
      cancelled: 'Upload cancelled',
    }[up.state];
    if (status.textContent !== text) status.textContent = text;
    status.classList.toggle('field-error', up.state === 'failed');
    const button = li.querySelector('button');
    const label = up.state === 'uploading' ? `Cancel the upload of ${up.name}` : `Remove ${up.name}`;
    button.title = label;
    button.lastChild.textContent = label;
    button.dataset.action = up.state === 'uploading' ? 'cancel' : 'remove';
  }
}

/** A pasted picture's file: browsers call every screenshot "image.png"; give it the
 *  time instead, so that several are told apart. */
function named(file, i) {
  if (file.name && file.name !== 'image.png') return file;
  const ext = (/^image\/(png|jpeg|gif|webp)$/.exec(file.type)?.[1] ?? 'png').replace('jpeg', 'jpg');
  const stamp = new Date().toISOString().slice(0, 19).replace('T', ' ').replaceAll(':', '.');
  return new File([file], `Pasted image ${stamp}${i ? ` (${i + 1})` : ''}.${ext}`, { type: file.type });
}
