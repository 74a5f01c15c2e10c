// The page's favicon with a badge: the app's icon (favicon.svg) drawn on a canvas with
// a dot for unread messages, or a count of mentions, so the tab says so while the user
// is elsewhere. Back to the plain icon when nothing is unread. The CSP allows data:
// images. No imports (see app.js).

const SIZE = 64;

export class FaviconBadge {
  constructor() {
    this.link = document.querySelector('link[rel="icon"]');
    this.plain = this.link?.href ?? '';
    this.image = null; // the icon, once loaded
    this.shown = ''; // what the icon says now: '', 'dot' or a count
    this.want = '';
  }

  /** Show `unread` (a dot) and `mentions` (a count, "99+" style) on the icon. */
  set(unread, mentions) {
    this.want = mentions > 0 ? (mentions > 9 ? '9+' : String(mentions)) : unread > 0 ? 'dot' : '';
    if (this.want === this.shown || !this.link) return;
    if (!this.want) {
      this.link.href = this.plain;
      this.link.dataset.badge = '';
      this.shown = '';
      return;
    }
    if (this.image) this._draw();
    else if (!this.loading) {
      this.loading = true;
      const img = new Image();
      img.onload = () => {
        this.image = img;
        this._draw();
      };
      img.src = this.plain;
    }
  }

  _draw() {
    const want = this.want;
    if (!want || want === this.shown) return;
    const canvas = document.createElement('canvas');
    canvas.width = SIZE;
    canvas.height = SIZE;
    const g = canvas.getContext('2d');
    if (!g) return;
    g.drawImage(this.image, 0, 0, SIZE, SIZE);
    const r = want === 'dot' ? 13 : 18;
    const cx = SIZE - r - 1;
    const cy = r + 1;
    g.beginPath();
    g.arc(cx, cy, r, 0, 2 * Math.PI);
    g.fillStyle = '#c2410c';
    g.fill();
    g.lineWidth = 4;
    g.strokeStyle = '#ffffff';
    g.stroke();
    if (want !== 'dot') {
      g.fillStyle = '#ffffff';
      g.font = 'bold 24px system-ui, sans-serif';
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(want, cx, cy + 1);
    }
    this.link.href = canvas.toDataURL('image/png');
    this.link.dataset.badge = want;
    this.shown = want;
  }
}
