// The files a message carries (§21 of docs/protocol.md), as they show in the log:
// pictures as previews of a fixed size (the server's small thumbnail, loaded lazily),
// which open a larger view in a dialog with a download link; everything else as a card
// with its name, type and size and a download link. Names are user input: they reach
// the page only as text. Built on render.js's h(), which app.js passes in (no imports:
// see app.js).

// What the server makes a preview of (docs/protocol.md §21: never SVG).
const PREVIEWED = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const UNITS = ['KB', 'MB', 'GB', 'TB'];
const FILE_URL = /^\/api\/files\/[A-Za-z0-9_-]{1,64}$/;

const $ = (id) => document.getElementById(id);

/** A size as people read it: "512 bytes", "48.2 KB", "25 MB" (powers of 1024). */
export function humanSize(bytes) {
  let n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1024) return n === 1 ? '1 byte' : `${Math.round(n)} bytes`;
  let unit = -1;
  do {
    n /= 1024;
    unit += 1;
  } while (n >= 1024 && unit < UNITS.length - 1);
  const shown = n >= 100 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1).replace(/\.0$/, '');
  return `${shown} ${UNITS[unit]}`;
}

/** A short word for a media type, for the card: "PDF", "ZIP", "text", "PNG image". */
export function typeLabel(type) {
  const base = String(type ?? '').split(';')[0].trim().toLowerCase();
  const known = {
    'application/pdf': 'PDF', 'application/zip': 'ZIP archive', 'application/gzip': 'gzip archive',
    'text/plain': 'Text', 'application/octet-stream': 'File',
  };
  if (known[base]) return known[base];
  const [kind, sub] = base.split('/');
  if (['image', 'video', 'audio'].includes(kind) && sub) return `${sub.toUpperCase()} ${kind}`;
  return base || 'File';
}

/** Whether a value from the server is a file object this can show. */
function validFile(f) {
  return f && typeof f === 'object' && typeof f.id === 'string' && typeof f.name === 'string'
    && typeof f.url === 'string' && FILE_URL.test(f.url);
}

export class AttachmentView {
  constructor({ h }) {
    this.h = h;
    this.opener = null; // what had focus before the larger view opened
    this.el = {
      dialog: $('image-dialog'), title: $('image-title'), frame: $('image-frame'),
      download: $('image-download'), meta: $('image-meta'), close: $('image-close'),
    };
  }

  /** The larger view's buttons, until `signal` aborts. */
  bind({ signal }) {
    const e = this.el;
    e.close.addEventListener('click', () => e.dialog.close(), { signal });
    // A click on the backdrop (outside the dialog's box) closes it too.
    e.dialog.addEventListener('click', (ev) => {
      if (ev.target === e.dialog) e.dialog.close();
    }, { signal });
    e.dialog.addEventListener('close', () => {
      e.frame.replaceChildren(); // the picture leaves with the dialog
      this.opener?.focus({ preventScroll: true });
      this.opener = null;
    }, { signal });
  }

  destroy() {
    if (this.el.dialog.open) this.el.dialog.close();
  }

  /** The files of a message as a block of previews and cards (null: none to show). */
  render(files) {
    const list = Array.isArray(files) ? files.filter(validFile) : [];
    if (!list.length) return null;
    const h = this.h;
    return h('ul', { class: 'files', 'data-testid': 'attachments', 'aria-label': 'Files' },
      ...list.map((f) => h('li', { class: 'file-entry' },
        PREVIEWED.has(f.type) ? this.preview(f) : this.card(f))));
  }

  /** A picture's preview in a box of fixed size: the log does not jump as it loads. */
  preview(f) {
    const h = this.h;
    const img = h('img', {
      class: 'file-thumb', src: `${f.url}/thumb`, alt: f.name, loading: 'lazy', decoding: 'async',
      'data-testid': 'attachment-thumb',
    });
    const button = h('button', {
      class: 'file-preview', type: 'button', 'data-testid': 'attachment-image', 'data-file': f.id,
      'aria-haspopup': 'dialog', title: `${f.name} (${humanSize(f.size)})`,
    }, img, h('span', { class: 'visually-hidden' }, `Open ${f.name}, a larger view`));
    button.addEventListener('click', () => this.open(f, button));
    // No preview (too many pixels, an image that does not decode): the card instead.
    img.addEventListener('error', () => button.replaceWith(this.card(f)), { once: true });
    return button;
  }

  /** Any file: its name, type and size, and a link that downloads it. */
  card(f) {
    const h = this.h;
    const size = humanSize(f.size);
    return h('div', { class: 'file-card', 'data-testid': 'attachment-card', 'data-file': f.id },
      h('span', { class: 'file-icon', 'aria-hidden': 'true' }, '📄'),
      h('span', { class: 'file-info' },
        h('span', { class: 'file-name', 'data-testid': 'attachment-name', title: f.name }, f.name),
        h('span', { class: 'file-meta', 'data-testid': 'attachment-meta' },
          `${typeLabel(f.type)} · ${size}`)),
      this.downloadLink(f, 'file-download btn btn-small', 'attachment-download'));
  }

  downloadLink(f, cls, testid) {
    return this.h('a', {
      class: cls, href: f.url, download: f.name, 'data-testid': testid,
      'aria-label': `Download ${f.name}`,
    }, 'Download');
  }

  /** The larger view of a picture: the whole image, its name, a download link. */
  open(f, opener) {
    const e = this.el;
    this.opener = opener;
    e.title.textContent = f.name;
    e.meta.textContent = `${typeLabel(f.type)} · ${humanSize(f.size)}`;
    e.frame.replaceChildren(this.h('img', {
      class: 'image-full', src: f.url, alt: f.name, 'data-testid': 'image-full',
    }));
    e.download.href = f.url;
    e.download.setAttribute('download', f.name);
    e.download.setAttribute('aria-label', `Download ${f.name}`);
    if (!e.dialog.open) e.dialog.showModal();
    e.close.focus();
  }
}
